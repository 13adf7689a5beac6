//! OCI Distribution v1.1 operations: blobs (stat, delete, mount), uploads (monolithic,
//! POST-then-PUT, chunked PATCH with ordered ranges), manifests (put with validation, get,
//! delete), tags list, referrers and catalog. The HTTP mapping lives in the api crate.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use berth_store::{Compare, Op, RangeRequest, Txn};
use tokio::sync::OwnedMutexGuard;

use crate::blob::Upload;
use crate::digest::{self, Digest, Reference};
use crate::error::DistError;
use crate::manifest::{self, Descriptor};
use crate::{
    LinkRecord, ManifestRecord, Registry, RepoRecord, TagRecord, UploadRecord, UploadSlot, keys,
};

/// An upload being written: holds the session's lock so its chunks apply in order. Dropping
/// it marks the session used now (its idle time starts).
pub struct UploadSession {
    guard: OwnedMutexGuard<Option<Upload>>,
    slot: Arc<UploadSlot>,
    pub id: String,
    pub repo: String,
}

impl UploadSession {
    /// Append bytes; they reach the disk by [`UploadSession::flush`] (or the commit).
    pub async fn write(&mut self, data: bytes::Bytes) -> Result<(), DistError> {
        match self.guard.as_mut() {
            Some(u) => Ok(u.write(data).await?),
            None => Err(DistError::upload_unknown()),
        }
    }
    /// Write what this request sent to disk: the end of a request's chunk.
    pub async fn flush(&mut self) -> Result<(), DistError> {
        match self.guard.as_mut() {
            Some(u) => Ok(u.flush().await?),
            None => Err(DistError::upload_unknown()),
        }
    }
    /// Bytes received so far.
    pub fn size(&self) -> u64 {
        self.guard.as_ref().map_or(0, |u| u.size)
    }
}

impl Drop for UploadSession {
    fn drop(&mut self) {
        self.slot.touch();
    }
}

/// The OCI `TOOMANYREQUESTS` error (429).
fn too_many_uploads(message: String) -> DistError {
    DistError {
        code: "TOOMANYREQUESTS",
        message,
        status: 429,
    }
}

/// One page of names (`tags/list`, `_catalog`).
pub struct Page {
    pub names: Vec<String>,
    /// The last name returned when more remain (for the `Link` header).
    pub next_last: Option<String>,
}

impl Registry {
    /// The repository a request names, checked: NAME_INVALID for a bad name, NAME_UNKNOWN if
    /// it does not exist (unless create-on-push applies to a push).
    pub async fn repository(&self, name: &str, push: bool) -> Result<RepoRecord, DistError> {
        if !digest::valid_repo_name(name) {
            return Err(DistError::name_invalid(name));
        }
        if let Some((r, _)) = self.get_json::<RepoRecord>(&keys::repo(name)).await? {
            return Ok(r);
        }
        if push && self.cfg.create_on_push {
            return self
                .create_repository_record(name, None, vec![])
                .await
                .map_err(|e| DistError::internal(e.to_string()));
        }
        Err(DistError::name_unknown(name))
    }

    async fn link(&self, repo: &str, d: &Digest) -> Result<Option<LinkRecord>, DistError> {
        Ok(self
            .get_json::<LinkRecord>(&keys::link(repo, d.as_str()))
            .await?
            .map(|(l, _)| l))
    }

    /// Size of a blob visible in `repo`.
    pub async fn blob(&self, repo: &str, d: &Digest) -> Result<u64, DistError> {
        self.repository(repo, false).await?;
        if self.link(repo, d).await?.is_none() {
            return Err(DistError::blob_unknown(d.as_str()));
        }
        match self.blobs.stat(d).await? {
            Some(n) => Ok(n),
            None => Err(DistError::blob_unknown(d.as_str())),
        }
    }

    /// Remove a blob from a repository (its bytes go when no repository links it).
    pub async fn delete_blob(&self, repo: &str, d: &Digest) -> Result<(), DistError> {
        self.repository(repo, true).await?;
        let key = keys::link(repo, d.as_str());
        let r = self
            .store
            .txn(Txn {
                compare: vec![Compare::exists(key.clone())],
                success: vec![Op::delete(key)],
                failure: vec![],
            })
            .await?;
        if r.succeeded {
            Ok(())
        } else {
            Err(DistError::blob_unknown(d.as_str()))
        }
    }

