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

use std::io::Write;

use async_trait::async_trait;
use bytes::Bytes;
use sha2::{Digest as _, Sha256};

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

/// An upload in progress. Bytes go to a writer thread of its own that hashes and writes
/// them, so receiving the next bytes overlaps hashing and writing the previous ones and the
/// async runtime never blocks on the disk or the hash.
pub struct Upload {
    pub id: String,
    pub size: u64,
    tx: Option<tokio::sync::mpsc::Sender<Bytes>>,
    writer: Option<tokio::task::JoinHandle<io::Result<(std::fs::File, Sha256)>>>,
    path: PathBuf,
}

/// Chunks in flight between an upload and its writer thread.
const WRITE_QUEUE: usize = 64;

impl Upload {
    fn start(id: &str, size: u64, hasher: Sha256, file: std::fs::File, path: PathBuf) -> Upload {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(WRITE_QUEUE);
        let writer = tokio::task::spawn_blocking(move || {
            let mut f = file;
            let mut hasher = hasher;
            while let Some(b) = rx.blocking_recv() {
                hasher.update(&b);
                f.write_all(&b)?;
            }
            Ok((f, hasher))
        });
        Upload {
            id: id.to_string(),
            size,
            tx: Some(tx),
            writer: Some(writer),
            path,
        }
    }

    /// Append bytes (in order).
    pub async fn write(&mut self, data: Bytes) -> Result<(), BlobError> {
        self.size += data.len() as u64;
        let sent = match &self.tx {
            Some(tx) => tx.send(data).await.is_ok(),
            None => false,
        };
        if !sent {
            // The writer stopped: its error says why.
            return Err(self.finish_writes().await.err().unwrap_or(BlobError::Io {
                op: "write",
                path: self.path.clone(),
                source: io::Error::other("upload writer stopped"),
            }));
        }
        Ok(())
    }

    /// Wait for every queued byte to reach the file; returns the file and the hash.
    async fn finish_writes(&mut self) -> Result<(std::fs::File, Sha256), BlobError> {
        self.tx.take();
        let w = self.writer.take().ok_or_else(|| BlobError::Io {
            op: "write",
            path: self.path.clone(),
            source: io::Error::other("upload already finished"),
        })?;
        match w.await {
            Ok(r) => r.map_err(io_err("write", &self.path)),
            Err(e) => Err(BlobError::Io {
                op: "write",
                path: self.path.clone(),
                source: io::Error::other(e.to_string()),
            }),
        }
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
            std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .map_err(io_err("open", &path))?
        } else {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
                .map_err(io_err("create", &path))?
        };
        Ok(Upload::start(id, size, hasher, file, path))
    }

    async fn commit(&self, mut upload: Upload, expected: &Digest) -> Result<u64, BlobError> {
        let (file, hasher) = match upload.finish_writes().await {
            Ok(x) => x,
            Err(e) => {
                let _ = tokio::fs::remove_file(&upload.path).await;
                return Err(e);
            }
        };
        let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
        if expected.algorithm() != "sha256" || actual != expected.as_str() {
            drop(file);
            let _ = tokio::fs::remove_file(&upload.path).await;
            return Err(BlobError::DigestMismatch {
                expected: expected.to_string(),
                actual,
            });
        }
        let p = upload.path.clone();
        tokio::task::spawn_blocking(move || file.sync_all())
            .await
            .map_err(|e| BlobError::Io {
                op: "sync",
                path: p.clone(),
                source: io::Error::other(e.to_string()),
            })?
            .map_err(io_err("sync", &upload.path))?;
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
