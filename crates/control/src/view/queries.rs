//! Reading the view: each map behind a read-only query (callers hold the view's lock and
//! cannot change what they read), following an instance's tasks, and the bookkeeping that
//! placement and the service controller take from it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use berth_model::wire::ecs::{Cluster, ContainerInstance};
use berth_store::Revision;

use super::{
    AllocTurn, ClusterCounts, Entry, FeedReceiver, SchedCluster, TaskEntry, Usage, ViewData,
};
use crate::records::{
    AccessKeyRecord, FamilyRecord, ManagedPolicyRecord, RoleRecord, ServiceRecord, TaskDefRecord,
    TaskRecord,
};

impl ViewData {
    /// Clusters by name.
    pub fn clusters(&self) -> &BTreeMap<String, Entry<Cluster>> {
        &self.clusters
    }

    /// Task definition families by name.
    pub fn families(&self) -> &BTreeMap<String, Entry<FamilyRecord>> {
        &self.families
    }

    /// Task definitions: family → revision → definition.
    pub fn task_defs(&self) -> &BTreeMap<String, BTreeMap<i32, Entry<TaskDefRecord>>> {
        &self.task_defs
    }

    /// Tasks: cluster → task id → task.
    pub fn tasks(&self) -> &HashMap<String, BTreeMap<String, TaskEntry>> {
        &self.tasks
    }

    /// Container instances: cluster → instance id → instance.
    pub fn instances(&self) -> &HashMap<String, BTreeMap<String, Entry<ContainerInstance>>> {
        &self.instances
    }

    /// (cluster, instance id) → who registered it ([`crate::keys::INSTANCE_OWNERS`]).
    pub fn instance_owners(&self) -> &HashMap<(String, String), String> {
        &self.instance_owners
    }

    /// Access keys by id.
    pub fn access_keys(&self) -> &BTreeMap<String, Entry<AccessKeyRecord>> {
        &self.access_keys
    }

    /// IAM roles by lower-case name.
    pub fn roles(&self) -> &BTreeMap<String, Entry<RoleRecord>> {
        &self.roles
    }

    /// Customer managed policies by lower-case name.
    pub fn policies(&self) -> &BTreeMap<String, Entry<ManagedPolicyRecord>> {
        &self.policies
    }

    /// Services: cluster → service name → service.
    pub fn services(&self) -> &HashMap<String, BTreeMap<String, Entry<ServiceRecord>>> {
        &self.services
    }

    /// (cluster, service name) → ids of the tasks in its group (stopped ones too, until they
    /// are forgotten).
    pub fn service_tasks(&self) -> &HashMap<(String, String), BTreeSet<String>> {
        &self.service_tasks
    }

    /// Task and instance counts of each cluster.
    pub fn counts(&self) -> &HashMap<String, ClusterCounts> {
        &self.counts
    }

    /// (cluster, instance id) → what its tasks use.
    pub fn usage(&self) -> &HashMap<(String, String), Usage> {
        &self.usage
    }

    /// (cluster, instance id) → ids of the unfinished tasks placed there.
    pub fn unfinished(&self) -> &HashMap<(String, String), BTreeSet<String>> {
        &self.unfinished
    }

    /// cluster → its ACTIVE/DRAINING instances as the scheduler sees them.
    pub fn sched(&self) -> &HashMap<String, SchedCluster> {
        &self.sched
    }

    /// Wakes the service controller when a service is marked ([`ViewData::take_dirty`]).
    pub fn changed(&self) -> &Arc<tokio::sync::Notify> {
        &self.changed
    }

    /// The services marked since the service controller last took them (their tasks, record
    /// or cluster instances changed); the marks are cleared.
    pub(crate) fn take_dirty(&mut self) -> HashSet<(String, String)> {
        std::mem::take(&mut self.dirty)
    }

    /// The numbered values of a spread field over a cluster's instances (kept until an
    /// instance joins, leaves or changes).
    pub(crate) fn spread_values(
        &mut self,
        cluster: &str,
        field: &str,
    ) -> Arc<berth_scheduler::SpreadValues> {
        match self.sched.get_mut(cluster) {
            Some(sc) => sc.spread_values(field),
            None => Arc::new(berth_scheduler::SpreadValues::new(&[], field)),
        }
    }

    /// The mod revision of an instance's allocation key ([`crate::keys::ALLOCS`]); 0: never
    /// placed on.
    pub(crate) fn alloc_rev(&self, key: &(String, String)) -> Revision {
        self.alloc_revs.get(key).copied().unwrap_or(0)
    }

    /// This server's placements still committing: (cluster, instance id) → the turn of the
    /// latest plan there ([`crate::alloc`] keeps it; memory only, not from the store).
    pub(crate) fn alloc_chains_mut(&mut self) -> &mut HashMap<(String, String), Arc<AllocTurn>> {
        &mut self.alloc_chains
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
}