    async fn add_link(&self, repo: &str, d: &Digest, size: u64) -> Result<(), DistError> {
        self.store
            .put(
                keys::link(repo, d.as_str()).as_bytes(),
                &serde_json::to_vec(&LinkRecord {
                    size,
                    linked_at: self.now().as_secs_f64(),
                })
                .map_err(|e| DistError::internal(e.to_string()))?,
            )
            .await?;
        Ok(())
    }

    /// Cross-repository mount: make `from`'s blob visible in `repo` without uploading it.
    /// `Ok(None)` when `from` does not have it (the client then uploads).
    pub async fn mount(
        &self,
        repo: &str,
        from: &str,
        d: &Digest,
    ) -> Result<Option<u64>, DistError> {
        self.repository(repo, true).await?;
        if !digest::valid_repo_name(from) {
            return Ok(None);
        }
        let Some(link) = self.link(from, d).await? else {
            return Ok(None);
        };
        let _gc = self.gc_lock.read().await;
        if self.blobs.stat(d).await?.is_none() {
            return Ok(None);
        }
        self.add_link(repo, d, link.size).await?;
        Ok(Some(link.size))
    }

    /// Start an upload session in `repo` for `owner` (the principal's ARN); returns its id.
    /// Refused with `TOOMANYREQUESTS` when the owner, or the registry, has as many open
    /// sessions as [`crate::UploadLimits`] allows.
    pub async fn start_upload(&self, repo: &str, owner: &str) -> Result<String, DistError> {
        self.repository(repo, true).await?;
        let id = berth_model::arn::new_uuid();
        // Reserve the session (counted from here on) and hold its lock until it exists.
        let slot = UploadSlot::new(owner, self.clock);
        let mut guard = slot
            .upload
            .clone()
            .try_lock_owned()
            .map_err(|_| DistError::internal("a new upload session is locked"))?;
        {
            let limits = self.upload_limits;
            let mut open = self.open_uploads.lock();
            if open.len() >= limits.total {
                return Err(too_many_uploads(format!(
                    "the registry has {} upload sessions open, its limit; finish or cancel some, or retry later",
                    open.len()
                )));
            }
            let mine = open.values().filter(|s| s.owner == owner).count();
            if mine >= limits.per_principal {
                return Err(too_many_uploads(format!(
                    "{owner} has {mine} upload sessions open, the limit per principal; finish or cancel some (DELETE the upload), or wait until idle ones expire"
                )));
            }
            open.insert(id.clone(), slot.clone());
        }
        let created = async {
            let rec = UploadRecord {
                repo: repo.to_string(),
                started_at: self.now().as_secs_f64(),
                owner: owner.to_string(),
            };
            self.store
                .put(
                    keys::upload(&id).as_bytes(),
                    &serde_json::to_vec(&rec).map_err(|e| DistError::internal(e.to_string()))?,
                )
                .await?;
            Ok::<_, DistError>(self.blobs.upload(&id, false).await?)
        }
        .await;
        match created {
            Ok(upload) => {
                *guard = Some(upload);
                slot.touch();
                Ok(id)
            }
            Err(e) => {
                slot.gone.store(true, Ordering::SeqCst);
                drop(guard);
                let _ = self.forget_upload(&id, &slot).await;
                Err(e)
            }
        }
    }

    /// Open an existing session of `repo` for writing (or inspecting).
    pub async fn open_upload(&self, repo: &str, id: &str) -> Result<UploadSession, DistError> {
        // A session belongs to the repository it was started in.
        let rec = self
            .get_json::<UploadRecord>(&keys::upload(id))
            .await?
            .map(|(r, _)| r);
        let rec = match rec {
            Some(r) if r.repo == repo => r,
            _ => return Err(DistError::upload_unknown()),
        };
        // After a restart the session is picked up again (it was counted when it started).
        let slot = self
            .open_uploads
            .lock()
            .entry(id.to_string())
            .or_insert_with(|| UploadSlot::new(&rec.owner, self.clock))
            .clone();
        let mut guard = slot.upload.clone().lock_owned().await;
        if slot.gone.load(Ordering::SeqCst) {
            return Err(DistError::upload_unknown());
        }
        if guard.is_none() {
            match self.blobs.upload(id, true).await {
                Ok(u) => *guard = Some(u),
                Err(e) => {
                    slot.gone.store(true, Ordering::SeqCst);
                    drop(guard);
                    self.remove_slot(id, &slot);
                    return Err(e.into());
                }
            }
        }
        slot.touch();
        Ok(UploadSession {
            guard,
            slot,
            id: id.to_string(),
            repo: repo.to_string(),
        })
    }

