//! The control plane's materialized view: every object of the store, decoded, in memory, fed
//! only by the store's watch stream — so it works the same whether the writes came from this
//! process or (with etcd) another server. Reads are served from here; derived numbers (cluster
//! counts, what each container instance has left) are kept up to date as events apply.
//!
//! Writers commit to the store first and then wait until the view has applied that revision
//! ([`View::wait_for`]), so every answer reflects the caller's own writes.
//!
//! Must not: be written to except by applying store events; hold anything that cannot be
//! rebuilt from the store.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use berth_model::wire::ecs::{Cluster, ContainerInstance};
use berth_store::{Event, EventKind, RangeRequest, Revision, Store, StoreError};
use parking_lot::RwLock;

use crate::keys::{self, Key};
use crate::records::{
    AccessKeyRecord, FamilyRecord, ManagedPolicyRecord, RoleRecord, ServiceRecord, TaskDefRecord,
    TaskRecord,
};
use berth_model::status::{DesiredStatus, HealthStatus, TaskStatus, stop_code};

/// One object and the store revision that last wrote it.
#[derive(Debug)]
pub struct Entry<T> {
    pub rev: Revision,
    pub value: Arc<T>,
}

impl<T> Clone for Entry<T> {
    fn clone(&self) -> Self {
        Entry {
            rev: self.rev,
            value: self.value.clone(),
        }
    }
}

/// A task as the view keeps it: the stored record as it was written (JSON, decoded only
/// when asked for — a million decoded tasks would not fit the memory budget) and the few
/// fields that counters, indexes and ListTasks filters read.
pub struct TaskEntry {
    pub rev: Revision,
    json: Box<[u8]>,
    pub summary: TaskSummary,
}

/// What the view reads of a task without decoding it.
#[derive(Debug, Clone)]
pub struct TaskSummary {
    pub arn: String,
    pub last_status: TaskStatus,
    pub desired_status: DesiredStatus,
    pub launch_type: &'static str,
    pub instance_id: Option<String>,
    pub task_definition_arn: Option<String>,
    pub started_by: Option<String>,
    pub group: Option<String>,
    pub stopped_at: Option<f64>,
    pub started_at: Option<f64>,
    pub health: HealthStatus,
    /// Stopped for a reason that counts against a deployment: it failed to start, an
    /// essential container exited, or it failed its health checks.
    pub failed: bool,
    pub reserved: crate::records::Reservation,
}

/// A launch type as a static string (a small closed set; anything else is kept as
/// "UNKNOWN", which no filter asks for).
fn static_launch_type(s: Option<&str>) -> &'static str {
    match s {
        None => "EC2",
        Some(v) => berth_model::wire::ecs::LAUNCH_TYPE_VALUES
            .iter()
            .find(|a| **a == v)
            .copied()
            .unwrap_or("UNKNOWN"),
    }
}

/// A task's last status as the view reads it. Every writer checks it, so a stored record
/// holds one of ECS's values; absent reads as PROVISIONING, ECS's `DELETED` as STOPPED, and
/// anything else as a task still winding down (holding its resources, neither pending nor
/// running), as earlier builds read it.
fn read_last_status(s: Option<&str>) -> TaskStatus {
    match s {
        None => TaskStatus::Provisioning,
        Some("DELETED") => TaskStatus::Stopped,
        Some(v) => v.parse().unwrap_or(TaskStatus::Stopping),
    }
}

/// A task's desired status as the view reads it: absent reads as RUNNING; a value no writer
/// sets as STOPPED (nothing runs a task whose desire cannot be read).
fn read_desired_status(s: Option<&str>) -> DesiredStatus {
    match s {
        None => DesiredStatus::Running,
        Some(v) => v.parse().unwrap_or(DesiredStatus::Stopped),
    }
}

