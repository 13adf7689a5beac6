//! Content-addressed blob storage. A blob becomes visible only whole and verified: uploads
//! stream into a private temp file while being hashed, are checked against the digest the
//! client names, flushed to disk, and then renamed into place atomically. Concurrent pushes
//! of the same blob are harmless (same bytes, atomic rename); a crash leaves at most an
//! abandoned upload file, never a partial blob.
//!
//! [`BlobStore`] is the seam for other backends (object storage later); [`FsBlobStore`] is
//! the filesystem one.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

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

/// An upload in progress: what has been received, the running hash, and where the bytes go.
///
/// An idle upload holds no thread and no open file, only this bookkeeping: bytes are hashed
/// and written by short `spawn_blocking` jobs, one batch at a time, so that receiving the next
/// bytes overlaps hashing and writing the previous ones and the async runtime never blocks on
/// the disk or the hash. [`Upload::flush`] ends a request's writes (and closes the file).
pub struct Upload {
    pub id: String,
    /// Bytes received (written, in flight, or pending).
    pub size: u64,
    /// The file and the hash, when no job holds them.
    state: Option<WriteState>,
    /// The job writing the previous batch; it hands the state back.
    in_flight: Option<tokio::task::JoinHandle<io::Result<WriteState>>>,
    /// Received bytes not yet handed to a job.
    pending: Vec<Bytes>,
    pending_len: usize,
    path: PathBuf,
}

/// What a write job needs: the file (opened by the first job of a request) and the hash.
struct WriteState {
    file: Option<std::fs::File>,
    hasher: Sha256,
}

/// Bytes gathered before a job is started (fewer, larger jobs).
const BATCH: usize = 256 << 10;
/// Received bytes held in memory while a job is still busy, before receiving waits for it.
const MAX_PENDING: usize = 8 << 20;

impl WriteState {
    fn write(&mut self, path: &Path, bufs: &[Bytes]) -> io::Result<()> {
        let f = match &mut self.file {
            Some(f) => f,
            None => self
                .file
                .insert(std::fs::OpenOptions::new().append(true).open(path)?),
        };
        for b in bufs {
            self.hasher.update(b);
            f.write_all(b)?;
        }
        Ok(())
    }
}

impl Upload {
    fn new(id: &str, size: u64, hasher: Sha256, path: PathBuf) -> Upload {
        Upload {
            id: id.to_string(),
            size,
            state: Some(WriteState { file: None, hasher }),
            in_flight: None,
            pending: Vec::new(),
            pending_len: 0,
            path,
        }
    }

    fn broken(&self) -> BlobError {
        BlobError::Io {
            op: "write",
            path: self.path.clone(),
            source: io::Error::other("an earlier write of this upload failed"),
        }
    }

    /// Append bytes (in order). They reach the file by the next [`Upload::flush`].
    pub async fn write(&mut self, data: Bytes) -> Result<(), BlobError> {
        self.size += data.len() as u64;
        self.pending_len += data.len();
        self.pending.push(data);
        if let Some(job) = &self.in_flight
            && !job.is_finished()
            && self.pending_len < MAX_PENDING
        {
            return Ok(());
        }
        self.wait().await?;
        if self.pending_len >= BATCH {
            self.dispatch(false)?;
        }
        Ok(())
    }

    /// Hand the pending bytes to a blocking job; with `close`, the job closes the file after.
    /// With a job still in flight, the new one follows it (a task that waits for it, then
    /// starts the blocking job), so the caller does not wait.
    fn dispatch(&mut self, close: bool) -> Result<(), BlobError> {
        let bufs = std::mem::take(&mut self.pending);
        self.pending_len = 0;
        let path = self.path.clone();
        let job = move |mut state: WriteState| -> io::Result<WriteState> {
            state.write(&path, &bufs)?;
            if close {
                state.file = None;
            }
            Ok(state)
        };
        self.in_flight = Some(match (self.state.take(), self.in_flight.take()) {
            (Some(state), None) => tokio::task::spawn_blocking(move || job(state)),
            (None, Some(prev)) => tokio::spawn(async move {
                let state = prev.await.map_err(io::Error::other)??;
                tokio::task::spawn_blocking(move || job(state))
                    .await
                    .map_err(io::Error::other)?
            }),
            _ => return Err(self.broken()),
        });
        Ok(())
    }

