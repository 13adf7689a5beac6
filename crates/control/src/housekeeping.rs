//! Periodic housekeeping: forget STOPPED tasks once ECS would (an hour after they stop, or
//! [`crate::ControlConfig::stopped_task_retention`]), and
//! compact the store's history so that it does not grow without bound. Both are ordinary
//! store transactions; the loop holds only a weak reference and ends with the control plane.

use std::sync::Weak;
use std::time::Duration;

use berth_model::status::TaskStatus;
use berth_store::{Compare, Op, Txn};

use crate::{Control, Result, keys};

/// How long STOPPED tasks stay visible by default (ECS keeps them for at least an hour).
pub const STOPPED_TASK_RETENTION_SECS: f64 = 3600.0;
/// Revisions of history kept for watchers that reconnect.
pub const HISTORY_KEPT: i64 = 100_000;
/// How often housekeeping runs.
pub const INTERVAL: Duration = Duration::from_secs(60);

impl Control {
    /// Delete STOPPED tasks that stopped more than `retention` seconds before `at`.
    /// Returns how many were deleted.
    pub async fn reap_stopped_tasks(&self, at: f64, retention: f64) -> Result<usize> {
        let victims: Vec<(String, i64)> = {
            let d = self.view.data.read();
            d.tasks()
                .iter()
                .flat_map(|(cluster, m)| {
                    m.iter().filter_map(move |(id, e)| {
                        let t = &e.summary;
                        let old = t.last_status == TaskStatus::Stopped
                            && t.stopped_at.is_some_and(|s| s + retention < at);
                        old.then(|| (keys::task(cluster, id), e.rev))
                    })
                })
                .collect()
        };
        let mut n = 0;
        // Each delete only if the task has not changed since we looked; concurrent deletes
        // share commits through the store's group commit.
        for (key, rev) in victims {
            let r = self
                .commit(Txn {
                    compare: vec![Compare::mod_revision_is(key.clone(), rev)],
                    success: vec![Op::delete(key)],
                    failure: vec![],
                })
                .await?;
            if r.succeeded {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Drop store history older than the newest [`HISTORY_KEPT`] revisions.
    pub async fn compact_history(&self) -> Result<()> {
        let rev = self.store.revision().await?;
        if rev > HISTORY_KEPT {
            self.store.compact(rev - HISTORY_KEPT).await?;
        }
        Ok(())
    }

    pub(crate) fn spawn_housekeeping(this: Weak<Control>) {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(INTERVAL);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(c) = this.upgrade() else { return };
                match c
                    .reap_stopped_tasks(
                        c.now().as_secs_f64(),
                        c.stopped_task_retention.as_secs_f64(),
                    )
                    .await
                {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(tasks = n, "forgot stopped tasks"),
                    Err(e) => tracing::warn!("reaping stopped tasks failed: {e}"),
                }
                if let Err(e) = c.compact_history().await {
                    tracing::warn!("store compaction failed: {e}");
                }
            }
        });
    }
}
