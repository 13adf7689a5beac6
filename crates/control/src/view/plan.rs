//! The scheduler's picture kept in the view (each cluster's instances with what they have
//! left, updated event by event) and the placement plans counted in it until their tasks
//! are applied ([`PlanGuard`]): the bookkeeping that lets placements run concurrently
//! without oversubscribing an instance.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use berth_model::wire::ecs::ContainerInstance;
use berth_store::Revision;

use super::task::{Phase, phase};
use super::{TaskSummary, Usage, View, ViewData};

/// The outcome a placement plan leaves for the next plan of this server on the same instance:
/// the instance's allocation revision after it (see [`crate::alloc`]).
pub(crate) type AllocTurn = tokio::sync::watch::Sender<Option<Revision>>;

/// A task planned on an instance: (plan id, task id, what it reserves).
pub(super) type PlannedTask = (u64, String, berth_scheduler::TaskRequirements);

/// The scheduler's picture of one cluster's instances.
#[derive(Default)]
pub struct SchedCluster {
    pub instances: Vec<berth_scheduler::Instance>,
    index: HashMap<String, usize>,
    /// Spread field → each instance's value, numbered; dropped when an instance joins,
    /// leaves or changes (tasks do not change it).
    spread: HashMap<String, Arc<berth_scheduler::SpreadValues>>,
}

impl SchedCluster {
    pub fn position(&self, id: &str) -> Option<usize> {
        self.index.get(id).copied()
    }

    /// The numbered values of a spread field over these instances.
    pub fn spread_values(&mut self, field: &str) -> Arc<berth_scheduler::SpreadValues> {
        if let Some(v) = self.spread.get(field) {
            return v.clone();
        }
        let v = Arc::new(berth_scheduler::SpreadValues::new(&self.instances, field));
        self.spread.insert(field.to_string(), v.clone());
        v
    }
}

/// A placement plan counted in the view's scheduler picture (planned, not yet committed and
/// applied). RunTask and StartTask plan under the view's write lock against the picture —
/// committed tasks and every plan in flight — record their plan, release the lock and commit
/// (a durable write, about a millisecond) while others plan: concurrent placements never
/// oversubscribe an instance, and their commits share the store's group commit. Each
/// planned task leaves the plan when the view applies its creation (in the same step that
/// counts the task), so nothing counts twice; the guard takes out whatever is left when it
/// drops (a commit that failed).
pub struct PlanGuard {
    pub(crate) view: Arc<View>,
    pub(crate) cluster: String,
    pub(crate) ids: Vec<String>,
    pub(crate) plan: u64,
}

impl Drop for PlanGuard {
    fn drop(&mut self) {
        self.view
            .data
            .write()
            .remove_plan(&self.cluster, &self.ids, self.plan);
    }
}

/// The scheduler's picture of one container instance: what it has left after `u`.
pub fn sched_instance(id: &str, ci: &ContainerInstance, u: &Usage) -> berth_scheduler::Instance {
    let mut inst = berth_scheduler::Instance {
        arn: ci.container_instance_arn.clone().unwrap_or_default(),
        id: id.to_string(),
        status: ci.status.clone().unwrap_or_default(),
        agent_connected: ci.agent_connected.unwrap_or(false),
        agent_version: ci
            .version_info
            .as_ref()
            .and_then(|v| v.agent_version.clone()),
        registered_at: ci.registered_at.unwrap_or(0.0) as i64,
        attributes: std::sync::Arc::new(
            ci.attributes
                .as_deref()
                .unwrap_or_default()
                .iter()
                .filter_map(|a| Some((a.name.clone()?, a.value.clone())))
                .collect(),
        ),
        ec2_instance_id: ci.ec2_instance_id.clone(),
        ..Default::default()
    };
    set_usage(&mut inst, ci, u);
    inst
}

