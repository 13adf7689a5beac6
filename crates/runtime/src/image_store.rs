//! The node's image store: blobs pulled once and shared by every image (content-addressed,
//! verified on download), and one flattened root filesystem per image manifest, unpacked
//! into a temporary directory and renamed into place when complete — so a crash mid-unpack
//! never leaves a half image that looks whole.
//!
//! Manifests come from registries berth does not control. Every digest in them is parsed
//! strictly ([`Digest`]) before it names a file, so every path this store builds stays
//! inside its root; every blob is read exactly as large as its descriptor says; manifests
//! and configs are bounded ([`MAX_DOCUMENT`]); downloads and unpacks go to temp files and
//! directories with random names inside the store, removed on every error path.

use std::path::{Path, PathBuf};

use berth_client::digest::{Descriptor, Digest, Document, MAX_DOCUMENT};
use berth_client::{ImageRef, RegistryClient};
use serde_json::Value;

use crate::unpack::{self, UnpackError};

/// Names of the temp directories of unpacks in progress (under `tmp/`).
const UNPACK_PREFIX: &str = "unpack-";

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
    /// Open (or create) the store at `root`. What a crash left half done (unpacks, blob
    /// downloads, collections) is removed: one store belongs to one agent.
    pub fn open(root: &Path) -> Result<ImageStore, ImageError> {
        for d in ["blobs/sha256", "images", "refs", "tmp"] {
            let p = root.join(d);
            std::fs::create_dir_all(&p).map_err(io_err("create", &p))?;
        }
        let leftovers = |dir: &str, prefixes: &[&str]| {
            let entries = std::fs::read_dir(root.join(dir)).into_iter().flatten();
            for e in entries.flatten() {
                let name = e.file_name();
                let name = name.to_string_lossy();
                if prefixes.iter().any(|p| name.starts_with(p)) {
                    let p = e.path();
                    let _ = std::fs::remove_dir_all(&p).or_else(|_| std::fs::remove_file(&p));
                }
            }
        };
        leftovers("tmp", &[UNPACK_PREFIX, "gc-"]);
        leftovers("blobs/sha256", &[berth_client::PARTIAL_PREFIX]);
        leftovers("refs", &[".tmp-"]);
        Ok(ImageStore {
            root: root.to_path_buf(),
        })
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    /// The file holding the manifest digest a reference resolved to: named by the
    /// reference's hash, so that distinct references never share one (`a/b:1`, `a_b:1`).
    fn ref_path(&self, image: &str) -> PathBuf {
        self.root
            .join("refs")
            .join(Digest::of(image.as_bytes()).hex())
    }

    fn image_dir(&self, manifest_digest: &Digest) -> PathBuf {
        self.root.join("images").join(manifest_digest.hex())
    }

    /// The cached image for a reference, if complete.
    fn cached(&self, image: &str) -> Option<PulledImage> {
        let digest = std::fs::read_to_string(self.ref_path(image)).ok()?;
        self.load(&Digest::parse(digest.trim()).ok()?).ok()
    }

    fn load(&self, manifest_digest: &Digest) -> Result<PulledImage, ImageError> {
        let dir = self.image_dir(manifest_digest);
        let cfg_path = dir.join("config.json");
        let cfg: Value =
            serde_json::from_slice(&std::fs::read(&cfg_path).map_err(io_err("read", &cfg_path))?)
                .map_err(|e| ImageError::Invalid(manifest_digest.to_string(), e.to_string()))?;
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
        let invalid =
            |e: berth_client::ClientError| ImageError::Invalid(image.into(), e.to_string());
        let (_, mut body) = client
            .get_manifest(&r.repo, &r.reference)
            .await
            .map_err(pull_err)?;
        let mut doc = Document::parse(&body).map_err(invalid)?;
        // A manifest list / index: pick this node's platform.
        if let Document::Index { manifests } = &doc {
            let (os, arch) = node_platform();
            let pick = manifests
                .iter()
                .find(|m| m.os.as_deref() == Some(os) && m.architecture.as_deref() == Some(arch))
                .ok_or_else(|| {
                    ImageError::Invalid(image.into(), format!("no manifest for {os}/{arch}"))
                })?;
            (_, body) = client
                .get_manifest_for(&r.repo, &pick.manifest)
                .await
                .map_err(pull_err)?;
            doc = Document::parse(&body).map_err(invalid)?;
        }
        let Document::Image { config, layers } = doc else {
            return Err(ImageError::Invalid(
                image.into(),
                "the index for this platform is another index, not an image".into(),
            ));
        };
        if config.size > MAX_DOCUMENT {
            return Err(ImageError::Invalid(
                image.into(),
                format!(
                    "config {} is {} bytes, more than the {MAX_DOCUMENT} allowed",
                    config.digest, config.size
                ),
            ));
        }
        let digest = Digest::of(&body);
        let dir = self.image_dir(&digest);
        if dir.join("rootfs").exists() {
            self.write_ref(image, &digest)?;
            return self.load(&digest);
        }
        // Fetch config and layers (each blob once, verified), concurrently.
        let mut wanted: Vec<&Descriptor> = Vec::new();
        for d in std::iter::once(&config).chain(&layers) {
            if !wanted.iter().any(|w| w.digest == d.digest) {
                wanted.push(d);
            }
        }
        let fetches = wanted.iter().map(|d| {
            let path = self.blob_path(&d.digest);
            let repo = r.repo.clone();
            async move {
                // A blob already here was verified when it came (and is as large as this
                // descriptor says, or the descriptor is wrong and the fetch below fails).
                if tokio::fs::symlink_metadata(&path)
                    .await
                    .is_ok_and(|m| m.is_file() && m.len() == d.size)
                {
                    return Ok(());
                }
                client.pull_blob(&repo, d, &path, &|_| {}).await.map(|_| ())
            }
        });
        for res in futures::future::join_all(fetches).await {
            res.map_err(pull_err)?;
        }
        let cfg_src = self.blob_path(&config.digest);
        let cfg_bytes = std::fs::read(&cfg_src).map_err(io_err("read", &cfg_src))?;
        if !serde_json::from_slice::<Value>(&cfg_bytes).is_ok_and(|v| v.is_object()) {
            return Err(ImageError::Invalid(
                image.into(),
                format!("config {} is not a JSON object", config.digest),
            ));
        }
        // Unpack into a temp dir (removed when dropped, unless renamed into place).
        let tmp_root = self.root.join("tmp");
        let tmp = tempfile::Builder::new()
            .prefix(UNPACK_PREFIX)
            .tempdir_in(&tmp_root)
            .map_err(io_err("create temp dir in", &tmp_root))?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755))
                .map_err(io_err("chmod", tmp.path()))?;
        }
        let rootfs = tmp.path().join("rootfs");
        std::fs::create_dir_all(&rootfs).map_err(io_err("create", &rootfs))?;
        let layer_paths: Vec<PathBuf> = layers.iter().map(|d| self.blob_path(&d.digest)).collect();
        let img = image.to_string();
        let rootfs2 = rootfs.clone();
        tokio::task::spawn_blocking(move || -> Result<(), ImageError> {
            for l in &layer_paths {
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
        let cfg_dst = tmp.path().join("config.json");
        std::fs::write(&cfg_dst, &cfg_bytes).map_err(io_err("write", &cfg_dst))?;
        // The blobs this image needs, so that collection keeps them while it exists.
        let blobs: Vec<&str> = wanted.iter().map(|d| d.digest.as_str()).collect();
        let list = tmp.path().join("blobs.json");
        std::fs::write(&list, serde_json::to_vec(&blobs).unwrap_or_default())
            .map_err(io_err("write", &list))?;
        if let Err(e) = std::fs::rename(tmp.path(), &dir) {
            // Another pull of the same image finished first: use it (ours is dropped).
            if !dir.join("rootfs").exists() {
                return Err(io_err("rename", &dir)(e));
            }
        } else {
            let _ = tmp.keep();
        }
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
    /// that were last used (or pulled) more than `min_age` before `now` (the wall time: it is
    /// compared with the files' modification times), their references, and the blobs no
    /// remaining image needs. Returns how many images were removed.
    pub fn collect(
        &self,
        min_age: std::time::Duration,
        now: berth_clock::Timestamp,
    ) -> Result<usize, ImageError> {
        let images = self.root.join("images");
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut removed = Vec::new();
        let mut kept_blobs: std::collections::HashSet<String> = Default::default();
        let mut complete = true;
        let rd = std::fs::read_dir(&images).map_err(io_err("read", &images))?;
        for e in rd.flatten() {
            if !is_digest_hex(&e.file_name()) {
                continue;
            }
            let dir = e.path();
            let rootfs = dir.join("rootfs");
            let in_use = mounts.contains(&format!("lowerdir={}", rootfs.display()));
            let last = std::fs::metadata(dir.join("used"))
                .or_else(|_| std::fs::metadata(&dir))
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(now, berth_clock::Timestamp::from_unix_duration);
            let old = now.duration_since(last) >= min_age;
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
                // Not downloads in progress (their temp files).
                if !is_digest_hex(&e.file_name()) {
                    continue;
                }
                let d = format!("sha256:{}", e.file_name().to_string_lossy());
                if !kept_blobs.contains(&d) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        Ok(removed.len())
    }

    fn write_ref(&self, image: &str, digest: &Digest) -> Result<(), ImageError> {
        use std::io::Write;
        let p = self.ref_path(image);
        let dir = self.root.join("refs");
        let mut tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .tempfile_in(&dir)
            .map_err(io_err("create temp file in", &dir))?;
        tmp.write_all(digest.as_str().as_bytes())
            .map_err(io_err("write", tmp.path()))?;
        tmp.persist(&p)
            .map(|_| ())
            .map_err(|e| io_err("rename", &p)(e.error))
    }
}

/// Whether a store entry is named as a blob or image is (64 lowercase hex digits).
fn is_digest_hex(name: &std::ffi::OsStr) -> bool {
    name.to_str()
        .is_some_and(|n| Digest::parse(&format!("sha256:{n}")).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_clock::Timestamp;
    use std::time::Duration;

    /// An image is collected once it has gone unused for `min_age` before the `now` the
    /// caller's clock gives, measured from its files' times (not the machine's clock).
    #[test]
    fn collection_ages_images_against_the_time_it_is_given() {
        let d = tempfile::tempdir().unwrap();
        let store = ImageStore::open(d.path()).unwrap();
        let hex = "ab".repeat(32);
        let img = d.path().join("images").join(&hex);
        std::fs::create_dir_all(img.join("rootfs")).unwrap();
        std::fs::write(img.join("blobs.json"), b"[]").unwrap();
        store.mark_used(&PulledImage {
            manifest_digest: format!("sha256:{hex}"),
            rootfs: img.join("rootfs"),
            config: serde_json::Value::Null,
        });
        let used = std::fs::metadata(img.join("used"))
            .unwrap()
            .modified()
            .unwrap()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        let used = Timestamp::from_unix_duration(used);
        let hour = Duration::from_secs(3600);
        assert_eq!(store.collect(hour, used + hour / 2).unwrap(), 0);
        assert!(img.exists(), "used half an hour before");
        assert_eq!(store.collect(hour, used + hour * 2).unwrap(), 1);
        assert!(!img.exists(), "unused for two hours");
    }
}