impl TaskSummary {
    pub fn of(r: &TaskRecord) -> TaskSummary {
        let t = &r.task;
        TaskSummary {
            arn: t.task_arn.clone().unwrap_or_default(),
            last_status: read_last_status(t.last_status.as_deref()),
            desired_status: read_desired_status(t.desired_status.as_deref()),
            launch_type: static_launch_type(t.launch_type.as_deref()),
            instance_id: t
                .container_instance_arn
                .as_deref()
                .and_then(instance_id_of)
                .map(str::to_string),
            task_definition_arn: t.task_definition_arn.clone(),
            started_by: t.started_by.clone(),
            group: t.group.clone(),
            stopped_at: t.stopped_at,
            started_at: t.started_at,
            health: HealthStatus::of(t.health_status.as_deref()).unwrap_or(HealthStatus::Unknown),
            failed: TaskStatus::of(t.last_status.as_deref()) == Some(TaskStatus::Stopped)
                && (matches!(
                    t.stop_code.as_deref(),
                    Some(stop_code::TASK_FAILED_TO_START | stop_code::ESSENTIAL_CONTAINER_EXITED)
                ) || t
                    .stopped_reason
                    .as_deref()
                    .is_some_and(|r| r.starts_with(HEALTH_CHECK_FAILED))),
            reserved: r.reserved.clone(),
        }
    }

    /// The service this task belongs to (its group is `service:<name>`).
    pub fn service(&self) -> Option<&str> {
        self.group.as_deref()?.strip_prefix("service:")
    }
}

/// The start of the reason the service controller gives for a task it stops because its
/// container health checks failed.
pub const HEALTH_CHECK_FAILED: &str = "Task failed container health checks";

impl TaskEntry {
    /// The whole record, decoded.
    pub fn record(&self) -> TaskRecord {
        // The view only keeps what it decoded once already.
        serde_json::from_slice(&self.json).unwrap_or_else(|e| {
            tracing::error!("a task record the view accepted no longer decodes: {e}");
            TaskRecord {
                task: Default::default(),
                reserved: Default::default(),
            }
        })
    }

    /// The record with its revision, as the other kinds of objects are handed out.
    pub fn entry(&self) -> Entry<TaskRecord> {
        Entry {
            rev: self.rev,
            value: Arc::new(self.record()),
        }
    }
}

/// Launch types, as indexes into the per-cluster counters.
pub const LAUNCH_TYPES: [&str; 3] = ["EC2", "FARGATE", "EXTERNAL"];

fn launch_index(lt: Option<&str>) -> usize {
    match lt {
        Some("FARGATE") => 1,
        Some("EXTERNAL") => 2,
        _ => 0,
    }
}

/// Task counts of a cluster, by launch type.
#[derive(Debug, Default, Clone)]
pub struct ClusterCounts {
    pub running: [i64; 3],
    pub pending: [i64; 3],
    /// ACTIVE or DRAINING container instances.
    pub instances: i64,
}

/// What the tasks on one container instance use.
#[derive(Debug, Default, Clone)]
pub struct Usage {
    pub cpu: i64,
    pub memory: i64,
    pub gpus: i64,
    pub ports_tcp: BTreeSet<u16>,
    pub ports_udp: BTreeSet<u16>,
    pub running: i64,
    pub pending: i64,
    /// Task groups of the tasks placed here and how many of each.
    pub groups: BTreeMap<String, i64>,
}

#[derive(Default)]
pub struct ViewData {
    pub clusters: BTreeMap<String, Entry<Cluster>>,
    pub families: BTreeMap<String, Entry<FamilyRecord>>,
    pub task_defs: BTreeMap<String, BTreeMap<i32, Entry<TaskDefRecord>>>,
    pub tasks: HashMap<String, BTreeMap<String, TaskEntry>>,
    pub instances: HashMap<String, BTreeMap<String, Entry<ContainerInstance>>>,
    /// (cluster, instance id) → who registered it ([`crate::keys::INSTANCE_OWNERS`]).
    pub instance_owners: HashMap<(String, String), String>,
    pub access_keys: BTreeMap<String, Entry<AccessKeyRecord>>,
    /// IAM roles by lower-case name.
    pub roles: BTreeMap<String, Entry<RoleRecord>>,
    /// Customer managed policies by lower-case name.
    pub policies: BTreeMap<String, Entry<ManagedPolicyRecord>>,
    /// cluster → service name → service.
    pub services: HashMap<String, BTreeMap<String, Entry<ServiceRecord>>>,
    /// (cluster, service name) → ids of the tasks in its group (stopped ones too, until
    /// they are forgotten).
    pub service_tasks: HashMap<(String, String), BTreeSet<String>>,
    /// Services whose tasks, record or cluster instances changed since the service
    /// controller last took this set; [`ViewData::changed`] wakes it.
    pub dirty: HashSet<(String, String)>,
    pub changed: Arc<tokio::sync::Notify>,
    pub counts: HashMap<String, ClusterCounts>,
    /// (cluster, instance id) → usage.
    pub usage: HashMap<(String, String), Usage>,
    /// (cluster, instance id) → ids of the unfinished tasks placed there.
    pub unfinished: HashMap<(String, String), BTreeSet<String>>,
    /// (cluster, instance id) → the agent feeds following that instance's tasks.
    feeds: HashMap<(String, String), Vec<FeedSender>>,
    /// cluster → its ACTIVE/DRAINING instances as the scheduler sees them, kept up to date
    /// event by event so that a placement reads them in place.
    pub sched: HashMap<String, SchedCluster>,
    /// (cluster, instance id) → placements planned there and not yet applied (plan id,
    /// what each task reserves). The scheduler's picture counts them; see [`PlanGuard`].
    inflight: HashMap<(String, String), Vec<PlannedTask>>,
    next_plan: u64,
    /// (cluster, instance id) → the mod revision of its allocation key
    /// ([`crate::keys::ALLOCS`]); absent: never placed on.
    pub(crate) alloc_revs: HashMap<(String, String), Revision>,
    /// This server's placements still committing: (cluster, instance id) → the turn of the
    /// latest plan there ([`crate::alloc`] keeps it).
    pub(crate) alloc_chains: HashMap<(String, String), Arc<AllocTurn>>,
}