/// The parts of the scheduler's picture that tasks change: what is left of the registered
/// resources after `u`.
pub(super) fn set_usage(inst: &mut berth_scheduler::Instance, ci: &ContainerInstance, u: &Usage) {
    let reg = ci.registered_resources.as_deref().unwrap_or_default();
    let get = |n: &str| {
        reg.iter()
            .find(|r| r.name.as_deref() == Some(n))
            .map(|r| r.integer_value.map(i64::from).or(r.long_value).unwrap_or(0))
            .unwrap_or(0)
    };
    let set = |n: &str| -> Vec<u16> {
        reg.iter()
            .find(|r| r.name.as_deref() == Some(n))
            .and_then(|r| r.string_set_value.as_ref())
            .map(|v| v.iter().filter_map(|p| p.parse().ok()).collect())
            .unwrap_or_default()
    };
    let mut ports_tcp: BTreeSet<u16> = set("PORTS").into_iter().collect();
    ports_tcp.extend(u.ports_tcp.iter().copied());
    let mut ports_udp: BTreeSet<u16> = set("PORTS_UDP").into_iter().collect();
    ports_udp.extend(u.ports_udp.iter().copied());
    inst.cpu = get("CPU") - u.cpu;
    inst.memory = get("MEMORY") - u.memory;
    inst.gpus = get("GPU") - u.gpus;
    inst.used_ports_tcp = ports_tcp;
    inst.used_ports_udp = ports_udp;
    inst.task_groups = u.groups.clone();
    inst.running_tasks_count = u.running + u.pending;
}

/// What a task holds in the scheduler's picture of its instance (`None`: nothing).
#[derive(PartialEq)]
pub(super) struct Footprint<'a> {
    /// Counted in the instance's running tasks (PENDING or RUNNING), not only holding.
    counted: bool,
    cpu: i64,
    memory: i64,
    gpus: i64,
    ports_tcp: &'a [u16],
    ports_udp: &'a [u16],
    group: Option<&'a str>,
}

impl<'a> Footprint<'a> {
    pub(super) fn of_plan(r: &'a berth_scheduler::TaskRequirements) -> Footprint<'a> {
        Footprint {
            counted: true,
            cpu: r.cpu,
            memory: r.memory,
            gpus: r.gpus,
            ports_tcp: &r.ports_tcp,
            ports_udp: &r.ports_udp,
            group: Some(&r.group),
        }
    }
}

pub(super) fn footprint(t: Option<&TaskSummary>) -> Option<Footprint<'_>> {
    let t = t?;
    t.instance_id.as_ref()?;
    let counted = match phase(t.last_status) {
        Phase::Stopped => return None,
        Phase::Pending | Phase::Running => true,
        Phase::Other => false,
    };
    let r = &t.reserved;
    Some(Footprint {
        counted,
        cpu: r.cpu,
        memory: r.memory,
        gpus: r.gpus,
        ports_tcp: &r.ports_tcp,
        ports_udp: &r.ports_udp,
        group: t.group.as_deref(),
    })
}

impl ViewData {
    /// Whether the scheduler's picture, kept up to date change by change, equals one
    /// computed afresh from the instances, their tasks and the plans in flight.
    pub fn check_sched(&self) -> Result<(), String> {
        for (cluster, sc) in &self.sched {
            for (id, &i) in &sc.index {
                let have = &sc.instances[i];
                let ci = self
                    .instances
                    .get(cluster)
                    .and_then(|m| m.get(id))
                    .ok_or_else(|| format!("{cluster}/{id}: in the picture, not in the view"))?;
                let empty = Usage::default();
                let u = self
                    .usage
                    .get(&(cluster.clone(), id.clone()))
                    .unwrap_or(&empty);
                let mut want = sched_instance(id, &ci.value, u);
                for (_, _, req) in self
                    .inflight
                    .get(&(cluster.clone(), id.clone()))
                    .into_iter()
                    .flatten()
                {
                    berth_scheduler::reserve(&mut want, req);
                }
                let h = (
                    have.cpu,
                    have.memory,
                    have.gpus,
                    &have.used_ports_tcp,
                    &have.used_ports_udp,
                    &have.task_groups,
                    have.running_tasks_count,
                    &have.status,
                    have.agent_connected,
                );
                let w = (
                    want.cpu,
                    want.memory,
                    want.gpus,
                    &want.used_ports_tcp,
                    &want.used_ports_udp,
                    &want.task_groups,
                    want.running_tasks_count,
                    &want.status,
                    want.agent_connected,
                );
                if h != w {
                    return Err(format!("{cluster}/{id}: picture {h:?}, afresh {w:?}"));
                }
            }
        }
        Ok(())
    }

