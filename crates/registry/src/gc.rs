//! Garbage collection: blobs no repository needs any more, and uploads abandoned mid-way.
//!
//! A link (a blob made visible in a repository) is kept while a manifest of that repository
//! refers to it, or while it is younger than the grace period — so a push whose layers are
//! uploaded but whose manifest has not arrived yet is never disturbed. A blob's bytes are
//! deleted only when no link anywhere refers to it; that check and the delete happen under the
//! write side of a lock whose read side every upload commit and mount holds from "file in
//! place" to "link written", so GC can never delete a blob that is being linked.

use std::collections::{BTreeSet, HashMap};

use berth_store::{Compare, Op, RangeRequest, Txn};

use crate::digest::Digest;
use crate::error::DistError;
use crate::{LinkRecord, ManifestRecord, Registry, keys, manifest, now};

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
        let at = now();

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
        let links = self.store.range(RangeRequest::prefix("reg/l/")).await?;
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
        for (id, age) in self.blobs.uploads().await? {
            if age < upload_idle_secs {
                continue;
            }
            self.open_uploads.lock().remove(&id);
            let _ = self.blobs.cancel(&id).await;
            self.store.delete(keys::upload(&id).as_bytes()).await?;
            report.uploads_removed += 1;
        }
        if report != GcReport::default() {
            tracing::info!(?report, "registry garbage collected");
        }
        Ok(report)
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
