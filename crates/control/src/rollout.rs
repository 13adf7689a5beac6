//! What the service controller decides for one service, as a pure function of the service
//! and its tasks: which tasks to start and stop, how its deployments move on (rolling
//! updates within `minimumHealthyPercent`/`maximumPercent`, completion, the circuit breaker
//! and its rollback), and the events ECS writes on the way. No I/O: the controller
//! ([`crate::controller`]) gathers the inputs from the view and commits the outcome.
//!
//! The rules, as ECS's rolling (`ECS`) deployment controller applies them:
//! - REPLICA: the PRIMARY deployment wants `desiredCount` tasks on instances that are not
//!   DRAINING. New tasks start while the tasks RUNNING or PENDING (those asked to stop count
//!   until they have) stay within `maximumPercent` of the desired count (rounded down); tasks of older deployments, and those on DRAINING
//!   instances, stop while the healthy ones left stay at or above `minimumHealthyPercent`
//!   (rounded up). A task counts as healthy when it is RUNNING and, if its task definition
//!   has container health checks, HEALTHY; without health checks, once it has been RUNNING
//!   for [`Inputs::healthy_after`] (ECS waits 40 s).
//! - DAEMON: one task of the PRIMARY deployment on each eligible instance; an older task on
//!   an instance stops before the new one starts there (`maximumPercent` 100).
//! - A RUNNING task whose health checks fail is stopped once the grace period since it
//!   started has passed; its replacement follows.
//! - The circuit breaker trips when the PRIMARY deployment has had as many tasks fail in a
//!   row as its threshold (half the desired count, at least 10, at most 200); with rollback
//!   the last COMPLETED deployment comes back as a new PRIMARY deployment.
//! - Tasks of the PRIMARY deployment that keep failing hold its launches back, longer each
//!   time (the service is "throttled"), until one runs; a new deployment starts afresh.

use std::collections::{HashMap, HashSet};

use berth_model::status::{
    DeploymentStatus, HealthStatus, RolloutState, ServiceStatus, TaskStatus,
};
use berth_model::wire::ecs::{Deployment, Service, ServiceEvent};

use crate::records::ServiceControl;
use crate::view::HEALTH_CHECK_FAILED;

/// Events kept per service, newest first.
pub const MAX_EVENTS: usize = 100;
/// Failed tasks in a row after which launches are held back.
pub const THROTTLE_AFTER: usize = 5;
/// The longest a launch is held back.
pub const THROTTLE_MAX_SECS: f64 = 300.0;

/// One task of the service, as the decision needs it.
#[derive(Debug, Clone)]
pub struct TaskState {
    pub id: String,
    /// The deployment that started it (its `startedBy`).
    pub deployment: Option<String>,
    /// Its desired status is RUNNING (nobody asked it to stop).
    pub live: bool,
    pub last: TaskStatus,
    pub instance: Option<String>,
    pub health: HealthStatus,
    pub started_at: Option<f64>,
    pub stopped_at: Option<f64>,
    /// Stopped for a reason that counts against its deployment.
    pub failed: bool,
}

impl TaskState {
    /// Not STOPPED yet (it may still hold resources and serve).
    pub fn unfinished(&self) -> bool {
        self.last.is_unfinished()
    }
}

/// Everything [`decide`] looks at.
pub struct Inputs<'a> {
    pub now: f64,
    pub service: &'a Service,
    pub ctl: &'a ServiceControl,
    pub tasks: &'a [TaskState],
    /// Container instances of the cluster that are DRAINING.
    pub draining: &'a HashSet<String>,
    /// DAEMON only: the instances that should each run one task.
    pub daemon_instances: &'a [String],
    /// Deployment id → whether its task definition has container health checks.
    pub health_checked: &'a HashMap<String, bool>,
    /// Seconds a task without container health checks must have been RUNNING before it
    /// counts as healthy (ECS: 40).
    pub healthy_after: f64,
}

