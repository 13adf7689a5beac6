//! The node's image store: blobs pulled once and shared by every image (content-addressed,
//! verified on download), and one flattened root filesystem per image manifest, unpacked
//! into a temporary directory and renamed into place when complete — so a crash mid-unpack
//! never leaves a half image that looks whole.

use std::path::{Path, PathBuf};

use berth_client::{ImageRef, RegistryClient};
use serde_json::Value;

use crate::unpack::{self, UnpackError};

/// When to contact the registry (ECS's `ECS_IMAGE_PULL_BEHAVIOR` values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    /// Pull; if the registry cannot be reached, use a cached copy.
    Default,
    /// Always pull; fail if the registry cannot be reached.
    Always,
    /// Pull only if no copy is cached.
    Once,
    /// Use a cached copy if there is one, else pull.
    PreferCached,
}

/// Why an image could not be made ready.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("pulling {image}: {source}")]
    Pull {
        image: String,
        source: berth_client::ClientError,
    },
    #[error("image {0}: {1}")]
    Invalid(String, String),
    #[error("unpacking {image}: {source}")]
    Unpack { image: String, source: UnpackError },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// An image ready to run.
#[derive(Debug, Clone)]
pub struct PulledImage {
    pub manifest_digest: String,
    /// The flattened root filesystem (read-only lower layer for containers).
    pub rootfs: PathBuf,
    /// The image config (`config` member of the OCI config: Entrypoint, Cmd, Env, …).
    pub config: Value,
}

pub struct ImageStore {
    root: PathBuf,
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> ImageError + 'a {
    move |source| ImageError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// The platform this node runs.
pub fn node_platform() -> (&'static str, &'static str) {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        a => a,
    };
    ("linux", arch)
}

impl ImageStore {
    pub fn open(root: &Path) -> Result<ImageStore, ImageError> {
        for d in ["blobs/sha256", "images", "refs", "tmp"] {
            let p = root.join(d);
            std::fs::create_dir_all(&p).map_err(io_err("create", &p))?;
        }
        Ok(ImageStore {
            root: root.to_path_buf(),
        })
    }

    fn blob_path(&self, digest: &str) -> PathBuf {
        self.root
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    }

    fn ref_path(&self, image: &str) -> PathBuf {
        let safe: String = image
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.root.join("refs").join(safe)
    }

    fn image_dir(&self, manifest_digest: &str) -> PathBuf {
        self.root
            .join("images")
            .join(manifest_digest.trim_start_matches("sha256:"))
    }

    /// The cached image for a reference, if complete.
    fn cached(&self, image: &str) -> Option<PulledImage> {
        let digest = std::fs::read_to_string(self.ref_path(image)).ok()?;
        self.load(digest.trim()).ok()
    }

    fn load(&self, manifest_digest: &str) -> Result<PulledImage, ImageError> {
        let dir = self.image_dir(manifest_digest);
        let cfg_path = dir.join("config.json");
        let cfg: Value =
            serde_json::from_slice(&std::fs::read(&cfg_path).map_err(io_err("read", &cfg_path))?)
                .map_err(|e| ImageError::Invalid(manifest_digest.into(), e.to_string()))?;
        Ok(PulledImage {
            manifest_digest: manifest_digest.to_string(),
            rootfs: dir.join("rootfs"),
            config: cfg["config"].clone(),
        })
    }

    /// Make `image` ready according to `policy`.
    pub async fn ensure(
        &self,
        client: &RegistryClient,
        image: &str,
        policy: PullPolicy,
    ) -> Result<PulledImage, ImageError> {
        let cached = self.cached(image);
        match (policy, cached) {
            (PullPolicy::Once | PullPolicy::PreferCached, Some(c)) => return Ok(c),
            (PullPolicy::Default, Some(c)) => {
                return match self.pull(client, image).await {
                    Ok(p) => Ok(p),
                    Err(ImageError::Pull { source, .. })
                        if matches!(source, berth_client::ClientError::Http(_)) =>
                    {
                        tracing::warn!(
                            image,
                            "registry unreachable, using the cached image: {source}"
                        );
                        Ok(c)
                    }
                    Err(e) => Err(e),
                };
            }
            _ => {}
        }
        self.pull(client, image).await
    }

