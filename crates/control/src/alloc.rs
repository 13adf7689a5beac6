//! Allocation revisions: the check that keeps several servers on one store from overselling a
//! container instance (Nomad's plan applier does the same with its node allocations).
//!
//! Every placement commit writes the instance's allocation key (`ecs/a/{cluster}/{id}`, an
//! empty value) and compares its mod revision with the one the plan was made against. A
//! server whose picture missed another server's placement on that instance fails the compare,
//! catches up with the store (`commit` waits for the view) and plans again.
//!
//! Plans made by one server are already counted against each other in its view (see
//! [`crate::view::PlanGuard`]), so they must not fail each other's compare: a plan on an
//! instance that another plan of this server is still committing to takes its turn after it
//! ([`Claims::guard`] waits for the predecessor's outcome and expects the revision that
//! predecessor left). Only collisions wait; the common case commits at once, in the store's
//! group commit with everything else.
//!
//! Releases (a task stopping) do not bump the revision: a picture that misses a release only
//! places less.
//!
//! Must not: let a plan commit against a revision it did not see, or be the only record of
//! anything (the allocation key holds no data; the tasks are the truth).

use std::sync::Arc;

use berth_store::{Compare, Op, Revision};
use tokio::sync::watch;

use crate::keys;
use crate::view::{AllocTurn as Turn, View, ViewData};

/// A revision no key ever has: comparing with it fails, which forces a fresh plan (what a plan
/// leaves when the next one cannot tell).
const UNKNOWN: Revision = Revision::MAX;

enum Expect {
    /// The revision the view held when the plan was made.
    Seen(Revision),
    /// Whatever the previous plan of this server on the instance leaves.
    After(watch::Receiver<Option<Revision>>),
    /// Resolved by [`Claims::guard`].
    Known(Revision),
}

struct Claim {
    cluster: String,
    id: String,
    expect: Expect,
    turn: Arc<Turn>,
}

/// The allocation claims of one plan: taken under the view's write lock together with the
/// plan, guarded in its commit, settled after it.
pub(crate) struct Claims {
    view: Arc<View>,
    claims: Vec<Claim>,
}

impl Claims {
    /// Claim the instances a plan placed tasks on (ids, repeats allowed), in the same
    /// critical section as the plan itself.
    pub(crate) fn take<'a>(
        d: &mut ViewData,
        view: &Arc<View>,
        cluster: &str,
        ids: impl IntoIterator<Item = &'a String>,
    ) -> Claims {
        let mut claims: Vec<Claim> = Vec::new();
        for id in ids {
            if claims.iter().any(|c| &c.id == id) {
                continue;
            }
            let key = (cluster.to_string(), id.clone());
            let expect = match d.alloc_chains_mut().get(&key) {
                Some(prev) => Expect::After(prev.subscribe()),
                None => Expect::Seen(d.alloc_rev(&key)),
            };
            let turn = Arc::new(watch::channel(None).0);
            d.alloc_chains_mut().insert(key, turn.clone());
            claims.push(Claim {
                cluster: cluster.to_string(),
                id: id.clone(),
                expect,
                turn,
            });
        }
        Claims {
            view: view.clone(),
            claims,
        }
    }

    /// The compares and writes the plan's transaction carries (put the writes after the
    /// tasks' own: the view then never sees a new revision before the tasks it counts). Waits
    /// for the outcome of this server's earlier plans on the same instances.
    pub(crate) async fn guard(&mut self) -> (Vec<Compare>, Vec<Op>) {
        let mut compare = Vec::with_capacity(self.claims.len());
        let mut ops = Vec::with_capacity(self.claims.len());
        for c in &mut self.claims {
            let rev = match &mut c.expect {
                Expect::Seen(r) | Expect::Known(r) => *r,
                Expect::After(rx) => match rx.wait_for(Option::is_some).await {
                    Ok(v) => v.unwrap_or(UNKNOWN),
                    // The previous plan went away without saying: it settles on drop, so this
                    // cannot happen; refuse to guess.
                    Err(_) => UNKNOWN,
                },
            };
            c.expect = Expect::Known(rev);
            let key = keys::alloc(&c.cluster, &c.id);
            compare.push(Compare::mod_revision_is(key.clone(), rev));
            ops.push(Op::put(key, Vec::new()));
        }
        (compare, ops)
    }

    /// The plan's transaction ended: `Some(rev)` committed at `rev`, `None` it did not (the
    /// instances keep the revisions it expected). Call after the commit returned (the view
    /// has applied it), so a plan made after this reads the new revision from the view.
    pub(crate) fn settle(&mut self, committed: Option<Revision>) {
        let mut d = self.view.data.write();
        for c in self.claims.drain(..) {
            let left = match (committed, &c.expect) {
                (Some(rev), _) => rev,
                (None, Expect::Known(r) | Expect::Seen(r)) => *r,
                (None, Expect::After(_)) => UNKNOWN,
            };
            c.turn.send_replace(Some(left));
            release(&mut d, &c);
        }
    }
}

/// Take a settled claim out of the chain unless a later plan has followed it (which then
/// holds its outcome).
fn release(d: &mut ViewData, c: &Claim) {
    let key = (c.cluster.clone(), c.id.clone());
    if d.alloc_chains_mut()
        .get(&key)
        .is_some_and(|t| Arc::ptr_eq(t, &c.turn))
    {
        d.alloc_chains_mut().remove(&key);
    }
}

impl Drop for Claims {
    /// A plan dropped without settling (an error before its commit, a cancelled request):
    /// its successors cannot know what it left and plan again.
    fn drop(&mut self) {
        if self.claims.is_empty() {
            return;
        }
        let mut d = self.view.data.write();
        for c in self.claims.drain(..) {
            c.turn.send_replace(Some(UNKNOWN));
            release(&mut d, &c);
        }
    }
}
