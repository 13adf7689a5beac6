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

/// Decide what to do for one service. See the module docs for the rules.
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
    let active = status == ServiceStatus::Active;
    let name = i.service.service_name.clone().unwrap_or_default();
    let svc = &mut d.service;
    let mut deps = svc.deployments.take().unwrap_or_default();
    if deps.is_empty() {
        svc.deployments = Some(deps);
        return d;
    }
    let primary_id = deps[0].id.clone().unwrap_or_default();
    let daemon = is_daemon(i.service);
    let (minp, maxp) = percents(i.service);
    let grace = i.service.health_check_grace_period_seconds.unwrap_or(0) as f64;
    let checked = |t: &TaskState| {
        t.deployment
            .as_ref()
            .and_then(|x| i.health_checked.get(x))
            .copied()
            .unwrap_or(false)
    };
    // A task without health checks is trusted once it has run a while; until then the
    // decision looks again when it will have.
    let settled = |t: &TaskState| t.started_at.is_some_and(|s| s + i.healthy_after <= i.now);
    let healthy = |t: &TaskState| {
        t.last == TaskStatus::Running
            && if checked(t) {
                t.health == HealthStatus::Healthy
            } else {
                settled(t)
            }
    };
    let is_primary = |t: &TaskState| t.deployment.as_deref() == Some(primary_id.as_str());
    let mut events: Vec<String> = Vec::new();
    let mut stop: Vec<(String, String)> = Vec::new();
    let mut wake: Option<f64> = None;
    let mut wake_at = |at: f64| wake = Some(wake.map_or(at, |w: f64| w.min(at)));

    // Failed health checks (after the grace period).
    let mut sick: HashSet<&str> = HashSet::new();
    for t in i.tasks.iter().filter(|t| t.live) {
        if t.last == TaskStatus::Running && t.health == HealthStatus::Unhealthy {
            let since = t.started_at.unwrap_or(i.now);
            if since + grace <= i.now {
                stop.push((t.id.clone(), format!("{HEALTH_CHECK_FAILED}.")));
                events.push(format!(
                    "(service {name}) (task {}) failed container health checks.",
                    t.id
                ));
                sick.insert(t.id.as_str());
            } else {
                wake_at(since + grace);
            }
        }
    }
    let live: Vec<&TaskState> = i
        .tasks
        .iter()
        .filter(|t| t.live && !sick.contains(t.id.as_str()))
        .collect();
    for t in &live {
        if t.last == TaskStatus::Running
            && !checked(t)
            && !settled(t)
            && let Some(s) = t.started_at
        {
            wake_at(s + i.healthy_after);
        }
    }
    let scale_reason = format!("Scaling activity initiated by (deployment {primary_id})");
    let primary_failed = rollout_state(&deps[0]) == Some(RolloutState::Failed);
    // Failures count against the deployment that started them: a new deployment (an update,
    // a rollback) starts unthrottled.
    let failing = throttled_until(i.tasks.iter().filter(|t| is_primary(t)));
    let throttle = failing.filter(|u| *u > i.now);
    let mut launch = 0usize;
    let mut launch_on: Vec<String> = Vec::new();
    let desired: i64;
    let steady_now: bool;

    if daemon {
        let eligible: HashSet<&str> = i.daemon_instances.iter().map(String::as_str).collect();
        desired = if active { eligible.len() as i64 } else { 0 };
        let mut has_primary: HashSet<&str> = HashSet::new();
        for t in &live {
            let inst = t.instance.as_deref();
            let keep = active
                && is_primary(t)
                && inst.is_some_and(|x| eligible.contains(x))
                && inst.is_some_and(|x| has_primary.insert(x));
            if !keep {
                stop.push((t.id.clone(), scale_reason.clone()));
            }
        }
        if active && !primary_failed {
            for x in i.daemon_instances {
                let busy = i
                    .tasks
                    .iter()
                    .any(|t| t.unfinished() && t.instance.as_deref() == Some(x.as_str()));
                if !busy {
                    launch_on.push(x.clone());
                }
            }
        }
        if !launch_on.is_empty()
            && let Some(u) = throttle
        {
            launch_on.clear();
            wake_at(u);
        }
        let stopping: HashSet<&str> = stop.iter().map(|(id, _)| id.as_str()).collect();
        let good = live
            .iter()
            .filter(|t| !stopping.contains(t.id.as_str()) && is_primary(t) && healthy(t))
            .count() as i64;
        let unfinished = i.tasks.iter().filter(|t| t.unfinished()).count() as i64;
        steady_now =
            launch_on.is_empty() && stop.is_empty() && good == desired && unfinished == desired;
    } else {
        desired = if active {
            i64::from(i.service.desired_count.unwrap_or(0))
        } else {
            0
        };
        let on_draining =
            |t: &TaskState| t.instance.as_ref().is_some_and(|x| i.draining.contains(x));
        let (mut keep, mut others): (Vec<&TaskState>, Vec<&TaskState>) = live
            .iter()
            .copied()
            .partition(|t| is_primary(t) && !on_draining(t));
        // Scale in: the least useful first (not healthy, not running, then the newest).
        if keep.len() as i64 > desired {
            keep.sort_by(|a, b| {
                (healthy(a), a.last == TaskStatus::Running)
                    .cmp(&(healthy(b), b.last == TaskStatus::Running))
                    .then(
                        b.started_at
                            .unwrap_or(f64::MAX)
                            .total_cmp(&a.started_at.unwrap_or(f64::MAX)),
                    )
            });
            let extra = keep.len() - desired as usize;
            for t in keep.drain(..extra) {
                stop.push((t.id.clone(), scale_reason.clone()));
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
        launch = if primary_failed { 0 } else { want.min(room) } as usize;
        if launch > 0
            && let Some(u) = throttle
        {
            launch = 0;
            wake_at(u);
        }
        // Older deployments and draining instances: stop while enough healthy ones stay.
        let min_healthy = (desired * minp + 99) / 100;
        let mut healthy_total = keep
            .iter()
            .chain(others.iter())
            .filter(|t| healthy(t))
            .count() as i64;
        others.sort_by_key(|t| healthy(t));
        let mut stopped_other = false;
        for t in &others {
            if !healthy(t) {
                stop.push((t.id.clone(), scale_reason.clone()));
                stopped_other = true;
            } else if healthy_total > min_healthy {
                stop.push((t.id.clone(), scale_reason.clone()));
                healthy_total -= 1;
                stopped_other = true;
            }
        }
        if want > 0 && room == 0 && !stopped_other && !others.is_empty() && !primary_failed {
            let in_flight = i.tasks.iter().any(|t| !t.live && t.unfinished());
            if !in_flight {
                events.push(format!(
                    "(service {name}) was unable to stop or start tasks during a deployment because of the service deployment configuration. Update the minimumHealthyPercent or maximumPercent value and try again."
                ));
            }
        }
        let stopping: HashSet<&str> = stop.iter().map(|(id, _)| id.as_str()).collect();
        let good = keep
            .iter()
            .filter(|t| !stopping.contains(t.id.as_str()) && healthy(t))
            .count() as i64;
        let unfinished = i.tasks.iter().filter(|t| t.unfinished()).count() as i64;
        steady_now = launch == 0 && stop.is_empty() && good == desired && unfinished == desired;
    }

    // Throttling: say so once per episode (until a task runs again).
    if failing.is_some() && !d.ctl.throttled {
        d.ctl.throttled = true;
        events.push(format!(
            "(service {name}) is unable to consistently start tasks successfully. For more information, see the Troubleshooting section of the Amazon ECS Developer Guide."
        ));
    } else if failing.is_none() && d.ctl.throttled {
        d.ctl.throttled = false;
    }

    // Older deployments leave the list once none of their tasks is left.
    let before = deps.len();
    deps.retain(|x| {
        x.id.as_deref() == Some(primary_id.as_str())
            || i.tasks
                .iter()
                .any(|t| t.unfinished() && t.deployment.is_some() && t.deployment == x.id)
    });
    let mut changed = deps.len() != before;

    // The circuit breaker.
    let cb = i
        .service
        .deployment_configuration
        .as_ref()
        .and_then(|c| c.deployment_circuit_breaker.as_ref());
    let in_progress = rollout_state(&deps[0]) == Some(RolloutState::InProgress);
    if let Some(cb) = cb
        && cb.enable == Some(true)
        && in_progress
        && active
    {
        let (streak, _) = failure_streak(i.tasks.iter().filter(|t| is_primary(t)));
        if streak >= failure_threshold(desired) {
            let now = i.now;
            deps[0].rollout_state = Some(RolloutState::Failed.into());
            deps[0].rollout_state_reason =
                Some("ECS deployment circuit breaker: tasks failed to start.".into());
            deps[0].updated_at = Some(now);
            events.push(format!(
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
                svc.task_definition = back.task_definition.clone();
                deps.insert(0, back);
                events.push(format!(
                    "(service {name}) (deployment {id}) deployment rolling back to (deployment {prev_id})."
                ));
            }
            d.ctl.steady = false;
            // Start afresh from the new state on the next look.
            launch = 0;
            launch_on.clear();
            stop.retain(|(_, r)| r.starts_with(HEALTH_CHECK_FAILED));
            changed = true;
        }
    }

    // Completion and steady state.
    if steady_now && deps.len() == 1 && !changed {
        if rollout_state(&deps[0]) == Some(RolloutState::InProgress) {
            deps[0].rollout_state = Some(RolloutState::Completed.into());
            deps[0].rollout_state_reason = Some(format!("ECS deployment {primary_id} completed."));
            deps[0].updated_at = Some(i.now);
            events.push(format!(
                "(service {name}) (deployment {primary_id}) deployment completed."
            ));
            let mut done = deps[0].clone();
            done.running_count = None;
            done.pending_count = None;
            done.failed_tasks = None;
            done.desired_count = None;
            d.ctl.last_completed = Some(done);
        }
        if !d.ctl.steady {
            d.ctl.steady = true;
            events.push(format!("(service {name}) has reached a steady state."));
        }
    } else if d.ctl.steady && !(steady_now && deps.len() == 1) {
        d.ctl.steady = false;
    }

    // A deleted service becomes INACTIVE once its last task has stopped.
    if status == ServiceStatus::Draining && !i.tasks.iter().any(|t| t.unfinished()) {
        svc.status = Some(ServiceStatus::Inactive.into());
        for x in deps.iter_mut() {
            x.status = Some(
                if x.id.as_deref() == Some(primary_id.as_str()) {
                    DeploymentStatus::Primary
                } else {
                    DeploymentStatus::Inactive
                }
                .into(),
            );
        }
    }
    if daemon {
        svc.desired_count = Some(desired as i32);
    }
    svc.deployments = Some(deps);
    for e in events {
        if e.contains("was unable to stop or start tasks") {
            push_event_once(svc, i.now, e);
        } else {
            push_event(svc, i.now, e);
        }
    }
    d.changed = d.service != *i.service || d.ctl != *i.ctl;
    d.launch = launch;
    d.launch_on = launch_on;
    d.stop = stop;
    if let Some(w) = wake {
        d.wake(w);
    }
    d
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
