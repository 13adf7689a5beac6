//! The native runtime driver: containers from an image's root filesystem (overlay: the image
//! read-only below, a per-container upper layer), started by a `berth shim` process per
//! container (see [`crate::shim`]), stopped with a signal, then SIGKILL after a timeout.
//!
//! Requires root (mounts, namespaces, cgroups); [`NativeRuntime::check`] says why not.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::spec::{self, ContainerSpec};

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

/// Why the runtime could not do something.
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

fn io_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> RuntimeError + 'a {
    move |source| RuntimeError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// A started container.
pub struct Container {
    pub id: String,
    pub pid: i32,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    shim: tokio::process::Child,
}

pub struct NativeRuntime {
    root: PathBuf,
    shim_exe: PathBuf,
}

impl NativeRuntime {
    /// `root` holds bundles, container state and logs; `shim_exe` is the `berth` binary.
    pub fn new(root: &Path, shim_exe: &Path) -> Result<NativeRuntime, RuntimeError> {
        Self::check()?;
        for d in ["bundles", "state", "logs"] {
            let p = root.join(d);
            std::fs::create_dir_all(&p).map_err(io_err("create", &p))?;
        }
        Ok(NativeRuntime {
            root: root.to_path_buf(),
            shim_exe: shim_exe.to_path_buf(),
        })
    }

    /// Whether this process can run containers (root).
    pub fn check() -> Result<(), RuntimeError> {
        if nix::unistd::geteuid().is_root() {
            Ok(())
        } else {
            Err(RuntimeError::NotRoot(
                "run berth as root to start containers (the API and registry work without)".into(),
            ))
        }
    }

    fn bundle(&self, id: &str) -> PathBuf {
        self.root.join("bundles").join(id)
    }

    pub fn log_path(&self, id: &str) -> PathBuf {
        self.root.join("logs").join(format!("{id}.log"))
    }

    /// Create and start a container on top of `image_rootfs`.
    pub async fn start(
        &self,
        id: &str,
        image_rootfs: &Path,
        spec: &ContainerSpec,
    ) -> Result<Container, RuntimeError> {
        let err = |m: String| RuntimeError::Container {
            id: id.to_string(),
            message: m,
        };
        let bundle = self.bundle(id);
        let rootfs = bundle.join("rootfs");
        for d in ["upper", "work", "rootfs"] {
            let p = bundle.join(d);
            std::fs::create_dir_all(&p).map_err(io_err("create", &p))?;
        }
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            image_rootfs.display(),
            bundle.join("upper").display(),
            bundle.join("work").display()
        );
        nix::mount::mount(
            Some("overlay"),
            &rootfs,
            Some("overlay"),
            nix::mount::MsFlags::empty(),
            Some(opts.as_str()),
        )
        .map_err(|e| err(format!("mounting the root filesystem: {e}")))?;
        let cfg = spec::oci_config(spec);
        let cfg_path = bundle.join("config.json");
        std::fs::write(&cfg_path, cfg.to_string()).map_err(io_err("write", &cfg_path))?;
        let mut child = Command::new(&self.shim_exe)
            .arg("shim")
            .arg("--id")
            .arg(id)
            .arg("--bundle")
            .arg(&bundle)
            .arg("--state-root")
            .arg(self.root.join("state"))
            .arg("--log")
            .arg(self.log_path(id))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            // Its own process group: a Ctrl-C to berth does not reach running containers.
            .process_group(0)
            .spawn()
            .map_err(|e| err(format!("starting the shim: {e}")))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| err("shim has no stdout".into()))?;
        let mut lines = BufReader::new(stdout).lines();
        let first = lines
            .next_line()
            .await
            .map_err(|e| err(format!("reading the shim: {e}")))?
            .ok_or_else(|| err("the shim exited without starting the container".into()))?;
        let v: serde_json::Value =
            serde_json::from_str(&first).map_err(|e| err(format!("shim said {first:?}: {e}")))?;
        if let Some(e) = v["error"].as_str() {
            let _ = child.wait().await;
            self.cleanup(id);
            return Err(err(e.to_string()));
        }
        let pid = v["pid"]
            .as_i64()
            .ok_or_else(|| err(format!("shim said {first:?}")))? as i32;
        Ok(Container {
            id: id.to_string(),
            pid,
            lines,
            shim: child,
        })
    }

    /// Send `signal` to the container's init process.
    pub fn signal(&self, c: &Container, signal: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.pid), signal);
    }

    /// Wait for the container to end.
    pub async fn wait(&self, c: &mut Container) -> Result<Exit, RuntimeError> {
        let line = c.lines.next_line().await.ok().flatten();
        let _ = c.shim.wait().await;
        let v: serde_json::Value = match line {
            Some(l) => serde_json::from_str(&l).unwrap_or_default(),
            None => {
                // The shim is gone without a word: the exit file may still say.
                let p = self.bundle(&c.id).join("exit.json");
                std::fs::read(&p)
                    .ok()
                    .and_then(|b| serde_json::from_slice(&b).ok())
                    .unwrap_or_default()
            }
        };
        if let Some(code) = v["exit_code"].as_i64() {
            return Ok(Exit::Code(code as i32));
        }
        if v["oom_killed"].as_bool() == Some(true) {
            return Ok(Exit::OutOfMemory);
        }
        if let Some(sig) = v["signal"].as_i64() {
            return Ok(Exit::Signal(sig as i32));
        }
        Err(RuntimeError::Container {
            id: c.id.clone(),
            message: format!("ended without an exit status: {v}"),
        })
    }

    /// SIGTERM, then SIGKILL after `timeout`; returns how it ended.
    pub async fn stop(&self, c: &mut Container, timeout: Duration) -> Result<Exit, RuntimeError> {
        self.signal(c, nix::sys::signal::Signal::SIGTERM);
        let pid = c.pid;
        let killer = tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        });
        let r = self.wait(c).await;
        killer.abort();
        r
    }

    /// Unmount and remove a container's bundle (its log stays).
    pub fn cleanup(&self, id: &str) {
        let bundle = self.bundle(id);
        let _ = nix::mount::umount2(&bundle.join("rootfs"), nix::mount::MntFlags::MNT_DETACH);
        let _ = std::fs::remove_dir_all(&bundle);
    }
}
