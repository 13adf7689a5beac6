//! Applying store events to the view: each kind of object into its map, and for tasks and
//! instances the counters, indexes, the scheduler's picture, the agent feeds and the marks
//! that wake the service controller. The only code that writes the view's data.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use berth_model::wire::ecs::ContainerInstance;
use berth_store::{Event, EventKind, Revision};

use super::plan::{Footprint, footprint};
use super::task::{Phase, phase};
use super::{Entry, TaskEntry, TaskSummary, ViewData};
use crate::keys::{self, Key};
use crate::records::TaskRecord;

pub(super) fn launch_index(lt: Option<&str>) -> usize {
    match lt {
        Some("FARGATE") => 1,
        Some("EXTERNAL") => 2,
        _ => 0,
    }
}

/// Old and new value of a key whose event was applied.
pub(super) type Replaced<T> = Option<(Option<Arc<T>>, Option<Arc<T>>)>;

/// Apply one event to a per-cluster map; `None` when the view already had a newer write.
pub(super) fn replace_nested<T: serde::de::DeserializeOwned>(
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

pub(super) fn upsert<K: Ord, T: serde::de::DeserializeOwned>(
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

impl ViewData {
    pub(super) fn task_contribution(&mut self, cluster: &str, t: &TaskSummary, sign: i64) {
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

    /// Apply one write of a task: counters, indexes, the scheduler's picture, the feeds.
    pub(super) fn apply_task(
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

    /// Keep the per-instance index of unfinished tasks, and hand the new record to the
    /// feeds that follow its instance.
    pub(super) fn index_task(
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
    pub(super) fn index_service_task(
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
    pub(super) fn mark(&mut self, key: (String, String)) {
        if self.dirty.is_empty() {
            self.changed.notify_one();
        }
        self.dirty.insert(key);
    }

    /// Every service of a cluster needs a look (its instances changed).
    pub(super) fn mark_cluster(&mut self, cluster: &str) {
        let names: Vec<String> = self
            .services
            .get(cluster)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        for n in names {
            self.mark((cluster.to_string(), n));
        }
    }

    pub(super) fn instance_contribution(
        &mut self,
        cluster: &str,
        ci: &ContainerInstance,
        sign: i64,
    ) {
        if matches!(ci.status.as_deref(), Some("ACTIVE") | Some("DRAINING")) {
            self.counts
                .entry(cluster.to_string())
                .or_default()
                .instances += sign;
        }
    }

    /// Apply one event unless the view already holds a newer write of that key.
    pub(super) fn apply(&mut self, ev: &Event) -> Result<(), serde_json::Error> {
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