    /// Check a PATCH's `Content-Range` start against what the session holds.
    pub fn check_range(s: &UploadSession, start: u64, end: u64) -> Result<(), DistError> {
        if end < start {
            return Err(DistError::range_invalid("Content-Range end before start"));
        }
        if start != s.size() {
            return Err(DistError::range_invalid(format!(
                "chunk starts at {start} but the upload has {} bytes",
                s.size()
            )));
        }
        Ok(())
    }

    /// Finish an upload: verify against `d`, publish the blob, link it into the repository.
    pub async fn complete_upload(
        &self,
        mut s: UploadSession,
        d: &Digest,
    ) -> Result<u64, DistError> {
        let upload = s.guard.take().ok_or_else(DistError::upload_unknown)?;
        s.slot.gone.store(true, Ordering::SeqCst);
        let _gc = self.gc_lock.read().await;
        let result = self.blobs.commit(upload, d).await;
        self.forget_upload(&s.id, &s.slot).await?;
        let size = result?;
        self.add_link(&s.repo, d, size).await?;
        Ok(size)
    }

    /// Remove a session's slot, if it is still this one.
    pub(crate) fn remove_slot(&self, id: &str, slot: &Arc<UploadSlot>) {
        let mut open = self.open_uploads.lock();
        if open.get(id).is_some_and(|s| Arc::ptr_eq(s, slot)) {
            open.remove(id);
        }
    }

    /// Forget a finished session: its slot and its record.
    pub(crate) async fn forget_upload(
        &self,
        id: &str,
        slot: &Arc<UploadSlot>,
    ) -> Result<(), DistError> {
        self.remove_slot(id, slot);
        self.store.delete(keys::upload(id).as_bytes()).await?;
        Ok(())
    }

    /// Cancel an upload session.
    pub async fn cancel_upload(&self, mut s: UploadSession) -> Result<(), DistError> {
        s.guard.take();
        s.slot.gone.store(true, Ordering::SeqCst);
        let _ = self.blobs.cancel(&s.id).await;
        self.forget_upload(&s.id, &s.slot).await
    }

    async fn manifest_record(
        &self,
        repo: &str,
        d: &str,
    ) -> Result<Option<(ManifestRecord, i64)>, DistError> {
        Ok(self
            .get_json::<ManifestRecord>(&keys::manifest(repo, d))
            .await?)
    }

    /// Resolve a reference to a manifest of `repo`.
    pub async fn manifest(&self, repo: &str, r: &str) -> Result<ManifestRecord, DistError> {
        self.repository(repo, false).await?;
        let digest = match Reference::parse(r) {
            Some(Reference::Digest(d)) => d.to_string(),
            Some(Reference::Tag(t)) => {
                match self.get_json::<TagRecord>(&keys::tag(repo, &t)).await? {
                    Some((t, _)) => t.digest,
                    None => return Err(DistError::manifest_unknown(r)),
                }
            }
            None => return Err(DistError::manifest_unknown(r)),
        };
        self.manifest_record(repo, &digest)
            .await?
            .map(|(m, _)| m)
            .ok_or_else(|| DistError::manifest_unknown(r))
    }