/// What the controller should do.
#[derive(Debug, Default)]
pub struct Decision {
    /// Tasks of the PRIMARY deployment to place by the service's strategies.
    pub launch: usize,
    /// DAEMON: one task of the PRIMARY deployment on each of these instances.
    pub launch_on: Vec<String>,
    /// Tasks to stop, with the reason they get.
    pub stop: Vec<(String, String)>,
    /// The service and notes as they should be stored.
    pub service: Service,
    pub ctl: ServiceControl,
    /// Whether `service` or `ctl` differ from what was stored.
    pub changed: bool,
    /// When to look again even if nothing changes (epoch seconds).
    pub wake_at: Option<f64>,
}

impl Decision {
    /// Nothing to start, stop or store.
    pub fn is_idle(&self) -> bool {
        self.launch == 0 && self.launch_on.is_empty() && self.stop.is_empty() && !self.changed
    }

    fn wake(&mut self, at: f64) {
        self.wake_at = Some(self.wake_at.map_or(at, |w: f64| w.min(at)));
    }
}

/// A new deployment id, as ECS writes them (`ecs-svc/` and 19 digits).
pub fn new_deployment_id() -> String {
    let n: u64 = rand::random::<u64>() % 9_000_000_000_000_000_000 + 1_000_000_000_000_000_000;
    format!("ecs-svc/{n}")
}

/// Put an event on top of the service's list (at most [`MAX_EVENTS`] kept).
pub fn push_event(svc: &mut Service, now: f64, message: String) {
    let evs = svc.events.get_or_insert_with(Vec::new);
    evs.insert(
        0,
        ServiceEvent {
            id: Some(berth_model::arn::new_uuid()),
            created_at: Some(now),
            message: Some(message),
        },
    );
    evs.truncate(MAX_EVENTS);
}

/// Put an event on top unless the newest one already says the same.
pub fn push_event_once(svc: &mut Service, now: f64, message: String) {
    let newest = svc
        .events
        .as_deref()
        .and_then(|e| e.first())
        .and_then(|e| e.message.as_deref());
    if newest != Some(message.as_str()) {
        push_event(svc, now, message);
    }
}

/// `minimumHealthyPercent` and `maximumPercent` with ECS's defaults.
pub fn percents(svc: &Service) -> (i64, i64) {
    let daemon = is_daemon(svc);
    let cfg = svc.deployment_configuration.as_ref();
    let min = cfg
        .and_then(|c| c.minimum_healthy_percent)
        .unwrap_or(if daemon { 0 } else { 100 });
    let max = cfg
        .and_then(|c| c.maximum_percent)
        .unwrap_or(if daemon { 100 } else { 200 });
    (min as i64, max as i64)
}

/// A service's status (`None`: absent or not one ECS has).
pub fn service_status(svc: &Service) -> Option<ServiceStatus> {
    ServiceStatus::of(svc.status.as_deref())
}

pub fn is_daemon(svc: &Service) -> bool {
    svc.scheduling_strategy.as_deref() == Some("DAEMON")
}

/// The circuit breaker's threshold for a desired count.
pub fn failure_threshold(desired: i64) -> usize {
    ((desired + 1) / 2).clamp(10, 200) as usize
}

/// The latest start of a task that is running or stopped without failing.
fn last_success<'a>(tasks: impl Iterator<Item = &'a TaskState>) -> Option<f64> {
    tasks
        .filter(|t| {
            (t.unfinished() && t.last == TaskStatus::Running) || (!t.unfinished() && !t.failed)
        })
        .filter_map(|t| t.started_at)
        .fold(None, |m: Option<f64>, s| Some(m.map_or(s, |m| m.max(s))))
}

/// Failed tasks since the last success, and when the latest of them stopped.
fn failure_streak<'a>(tasks: impl Iterator<Item = &'a TaskState> + Clone) -> (usize, f64) {
    let ok = last_success(tasks.clone());
    let mut n = 0;
    let mut latest = 0.0f64;
    for t in tasks.filter(|t| t.failed) {
        let at = t.stopped_at.unwrap_or(0.0);
        if ok.is_none_or(|ok| at > ok) {
            n += 1;
            latest = latest.max(at);
        }
    }
    (n, latest)
}