/// The outcome a placement plan leaves for the next plan of this server on the same instance:
/// the instance's allocation revision after it (see [`crate::alloc`]).
pub(crate) type AllocTurn = tokio::sync::watch::Sender<Option<Revision>>;

/// A task planned on an instance: (plan id, task id, what it reserves).
type PlannedTask = (u64, String, berth_scheduler::TaskRequirements);

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

/// Every write of a task placed on one instance, as the view applies it.
pub type FeedSender = tokio::sync::mpsc::UnboundedSender<Arc<TaskRecord>>;
pub type FeedReceiver = tokio::sync::mpsc::UnboundedReceiver<Arc<TaskRecord>>;

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
fn set_usage(inst: &mut berth_scheduler::Instance, ci: &ContainerInstance, u: &Usage) {
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

/// Whether a task status counts as pending, running or neither.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Pending,
    Running,
    /// Neither pending nor running, but still holding its resources (stopping).
    Other,
    Stopped,
}

fn phase(s: TaskStatus) -> Phase {
    match s {
        s if s.is_pending() => Phase::Pending,
        TaskStatus::Running => Phase::Running,
        TaskStatus::Stopped => Phase::Stopped,
        _ => Phase::Other,
    }
}

/// The id part of a container-instance ARN.
pub fn instance_id_of(arn: &str) -> Option<&str> {
    arn.rsplit('/').next().filter(|s| !s.is_empty())
}

impl ViewData {
    fn task_contribution(&mut self, cluster: &str, t: &TaskSummary, sign: i64) {
        let ph = phase(t.last_status);
        let li = launch_index(Some(t.launch_type));
        let counts = self.counts.entry(cluster.to_string()).or_default();
        match ph {
            Phase::Pending => counts.pending[li] += sign,
            Phase::Running => counts.running[li] += sign,
            _ => {}
        }
        if ph == Phase::Stopped {
            return;
        }
        let Some(inst) = t.instance_id.as_deref() else {
            return;
        };
        let u = self
            .usage
            .entry((cluster.to_string(), inst.to_string()))
            .or_default();
        let r = &t.reserved;
        u.cpu += sign * r.cpu;
        u.memory += sign * r.memory;
        u.gpus += sign * r.gpus;
        for p in &r.ports_tcp {
            if sign > 0 {
                u.ports_tcp.insert(*p);
            } else {
                u.ports_tcp.remove(p);
            }
        }
        for p in &r.ports_udp {
            if sign > 0 {
                u.ports_udp.insert(*p);
            } else {
                u.ports_udp.remove(p);
            }
        }
        match ph {
            Phase::Pending => u.pending += sign,
            Phase::Running => u.running += sign,
            _ => {}
        }
        if let Some(g) = t.group.as_deref() {
            let n = u.groups.entry(g.to_string()).or_default();
            *n += sign;
            if *n <= 0 {
                u.groups.remove(g);
            }
        }
    }

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
    fn sched_mut(&mut self, cluster: &str, id: &str) -> Option<&mut berth_scheduler::Instance> {
        let sc = self.sched.get_mut(cluster)?;
        let i = *sc.index.get(id)?;
        sc.instances.get_mut(i)
    }

