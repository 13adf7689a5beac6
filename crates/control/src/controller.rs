//! The service controller: keeps every service's tasks as [`crate::rollout`] decides. It is
//! woken by the view (a task of the service, the service itself or an instance of its cluster
//! changed) and by its own timers (a grace period or a throttle ending, a placement to retry)
//! — no polling. Each look gathers the service's picture from the view, decides, and commits
//! the new tasks, the stops and the service record in one transaction guarded by the
//! revisions it read: a concurrent UpdateService or task report makes it look again, never
//! act twice. A Fargate service's new tasks are not placed on instances: they are created
//! PROVISIONING, each with the capacity provider its strategy gives it ([`crate::fargate`]).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Weak;
use std::time::Duration;

use berth_model::status::{DesiredStatus, stop_code};
use berth_model::wire::ecs::{Failure, Service};
use berth_scheduler as sched;
use berth_store::{Compare, Op, Txn};
use futures::StreamExt;

use crate::records::{ServiceRecord, TaskRecord};
use crate::rollout::{self, Inputs, TaskState};
use crate::tasks::{Launch, create_ops, finish};
use crate::view::{TaskSummary, ViewData};
use crate::{Control, Result, keys};

/// Services looked at concurrently.
const PARALLEL: usize = 16;
/// How soon a service whose tasks could not all be placed tries again (capacity freed by
/// other services' tasks does not wake it).
const PLACEMENT_RETRY_SECS: f64 = 5.0;
/// Looks at one service before giving up on a conflict storm (it is woken again anyway).
const ATTEMPTS: usize = 8;

type Key = (String, String);

/// A task of a service as the decision sees it.
pub(crate) fn task_state(id: &str, s: &TaskSummary) -> TaskState {
    TaskState {
        id: id.to_string(),
        deployment: s.started_by.clone(),
        live: s.desired_status == DesiredStatus::Running && s.last_status.is_unfinished(),
        last: s.last_status,
        instance: s.instance_id.clone(),
        health: s.health,
        started_at: s.started_at,
        stopped_at: s.stopped_at,
        failed: s.failed,
    }
}

/// The tasks of one service, from the view.
pub(crate) fn service_tasks(d: &ViewData, cluster: &str, name: &str) -> Vec<TaskState> {
    let Some(ids) = d
        .service_tasks()
        .get(&(cluster.to_string(), name.to_string()))
    else {
        return vec![];
    };
    let Some(m) = d.tasks().get(cluster) else {
        return vec![];
    };
    ids.iter()
        .filter_map(|id| Some(task_state(id, &m.get(id)?.summary)))
        .collect()
}

/// The instances a DAEMON service should run on: ACTIVE, matching its constraints.
pub(crate) fn daemon_instances(
    d: &ViewData,
    cluster: &str,
    constraints: &[sched::PlacementConstraint],
) -> Vec<String> {
    let Some(sc) = d.sched().get(cluster) else {
        return vec![];
    };
    let mut v: Vec<String> = sc
        .instances
        .iter()
        .filter(|i| i.status == "ACTIVE")
        .filter(|i| {
            constraints.iter().all(|c| match c {
                sched::PlacementConstraint::MemberOf(e) => e.matches(i),
                sched::PlacementConstraint::DistinctInstance => true,
            })
        })
        .map(|i| i.id.clone())
        .collect();
    v.sort();
    v
}

/// What ECS says when a service's task cannot be placed.
fn unplaced_message(name: &str, failures: &[Failure]) -> String {
    let head = format!(
        "(service {name}) was unable to place a task because no container instance met all of its requirements."
    );
    let Some(f) = failures.first() else {
        return head;
    };
    let reason = f.reason.as_deref().unwrap_or_default();
    let inst = f
        .arn
        .as_deref()
        .and_then(crate::view::instance_id_of)
        .unwrap_or_default();
    let why = match reason {
        sched::REASON_CPU => format!(
            "The closest matching (container-instance {inst}) has insufficient CPU units available."
        ),
        sched::REASON_MEMORY => format!(
            "The closest matching (container-instance {inst}) has insufficient memory available."
        ),
        sched::REASON_PORTS => format!(
            "The closest matching (container-instance {inst}) is already using a port required by your task."
        ),
        sched::REASON_GPU => format!(
            "The closest matching (container-instance {inst}) has insufficient GPUs available."
        ),
        sched::REASON_AGENT => {
            format!("The closest matching (container-instance {inst}) encountered error \"AGENT\".")
        }
        other => format!("Reason: {other}"),
    };
    format!("{head} {why} For more information, see the Troubleshooting section.")
}

