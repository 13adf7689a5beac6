//! berth-registry: the image registry — OCI Distribution v1.1 operations and the ECR control
//! API over one content-addressed [`BlobStore`] (blob bytes) and the state store (repositories,
//! manifests, tags, blob links, upload sessions, lifecycle and repository policies).
//!
//! Owns: what a push and a pull mean — names, digests, manifest validation, tag mutability,
//! referrers, registry tokens — and the ECR operation table ([`ecr_ops`]) it plugs into the
//! control plane's command boundary with (the repository's policy travels in each
//! operation's access; the control plane evaluates it). Must not: speak HTTP (the api crate
//! maps requests to these calls), decide who may do what, or expose a blob before it is whole
//! and verified.

pub mod blob;
pub mod digest;
pub mod dist;
pub mod ecr;
pub mod ecr_ops;
pub mod ecr_policy;
pub mod error;
pub mod gc;
pub mod lifecycle;
pub mod manifest;
pub mod token;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use berth_clock::{Clock, Instant};
use berth_store::Store;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

pub use blob::{BlobStore, FsBlobStore};
pub use digest::{Digest, Reference};
pub use error::{DistError, EcrError};

/// Settings of one registry.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    pub region: String,
    pub account_id: String,
    /// host:port clients use for the registry (goes into repositoryUri and proxyEndpoint).
    pub host: String,
    /// Create a repository on first push instead of refusing with NAME_UNKNOWN.
    pub create_on_push: bool,
    /// Challenge clients with `Bearer` (token endpoint `/v2/token`) instead of ECR's `Basic`.
    pub bearer_challenge: bool,
    /// Whether the front door serves HTTPS (the scheme of the URLs the registry hands out).
    pub tls: bool,
}

impl RegistryConfig {
    /// `https://host` or `http://host`: where clients reach the registry.
    pub fn base_url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.host)
    }
}

/// Store keys of the registry.
pub mod keys {
    pub const REPOS: &str = "reg/r/";
    pub const SECRET: &str = "reg/secret";
    pub fn repo(name: &str) -> String {
        format!("{REPOS}{name}")
    }
    pub fn manifests(repo: &str) -> String {
        format!("reg/m/{repo}\u{0}")
    }
    pub fn manifest(repo: &str, digest: &str) -> String {
        format!("reg/m/{repo}\u{0}{digest}")
    }
    pub fn tags(repo: &str) -> String {
        format!("reg/t/{repo}\u{0}")
    }
    pub fn tag(repo: &str, tag: &str) -> String {
        format!("reg/t/{repo}\u{0}{tag}")
    }
    pub fn link(repo: &str, digest: &str) -> String {
        format!("reg/l/{repo}\u{0}{digest}")
    }
    pub fn links(repo: &str) -> String {
        format!("reg/l/{repo}\u{0}")
    }
    pub fn upload(id: &str) -> String {
        format!("reg/u/{id}")
    }
}

/// A stored manifest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ManifestRecord {
    pub digest: String,
    pub media_type: String,
    #[serde(default)]
    pub artifact_type: Option<String>,
    #[serde(default)]
    pub subject: Option<String>,
    /// Config + layers.
    pub image_size: i64,
    pub pushed_at: f64,
    /// The manifest bytes exactly as pushed (manifests are JSON text).
    pub body: String,
    #[serde(default)]
    pub annotations: Option<serde_json::Map<String, serde_json::Value>>,
}

/// A tag → manifest digest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TagRecord {
    pub digest: String,
    pub pushed_at: f64,
}

/// A blob made visible in a repository.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LinkRecord {
    pub size: u64,
    /// When it was linked (epoch seconds): young links survive GC while their push finishes.
    #[serde(default)]
    pub linked_at: f64,
}

/// An upload session: which repository it pushes to, and who started it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UploadRecord {
    pub repo: String,
    pub started_at: f64,
    /// The principal that started it (what the per-principal limit counts).
    #[serde(default)]
    pub owner: String,
}

/// Bounds on upload sessions, so that idle sessions cannot exhaust the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadLimits {
    /// Open sessions one principal may hold; more are refused with `TOOMANYREQUESTS`.
    pub per_principal: usize,
    /// Open sessions in all.
    pub total: usize,
    /// A session no request has touched for this long is removed with its bytes.
    pub idle_timeout: std::time::Duration,
}

impl Default for UploadLimits {
    fn default() -> Self {
        UploadLimits {
            per_principal: 256,
            total: 2048,
            idle_timeout: std::time::Duration::from_secs(300),
        }
    }
}

/// One open upload session in memory: who owns it, when it was last used, and its
/// [`blob::Upload`] behind a lock so that its chunks apply in order.
pub(crate) struct UploadSlot {
    pub(crate) owner: String,
    /// When the last request on it ended (by `clock`).
    pub(crate) last_used: Mutex<Instant>,
    pub(crate) clock: Clock,
    /// Set (under the upload lock) when the session is finished, cancelled or expired: a
    /// request that waited for the lock must not use it.
    pub(crate) gone: std::sync::atomic::AtomicBool,
    pub(crate) upload: Arc<tokio::sync::Mutex<Option<blob::Upload>>>,
}