    /// The task planned on `inst` now counts as a task: take its plan out. Returns what the
    /// plan reserved (`None`: the task was not planned there).
    fn planned_task_applied(
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
    fn remove_plan(&mut self, cluster: &str, ids: &[String], plan: u64) {
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

    /// Apply one write of a task: counters, indexes, the scheduler's picture, the feeds.
    fn apply_task(
        &mut self,
        c: &str,
        id: &str,
        rev: Revision,
        put: bool,
        val: &[u8],
    ) -> Result<(), serde_json::Error> {
        let m = self.tasks.entry(c.to_string()).or_default();
        if m.get(id).is_some_and(|e| e.rev >= rev) {
            return Ok(());
        }
        let new: Option<Arc<TaskRecord>> = if put {
            Some(Arc::new(serde_json::from_slice(val)?))
        } else {
            None
        };
        let summary = new.as_deref().map(TaskSummary::of);
        let old = match &summary {
            Some(s) => m.insert(
                id.to_string(),
                TaskEntry {
                    rev,
                    json: val.into(),
                    summary: s.clone(),
                },
            ),
            None => m.remove(id),
        };
        if m.is_empty() {
            self.tasks.remove(c);
        }
        let old = old.map(|e| e.summary);
        if let Some(o) = &old {
            self.task_contribution(c, o, -1);
        }
        if let Some(n) = &summary {
            self.task_contribution(c, n, 1);
        }
        let inst = summary
            .as_ref()
            .or(old.as_ref())
            .and_then(|s| s.instance_id.clone());
        // The scheduler's picture changes only when what the task holds there changes. A
        // planned task whose creation arrives was already counted by its plan; a task going
        // from PENDING to RUNNING holds what it held.
        let plan = match (&old, &inst) {
            (None, Some(i)) => self.planned_task_applied(c, i, id),
            _ => None,
        };
        let unchanged = match &plan {
            Some(req) => footprint(summary.as_ref()) == Some(Footprint::of_plan(req)),
            None => footprint(old.as_ref()) == footprint(summary.as_ref()),
        };
        self.index_task(c, id, old.as_ref(), summary.as_ref(), new);
        self.index_service_task(c, id, old.as_ref(), summary.as_ref());
        if let Some(inst) = inst
            && !unchanged
        {
            self.refresh_sched(c, &inst, false);
        }
        Ok(())
    }

    /// Rebuild one instance's entry of the scheduler's picture.
    fn refresh_sched(&mut self, cluster: &str, id: &str, full: bool) {
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

    /// Keep the per-instance index of unfinished tasks, and hand the new record to the
    /// feeds that follow its instance.
    fn index_task(
        &mut self,
        cluster: &str,
        id: &str,
        old: Option<&TaskSummary>,
        new_summary: Option<&TaskSummary>,
        new: Option<Arc<TaskRecord>>,
    ) {
        let Some(inst) = new_summary.or(old).and_then(|s| s.instance_id.clone()) else {
            return;
        };
        let key = (cluster.to_string(), inst);
        let open = new_summary.is_some_and(|n| phase(n.last_status) != Phase::Stopped);
        if open {
            self.unfinished
                .entry(key.clone())
                .or_default()
                .insert(id.to_string());
        } else if let Some(set) = self.unfinished.get_mut(&key) {
            set.remove(id);
            if set.is_empty() {
                self.unfinished.remove(&key);
            }
        }
        if let (Some(n), Some(feeds)) = (new, self.feeds.get_mut(&key)) {
            feeds.retain(|f| f.send(n.clone()).is_ok());
            if feeds.is_empty() {
                self.feeds.remove(&key);
            }
        }
    }

    /// Keep the per-service task index and mark the service for its controller.
    fn index_service_task(
        &mut self,
        cluster: &str,
        id: &str,
        old: Option<&TaskSummary>,
        new: Option<&TaskSummary>,
    ) {
        let old_svc = old.and_then(|o| o.service());
        let new_svc = new.and_then(|n| n.service());
        if let Some(o) = old_svc
            && Some(o) != new_svc
        {
            let key = (cluster.to_string(), o.to_string());
            if let Some(set) = self.service_tasks.get_mut(&key) {
                set.remove(id);
                if set.is_empty() {
                    self.service_tasks.remove(&key);
                }
            }
            self.mark(key);
        }
        if let Some(n) = new_svc {
            let key = (cluster.to_string(), n.to_string());
            self.service_tasks
                .entry(key.clone())
                .or_default()
                .insert(id.to_string());
            self.mark(key);
        }
    }

    /// Tell the service controller that a service needs a look.
    fn mark(&mut self, key: (String, String)) {
        if self.dirty.is_empty() {
            self.changed.notify_one();
        }
        self.dirty.insert(key);
    }

    /// Every service of a cluster needs a look (its instances changed).
    fn mark_cluster(&mut self, cluster: &str) {
        let names: Vec<String> = self
            .services
            .get(cluster)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        for n in names {
            self.mark((cluster.to_string(), n));
        }
    }

    /// Follow the tasks of one instance: its unfinished tasks now, and a receiver of every
    /// later write of a task placed there (registered under the same lock, so nothing falls
    /// in between).
    pub fn follow_instance(
        &mut self,
        cluster: &str,
        inst: &str,
    ) -> (Vec<Arc<TaskRecord>>, FeedReceiver) {
        let key = (cluster.to_string(), inst.to_string());
        let now: Vec<Arc<TaskRecord>> = self
            .unfinished
            .get(&key)
            .into_iter()
            .flatten()
            .filter_map(|id| Some(Arc::new(self.tasks.get(cluster)?.get(id)?.record())))
            .collect();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        self.feeds.entry(key).or_default().push(tx);
        (now, rx)
    }

    fn instance_contribution(&mut self, cluster: &str, ci: &ContainerInstance, sign: i64) {
        if matches!(ci.status.as_deref(), Some("ACTIVE") | Some("DRAINING")) {
            self.counts
                .entry(cluster.to_string())
                .or_default()
                .instances += sign;
        }
    }

    /// Apply one event unless the view already holds a newer write of that key.
    fn apply(&mut self, ev: &Event) -> Result<(), serde_json::Error> {
        let Ok(key) = std::str::from_utf8(&ev.kv.key) else {
            return Ok(());
        };
        let Some(k) = keys::parse(key) else {
            return Ok(());
        };
        let rev = ev.kv.mod_revision;
        let put = ev.kind == EventKind::Put;
        let val = &ev.kv.value;
        match k {
            Key::Cluster(name) => {
                upsert(&mut self.clusters, name.to_string(), rev, put, val)?;
            }
            Key::Family(f) => {
                upsert(&mut self.families, f.to_string(), rev, put, val)?;
            }
            Key::TaskDef(f, r) => {
                let m = self.task_defs.entry(f.to_string()).or_default();
                upsert(m, r, rev, put, val)?;
                if m.is_empty() {
                    self.task_defs.remove(f);
                }
            }
            Key::AccessKey(id) => {
                upsert(&mut self.access_keys, id.to_string(), rev, put, val)?;
            }
            Key::Role(name) => {
                upsert(&mut self.roles, name.to_string(), rev, put, val)?;
            }
            Key::Policy(name) => {
                upsert(&mut self.policies, name.to_string(), rev, put, val)?;
            }
            Key::Task(c, id) => self.apply_task(c, id, rev, put, val)?,
            Key::Instance(c, id) => {
                if let Some((old, new)) = replace_nested(&mut self.instances, c, id, rev, put, val)?
                {
                    if let Some(o) = old {
                        self.instance_contribution(c, &o, -1);
                    }
                    if let Some(n) = new {
                        self.instance_contribution(c, &n, 1);
                    }
                    self.refresh_sched(c, id, true);
                    self.mark_cluster(c);
                }
            }
            Key::InstanceOwner(c, id) => {
                let k = (c.to_string(), id.to_string());
                if put {
                    self.instance_owners.insert(k, serde_json::from_slice(val)?);
                } else {
                    self.instance_owners.remove(&k);
                }
            }
            Key::Alloc(c, id) => {
                let k = (c.to_string(), id.to_string());
                if put {
                    self.alloc_revs.insert(k, rev);
                } else {
                    self.alloc_revs.remove(&k);
                }
            }
            Key::Service(c, name) => {
                if replace_nested(&mut self.services, c, name, rev, put, val)?.is_some() {
                    self.mark((c.to_string(), name.to_string()));
                }
            }
        }
        Ok(())
    }
}

/// What a task holds in the scheduler's picture of its instance (`None`: nothing).
#[derive(PartialEq)]
struct Footprint<'a> {
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
    fn of_plan(r: &'a berth_scheduler::TaskRequirements) -> Footprint<'a> {
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

fn footprint(t: Option<&TaskSummary>) -> Option<Footprint<'_>> {
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

/// Old and new value of a key whose event was applied.
type Replaced<T> = Option<(Option<Arc<T>>, Option<Arc<T>>)>;

/// Apply one event to a per-cluster map; `None` when the view already had a newer write.
fn replace_nested<T: serde::de::DeserializeOwned>(
    outer: &mut HashMap<String, BTreeMap<String, Entry<T>>>,
    cluster: &str,
    id: &str,
    rev: Revision,
    put: bool,
    val: &[u8],
) -> Result<Replaced<T>, serde_json::Error> {
    let m = outer.entry(cluster.to_string()).or_default();
    if m.get(id).is_some_and(|e| e.rev >= rev) {
        return Ok(None);
    }
    let new = if put {
        Some(Entry {
            rev,
            value: Arc::new(serde_json::from_slice::<T>(val)?),
        })
    } else {
        None
    };
    let old = match &new {
        Some(e) => m.insert(id.to_string(), e.clone()),
        None => m.remove(id),
    };
    if m.is_empty() {
        outer.remove(cluster);
    }
    Ok(Some((old.map(|e| e.value), new.map(|e| e.value))))
}

fn upsert<K: Ord, T: serde::de::DeserializeOwned>(
    m: &mut BTreeMap<K, Entry<T>>,
    k: K,
    rev: Revision,
    put: bool,
    val: &[u8],
) -> Result<(), serde_json::Error> {
    if m.get(&k).is_some_and(|e| e.rev >= rev) {
        return Ok(());
    }
    if put {
        let v: T = serde_json::from_slice(val)?;
        m.insert(
            k,
            Entry {
                rev,
                value: Arc::new(v),
            },
        );
    } else {
        m.remove(&k);
    }
    Ok(())
}

/// The view and the revision it has applied.
pub struct View {
    pub data: RwLock<ViewData>,
    applied: tokio::sync::watch::Sender<Revision>,
}

/// Key prefixes the view loads and follows.
const PREFIXES: [&str; 2] = [keys::ECS_PREFIX, "iam/"];

impl View {
    /// Load every object from the store, then follow its watch stream in a background task.
    pub async fn start(store: Arc<dyn Store>) -> Result<Arc<View>, StoreError> {
        let mut data = ViewData::default();
        let mut first_rev: Option<Revision> = None;
        for prefix in PREFIXES {
            let resp = store.range(RangeRequest::prefix(prefix)).await?;
            first_rev = Some(first_rev.map_or(resp.revision, |r| r.min(resp.revision)));
            for kv in resp.kvs {
                let ev = Event {
                    kind: EventKind::Put,
                    kv,
                };
                if let Err(e) = data.apply(&ev) {
                    tracing::error!(key = %String::from_utf8_lossy(&ev.kv.key), "unreadable record skipped: {e}");
                }
            }
        }
        let start = first_rev.unwrap_or(0);
        let (tx, _) = tokio::sync::watch::channel(start);
        let view = Arc::new(View {
            data: RwLock::new(data),
            applied: tx,
        });
        let mut watcher = store.watch(b"", start + 1).await?;
        let v = view.clone();
        tokio::spawn(async move {
            while let Some(batch) = watcher.next().await {
                match batch {
                    Ok(batch) => {
                        {
                            let mut d = v.data.write();
                            for ev in &batch.events {
                                if let Err(e) = d.apply(ev) {
                                    tracing::error!(key = %String::from_utf8_lossy(&ev.kv.key), "unreadable record skipped: {e}");
                                }
                            }
                        }
                        v.applied.send_replace(batch.revision);
                    }
                    Err(e) => {
                        tracing::error!("store watch failed, view stops following: {e}");
                        break;
                    }
                }
            }
        });
        Ok(view)
    }

    /// Wait until the view reflects store revision `rev`.
    pub async fn wait_for(&self, rev: Revision) {
        let mut rx = self.applied.subscribe();
        let _ = rx.wait_for(|r| *r >= rev).await;
    }

    pub fn applied(&self) -> Revision {
        *self.applied.borrow()
    }
}