/// The strategies a service places with (ECS's default: spread over zones, then instances).
pub(crate) fn service_strategies(svc: &Service) -> Result<Vec<sched::PlacementStrategy>> {
    let s = crate::tasks::check_strategies(svc.placement_strategy.as_deref().unwrap_or_default())?;
    Ok(if s.is_empty() {
        vec![
            sched::PlacementStrategy::Spread("attribute:ecs.availability-zone".into()),
            sched::PlacementStrategy::Spread("instanceId".into()),
        ]
    } else {
        s
    })
}

impl Control {
    /// Start the service controller; it ends with the control plane.
    pub(crate) fn spawn_services(weak: Weak<Control>) {
        tokio::spawn(async move {
            let Some(notify) = weak.upgrade().map(|c| c.view.data.read().changed().clone()) else {
                return;
            };
            // (when, service): looks promised for later.
            let mut timers: BTreeSet<(u64, Key)> = BTreeSet::new();
            loop {
                let Some(c) = weak.upgrade() else { return };
                let at_ms = c.now().as_millis();
                let mut batch: HashSet<Key> =
                    c.view.data.write().take_dirty().into_iter().collect();
                while let Some(first) = timers.first().cloned() {
                    if first.0 > at_ms {
                        break;
                    }
                    timers.pop_first();
                    batch.insert(first.1);
                }
                if batch.is_empty() {
                    let sleep = timers
                        .first()
                        .map(|(t, _)| Duration::from_millis(t.saturating_sub(at_ms)))
                        .unwrap_or(Duration::from_secs(3600));
                    drop(c);
                    tokio::select! {
                        _ = notify.notified() => {}
                        _ = tokio::time::sleep(sleep) => {}
                    }
                    continue;
                }
                let wakes: Vec<(Key, Option<f64>)> = futures::stream::iter(batch)
                    .map(|k| {
                        let c = c.clone();
                        async move {
                            let w = match c.reconcile_service(&k.0, &k.1).await {
                                Ok(w) => w,
                                Err(e) => {
                                    tracing::warn!(cluster = %k.0, service = %k.1, "service controller: {e}");
                                    Some(c.now().as_secs_f64() + 1.0)
                                }
                            };
                            (k, w)
                        }
                    })
                    .buffer_unordered(PARALLEL)
                    .collect()
                    .await;
                for (k, w) in wakes {
                    if let Some(w) = w {
                        timers.insert(((w * 1000.0) as u64 + 1, k));
                    }
                }
            }
        });
    }

    /// Look at one service: decide and commit. Returns when to look again regardless.
    pub(crate) async fn reconcile_service(&self, cluster: &str, name: &str) -> Result<Option<f64>> {
        for _ in 0..ATTEMPTS {
            if let Some(w) = self.reconcile_once(cluster, name).await? {
                return Ok(w);
            }
        }
        Ok(Some(self.now().as_secs_f64() + 0.1))
    }