    /// Count a placement plan in the scheduler's picture until the view applies the task's
    /// creation or its [`PlanGuard`] drops, whichever comes first. `placed` names the
    /// instance and id of each placed task.
    pub fn add_plan(
        &mut self,
        cluster: &str,
        placed: &[(String, String)],
        req: &berth_scheduler::TaskRequirements,
    ) -> u64 {
        self.next_plan += 1;
        let plan = self.next_plan;
        for (inst, task) in placed {
            self.inflight
                .entry((cluster.to_string(), inst.clone()))
                .or_default()
                .push((plan, task.clone(), req.clone()));
            if let Some(snap) = self.sched_mut(cluster, inst) {
                berth_scheduler::reserve(snap, req);
            }
        }
        plan
    }

    /// One instance of the scheduler's picture, to change in place.
    pub(super) fn sched_mut(
        &mut self,
        cluster: &str,
        id: &str,
    ) -> Option<&mut berth_scheduler::Instance> {
        let sc = self.sched.get_mut(cluster)?;
        let i = *sc.index.get(id)?;
        sc.instances.get_mut(i)
    }

    /// The task planned on `inst` now counts as a task: take its plan out. Returns what the
    /// plan reserved (`None`: the task was not planned there).
    pub(super) fn planned_task_applied(
        &mut self,
        cluster: &str,
        inst: &str,
        task: &str,
    ) -> Option<berth_scheduler::TaskRequirements> {
        let key = (cluster.to_string(), inst.to_string());
        let v = self.inflight.get_mut(&key)?;
        let pos = v.iter().position(|(_, t, _)| t == task)?;
        let (_, _, req) = v.swap_remove(pos);
        if v.is_empty() {
            self.inflight.remove(&key);
        }
        Some(req)
    }

    /// Take out what is left of a plan (tasks whose creation the view has not applied: the
    /// commit failed) and give it back in the scheduler's picture.
    pub(super) fn remove_plan(&mut self, cluster: &str, ids: &[String], plan: u64) {
        for id in ids {
            let key = (cluster.to_string(), id.clone());
            let Some(v) = self.inflight.get_mut(&key) else {
                continue;
            };
            let (gone, kept): (Vec<PlannedTask>, Vec<PlannedTask>) = std::mem::take(v)
                .into_iter()
                .partition(|(p, _, _)| *p == plan);
            if kept.is_empty() {
                self.inflight.remove(&key);
            } else {
                *v = kept;
            }
            if let Some(snap) = self.sched_mut(cluster, id) {
                for (_, _, req) in &gone {
                    berth_scheduler::unreserve(snap, req);
                }
            }
        }
    }

    /// Rebuild one instance's entry of the scheduler's picture.
    pub(super) fn refresh_sched(&mut self, cluster: &str, id: &str, full: bool) {
        let ci = self
            .instances
            .get(cluster)
            .and_then(|m| m.get(id))
            .filter(|e| e.value.status.as_deref() != Some("INACTIVE"))
            .map(|e| e.value.clone());
        let sc = self.sched.entry(cluster.to_string()).or_default();
        match ci {
            Some(ci) => {
                let empty = Usage::default();
                let u = self
                    .usage
                    .get(&(cluster.to_string(), id.to_string()))
                    .unwrap_or(&empty);
                let plans = self.inflight.get(&(cluster.to_string(), id.to_string()));
                let reserve_plans = |snap: &mut berth_scheduler::Instance| {
                    for (_, _, req) in plans.into_iter().flatten() {
                        berth_scheduler::reserve(snap, req);
                    }
                };
                match sc.index.get(id) {
                    // Only its tasks changed: the identity and attributes stay.
                    Some(&i) if !full => {
                        set_usage(&mut sc.instances[i], &ci, u);
                        reserve_plans(&mut sc.instances[i]);
                    }
                    Some(&i) => {
                        sc.instances[i] = sched_instance(id, &ci, u);
                        reserve_plans(&mut sc.instances[i]);
                        sc.spread.clear();
                    }
                    None => {
                        let mut snap = sched_instance(id, &ci, u);
                        reserve_plans(&mut snap);
                        sc.index.insert(id.to_string(), sc.instances.len());
                        sc.instances.push(snap);
                        sc.spread.clear();
                    }
                }
            }
            None => {
                if let Some(i) = sc.index.remove(id) {
                    sc.spread.clear();
                    sc.instances.swap_remove(i);
                    if let Some(moved) = sc.instances.get(i) {
                        sc.index.insert(moved.id.clone(), i);
                    }
                }
                if sc.instances.is_empty() {
                    self.sched.remove(cluster);
                }
            }
        }
    }
}