impl UploadSlot {
    pub(crate) fn new(owner: &str, clock: Clock) -> Arc<UploadSlot> {
        Arc::new(UploadSlot {
            owner: owner.to_string(),
            last_used: Mutex::new(clock.instant()),
            clock,
            gone: std::sync::atomic::AtomicBool::new(false),
            upload: Arc::new(tokio::sync::Mutex::new(None)),
        })
    }

    /// A request on it ended (or began): its idle time starts again.
    pub(crate) fn touch(&self) {
        *self.last_used.lock() = self.clock.instant();
    }

    /// How long no request has touched it.
    pub(crate) fn idle_for(&self) -> std::time::Duration {
        self.clock.elapsed(*self.last_used.lock())
    }
}

/// A repository and its settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RepoRecord {
    pub repo: berth_model::wire::ecr::Repository,
    #[serde(default)]
    pub tags: Vec<berth_model::wire::ecr::Tag>,
    #[serde(default)]
    pub lifecycle_policy: Option<String>,
    #[serde(default)]
    pub lifecycle_evaluated_at: Option<f64>,
    #[serde(default)]
    pub policy: Option<String>,
    /// The last lifecycle policy preview.
    #[serde(default)]
    pub preview: Option<PreviewRecord>,
}

/// A lifecycle policy preview's outcome.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PreviewRecord {
    pub policy_text: String,
    pub status: String,
    pub results: Vec<berth_model::wire::ecr::LifecyclePolicyPreviewResult>,
}

/// The registry: blob bytes in a [`BlobStore`], everything else in the state store.
pub struct Registry {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) blobs: Arc<dyn BlobStore>,
    pub(crate) cfg: RegistryConfig,
    /// Open upload sessions by id (bookkeeping only: an idle session holds no thread and no
    /// open file), bounded by `upload_limits`.
    pub(crate) open_uploads: Mutex<HashMap<String, Arc<UploadSlot>>>,
    pub(crate) upload_limits: UploadLimits,
    pub(crate) token_key: Vec<u8>,
    /// Upload commits and mounts hold the read side from "blob in place" to "link written";
    /// garbage collection holds the write side while it checks and deletes one blob. (A
    /// manifest commit instead re-writes the links it relies on in its own transaction; see
    /// [`gc`].)
    pub(crate) gc_lock: tokio::sync::RwLock<()>,
    /// Where the registry reads the time (push times, token lifetimes, upload idleness).
    pub(crate) clock: Clock,
}

impl Registry {
    /// Open the registry with blobs under `dir`, the default [`UploadLimits`] and the
    /// machine's clock.
    pub async fn open(
        cfg: RegistryConfig,
        store: Arc<dyn Store>,
        dir: &Path,
    ) -> Result<Arc<Registry>, EcrError> {
        Self::open_with(cfg, UploadLimits::default(), Clock::system(), store, dir).await
    }

    /// Open the registry with blobs under `dir`, these bounds on upload sessions, on `clock`
    /// (the control plane's, when they share a process).
    pub async fn open_with(
        cfg: RegistryConfig,
        upload_limits: UploadLimits,
        clock: Clock,
        store: Arc<dyn Store>,
        dir: &Path,
    ) -> Result<Arc<Registry>, EcrError> {
        let blobs = FsBlobStore::open(dir).map_err(|e| EcrError::Server(e.to_string()))?;
        let token_key = token::load_or_create_key(store.as_ref()).await?;
        Ok(Arc::new(Registry {
            store,
            blobs: Arc::new(blobs),
            cfg,
            open_uploads: Mutex::new(HashMap::new()),
            upload_limits,
            token_key,
            gc_lock: tokio::sync::RwLock::new(()),
            clock,
        }))
    }

    /// The clock the registry runs on.
    pub fn clock(&self) -> Clock {
        self.clock
    }

    /// The time now, by [`Registry::clock`].
    pub(crate) fn now(&self) -> berth_clock::Timestamp {
        self.clock.now()
    }

    pub fn config(&self) -> &RegistryConfig {
        &self.cfg
    }

    pub fn upload_limits(&self) -> UploadLimits {
        self.upload_limits
    }

    pub fn blob_store(&self) -> &dyn BlobStore {
        self.blobs.as_ref()
    }

    pub(crate) async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<(T, i64)>, berth_store::StoreError> {
        match self.store.get(key.as_bytes()).await? {
            Some(kv) => match serde_json::from_slice(&kv.value) {
                Ok(v) => Ok(Some((v, kv.mod_revision))),
                Err(e) => Err(berth_store::StoreError::Backend(format!(
                    "unreadable record {key}: {e}"
                ))),
            },
            None => Ok(None),
        }
    }

    /// The ARN of a repository.
    pub fn repo_arn(&self, name: &str) -> String {
        format!(
            "arn:aws:ecr:{}:{}:repository/{name}",
            self.cfg.region, self.cfg.account_id
        )
    }

    /// `host/name`, what `docker push` takes.
    pub fn repo_uri(&self, name: &str) -> String {
        format!("{}/{name}", self.cfg.host)
    }
}
