//! Content-addressed blob storage. A blob becomes visible only whole and verified: uploads
//! stream into a private temp file while being hashed, are checked against the digest the
//! client names, flushed to disk, and then renamed into place atomically. Concurrent pushes
//! of the same blob are harmless (same bytes, atomic rename); a crash leaves at most an
//! abandoned upload file, never a partial blob.
//!
//! [`BlobStore`] is the seam for other backends (object storage later); [`FsBlobStore`] is
//! the filesystem one.

use std::io;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt;

use crate::digest::Digest;

/// Why a blob operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("blob {0} not found")]
    NotFound(String),
    #[error("upload {0} not found")]
    UploadNotFound(String),
    #[error("content does not match digest {expected} (got {actual})")]
    DigestMismatch { expected: String, actual: String },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> BlobError + 'a {
    move |source| BlobError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// An upload in progress: bytes appended so far and the running hash.
pub struct Upload {
    pub id: String,
    pub size: u64,
    hasher: Sha256,
    file: tokio::fs::File,
    path: PathBuf,
}

impl Upload {
    /// Append bytes (in order).
    pub async fn write(&mut self, data: &[u8]) -> Result<(), BlobError> {
        self.file
            .write_all(data)
            .await
            .map_err(io_err("write", &self.path))?;
        self.hasher.update(data);
        self.size += data.len() as u64;
        Ok(())
    }
}

#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// Size of a stored blob, or `None`.
    async fn stat(&self, digest: &Digest) -> Result<Option<u64>, BlobError>;
    /// Path of a stored blob for streaming reads.
    fn path(&self, digest: &Digest) -> PathBuf;
    /// Start (or, after a restart, resume) an upload.
    async fn upload(&self, id: &str, resume: bool) -> Result<Upload, BlobError>;
    /// Verify and publish an upload under `expected`. On mismatch the upload is discarded.
    async fn commit(&self, upload: Upload, expected: &Digest) -> Result<u64, BlobError>;
    /// Discard an upload.
    async fn cancel(&self, id: &str) -> Result<(), BlobError>;
    /// Delete a stored blob.
    async fn delete(&self, digest: &Digest) -> Result<(), BlobError>;
    /// Ids of uploads on disk with their age in seconds (for garbage collection).
    async fn uploads(&self) -> Result<Vec<(String, u64)>, BlobError>;
    /// Digests of every stored blob (for garbage collection).
    async fn list(&self) -> Result<Vec<Digest>, BlobError>;
}

/// Blobs as files: `blobs/sha256/ab/abcdef…`, uploads in `uploads/<id>`.
pub struct FsBlobStore {
    root: PathBuf,
}

impl FsBlobStore {
    pub fn open(root: &Path) -> Result<FsBlobStore, BlobError> {
        for d in ["blobs/sha256", "uploads"] {
            let p = root.join(d);
            std::fs::create_dir_all(&p).map_err(io_err("create", &p))?;
        }
        Ok(FsBlobStore {
            root: root.to_path_buf(),
        })
    }

    fn upload_path(&self, id: &str) -> PathBuf {
        self.root.join("uploads").join(id)
    }
}

#[async_trait]
impl BlobStore for FsBlobStore {
    async fn stat(&self, digest: &Digest) -> Result<Option<u64>, BlobError> {
        let p = self.path(digest);
        match tokio::fs::metadata(&p).await {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("stat", &p)(e)),
        }
    }

    fn path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.root
            .join("blobs")
            .join(digest.algorithm())
            .join(&hex[..2])
            .join(hex)
    }

    async fn upload(&self, id: &str, resume: bool) -> Result<Upload, BlobError> {
        let path = self.upload_path(id);
        let mut hasher = Sha256::new();
        let mut size = 0;
        let file = if resume {
            // Rebuild the running hash from what is on disk (the process may have restarted).
            let mut f = match tokio::fs::File::open(&path).await {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(BlobError::UploadNotFound(id.to_string()));
                }
                Err(e) => return Err(io_err("open", &path)(e)),
            };
            let mut buf = vec![0u8; 1 << 20];
            loop {
                use tokio::io::AsyncReadExt;
                let n = f.read(&mut buf).await.map_err(io_err("read", &path))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                size += n as u64;
            }
            tokio::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .await
                .map_err(io_err("open", &path))?
        } else {
            tokio::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
                .await
                .map_err(io_err("create", &path))?
        };
        Ok(Upload {
            id: id.to_string(),
            size,
            hasher,
            file,
            path,
        })
    }

    async fn commit(&self, mut upload: Upload, expected: &Digest) -> Result<u64, BlobError> {
        let actual = format!("sha256:{}", hex::encode(upload.hasher.clone().finalize()));
        if expected.algorithm() != "sha256" || actual != expected.as_str() {
            drop(upload.file);
            let _ = tokio::fs::remove_file(&upload.path).await;
            return Err(BlobError::DigestMismatch {
                expected: expected.to_string(),
                actual,
            });
        }
        upload
            .file
            .flush()
            .await
            .map_err(io_err("flush", &upload.path))?;
        upload
            .file
            .sync_all()
            .await
            .map_err(io_err("sync", &upload.path))?;
        drop(upload.file);
        let dest = self.path(expected);
        let dir = dest.parent().map(Path::to_path_buf).unwrap_or_default();
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(io_err("create", &dir))?;
        tokio::fs::rename(&upload.path, &dest)
            .await
            .map_err(io_err("rename", &dest))?;
        // Make the rename itself durable.
        if let Ok(d) = tokio::fs::File::open(&dir).await {
            let _ = d.sync_all().await;
        }
        Ok(upload.size)
    }

    async fn cancel(&self, id: &str) -> Result<(), BlobError> {
        let p = self.upload_path(id);
        match tokio::fs::remove_file(&p).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(BlobError::UploadNotFound(id.to_string()))
            }
            Err(e) => Err(io_err("remove", &p)(e)),
        }
    }

    async fn delete(&self, digest: &Digest) -> Result<(), BlobError> {
        let p = self.path(digest);
        match tokio::fs::remove_file(&p).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(BlobError::NotFound(digest.to_string()))
            }
            Err(e) => Err(io_err("remove", &p)(e)),
        }
    }

    async fn uploads(&self) -> Result<Vec<(String, u64)>, BlobError> {
        let dir = self.root.join("uploads");
        let mut out = Vec::new();
        let mut rd = tokio::fs::read_dir(&dir)
            .await
            .map_err(io_err("list", &dir))?;
        while let Some(e) = rd.next_entry().await.map_err(io_err("list", &dir))? {
            let age = e
                .metadata()
                .await
                .ok()
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.elapsed().ok())
                .map_or(0, |d| d.as_secs());
            out.push((e.file_name().to_string_lossy().into_owned(), age));
        }
        Ok(out)
    }

    async fn list(&self) -> Result<Vec<Digest>, BlobError> {
        let dir = self.root.join("blobs/sha256");
        let mut out = Vec::new();
        let mut rd = tokio::fs::read_dir(&dir)
            .await
            .map_err(io_err("list", &dir))?;
        while let Some(sub) = rd.next_entry().await.map_err(io_err("list", &dir))? {
            let sp = sub.path();
            let mut inner = tokio::fs::read_dir(&sp)
                .await
                .map_err(io_err("list", &sp))?;
            while let Some(e) = inner.next_entry().await.map_err(io_err("list", &sp))? {
                if let Ok(d) = Digest::parse(&format!("sha256:{}", e.file_name().to_string_lossy()))
                {
                    out.push(d);
                }
            }
        }
        Ok(out)
    }
}