    /// Store a manifest under a tag or its digest. Returns its digest.
    pub async fn put_manifest(
        &self,
        repo: &str,
        r: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<Digest, DistError> {
        let rec_repo = self.repository(repo, true).await?;
        let reference = Reference::parse(r)
            .ok_or_else(|| DistError::tag_invalid(format!("invalid tag {r}")))?;
        if body.len() > manifest::MAX_MANIFEST {
            return Err(DistError::size_invalid(format!(
                "manifest larger than {} bytes",
                manifest::MAX_MANIFEST
            )));
        }
        let d = Digest::of(body);
        if let Reference::Digest(given) = &reference
            && given != &d
        {
            return Err(DistError::digest_invalid(format!(
                "manifest digest {d} does not match {given}"
            )));
        }
        let text = std::str::from_utf8(body)
            .map_err(|_| DistError::manifest_invalid("manifest is not UTF-8 JSON"))?;
        let parsed = manifest::parse(body, content_type).map_err(DistError::manifest_invalid)?;
        // Everything it refers to must be in this repository already (checked again, and
        // the links held, by the commit below).
        let mut blobs = Vec::new();
        for b in parsed.config.iter().chain(parsed.layers.iter()) {
            blobs.push(Digest::parse(&b.digest).map_err(DistError::manifest_invalid)?);
        }
        for m in &parsed.manifests {
            if self.manifest_record(repo, &m.digest).await?.is_none() {
                return Err(DistError::manifest_blob_unknown(&m.digest));
            }
        }
        let at = self.now().as_secs_f64();
        let rec = ManifestRecord {
            digest: d.to_string(),
            media_type: parsed.media_type.clone(),
            artifact_type: parsed.artifact_type.clone(),
            subject: parsed.subject.as_ref().map(|s| s.digest.clone()),
            image_size: parsed.image_size(),
            pushed_at: at,
            body: text.to_string(),
            annotations: parsed.annotations.clone(),
        };
        let immutable = rec_repo.repo.image_tag_mutability.as_deref() == Some("IMMUTABLE");
        loop {
            let mkey = keys::manifest(repo, d.as_str());
            let existing = self.manifest_record(repo, d.as_str()).await?;
            let mut compare = vec![Compare::mod_revision_is(
                mkey.clone(),
                existing.as_ref().map_or(0, |(_, r)| *r),
            )];
            let mut ops = Vec::new();
            // The links of the blobs it refers to, each compared and re-written (same value, new
            // revision) in the commit. Garbage collection deletes a link only if its revision
            // is still the one it listed, and lists links before manifests: so either it
            // dropped a link first and this commit fails its compare (the retry then answers
            // MANIFEST_BLOB_UNKNOWN), or this commit came first and the collection's delete
            // fails. A committed manifest's blobs are never collected.
            let mut link_compares = Vec::new();
            let mut link_ops = Vec::new();
            for bd in &blobs {
                let key = keys::link(repo, bd.as_str());
                let Some(kv) = self.store.get(key.as_bytes()).await? else {
                    return Err(DistError::manifest_blob_unknown(bd.as_str()));
                };
                link_compares.push(Compare::mod_revision_is(key.clone(), kv.mod_revision));
                link_ops.push(Op::put(key, kv.value));
            }
            // Re-pushing identical bytes keeps the original push time (and its links, held
            // when it was first committed).
            if existing.is_none() {
                ops.push(Op::put(
                    mkey,
                    serde_json::to_vec(&rec).map_err(|e| DistError::internal(e.to_string()))?,
                ));
                compare.extend(link_compares);
                ops.extend(link_ops);
            }
            if let Reference::Tag(t) = &reference {
                let tkey = keys::tag(repo, t);
                let cur = self.get_json::<TagRecord>(&tkey).await?;
                if let Some((ct, _)) = &cur
                    && ct.digest != d.as_str()
                    && immutable
                {
                    return Err(DistError::tag_invalid(format!(
                        "The image tag '{t}' already exists in the '{repo}' repository and cannot be overwritten because the repository is immutable."
                    )));
                }
                compare.push(Compare::mod_revision_is(
                    tkey.clone(),
                    cur.as_ref().map_or(0, |(_, r)| *r),
                ));
                if cur.as_ref().is_none_or(|(ct, _)| ct.digest != d.as_str()) {
                    ops.push(Op::put(
                        tkey,
                        serde_json::to_vec(&TagRecord {
                            digest: d.to_string(),
                            pushed_at: at,
                        })
                        .map_err(|e| DistError::internal(e.to_string()))?,
                    ));
                }
            }
            if ops.is_empty() {
                return Ok(d);
            }
            let r = self
                .store
                .txn(Txn {
                    compare,
                    success: ops,
                    failure: vec![],
                })
                .await?;
            if r.succeeded {
                return Ok(d);
            }
        }
    }

    /// Delete a manifest by digest (with every tag pointing at it) or a tag by name.
    pub async fn delete_manifest(&self, repo: &str, r: &str) -> Result<(), DistError> {
        self.repository(repo, true).await?;
        match Reference::parse(r) {
            Some(Reference::Tag(t)) => {
                let key = keys::tag(repo, &t);
                let res = self
                    .store
                    .txn(Txn {
                        compare: vec![Compare::exists(key.clone())],
                        success: vec![Op::delete(key)],
                        failure: vec![],
                    })
                    .await?;
                if res.succeeded {
                    Ok(())
                } else {
                    Err(DistError::manifest_unknown(r))
                }
            }
            Some(Reference::Digest(d)) => {
                if self.manifest_record(repo, d.as_str()).await?.is_none() {
                    return Err(DistError::manifest_unknown(r));
                }
                let mut ops = vec![Op::delete(keys::manifest(repo, d.as_str()))];
                for (tag, rec) in self.tags_of(repo).await? {
                    if rec.digest == d.as_str() {
                        ops.push(Op::delete(keys::tag(repo, &tag)));
                    }
                }
                self.store.txn(Txn::ops(ops)).await?;
                Ok(())
            }
            None => Err(DistError::manifest_unknown(r)),
        }
    }

    /// Every tag of a repository with its record, in tag order.
    pub async fn tags_of(&self, repo: &str) -> Result<Vec<(String, TagRecord)>, DistError> {
        let prefix = keys::tags(repo);
        let resp = self
            .store
            .range(RangeRequest::prefix(prefix.clone()))
            .await?;
        let mut out = Vec::with_capacity(resp.kvs.len());
        for kv in resp.kvs {
            let tag = String::from_utf8_lossy(&kv.key[prefix.len()..]).into_owned();
            if let Ok(t) = serde_json::from_slice::<TagRecord>(&kv.value) {
                out.push((tag, t));
            }
        }
        Ok(out)
    }

    /// Every manifest of a repository.
    pub async fn manifests_of(&self, repo: &str) -> Result<Vec<ManifestRecord>, DistError> {
        let resp = self
            .store
            .range(RangeRequest::prefix(keys::manifests(repo)))
            .await?;
        Ok(resp
            .kvs
            .iter()
            .filter_map(|kv| serde_json::from_slice(&kv.value).ok())
            .collect())
    }

    /// `tags/list` with `n` and `last`.
    pub async fn tags_list(
        &self,
        repo: &str,
        n: Option<usize>,
        last: Option<&str>,
    ) -> Result<Page, DistError> {
        self.repository(repo, false).await?;
        let tags: Vec<String> = self
            .tags_of(repo)
            .await?
            .into_iter()
            .map(|(t, _)| t)
            .collect();
        Ok(page(tags, n, last))
    }

    /// `_catalog` with `n` and `last`.
    pub async fn catalog(&self, n: Option<usize>, last: Option<&str>) -> Result<Page, DistError> {
        let resp = self
            .store
            .range(RangeRequest {
                keys_only: true,
                ..RangeRequest::prefix(keys::REPOS)
            })
            .await?;
        let names = resp
            .kvs
            .iter()
            .map(|kv| String::from_utf8_lossy(&kv.key[keys::REPOS.len()..]).into_owned())
            .collect();
        Ok(page(names, n, last))
    }

    /// Manifests of `repo` whose subject is `d`, optionally only of one artifact type.
    pub async fn referrers(
        &self,
        repo: &str,
        d: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Descriptor>, DistError> {
        self.repository(repo, false).await?;
        Ok(self
            .manifests_of(repo)
            .await?
            .into_iter()
            .filter(|m| m.subject.as_deref() == Some(d.as_str()))
            .filter(|m| artifact_type.is_none_or(|a| m.artifact_type.as_deref() == Some(a)))
            .map(|m| Descriptor {
                media_type: m.media_type,
                size: m.body.len() as i64,
                digest: m.digest,
                artifact_type: m.artifact_type,
                annotations: m.annotations,
            })
            .collect())
    }
}

fn page(names: Vec<String>, n: Option<usize>, last: Option<&str>) -> Page {
    let mut it: Vec<String> = names
        .into_iter()
        .filter(|x| last.is_none_or(|l| x.as_str() > l))
        .collect();
    match n {
        Some(n) if it.len() > n => {
            it.truncate(n);
            let next_last = it.last().cloned();
            Page {
                names: it,
                next_last,
            }
        }
        _ => Page {
            names: it,
            next_last: None,
        },
    }
}