    async fn pull(&self, client: &RegistryClient, image: &str) -> Result<PulledImage, ImageError> {
        let r =
            ImageRef::parse(image).map_err(|e| ImageError::Invalid(image.into(), e.to_string()))?;
        let pull_err = |source| ImageError::Pull {
            image: image.to_string(),
            source,
        };
        let (mut mt, mut body) = client
            .get_manifest(&r.repo, &r.reference)
            .await
            .map_err(pull_err)?;
        let mut manifest: Value = serde_json::from_slice(&body)
            .map_err(|e| ImageError::Invalid(image.into(), e.to_string()))?;
        // A manifest list / index: pick this node's platform.
        if manifest["manifests"].is_array() {
            let (os, arch) = node_platform();
            let pick = manifest["manifests"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|m| m["platform"]["os"] == os && m["platform"]["architecture"] == arch)
                .and_then(|m| m["digest"].as_str())
                .map(str::to_string)
                .ok_or_else(|| {
                    ImageError::Invalid(image.into(), format!("no manifest for {os}/{arch}"))
                })?;
            (mt, body) = client
                .get_manifest(&r.repo, &pick)
                .await
                .map_err(pull_err)?;
            manifest = serde_json::from_slice(&body)
                .map_err(|e| ImageError::Invalid(image.into(), e.to_string()))?;
        }
        let _ = mt;
        let digest = format!(
            "sha256:{}",
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&body))
        );
        let dir = self.image_dir(&digest);
        if dir.join("rootfs").exists() {
            self.write_ref(image, &digest)?;
            return self.load(&digest);
        }
        // Fetch config and layers (each blob once, verified), concurrently.
        let mut blobs = vec![
            manifest["config"]["digest"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        ];
        for l in manifest["layers"].as_array().into_iter().flatten() {
            blobs.push(l["digest"].as_str().unwrap_or_default().to_string());
        }
        let fetches = blobs.iter().map(|d| {
            let path = self.blob_path(d);
            let repo = r.repo.clone();
            async move {
                if tokio::fs::metadata(&path).await.is_ok() {
                    return Ok(());
                }
                client.pull_blob(&repo, d, &path, &|_| {}).await.map(|_| ())
            }
        });
        for res in futures::future::join_all(fetches).await {
            res.map_err(pull_err)?;
        }
        // Unpack into a temp dir, then rename into place.
        let tmp = self
            .root
            .join("tmp")
            .join(digest.trim_start_matches("sha256:"));
        let _ = std::fs::remove_dir_all(&tmp);
        let rootfs = tmp.join("rootfs");
        std::fs::create_dir_all(&rootfs).map_err(io_err("create", &rootfs))?;
        let layers: Vec<PathBuf> = blobs[1..].iter().map(|d| self.blob_path(d)).collect();
        let img = image.to_string();
        let rootfs2 = rootfs.clone();
        tokio::task::spawn_blocking(move || -> Result<(), ImageError> {
            for l in &layers {
                let f = std::fs::File::open(l).map_err(io_err("open", l))?;
                unpack::apply_layer(&rootfs2, f).map_err(|source| ImageError::Unpack {
                    image: img.clone(),
                    source,
                })?;
            }
            Ok(())
        })
        .await
        .map_err(|e| ImageError::Invalid(image.into(), e.to_string()))??;
        let cfg_src = self.blob_path(&blobs[0]);
        let cfg_dst = tmp.join("config.json");
        std::fs::copy(&cfg_src, &cfg_dst).map_err(io_err("copy", &cfg_dst))?;
        // The blobs this image needs, so that collection keeps them while it exists.
        let list = tmp.join("blobs.json");
        std::fs::write(&list, serde_json::to_vec(&blobs).unwrap_or_default())
            .map_err(io_err("write", &list))?;
        if let Some(parent) = dir.parent() {
            std::fs::create_dir_all(parent).map_err(io_err("create", parent))?;
        }
        std::fs::rename(&tmp, &dir).map_err(io_err("rename", &dir))?;
        self.write_ref(image, &digest)?;
        self.load(&digest)
    }

    /// Record that a container is being started from `img` (for [`Self::collect`]).
    pub fn mark_used(&self, img: &PulledImage) {
        if let Some(dir) = img.rootfs.parent() {
            let _ = std::fs::write(dir.join("used"), b"");
        }
    }

    /// Remove images no container uses (no overlay mount has them as its lower layer) and
    /// that were last used (or pulled) more than `min_age` ago, their references, and the
    /// blobs no remaining image needs. Returns how many images were removed.
    pub fn collect(&self, min_age: std::time::Duration) -> Result<usize, ImageError> {
        let images = self.root.join("images");
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let now = std::time::SystemTime::now();
        let mut removed = Vec::new();
        let mut kept_blobs: std::collections::HashSet<String> = Default::default();
        let mut complete = true;
        let rd = std::fs::read_dir(&images).map_err(io_err("read", &images))?;
        for e in rd.flatten() {
            let dir = e.path();
            let rootfs = dir.join("rootfs");
            let in_use = mounts.contains(&format!("lowerdir={}", rootfs.display()));
            let last = std::fs::metadata(dir.join("used"))
                .or_else(|_| std::fs::metadata(&dir))
                .and_then(|m| m.modified())
                .unwrap_or(now);
            let old = now.duration_since(last).unwrap_or_default() >= min_age;
            if !in_use && old {
                let trash = self
                    .root
                    .join("tmp")
                    .join(format!("gc-{}", e.file_name().to_string_lossy()));
                if std::fs::rename(&dir, &trash).is_ok() {
                    let _ = std::fs::remove_dir_all(&trash);
                    removed.push(format!("sha256:{}", e.file_name().to_string_lossy()));
                }
                continue;
            }
            match std::fs::read(dir.join("blobs.json"))
                .ok()
                .and_then(|b| serde_json::from_slice::<Vec<String>>(&b).ok())
            {
                Some(list) => kept_blobs.extend(list),
                None => complete = false,
            }
        }
        // References to removed images.
        let refs = self.root.join("refs");
        for e in std::fs::read_dir(&refs).into_iter().flatten().flatten() {
            let d = std::fs::read_to_string(e.path()).unwrap_or_default();
            if removed.iter().any(|r| r == d.trim()) {
                let _ = std::fs::remove_file(e.path());
            }
        }
        // Blobs: only when every remaining image lists what it needs.
        if complete {
            let blobs = self.root.join("blobs/sha256");
            for e in std::fs::read_dir(&blobs).into_iter().flatten().flatten() {
                let d = format!("sha256:{}", e.file_name().to_string_lossy());
                if !kept_blobs.contains(&d) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        Ok(removed.len())
    }

    fn write_ref(&self, image: &str, digest: &str) -> Result<(), ImageError> {
        let p = self.ref_path(image);
        let tmp = p.with_extension("tmp");
        std::fs::write(&tmp, digest).map_err(io_err("write", &tmp))?;
        std::fs::rename(&tmp, &p).map_err(io_err("rename", &p))
    }
}