    /// One attempt; `None` when a conflicting write came first.
    async fn reconcile_once(&self, cluster: &str, name: &str) -> Result<Option<Option<f64>>> {
        let at = self.now().as_secs_f64();
        // Gather.
        let (entry, tasks, draining, daemon, hc, primary_td) = {
            let d = self.view.data.read();
            let Some(entry) = d.services().get(cluster).and_then(|m| m.get(name)).cloned() else {
                return Ok(Some(None));
            };
            let svc = &entry.value.service;
            let tasks = service_tasks(&d, cluster, name);
            let draining: HashSet<String> = d
                .instances()
                .get(cluster)
                .into_iter()
                .flatten()
                .filter(|(_, e)| e.value.status.as_deref() == Some("DRAINING"))
                .map(|(id, _)| id.clone())
                .collect();
            let primary_td = svc
                .task_definition
                .as_deref()
                .and_then(|a| self.find_task_def(&d, a).ok())
                .map(|e| e.value);
            let daemon = if rollout::is_daemon(svc) {
                let cons = match &primary_td {
                    Some(td) => crate::tasks::check_constraints(
                        svc.placement_constraints.as_deref().unwrap_or_default(),
                        &td.def,
                    )
                    .unwrap_or_default(),
                    None => vec![],
                };
                daemon_instances(&d, cluster, &cons)
            } else {
                vec![]
            };
            let mut hc = HashMap::new();
            for dep in svc.deployments.iter().flatten() {
                let checked = dep
                    .task_definition
                    .as_deref()
                    .and_then(|a| self.find_task_def(&d, a).ok())
                    .is_some_and(|td| {
                        td.value
                            .def
                            .container_definitions
                            .iter()
                            .flatten()
                            .any(|c| c.health_check.is_some() && c.essential != Some(false))
                    });
                hc.insert(dep.id.clone().unwrap_or_default(), checked);
            }
            (entry, tasks, draining, daemon, hc, primary_td)
        };
        let rec = &entry.value;
        let dec = rollout::decide(&Inputs {
            now: at,
            service: &rec.service,
            ctl: &rec.ctl,
            tasks: &tasks,
            draining: &draining,
            daemon_instances: &daemon,
            health_checked: &hc,
            healthy_after: self.healthy_after.as_secs_f64(),
        });
        let mut wake = dec.wake_at;
        if dec.is_idle() {
            return Ok(Some(wake));
        }
        let mut svc = dec.service;
        let mut ctl = dec.ctl;
        let mut compare = vec![Compare::mod_revision_is(
            keys::service(cluster, name),
            entry.rev,
        )];
        let mut ops = Vec::new();

        // Launches.
        let mut planned = None;
        if (dec.launch > 0 || !dec.launch_on.is_empty())
            && let Some(td) = primary_td
        {
            let dep = svc
                .deployments
                .as_deref()
                .and_then(|d| d.first())
                .cloned()
                .unwrap_or_default();
            let mut l = Launch::of_definition(cluster, td.clone(), format!("service:{name}"));
            l.started_by = dep.id.clone();
            l.launch_type = svc.launch_type.clone().unwrap_or_else(|| "EC2".into());
            l.network = dep.network_configuration.clone();
            l.enable_execute_command = svc.enable_execute_command.unwrap_or(false);
            l.tags = match svc.propagate_tags.as_deref() {
                Some("SERVICE") => svc.tags.clone().unwrap_or_default(),
                Some("TASK_DEFINITION") => td.tags.clone(),
                _ => vec![],
            };
            let strategy = svc.capacity_provider_strategy.clone().unwrap_or_default();
            let fargate = l.launch_type == "FARGATE" || !strategy.is_empty();
            let p = if fargate {
                // Fargate tasks are not placed on container instances: they are created
                // PROVISIONING, each with the provider the strategy gives it after the
                // service's live tasks, and wait for platform capacity.
                l.launch_type = "FARGATE".into();
                l.platform_version =
                    berth_model::fargate::platform_version(svc.platform_version.as_deref())
                        .ok()
                        .map(str::to_string);
                let providers = if strategy.is_empty() {
                    vec![]
                } else {
                    let existing = self.live_tasks_by_provider(cluster, &tasks);
                    crate::fargate::providers_for(&strategy, &existing, dec.launch)
                };
                let records: Vec<TaskRecord> = (0..dec.launch)
                    .map(|i| self.new_fargate_task(&l, providers.get(i).map(String::as_str)))
                    .collect();
                self.plan_unplaced(&l, records)
            } else if dec.launch_on.is_empty() {
                let strategies = service_strategies(&svc)?;
                let constraints = crate::tasks::check_constraints(
                    svc.placement_constraints.as_deref().unwrap_or_default(),
                    &td.def,
                )?;
                self.plan_placement(&l, dec.launch, &strategies, &constraints)
            } else {
                self.plan_on_instances(&l, &dec.launch_on)
            };
            let wanted = dec.launch.max(dec.launch_on.len());
            if !p.records.is_empty() {
                let ids: Vec<String> = p
                    .records
                    .iter()
                    .filter_map(|r| r.task.task_arn.as_deref()?.rsplit('/').next())
                    .map(|id| format!("(task {id})"))
                    .collect();
                rollout::push_event(
                    &mut svc,
                    at,
                    format!(
                        "(service {name}) has started {} tasks: {}.",
                        ids.len(),
                        ids.join(" ")
                    ),
                );
                let (c, o) = create_ops(cluster, &p.records)?;
                compare.extend(c);
                ops.extend(o);
            }
            if p.records.len() < wanted {
                if !ctl.unplaced {
                    ctl.unplaced = true;
                    rollout::push_event(&mut svc, at, unplaced_message(name, &p.failures));
                }
                let w = at + PLACEMENT_RETRY_SECS;
                wake = Some(wake.map_or(w, |x| x.min(w)));
            } else {
                ctl.unplaced = false;
            }
            planned = Some(p);
        }

        // Stops.
        if !dec.stop.is_empty() {
            let d = self.view.data.read();
            let m = d.tasks().get(cluster);
            let mut ids = Vec::new();
            for (id, reason) in &dec.stop {
                let Some(e) = m.and_then(|m| m.get(id)) else {
                    continue;
                };
                let mut r: TaskRecord = e.record();
                stop_by_scheduler(&mut r, reason, at);
                let key = keys::task(cluster, id);
                compare.push(Compare::mod_revision_is(key.clone(), e.rev));
                ops.push(Op::put(key, serde_json::to_vec(&r)?));
                ids.push(format!("(task {id})"));
            }
            if !ids.is_empty() {
                rollout::push_event(
                    &mut svc,
                    at,
                    format!(
                        "(service {name}) has stopped {} running tasks: {}.",
                        ids.len(),
                        ids.join(" ")
                    ),
                );
            }
        }

        let rec = ServiceRecord { service: svc, ctl };
        if ops.is_empty() && rec == *entry.value {
            // Nothing placed, nothing stopped, nothing to say (a placement that still finds
            // no room): writing would only wake this controller again.
            return Ok(Some(wake));
        }
        ops.push(Op::put(
            keys::service(cluster, name),
            serde_json::to_vec(&rec)?,
        ));
        // The instances placed on must still be at the allocation revisions the plan saw
        // (written last: see crate::alloc).
        if let Some(p) = planned.as_mut() {
            let (c, o) = p.claims.guard().await;
            compare.extend(c);
            ops.extend(o);
        }
        let resp = self
            .commit(Txn {
                compare,
                success: ops,
                failure: vec![],
            })
            .await?;
        if let Some(p) = planned.as_mut() {
            p.claims.settle(resp.succeeded.then_some(resp.revision));
        }
        drop(planned);
        Ok(resp.succeeded.then_some(wake))
    }
}

impl Control {
    /// How many of a service's live tasks each capacity provider has.
    fn live_tasks_by_provider(
        &self,
        cluster: &str,
        tasks: &[TaskState],
    ) -> std::collections::HashMap<String, usize> {
        let d = self.view.data.read();
        let mut out = std::collections::HashMap::new();
        let Some(m) = d.tasks().get(cluster) else {
            return out;
        };
        for t in tasks.iter().filter(|t| t.live) {
            if let Some(p) = m
                .get(&t.id)
                .and_then(|e| e.record().task.capacity_provider_name)
            {
                *out.entry(p).or_insert(0) += 1;
            }
        }
        out
    }
}

/// Ask a task to stop on the service scheduler's behalf.
fn stop_by_scheduler(r: &mut TaskRecord, reason: &str, at: f64) {
    let t = &mut r.task;
    t.desired_status = Some(DesiredStatus::Stopped.into());
    t.stop_code = Some(stop_code::SERVICE_SCHEDULER_INITIATED.into());
    t.stopped_reason = Some(reason.chars().take(255).collect());
    t.stopping_at.get_or_insert(at);
    t.version = Some(t.version.unwrap_or(0) + 1);
    if t.container_instance_arn.is_none() {
        finish(t, at);
    }
}