/// Until when launches are held back, if tasks keep failing (`None`: they do not). The
/// time may have passed: the episode lasts until a task runs.
pub fn throttled_until<'a>(tasks: impl Iterator<Item = &'a TaskState> + Clone) -> Option<f64> {
    let (streak, latest) = failure_streak(tasks);
    if streak < THROTTLE_AFTER {
        return None;
    }
    let delay = (0.1 * 2f64.powi((streak - THROTTLE_AFTER).min(20) as i32)).min(THROTTLE_MAX_SECS);
    Some(latest + delay)
}

/// The running, pending, failed and desired counts of each deployment and of the service,
/// counted from its tasks (the store keeps none of them).
pub fn fill_counts(svc: &mut Service, tasks: &[TaskState], daemon_desired: Option<i32>) {
    if let Some(n) = daemon_desired {
        svc.desired_count = Some(n);
    }
    let desired = svc.desired_count.unwrap_or(0);
    let pending = |t: &TaskState| t.unfinished() && t.last.is_pending();
    let running = |t: &TaskState| t.unfinished() && t.last == TaskStatus::Running;
    svc.running_count = Some(tasks.iter().filter(|t| running(t)).count() as i32);
    svc.pending_count = Some(tasks.iter().filter(|t| pending(t)).count() as i32);
    for d in svc.deployments.iter_mut().flatten() {
        let mine: Vec<&TaskState> = tasks
            .iter()
            .filter(|t| t.deployment.is_some() && t.deployment == d.id)
            .collect();
        d.running_count = Some(mine.iter().filter(|t| running(t)).count() as i32);
        d.pending_count = Some(mine.iter().filter(|t| pending(t)).count() as i32);
        d.failed_tasks = Some(mine.iter().filter(|t| t.failed).count() as i32);
        d.desired_count = Some(if is_primary_deployment(d) {
            desired
        } else {
            mine.iter().filter(|t| t.live).count() as i32
        });
    }
}

/// Whether a deployment is its service's PRIMARY one.
fn is_primary_deployment(d: &Deployment) -> bool {
    DeploymentStatus::of(d.status.as_deref()) == Some(DeploymentStatus::Primary)
}

/// A deployment's rollout state (`None`: it has none).
fn rollout_state(d: &Deployment) -> Option<RolloutState> {
    RolloutState::of(d.rollout_state.as_deref())
}

/// Decide what to do for one service, in phases (see the module docs for the rules): tasks
/// whose health checks failed; then the tasks to start and stop (DAEMON or REPLICA); the
/// throttling note; deployments that are done with; the circuit breaker; completion and
/// steady state; the end of a deleted service. Each phase reads the [`Look`] and adds to the
/// [`Plan`].
pub fn decide(i: &Inputs) -> Decision {
    let mut d = Decision {
        service: i.service.clone(),
        ctl: i.ctl.clone(),
        ..Default::default()
    };
    // A status no writer sets leaves the service alone, as INACTIVE does.
    let status = match i.service.status.as_deref() {
        None => ServiceStatus::Active,
        Some(s) => match s.parse() {
            Ok(ServiceStatus::Inactive) | Err(_) => return d,
            Ok(s) => s,
        },
    };
    let mut deps = d.service.deployments.take().unwrap_or_default();
    if deps.is_empty() {
        d.service.deployments = Some(deps);
        return d;
    }
    let look = Look::new(i, status, deps[0].id.clone().unwrap_or_default());
    let mut plan = Plan::default();

    let sick = look.failed_health_checks(&mut plan);
    let live: Vec<&TaskState> = i
        .tasks
        .iter()
        .filter(|t| t.live && !sick.contains(t.id.as_str()))
        .collect();
    look.wake_when_settled(&live, &mut plan);
    let primary_failed = rollout_state(&deps[0]) == Some(RolloutState::Failed);
    // Failures count against the deployment that started them: a new deployment (an update,
    // a rollback) starts unthrottled.
    let failing = throttled_until(i.tasks.iter().filter(|t| look.is_primary(t)));
    let throttle = failing.filter(|u| *u > i.now);
    let (desired, steady_now) = if look.daemon {
        look.daemon_tasks(&live, primary_failed, throttle, &mut plan)
    } else {
        look.replica_tasks(&live, &sick, primary_failed, throttle, &mut plan)
    };
    look.note_throttling(failing.is_some(), &mut d.ctl, &mut plan);
    let mut changed = look.drop_finished_deployments(&mut deps);
    changed |= look.circuit_breaker(desired, &mut deps, &mut d, &mut plan);
    look.settle(steady_now, changed, &mut deps, &mut d.ctl, &mut plan);
    look.end_if_deleted(&mut deps, &mut d.service);

    let svc = &mut d.service;
    if look.daemon {
        svc.desired_count = Some(desired as i32);
    }
    svc.deployments = Some(deps);
    for e in plan.events {
        if e.contains("was unable to stop or start tasks") {
            push_event_once(svc, i.now, e);
        } else {
            push_event(svc, i.now, e);
        }
    }
    d.changed = d.service != *i.service || d.ctl != *i.ctl;
    d.launch = plan.launch;
    d.launch_on = plan.launch_on;
    d.stop = plan.stop;
    if let Some(w) = plan.wake {
        d.wake(w);
    }
    d
}

