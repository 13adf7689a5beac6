//! Placements in flight: planned, not yet committed and applied to the view.
//!
//! RunTask and StartTask plan under a short per-cluster lock against the view's scheduler
//! picture *plus* every plan still in flight, record their own plan here, release the lock,
//! and only then commit (about a millisecond: a durable write). Concurrent placements thus
//! never oversubscribe an instance — each plans against the fresh state of the others — while
//! their commits proceed together and share the store's group commit. A plan leaves this
//! table when its commit has been applied to the view (or failed); for that moment the
//! reservation is counted twice, which can only refuse, never oversubscribe.

use std::collections::HashMap;
use std::sync::Arc;

use berth_scheduler as sched;

use crate::view::SchedCluster;

#[derive(Default)]
pub(crate) struct InFlight {
    next: u64,
    plans: HashMap<u64, (sched::TaskRequirements, Vec<String>)>,
}

impl InFlight {
    /// The instances that in-flight plans use, as they are with those plans reserved.
    pub(crate) fn overrides(&self, sc: &SchedCluster) -> HashMap<usize, sched::Instance> {
        let mut out: HashMap<usize, sched::Instance> = HashMap::new();
        for (req, ids) in self.plans.values() {
            for id in ids {
                if let Some(i) = sc.position(id) {
                    let inst = out.entry(i).or_insert_with(|| sc.instances[i].clone());
                    sched::reserve(inst, req);
                }
            }
        }
        out
    }

    fn add(&mut self, req: sched::TaskRequirements, ids: Vec<String>) -> u64 {
        self.next += 1;
        self.plans.insert(self.next, (req, ids));
        self.next
    }
}

/// A plan's place in the table; dropping it takes the plan out.
pub(crate) struct PlanGuard {
    table: Arc<parking_lot::Mutex<InFlight>>,
    id: u64,
}

impl PlanGuard {
    /// Record a plan (the caller holds `table`'s lock and passes the locked table).
    pub(crate) fn record(
        table: &Arc<parking_lot::Mutex<InFlight>>,
        locked: &mut InFlight,
        req: sched::TaskRequirements,
        ids: Vec<String>,
    ) -> PlanGuard {
        PlanGuard {
            table: table.clone(),
            id: locked.add(req, ids),
        }
    }
}

impl Drop for PlanGuard {
    fn drop(&mut self) {
        self.table.lock().plans.remove(&self.id);
    }
}
