//! The Driver seam: what the agent's task runner asks of whatever runs containers — start one
//! from an image's root filesystem and a [`ContainerSpec`], find it again after an agent
//! restart, wait for its end, signal it, run a command inside it (health checks), read its
//! CPU and memory, make and remove the parent cgroup of a task, clean up after it.
//!
//! Implementations: [`crate::native::NativeRuntime`] (overlay, `berth shim`, libcontainer) and
//! [`crate::fake::FakeDriver`] (modelled containers; the `test-util` feature). A new driver
//! (a user-namespace or gVisor sandbox, Docker Engine, Kubernetes pods) is a new implementation
//! of [`Driver`]; the task runner does not change. Every method is async (through
//! `async_trait`, so the runner holds a `dyn Driver`): a driver that talks to a daemon needs
//! that, and the native one loses nothing by it.
//!
//! Must not: know ECS (containers here are a spec and an id; task semantics are the agent's).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

pub use nix::sys::signal::Signal;

use crate::spec::ContainerSpec;

/// How a container ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
    /// Killed by the kernel for exceeding its memory limit (ECS reports
    /// "OutOfMemoryError: Container killed due to memory usage").
    OutOfMemory,
}

impl Exit {
    /// The exit code as Docker and ECS report it (128 + signal for a signal).
    pub fn code(self) -> i32 {
        match self {
            Exit::Code(c) => c,
            Exit::Signal(s) => 128 + s,
            Exit::OutOfMemory => 137,
        }
    }
}

/// Why a driver could not do something.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("the native runtime needs root: {0}")]
    NotRoot(String),
    #[error("container {id}: {message}")]
    Container { id: String, message: String },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

impl RuntimeError {
    /// What went wrong, without the container id (the agent says which container itself).
    pub fn message(&self) -> String {
        match self {
            RuntimeError::Container { message, .. } => message.clone(),
            other => other.to_string(),
        }
    }
}

/// A cgroup's (or a container's) usage, as [`Driver::stats`] reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CgroupStats {
    /// CPU time used since the cgroup was made, nanoseconds.
    pub cpu_ns: u64,
    /// Memory in use now, bytes.
    pub memory_bytes: u64,
}

/// The end of a container, as a driver learns it.
pub type ExitFuture = Pin<Box<dyn Future<Output = Result<Exit, RuntimeError>> + Send>>;

/// A started (or re-attached) container.
pub struct Container {
    pub id: String,
    /// The container's init process (host pid namespace; a driver without one says 0).
    pub pid: i32,
    /// The process that watches it (the native driver's `berth shim`): with `pid`, what an
    /// agent saves to find the container again after a restart.
    pub shim_pid: i32,
    /// Behind a mutex only so that `&Container` may cross threads; taken by [`Self::wait`].
    exit: parking_lot::Mutex<Option<ExitFuture>>,
}

impl Container {
    pub fn new(id: &str, pid: i32, shim_pid: i32, exit: ExitFuture) -> Container {
        Container {
            id: id.to_string(),
            pid,
            shim_pid,
            exit: parking_lot::Mutex::new(Some(exit)),
        }
    }

    /// Wait for the container to end (once: a second wait is an error).
    pub async fn wait(&mut self) -> Result<Exit, RuntimeError> {
        match self.exit.get_mut().take() {
            Some(f) => f.await,
            None => Err(RuntimeError::Container {
                id: self.id.clone(),
                message: "already waited for".into(),
            }),
        }
    }
}

/// What runs containers on a node. See the module header.
#[async_trait::async_trait]
pub trait Driver: Send + Sync + 'static {
    /// The name nodes register as their `berth.runtime` attribute.
    fn name(&self) -> &'static str;

    /// Create and start container `id` on top of `image_rootfs`.
    async fn start(
        &self,
        id: &str,
        image_rootfs: &Path,
        spec: &ContainerSpec,
    ) -> Result<Container, RuntimeError>;

    /// Find a container started before the agent restarted, by the `pid` and `shim_pid` its
    /// [`Container`] had: `Ok(Some)` while it runs, `Ok(None)` once it has ended (then
    /// [`Self::exit_of`] may say how).
    async fn attach(
        &self,
        id: &str,
        pid: i32,
        shim_pid: i32,
    ) -> Result<Option<Container>, RuntimeError>;

    /// How a container that ended while nobody waited for it ended, if the driver knows.
    async fn exit_of(&self, id: &str) -> Option<Exit>;

    /// The pids (init, shim) of container `id` whose start was under way when the agent that
    /// started it died before it saved them, waiting up to `patience` while the start is still
    /// going on. None: it never started (or it ended: [`Self::exit_of`] says).
    async fn started_pids(&self, id: &str, patience: Duration) -> Option<(i32, i32)>;

    /// Wait for a container to end.
    async fn wait(&self, c: &mut Container) -> Result<Exit, RuntimeError> {
        c.wait().await
    }

    /// Send `signal` to the container's init process (`pid` as its [`Container`] said).
    async fn signal(&self, id: &str, pid: i32, signal: Signal);

    /// SIGTERM, then SIGKILL after `timeout`; how it ended.
    async fn stop(&self, c: &mut Container, timeout: Duration) -> Result<Exit, RuntimeError> {
        self.signal(&c.id, c.pid, Signal::SIGTERM).await;
        let exit = c.exit.get_mut().take();
        let Some(mut exit) = exit else {
            return c.wait().await;
        };
        tokio::select! {
            r = &mut exit => return r,
            _ = tokio::time::sleep(timeout) => {}
        }
        self.signal(&c.id, c.pid, Signal::SIGKILL).await;
        exit.await
    }

    /// Run `args` inside the running container `id` (init `pid`) with the container's own
    /// confinement (namespaces, root, user, capabilities, seccomp, cgroup); the exit code and
    /// the first 4 KiB of output. Killed after `timeout`. Health checks use this.
    async fn exec(
        &self,
        id: &str,
        pid: i32,
        args: &[String],
        timeout: Duration,
    ) -> Result<(i32, String), RuntimeError>;

    /// What container `id` (in cgroup `cgroup`, relative to the hierarchy's root) has used;
    /// None when it is gone.
    async fn stats(&self, id: &str, cgroup: &str) -> Option<CgroupStats>;

    /// The parent cgroup of a task's containers (`rel`, relative to the hierarchy's root)
    /// with the task-level limits ECS applies: `cpu_vcpus` as a CPU quota, `memory_mib` as a
    /// hard limit.
    async fn task_cgroup(
        &self,
        rel: &str,
        cpu_vcpus: Option<f64>,
        memory_mib: Option<i64>,
    ) -> Result<(), RuntimeError>;

    /// Remove a task's (empty) parent cgroup.
    async fn remove_task_cgroup(&self, rel: &str);

    /// Remove what the container left (its root filesystem, bundle); its log stays.
    async fn cleanup(&self, id: &str);

    /// Where the driver writes containers' logs as `<id>.log` files, which the agent rotates
    /// and expires; None when it keeps no log files.
    fn log_dir(&self) -> Option<PathBuf>;
}