/// What one decision reads: the inputs and what follows from them alone.
struct Look<'a> {
    i: &'a Inputs<'a>,
    status: ServiceStatus,
    active: bool,
    daemon: bool,
    name: String,
    primary_id: String,
    /// `healthCheckGracePeriodSeconds`.
    grace: f64,
    scale_reason: String,
}

/// What the phases decide, gathered as they go.
#[derive(Default)]
struct Plan {
    events: Vec<String>,
    stop: Vec<(String, String)>,
    wake: Option<f64>,
    launch: usize,
    launch_on: Vec<String>,
}

impl Plan {
    fn wake_at(&mut self, at: f64) {
        self.wake = Some(self.wake.map_or(at, |w: f64| w.min(at)));
    }

    fn stopping(&self) -> HashSet<&str> {
        self.stop.iter().map(|(id, _)| id.as_str()).collect()
    }
}

impl<'a> Look<'a> {
    fn new(i: &'a Inputs<'a>, status: ServiceStatus, primary_id: String) -> Look<'a> {
        Look {
            i,
            status,
            active: status == ServiceStatus::Active,
            daemon: is_daemon(i.service),
            name: i.service.service_name.clone().unwrap_or_default(),
            grace: i.service.health_check_grace_period_seconds.unwrap_or(0) as f64,
            scale_reason: format!("Scaling activity initiated by (deployment {primary_id})"),
            primary_id,
        }
    }

    /// Whether the task's task definition has container health checks.
    fn checked(&self, t: &TaskState) -> bool {
        t.deployment
            .as_ref()
            .and_then(|x| self.i.health_checked.get(x))
            .copied()
            .unwrap_or(false)
    }

    /// A task without health checks is trusted once it has run a while.
    fn settled(&self, t: &TaskState) -> bool {
        t.started_at
            .is_some_and(|s| s + self.i.healthy_after <= self.i.now)
    }

    fn healthy(&self, t: &TaskState) -> bool {
        t.last == TaskStatus::Running
            && if self.checked(t) {
                t.health == HealthStatus::Healthy
            } else {
                self.settled(t)
            }
    }

    fn is_primary(&self, t: &TaskState) -> bool {
        t.deployment.as_deref() == Some(self.primary_id.as_str())
    }

    /// RUNNING tasks whose health checks failed after the grace period: stopped (their ids
    /// returned). Within the grace period, look again when it ends.
    fn failed_health_checks(&self, plan: &mut Plan) -> HashSet<&'a str> {
        let i = self.i;
        let mut sick = HashSet::new();
        for t in i.tasks.iter().filter(|t| t.live) {
            if t.last == TaskStatus::Running && t.health == HealthStatus::Unhealthy {
                let since = t.started_at.unwrap_or(i.now);
                if since + self.grace <= i.now {
                    plan.stop
                        .push((t.id.clone(), format!("{HEALTH_CHECK_FAILED}.")));
                    plan.events.push(format!(
                        "(service {}) (task {}) failed container health checks.",
                        self.name, t.id
                    ));
                    sick.insert(t.id.as_str());
                } else {
                    plan.wake_at(since + self.grace);
                }
            }
        }
        sick
    }

    /// Look again when a task without health checks will count as healthy.
    fn wake_when_settled(&self, live: &[&TaskState], plan: &mut Plan) {
        for t in live {
            if t.last == TaskStatus::Running
                && !self.checked(t)
                && !self.settled(t)
                && let Some(s) = t.started_at
            {
                plan.wake_at(s + self.i.healthy_after);
            }
        }
    }

    /// DAEMON: one PRIMARY task on each eligible instance, nothing elsewhere. The desired
    /// count and whether the service is steady now.
    fn daemon_tasks(
        &self,
        live: &[&TaskState],
        primary_failed: bool,
        throttle: Option<f64>,
        plan: &mut Plan,
    ) -> (i64, bool) {
        let i = self.i;
        let eligible: HashSet<&str> = i.daemon_instances.iter().map(String::as_str).collect();
        let desired = if self.active {
            eligible.len() as i64
        } else {
            0
        };
        let mut has_primary: HashSet<&str> = HashSet::new();
        for t in live {
            let inst = t.instance.as_deref();
            let keep = self.active
                && self.is_primary(t)
                && inst.is_some_and(|x| eligible.contains(x))
                && inst.is_some_and(|x| has_primary.insert(x));
            if !keep {
                plan.stop.push((t.id.clone(), self.scale_reason.clone()));
            }
        }
        if self.active && !primary_failed {
            for x in i.daemon_instances {
                let busy = i
                    .tasks
                    .iter()
                    .any(|t| t.unfinished() && t.instance.as_deref() == Some(x.as_str()));
                if !busy {
                    plan.launch_on.push(x.clone());
                }
            }
        }
        if !plan.launch_on.is_empty()
            && let Some(u) = throttle
        {
            plan.launch_on.clear();
            plan.wake_at(u);
        }
        let stopping = plan.stopping();
        let good = live
            .iter()
            .filter(|t| !stopping.contains(t.id.as_str()) && self.is_primary(t) && self.healthy(t))
            .count() as i64;
        let unfinished = i.tasks.iter().filter(|t| t.unfinished()).count() as i64;
        let steady = plan.launch_on.is_empty()
            && plan.stop.is_empty()
            && good == desired
            && unfinished == desired;
        (desired, steady)
    }

    /// REPLICA: scale the PRIMARY deployment to the desired count within `maximumPercent`;
    /// stop older deployments' tasks and those on DRAINING instances while
    /// `minimumHealthyPercent` holds. The desired count and whether the service is steady now.
    fn replica_tasks(
        &self,
        live: &[&TaskState],
        sick: &HashSet<&str>,
        primary_failed: bool,
        throttle: Option<f64>,
        plan: &mut Plan,
    ) -> (i64, bool) {
        let i = self.i;
        let desired = if self.active {
            i64::from(i.service.desired_count.unwrap_or(0))
        } else {
            0
        };
        let (minp, maxp) = percents(i.service);
        let on_draining =
            |t: &TaskState| t.instance.as_ref().is_some_and(|x| i.draining.contains(x));
        let (mut keep, mut others): (Vec<&TaskState>, Vec<&TaskState>) = live
            .iter()
            .copied()
            .partition(|t| self.is_primary(t) && !on_draining(t));
        // Scale in: the least useful first (not healthy, not running, then the newest).
        if keep.len() as i64 > desired {
            keep.sort_by(|a, b| {
                (self.healthy(a), a.last == TaskStatus::Running)
                    .cmp(&(self.healthy(b), b.last == TaskStatus::Running))
                    .then(
                        b.started_at
                            .unwrap_or(f64::MAX)
                            .total_cmp(&a.started_at.unwrap_or(f64::MAX)),
                    )
            });
            let extra = keep.len() - desired as usize;
            for t in keep.drain(..extra) {
                plan.stop.push((t.id.clone(), self.scale_reason.clone()));
            }
        }
        // maximumPercent bounds the tasks RUNNING or PENDING, as ECS counts them: those
        // asked to stop count until they have.
        let winding_down = i
            .tasks
            .iter()
            .filter(|t| {
                (!t.live || sick.contains(t.id.as_str()))
                    && (t.last.is_pending() || t.last == TaskStatus::Running)
            })
            .count();
        let total = (keep.len() + others.len() + winding_down) as i64;
        let max_total = desired * maxp / 100;
        let room = (max_total - total).max(0);
        let want = (desired - keep.len() as i64).max(0);
        plan.launch = if primary_failed { 0 } else { want.min(room) } as usize;
        if plan.launch > 0
            && let Some(u) = throttle
        {
            plan.launch = 0;
            plan.wake_at(u);
        }
        // Older deployments and draining instances: stop while enough healthy ones stay.
        let min_healthy = (desired * minp + 99) / 100;
        let mut healthy_total = keep
            .iter()
            .chain(others.iter())
            .filter(|t| self.healthy(t))
            .count() as i64;
        others.sort_by_key(|t| self.healthy(t));
        let mut stopped_other = false;
        for t in &others {
            if !self.healthy(t) {
                plan.stop.push((t.id.clone(), self.scale_reason.clone()));
                stopped_other = true;
            } else if healthy_total > min_healthy {
                plan.stop.push((t.id.clone(), self.scale_reason.clone()));
                healthy_total -= 1;
                stopped_other = true;
            }
        }
        if want > 0 && room == 0 && !stopped_other && !others.is_empty() && !primary_failed {
            let in_flight = i.tasks.iter().any(|t| !t.live && t.unfinished());
            if !in_flight {
                plan.events.push(format!(
                    "(service {}) was unable to stop or start tasks during a deployment because of the service deployment configuration. Update the minimumHealthyPercent or maximumPercent value and try again.",
                    self.name
                ));
            }
        }
        let stopping = plan.stopping();
        let good = keep
            .iter()
            .filter(|t| !stopping.contains(t.id.as_str()) && self.healthy(t))
            .count() as i64;
        let unfinished = i.tasks.iter().filter(|t| t.unfinished()).count() as i64;
        let steady =
            plan.launch == 0 && plan.stop.is_empty() && good == desired && unfinished == desired;
        (desired, steady)
    }

    /// Throttling: say so once per episode (until a task runs again).
    fn note_throttling(&self, failing: bool, ctl: &mut ServiceControl, plan: &mut Plan) {
        if failing && !ctl.throttled {
            ctl.throttled = true;
            plan.events.push(format!(
                "(service {}) is unable to consistently start tasks successfully. For more information, see the Troubleshooting section of the Amazon ECS Developer Guide.",
                self.name
            ));
        } else if !failing && ctl.throttled {
            ctl.throttled = false;
        }
    }

    /// Older deployments leave the list once none of their tasks is left; whether any left.
    fn drop_finished_deployments(&self, deps: &mut Vec<Deployment>) -> bool {
        let before = deps.len();
        deps.retain(|x| {
            x.id.as_deref() == Some(self.primary_id.as_str())
                || self
                    .i
                    .tasks
                    .iter()
                    .any(|t| t.unfinished() && t.deployment.is_some() && t.deployment == x.id)
        });
        deps.len() != before
    }

    /// The circuit breaker: enough PRIMARY tasks failed in a row fail the deployment, and
    /// with rollback bring the last completed one back as a new PRIMARY. Whether it tripped
    /// (then the launches and stops decided so far, but health-check stops, are dropped: the
    /// next look starts from the new state).
    fn circuit_breaker(
        &self,
        desired: i64,
        deps: &mut Vec<Deployment>,
        d: &mut Decision,
        plan: &mut Plan,
    ) -> bool {
        let i = self.i;
        let cb = i
            .service
            .deployment_configuration
            .as_ref()
            .and_then(|c| c.deployment_circuit_breaker.as_ref());
        let Some(cb) = cb else { return false };
        let in_progress = rollout_state(&deps[0]) == Some(RolloutState::InProgress);
        if cb.enable != Some(true) || !in_progress || !self.active {
            return false;
        }
        let (streak, _) = failure_streak(i.tasks.iter().filter(|t| self.is_primary(t)));
        if streak < failure_threshold(desired) {
            return false;
        }
        let (name, primary_id, now) = (&self.name, &self.primary_id, i.now);
        deps[0].rollout_state = Some(RolloutState::Failed.into());
        deps[0].rollout_state_reason =
            Some("ECS deployment circuit breaker: tasks failed to start.".into());
        deps[0].updated_at = Some(now);
        plan.events.push(format!(
            "(service {name}) (deployment {primary_id}) deployment failed: tasks failed to start."
        ));
        if cb.rollback == Some(true)
            && let Some(prev) = d.ctl.last_completed.clone()
        {
            let prev_id = prev.id.clone().unwrap_or_default();
            let mut back = prev;
            let id = new_deployment_id();
            back.id = Some(id.clone());
            back.status = Some(DeploymentStatus::Primary.into());
            back.created_at = Some(now);
            back.updated_at = Some(now);
            back.rollout_state = Some(RolloutState::InProgress.into());
            back.rollout_state_reason = Some(format!(
                "ECS deployment circuit breaker: rolling back to deploymentId {prev_id}."
            ));
            deps[0].status = Some(DeploymentStatus::Active.into());
            d.service.task_definition = back.task_definition.clone();
            deps.insert(0, back);
            plan.events.push(format!(
                "(service {name}) (deployment {id}) deployment rolling back to (deployment {prev_id})."
            ));
        }
        d.ctl.steady = false;
        plan.launch = 0;
        plan.launch_on.clear();
        plan.stop
            .retain(|(_, r)| r.starts_with(HEALTH_CHECK_FAILED));
        true
    }

    /// Completion and steady state: a lone deployment that is steady completes (and is
    /// remembered for rollbacks); the service says once that it reached a steady state.
    fn settle(
        &self,
        steady_now: bool,
        changed: bool,
        deps: &mut [Deployment],
        ctl: &mut ServiceControl,
        plan: &mut Plan,
    ) {
        let (name, primary_id) = (&self.name, &self.primary_id);
        if steady_now && deps.len() == 1 && !changed {
            if rollout_state(&deps[0]) == Some(RolloutState::InProgress) {
                deps[0].rollout_state = Some(RolloutState::Completed.into());
                deps[0].rollout_state_reason =
                    Some(format!("ECS deployment {primary_id} completed."));
                deps[0].updated_at = Some(self.i.now);
                plan.events.push(format!(
                    "(service {name}) (deployment {primary_id}) deployment completed."
                ));
                let mut done = deps[0].clone();
                done.running_count = None;
                done.pending_count = None;
                done.failed_tasks = None;
                done.desired_count = None;
                ctl.last_completed = Some(done);
            }
            if !ctl.steady {
                ctl.steady = true;
                plan.events
                    .push(format!("(service {name}) has reached a steady state."));
            }
        } else if ctl.steady && !(steady_now && deps.len() == 1) {
            ctl.steady = false;
        }
    }

    /// A deleted (DRAINING) service becomes INACTIVE once its last task has stopped.
    fn end_if_deleted(&self, deps: &mut [Deployment], svc: &mut Service) {
        if self.status != ServiceStatus::Draining || self.i.tasks.iter().any(|t| t.unfinished()) {
            return;
        }
        svc.status = Some(ServiceStatus::Inactive.into());
        for x in deps.iter_mut() {
            x.status = Some(
                if x.id.as_deref() == Some(self.primary_id.as_str()) {
                    DeploymentStatus::Primary
                } else {
                    DeploymentStatus::Inactive
                }
                .into(),
            );
        }
    }
}

/// A stored deployment for a new rollout of `svc`'s current configuration.
pub fn new_deployment(svc: &Service, now: f64) -> Deployment {
    let id = new_deployment_id();
    Deployment {
        rollout_state_reason: Some(format!("ECS deployment {id} in progress.")),
        id: Some(id),
        status: Some(DeploymentStatus::Primary.into()),
        task_definition: svc.task_definition.clone(),
        created_at: Some(now),
        updated_at: Some(now),
        launch_type: svc.launch_type.clone(),
        capacity_provider_strategy: svc.capacity_provider_strategy.clone(),
        platform_version: svc.platform_version.clone(),
        network_configuration: svc.network_configuration.clone(),
        rollout_state: Some(RolloutState::InProgress.into()),
        ..Default::default()
    }
}