    /// Wait for the job in flight and take the state back. Cancel-safe: the job stays
    /// recorded until it has been awaited to the end.
    async fn wait(&mut self) -> Result<(), BlobError> {
        let Some(job) = self.in_flight.as_mut() else {
            return Ok(());
        };
        let r = job.await;
        self.in_flight = None;
        match r {
            Ok(Ok(state)) => {
                self.state = Some(state);
                Ok(())
            }
            Ok(Err(e)) => Err(io_err("write", &self.path)(e)),
            Err(e) => Err(BlobError::Io {
                op: "write",
                path: self.path.clone(),
                source: io::Error::other(e.to_string()),
            }),
        }
    }

    /// The end of a request's writes: every received byte goes to a job that writes it and
    /// then closes the file, after which the upload holds nothing but its bookkeeping. The
    /// jobs are not waited for (as a writer thread would not be): their outcome is the next
    /// request's, or the commit's, which waits for them.
    pub async fn flush(&mut self) -> Result<(), BlobError> {
        if let Some(job) = &self.in_flight
            && job.is_finished()
        {
            self.wait().await?;
        }
        if self.pending.is_empty() && self.in_flight.is_none() {
            if let Some(s) = &mut self.state {
                s.file = None;
            }
            return Ok(());
        }
        self.dispatch(true)
    }

    /// Write everything, make it durable, and return the hash of the whole upload.
    async fn finish(&mut self) -> Result<Sha256, BlobError> {
        self.wait().await?;
        let mut state = self.state.take().ok_or_else(|| self.broken())?;
        let bufs = std::mem::take(&mut self.pending);
        self.pending_len = 0;
        let path = self.path.clone();
        let r = tokio::task::spawn_blocking(move || {
            state.write(&path, &bufs)?;
            if let Some(f) = &state.file {
                f.sync_all()?;
            } else {
                std::fs::File::open(&path)?.sync_all()?;
            }
            Ok::<_, io::Error>(state.hasher)
        })
        .await;
        match r {
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
    /// Ids of uploads on disk with when each was last written, if known (for garbage
    /// collection; the caller judges the age by its clock).
    async fn uploads(&self) -> Result<Vec<(String, Option<berth_clock::Timestamp>)>, BlobError>;
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
        let p = path.clone();
        // Rebuilding the running hash from what is on disk (after a restart) reads and hashes
        // the whole file: a blocking job, not the runtime's threads.
        let r = tokio::task::spawn_blocking(move || -> io::Result<(Sha256, u64)> {
            let mut hasher = Sha256::new();
            if !resume {
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&p)?;
                return Ok((hasher, 0));
            }
            let mut f = std::fs::File::open(&p)?;
            let mut buf = vec![0u8; 1 << 20];
            let mut size = 0u64;
            loop {
                let n = f.read(&mut buf)?;
                if n == 0 {
                    return Ok((hasher, size));
                }
                hasher.update(&buf[..n]);
                size += n as u64;
            }
        })
        .await
        .map_err(|e| BlobError::Io {
            op: "open",
            path: path.clone(),
            source: io::Error::other(e.to_string()),
        })?;
        match r {
            Ok((hasher, size)) => Ok(Upload::new(id, size, hasher, path)),
            Err(e) if resume && e.kind() == io::ErrorKind::NotFound => {
                Err(BlobError::UploadNotFound(id.to_string()))
            }
            Err(e) => Err(io_err(if resume { "open" } else { "create" }, &path)(e)),
        }
    }

    async fn commit(&self, mut upload: Upload, expected: &Digest) -> Result<u64, BlobError> {
        let hasher = match upload.finish().await {
            Ok(h) => h,
            Err(e) => {
                let _ = tokio::fs::remove_file(&upload.path).await;
                return Err(e);
            }
        };
        let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
        if expected.algorithm() != "sha256" || actual != expected.as_str() {
            let _ = tokio::fs::remove_file(&upload.path).await;
            return Err(BlobError::DigestMismatch {
                expected: expected.to_string(),
                actual,
            });
        }
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

    async fn uploads(&self) -> Result<Vec<(String, Option<berth_clock::Timestamp>)>, BlobError> {
        let dir = self.root.join("uploads");
        let mut out = Vec::new();
        let mut rd = tokio::fs::read_dir(&dir)
            .await
            .map_err(io_err("list", &dir))?;
        while let Some(e) = rd.next_entry().await.map_err(io_err("list", &dir))? {
            let modified = e
                .metadata()
                .await
                .ok()
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(berth_clock::Timestamp::from_unix_duration);
            out.push((e.file_name().to_string_lossy().into_owned(), modified));
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
