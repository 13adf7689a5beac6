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
//!
//! By concern: `apply` (the only writer: store events into the maps, counters, indexes and
//! feeds), `task` (a task's stored bytes and the summary read without decoding), `plan` (the
//! scheduler's picture and the placement plans counted in it until applied), `queries`
//! (read-only access for everyone else: the fields are private, so code outside this module
//! reads the view and cannot change it).

mod apply;
mod plan;
mod queries;
mod task;

pub(crate) use plan::AllocTurn;
use plan::PlannedTask;
pub use plan::{PlanGuard, SchedCluster, sched_instance};
pub use task::{HEALTH_CHECK_FAILED, TaskEntry, TaskSummary};

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use berth_model::wire::ecs::{Cluster, ContainerInstance};
use berth_store::{Event, EventKind, RangeRequest, Revision, Store, StoreError};
use parking_lot::RwLock;

use crate::keys;
use crate::records::{
    AccessKeyRecord, FamilyRecord, ManagedPolicyRecord, RoleRecord, ServiceRecord, TaskDefRecord,
    TaskRecord,
};

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

/// Launch types, as indexes into the per-cluster counters.
pub const LAUNCH_TYPES: [&str; 3] = ["EC2", "FARGATE", "EXTERNAL"];

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
    clusters: BTreeMap<String, Entry<Cluster>>,
    families: BTreeMap<String, Entry<FamilyRecord>>,
    task_defs: BTreeMap<String, BTreeMap<i32, Entry<TaskDefRecord>>>,
    tasks: HashMap<String, BTreeMap<String, TaskEntry>>,
    instances: HashMap<String, BTreeMap<String, Entry<ContainerInstance>>>,
    /// (cluster, instance id) → who registered it ([`crate::keys::INSTANCE_OWNERS`]).
    instance_owners: HashMap<(String, String), String>,
    access_keys: BTreeMap<String, Entry<AccessKeyRecord>>,
    /// IAM roles by lower-case name.
    roles: BTreeMap<String, Entry<RoleRecord>>,
    /// Customer managed policies by lower-case name.
    policies: BTreeMap<String, Entry<ManagedPolicyRecord>>,
    /// cluster → service name → service.
    services: HashMap<String, BTreeMap<String, Entry<ServiceRecord>>>,
    /// (cluster, service name) → ids of the tasks in its group (stopped ones too, until
    /// they are forgotten).
    service_tasks: HashMap<(String, String), BTreeSet<String>>,
    /// Services whose tasks, record or cluster instances changed since the service
    /// controller last took this set; [`ViewData::changed`] wakes it.
    dirty: HashSet<(String, String)>,
    changed: Arc<tokio::sync::Notify>,
    counts: HashMap<String, ClusterCounts>,
    /// (cluster, instance id) → usage.
    usage: HashMap<(String, String), Usage>,
    /// (cluster, instance id) → ids of the unfinished tasks placed there.
    unfinished: HashMap<(String, String), BTreeSet<String>>,
    /// (cluster, instance id) → the agent feeds following that instance's tasks.
    feeds: HashMap<(String, String), Vec<FeedSender>>,
    /// cluster → its ACTIVE/DRAINING instances as the scheduler sees them, kept up to date
    /// event by event so that a placement reads them in place.
    sched: HashMap<String, SchedCluster>,
    /// (cluster, instance id) → placements planned there and not yet applied (plan id,
    /// what each task reserves). The scheduler's picture counts them; see [`PlanGuard`].
    inflight: HashMap<(String, String), Vec<PlannedTask>>,
    next_plan: u64,
    /// (cluster, instance id) → the mod revision of its allocation key
    /// ([`crate::keys::ALLOCS`]); absent: never placed on.
    alloc_revs: HashMap<(String, String), Revision>,
    /// This server's placements still committing: (cluster, instance id) → the turn of the
    /// latest plan there ([`crate::alloc`] keeps it).
    alloc_chains: HashMap<(String, String), Arc<AllocTurn>>,
}

/// Every write of a task placed on one instance, as the view applies it.
pub type FeedSender = tokio::sync::mpsc::UnboundedSender<Arc<TaskRecord>>;
pub type FeedReceiver = tokio::sync::mpsc::UnboundedReceiver<Arc<TaskRecord>>;

/// The id part of a container-instance ARN.
pub fn instance_id_of(arn: &str) -> Option<&str> {
    arn.rsplit('/').next().filter(|s| !s.is_empty())
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
