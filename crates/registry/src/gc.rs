//! Garbage collection: blobs no repository needs any more, and upload sessions left idle.
//!
//! A link (a blob made visible in a repository) is kept while a manifest of that repository
//! refers to it, or while it is younger than the grace period — so a push whose layers are
//! uploaded but whose manifest has not arrived yet is never disturbed. A blob's bytes are
//! deleted only when no link anywhere refers to it; that check and the delete happen under the
//! write side of a lock whose read side every upload commit and mount holds from "file in
//! place" to "link written", so GC can never delete a blob that is being linked. A manifest
//! commit re-writes the links it refers to in its own transaction, and a link is deleted only
//! at the revision GC listed (before it read the manifests): so a link a committed manifest
//! needs is never deleted, whatever the interleaving.
//!
//! Upload sessions expire after [`crate::UploadLimits::idle_timeout`] without a request
//! ([`Registry::expire_uploads`], run by the maintenance task): their slot, record and
//! partial file go. Partial files no session knows (left by an earlier process) go by age.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use berth_store::{Compare, Op, RangeRequest, Txn};

use crate::digest::Digest;
use crate::error::DistError;
use crate::{LinkRecord, ManifestRecord, Registry, UploadSlot, manifest};

/// What one collection removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    pub links_removed: usize,
    pub blobs_removed: usize,
    pub bytes_freed: u64,
    pub uploads_removed: usize,
}

impl Registry {
    /// Collect garbage: links older than `grace_secs` that no manifest needs, blobs without
    /// links, and uploads idle for more than `upload_idle_secs`.
    pub async fn gc(&self, grace_secs: f64, upload_idle_secs: u64) -> Result<GcReport, DistError> {
        let mut report = GcReport::default();
        let at = self.now().as_secs_f64();

        // List links before reading manifests: a manifest committed after this listing
        // re-wrote the links it needs, so deleting them at the listed revision fails.
        let links = self.store.range(RangeRequest::prefix("reg/l/")).await?;

        // Mark: every digest each repository's manifests refer to.
        let mut needed: HashMap<String, BTreeSet<String>> = HashMap::new();
        let ms = self.store.range(RangeRequest::prefix("reg/m/")).await?;
        for kv in &ms.kvs {
            let Ok(m) = serde_json::from_slice::<ManifestRecord>(&kv.value) else {
                continue;
            };
            let key = String::from_utf8_lossy(&kv.key);
            let repo = key["reg/m/".len()..]
                .split('\u{0}')
                .next()
                .unwrap_or_default()
                .to_string();
            if let Ok(p) = manifest::parse(m.body.as_bytes(), Some(&m.media_type)) {
                let set = needed.entry(repo).or_default();
                for d in p.config.iter().chain(p.layers.iter()) {
                    set.insert(d.digest.clone());
                }
            }
        }

        // Sweep links.
        let mut live: BTreeSet<String> = BTreeSet::new();
        for kv in &links.kvs {
            let key = String::from_utf8_lossy(&kv.key).into_owned();
            let Some((repo, digest)) = key["reg/l/".len()..].split_once('\u{0}') else {
                continue;
            };
            let rec: LinkRecord = serde_json::from_slice(&kv.value).unwrap_or(LinkRecord {
                size: 0,
                linked_at: 0.0,
            });
            let referenced = needed.get(repo).is_some_and(|s| s.contains(digest));
            if referenced || rec.linked_at + grace_secs > at {
                live.insert(digest.to_string());
                continue;
            }
            let r = self
                .store
                .txn(Txn {
                    compare: vec![Compare::mod_revision_is(key.clone(), kv.mod_revision)],
                    success: vec![Op::delete(key.clone())],
                    failure: vec![],
                })
                .await?;
            if r.succeeded {
                report.links_removed += 1;
            } else {
                live.insert(digest.to_string());
            }
        }

        // Sweep blobs nobody links.
        for d in self.blobs.list().await? {
            if live.contains(d.as_str()) {
                continue;
            }
            let _w = self.gc_lock.write().await;
            if self.any_link(&d).await? {
                continue;
            }
            let size = self.blobs.stat(&d).await?.unwrap_or(0);
            if self.blobs.delete(&d).await.is_ok() {
                report.blobs_removed += 1;
                report.bytes_freed += size;
            }
        }

        // Abandoned uploads.
        report.uploads_removed = self
            .expire_uploads(Duration::from_secs(upload_idle_secs))
            .await?;
        if report != GcReport::default() {
            tracing::info!(?report, "registry garbage collected");
        }
        Ok(report)
    }

    /// Expire idle upload sessions every so often while the registry lives: a quarter of the
    /// idle timeout, between one second and a minute.
    pub fn spawn_upload_expiry(this: &Arc<Registry>) {
        let weak = Arc::downgrade(this);
        let idle = this.upload_limits.idle_timeout;
        let every = (idle / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(r) = weak.upgrade() else { return };
                match r.expire_uploads(idle).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(sessions = n, "idle upload sessions expired"),
                    Err(e) => tracing::warn!("expiring idle upload sessions: {e}"),
                }
            }
        });
    }

    /// Remove upload sessions no request has touched for `idle` (a session busy with a
    /// request is never touched), and partial upload files no session knows that are older
    /// than `idle`. Returns how many went.
    pub async fn expire_uploads(&self, idle: Duration) -> Result<usize, DistError> {
        let mut removed = 0;
        let expired: Vec<(String, Arc<UploadSlot>)> = {
            self.open_uploads
                .lock()
                .iter()
                .filter(|(_, s)| s.idle_for() >= idle)
                .map(|(id, s)| (id.clone(), s.clone()))
                .collect()
        };
        for (id, slot) in expired {
            // Busy (a request holds it): not idle.
            let Ok(mut guard) = slot.upload.clone().try_lock_owned() else {
                continue;
            };
            let idle_for = slot.idle_for();
            if slot.gone.load(Ordering::SeqCst) || idle_for < idle {
                continue;
            }
            slot.gone.store(true, Ordering::SeqCst);
            guard.take();
            drop(guard);
            let _ = self.blobs.cancel(&id).await;
            self.forget_upload(&id, &slot).await?;
            tracing::debug!(upload = %id, ?idle_for, "idle upload session expired");
            removed += 1;
        }
        // Partial files of sessions this process never opened (it restarted). A tombstone slot
        // keeps a request from picking one up while it is being removed.
        let now = self.now();
        for (id, modified) in self.blobs.uploads().await? {
            // Unknown age: left alone, as a young one would be.
            if modified.is_none_or(|m| now.duration_since(m) < idle) {
                continue;
            }
            let tomb = UploadSlot::new("", self.clock);
            tomb.gone.store(true, Ordering::SeqCst);
            {
                let mut open = self.open_uploads.lock();
                if open.contains_key(&id) {
                    continue;
                }
                open.insert(id.clone(), tomb.clone());
            }
            let _ = self.blobs.cancel(&id).await;
            self.forget_upload(&id, &tomb).await?;
            removed += 1;
        }
        Ok(removed)
    }

    /// Whether any repository links `d` (a full scan: GC only).
    async fn any_link(&self, d: &Digest) -> Result<bool, DistError> {
        let links = self
            .store
            .range(RangeRequest {
                keys_only: true,
                ..RangeRequest::prefix("reg/l/")
            })
            .await?;
        let suffix = format!("\u{0}{}", d.as_str());
        Ok(links
            .kvs
            .iter()
            .any(|kv| kv.key.ends_with(suffix.as_bytes())))
    }
}
