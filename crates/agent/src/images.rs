//! The node's images as the task runner uses them: an image reference made ready (pulled by
//! the pull policy, unpacked into a root filesystem), marked used by each container start, and
//! collected when unused. [`Images`] is the seam; [`NodeImages`] is the real one — the
//! runtime's [`ImageStore`] with a registry client per registry host (berth's own registry,
//! and ECR-style names for it, with its password; anonymous elsewhere), one pull of an image at
//! a time, and collection excluded while pulls run.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use berth_client::{ImageRef, RegistryAuth, RegistryClient};
use berth_runtime::{ImageStore, PulledImage};
use parking_lot::Mutex;

use crate::AgentConfig;

/// Where a node's images come from. See the module header.
#[async_trait::async_trait]
pub trait Images: Send + Sync {
    /// Make an image ready; the error is the reason a task reports.
    async fn pull(&self, image: &str) -> Result<PulledImage, String>;
    /// A container starts from `img` (collection spares recently used images).
    fn mark_used(&self, img: &PulledImage);
    /// Remove images unused for at least `min_age`; how many went.
    async fn collect(&self, min_age: Duration) -> Result<usize, String>;
    /// A newer password for the control plane's registry (tokens expire).
    fn set_registry_auth(&self, auth: RegistryAuth);
}

/// The real image store of a node.
pub struct NodeImages {
    store: Arc<ImageStore>,
    cfg: AgentConfig,
    clients: Mutex<HashMap<String, Arc<RegistryClient>>>,
    /// A newer password for the local registry than the configured one.
    registry_auth: Mutex<Option<RegistryAuth>>,
    /// One pull of an image at a time (the image store unpacks into a per-digest temp dir).
    pull_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Pulls (shared) against image collection (exclusive).
    gc_lock: tokio::sync::RwLock<()>,
}

impl NodeImages {
    /// The store under `<root>/images`, with the registries of `cfg`.
    pub fn open(cfg: &AgentConfig) -> Result<NodeImages, berth_runtime::image_store::ImageError> {
        Ok(NodeImages {
            store: Arc::new(ImageStore::open(&cfg.root.join("images"))?),
            cfg: cfg.clone(),
            clients: Mutex::new(HashMap::new()),
            registry_auth: Mutex::new(None),
            pull_locks: Mutex::new(HashMap::new()),
            gc_lock: tokio::sync::RwLock::new(()),
        })
    }

    fn client_for(&self, image: &str) -> Result<Arc<RegistryClient>, String> {
        let r = ImageRef::parse(image).map_err(|e| e.to_string())?;
        let local = self.cfg.local_registry.as_ref().filter(|(host, _)| {
            r.host == *host
                || (r.host.contains(".dkr.ecr.") && r.host.ends_with(".amazonaws.com"))
                || r.host == host.replace("127.0.0.1", "localhost")
        });
        let (host, auth, is_local) = match local {
            Some((h, a)) => (
                h.clone(),
                self.registry_auth
                    .lock()
                    .clone()
                    .unwrap_or_else(|| a.clone()),
                true,
            ),
            None => (r.host.clone(), RegistryAuth::Anonymous, false),
        };
        let tls = self.cfg.local_registry_tls;
        let mut clients = self.clients.lock();
        Ok(clients
            .entry(host.clone())
            .or_insert_with(|| {
                let c = match (is_local, tls) {
                    (true, false) => RegistryClient::insecure(&host, auth),
                    (true, true) => RegistryClient::with_base(&format!("https://{host}"), auth),
                    _ => RegistryClient::new(&host, auth),
                };
                Arc::new(match &self.cfg.tls_trust {
                    Some(t) => c.with_trust(t),
                    None => c,
                })
            })
            .clone())
    }

    /// An image reference with an alias of the local registry's host replaced by its address.
    fn rewrite(&self, image: &str) -> String {
        let Some((host, _)) = &self.cfg.local_registry else {
            return image.to_string();
        };
        match image.split_once('/') {
            Some((h, rest)) if h.contains(".dkr.ecr.") && h.ends_with(".amazonaws.com") => {
                format!("{host}/{rest}")
            }
            _ => image.to_string(),
        }
    }
}

#[async_trait::async_trait]
impl Images for NodeImages {
    async fn pull(&self, image: &str) -> Result<PulledImage, String> {
        let client = self.client_for(image)?;
        let lock = self
            .pull_locks
            .lock()
            .entry(image.to_string())
            .or_default()
            .clone();
        let _g = lock.lock().await;
        let _gc = self.gc_lock.read().await;
        self.store
            .ensure(&client, &self.rewrite(image), self.cfg.pull_policy)
            .await
            .map_err(|e| e.to_string())
    }

    fn mark_used(&self, img: &PulledImage) {
        self.store.mark_used(img);
    }

    async fn collect(&self, min_age: Duration) -> Result<usize, String> {
        let _g = self.gc_lock.write().await;
        let store = self.store.clone();
        let now = self.cfg.clock.now();
        tokio::task::spawn_blocking(move || store.collect(min_age, now))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())
    }

    fn set_registry_auth(&self, auth: RegistryAuth) {
        *self.registry_auth.lock() = Some(auth);
        if let Some((host, _)) = &self.cfg.local_registry {
            self.clients.lock().remove(host);
        }
    }
}
