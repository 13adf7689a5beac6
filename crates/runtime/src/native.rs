//! The native driver ([`Driver`] for [`NativeRuntime`]): containers from an image's root
//! filesystem (overlay: the image read-only below, a per-container upper layer), started by a
//! `berth shim` process per container (see [`crate::shim`]), stopped with a signal, then
//! SIGKILL after a timeout; commands inside a running container through `berth nsexec`
//! ([`crate::nsexec`]); task cgroups and usage from `/sys/fs/cgroup` (v1 and v2).
//!
//! Requires root (mounts, namespaces, cgroups); [`NativeRuntime::check`] says why not.
//! Known gap: [`NativeRuntime::exec_pid`] names the container to `berth nsexec` by its init's
//! pid; nsexec holds on to the process it finds, but cannot tell it from a process that reused
//! the pid after the container ended. Passing the init's start time would close that.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

pub use crate::driver::{CgroupStats, Container, Exit, RuntimeError};
use crate::driver::{Driver, Signal};
use crate::spec::{self, ContainerSpec};

/// How the shim's report or exit file reads.
fn exit_from(v: &serde_json::Value) -> Option<Exit> {
    if v["oom_killed"].as_bool() == Some(true) {
        return Some(Exit::OutOfMemory);
    }
    if let Some(code) = v["exit_code"].as_i64() {
        return Some(Exit::Code(code as i32));
    }
    v["signal"].as_i64().map(|s| Exit::Signal(s as i32))
}

/// How a container ended, from the exit file its shim left in the bundle (None: none left).
fn exit_file(bundle: &Path) -> Option<Exit> {
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("exit.json")).ok()?).ok()?;
    exit_from(&v)
}

/// The end of a container learned from the shim's report (`report`: its last line), or,
/// when the shim said nothing, from its exit file.
fn ended(id: &str, bundle: &Path, report: serde_json::Value) -> Result<Exit, RuntimeError> {
    if let Some(e) = exit_from(&report) {
        return Ok(e);
    }
    exit_file(bundle).ok_or_else(|| RuntimeError::Container {
        id: id.to_string(),
        message: format!("ended without an exit status: {report}"),
    })
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

/// `pidfd_open(2)`: a descriptor that becomes readable when `pid` exits.
pub(crate) fn pidfd_open(pid: i32) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: a plain syscall with integer arguments; on success the kernel returns a new
    // descriptor that nothing else owns.
    let fd = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor returned by pidfd_open, owned by nobody else.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) })
}

/// Whether `pid` is a live `berth shim` for container `id`.
fn is_shim_of(pid: i32, id: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
        let args: Vec<&[u8]> = c.split(|b| *b == 0).collect();
        args.contains(&b"shim".as_slice()) && args.contains(&id.as_bytes())
    })
}

/// Whether any live process is a `berth shim` for container `id`.
fn shim_running(id: &str) -> bool {
    std::fs::read_dir("/proc").is_ok_and(|rd| {
        rd.flatten().any(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.parse::<i32>().ok())
                .is_some_and(|pid| is_shim_of(pid, id) && !is_zombie(pid))
        })
    })
}

/// Whether `pid` has exited and waits to be reaped.
fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
    })
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

    /// Ask the kernel to favour dynamic cgroup changes (the cgroup v2 `favordynmods` mount
    /// option, Linux 6.0+): moving a process into a cgroup — once per container start — then
    /// no longer waits for an RCU grace period (measured here: 11–16 ms → 0.1 ms per start),
    /// at the cost of slightly dearer forks and exits. The hierarchy's other options are
    /// kept. Returns what was done, for the log; an error if the kernel refused.
    pub fn favor_dynamic_cgroups() -> Result<Option<String>, String> {
        let info = std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| e.to_string())?;
        for line in info.lines() {
            let Some((pre, post)) = line.split_once(" - ") else {
                continue;
            };
            let mut post = post.split_whitespace();
            if post.next() != Some("cgroup2") {
                continue;
            }
            let _source = post.next();
            let opts = post.next().unwrap_or("rw");
            let Some(point) = pre.split_whitespace().nth(4) else {
                continue;
            };
            if opts.split(',').any(|o| o == "favordynmods") {
                return Ok(None);
            }
            let data = format!("{opts},favordynmods");
            nix::mount::mount(
                None::<&str>,
                point,
                None::<&str>,
                nix::mount::MsFlags::MS_REMOUNT,
                Some(data.as_str()),
            )
            .map_err(|e| format!("remounting {point} with favordynmods: {e}"))?;
            return Ok(Some(format!("{point} remounted with favordynmods")));
        }
        Ok(None)
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
        let shim_pid = child.id().map_or(-1, |p| p as i32);
        // The shim reports the end on its pipe; its exit file says it if the pipe does not.
        let (cid, mut shim) = (id.to_string(), child);
        let exit = Box::pin(async move {
            let line = lines.next_line().await.ok().flatten();
            let _ = shim.wait().await;
            let report = line
                .and_then(|l| serde_json::from_str(&l).ok())
                .unwrap_or_default();
            ended(&cid, &bundle, report)
        });
        Ok(Container::new(id, pid, shim_pid, exit))
    }

    /// Find a container started before this process restarted: `Ok(Some)` if its shim still
    /// runs, `Ok(None)` if it has ended (then [`Self::exit_of`] says how).
    pub fn attach(
        &self,
        id: &str,
        pid: i32,
        shim_pid: i32,
    ) -> Result<Option<Container>, RuntimeError> {
        if !is_shim_of(shim_pid, id) {
            return Ok(None);
        }
        let fd = match pidfd_open(shim_pid) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(nix::libc::ESRCH) => return Ok(None),
            Err(e) => {
                return Err(RuntimeError::Container {
                    id: id.into(),
                    message: format!("watching shim {shim_pid}: {e}"),
                });
            }
        };
        // SAFETY: `fd` is an OwnedFd moved into the AsyncFd, which keeps it open and
        // unchanged until the AsyncFd is dropped.
        let fd = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
        }
        .map_err(|e| RuntimeError::Container {
            id: id.into(),
            message: format!("watching shim {shim_pid}: {e}"),
        })?;
        // The shim's pidfd becomes readable when it exits; its exit file says how it ended.
        let (cid, bundle) = (id.to_string(), self.bundle(id));
        let exit = Box::pin(async move {
            let _ = fd.readable().await;
            ended(&cid, &bundle, serde_json::Value::Null)
        });
        Ok(Some(Container::new(id, pid, shim_pid, exit)))
    }

    /// The pids (container init, shim) of a container whose start was under way when the
    /// agent that started it died, before it saved them: from the record its shim writes once
    /// the container runs (`started.json`), waiting up to `patience` while a shim of `id` is
    /// still starting it. `None`: no shim of `id` runs and none left a record, so the
    /// container never started (or it ended: [`Self::exit_of`] says).
    pub async fn started_pids(&self, id: &str, patience: Duration) -> Option<(i32, i32)> {
        let record = self.bundle(id).join("started.json");
        let read = || -> Option<(i32, i32)> {
            let v: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&record).ok()?).ok()?;
            Some((v["pid"].as_i64()? as i32, v["shim_pid"].as_i64()? as i32))
        };
        let wait = async {
            loop {
                if let Some(p) = read() {
                    return Some(p);
                }
                if !shim_running(id) {
                    // It may have written the record just before it ended.
                    return read();
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        tokio::time::timeout(patience, wait).await.unwrap_or(None)
    }

    /// How a container ended, from the exit file its shim left (None: it left none).
    pub fn exit_of(&self, id: &str) -> Option<Exit> {
        exit_file(&self.bundle(id))
    }

    /// Run `args` inside a running container (its namespaces and root, its user and
    /// environment) through `berth nsexec`; returns the exit code and the first 4 KiB of
    /// output. Killed after `timeout`.
    pub async fn exec(
        &self,
        c: &Container,
        args: &[String],
        timeout: Duration,
    ) -> Result<(i32, String), RuntimeError> {
        self.exec_pid(&c.id, c.pid, args, timeout).await
    }

    /// [`Self::exec`] by the container's id and init pid.
    pub async fn exec_pid(
        &self,
        id: &str,
        pid: i32,
        args: &[String],
        timeout: Duration,
    ) -> Result<(i32, String), RuntimeError> {
        let err = |m: String| RuntimeError::Container {
            id: id.to_string(),
            message: m,
        };
        // The init's start time from the shim's record of the start: nsexec refuses any other
        // process that has the pid now. A container that ended runs nothing more.
        let bundle = self.bundle(id);
        if bundle.join("exit.json").exists() {
            return Err(err("the container has ended".into()));
        }
        let record = std::fs::read(bundle.join("started.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
        if let Some(r) = &record
            && r["pid"].as_i64() != Some(i64::from(pid))
        {
            return Err(err(format!("process {pid} is not the container's init")));
        }
        let start_time = record.and_then(|v| v["start_time"].as_u64());
        let mut cmd = Command::new(&self.shim_exe);
        cmd.arg("nsexec").arg("--pid").arg(pid.to_string());
        if let Some(t) = start_time {
            cmd.arg("--start-time").arg(t.to_string());
        }
        let child = cmd
            .arg("--")
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| err(format!("starting nsexec: {e}")))?;
        match tokio::time::timeout(timeout, child.wait_with_output()).await {
            Err(_) => Err(err(format!("command timed out after {timeout:?}"))),
            Ok(Err(e)) => Err(err(format!("nsexec: {e}"))),
            Ok(Ok(out)) => {
                let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
                text.push_str(&String::from_utf8_lossy(&out.stderr));
                text.truncate(4096);
                let code = out.status.code().unwrap_or_else(|| {
                    128 + std::os::unix::process::ExitStatusExt::signal(&out.status).unwrap_or(0)
                });
                Ok((code, text))
            }
        }
    }

    /// Send `signal` to the container's init process.
    pub fn signal(&self, c: &Container, signal: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.pid), signal);
    }

    /// Wait for the container to end.
    pub async fn wait(&self, c: &mut Container) -> Result<Exit, RuntimeError> {
        c.wait().await
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

    /// The parent cgroup of a task's containers with the task-level limits ECS applies:
    /// `cpu` (vCPUs) as a CFS quota over a 100 ms period, `memory` (MiB) as a hard limit.
    /// cgroup v1 (the `cpu` and `memory` hierarchies) and v2 (`cpu.max`, `memory.max`).
    pub fn task_cgroup(
        &self,
        rel: &str,
        cpu_vcpus: Option<f64>,
        memory_mib: Option<i64>,
    ) -> Result<(), RuntimeError> {
        let rel = rel.trim_start_matches('/');
        let write = |dir: PathBuf, file: &str, value: String| -> Result<(), RuntimeError> {
            std::fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
            let p = dir.join(file);
            std::fs::write(&p, value).map_err(io_err("write", &p))
        };
        let root = Path::new("/sys/fs/cgroup");
        let quota = cpu_vcpus
            .filter(|c| *c > 0.0)
            .map(|c| (c * 100_000.0) as i64);
        let limit = memory_mib.filter(|m| *m > 0).map(|m| m << 20);
        if root.join("cgroup.controllers").exists() {
            // Unified: enable the controllers down the path, then set the limits.
            let mut dir = root.to_path_buf();
            for part in rel.split('/') {
                let _ = std::fs::write(dir.join("cgroup.subtree_control"), "+cpu +memory");
                dir = dir.join(part);
                std::fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
            }
            if let Some(q) = quota {
                write(dir.clone(), "cpu.max", format!("{q} 100000"))?;
            }
            if let Some(l) = limit {
                write(dir, "memory.max", l.to_string())?;
            }
            return Ok(());
        }
        if let Some(q) = quota {
            let dir = root.join("cpu").join(rel);
            write(dir.clone(), "cpu.cfs_period_us", "100000".into())?;
            write(dir, "cpu.cfs_quota_us", q.to_string())?;
        }
        if let Some(l) = limit {
            write(
                root.join("memory").join(rel),
                "memory.limit_in_bytes",
                l.to_string(),
            )?;
        }
        Ok(())
    }

    /// Remove an (empty) cgroup directory, relative to each hierarchy's root, from every
    /// hierarchy (cgroup v1 controllers and v2): the parent a task's containers lived under.
    pub fn remove_cgroup(&self, rel: &str) {
        let rel = rel.trim_start_matches('/');
        if rel.is_empty() || rel.contains("..") {
            return;
        }
        let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") else {
            return;
        };
        let mut roots: Vec<PathBuf> = vec![PathBuf::from("/sys/fs/cgroup")];
        roots.extend(rd.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
        for root in roots {
            let _ = std::fs::remove_dir(root.join(rel));
        }
    }

    /// What a cgroup (relative to each hierarchy's root) has used: CPU time and memory in
    /// use, from cgroup v2 (`cpu.stat`, `memory.current`) or v1 (`cpuacct.usage`,
    /// `memory.usage_in_bytes`). `None` when the cgroup is gone.
    pub fn cgroup_stats(rel: &str) -> Option<CgroupStats> {
        let rel = rel.trim_start_matches('/');
        if rel.contains("..") {
            return None;
        }
        let root = Path::new("/sys/fs/cgroup");
        let read = |p: PathBuf| std::fs::read_to_string(p).ok();
        if root.join("cgroup.controllers").exists() {
            let dir = root.join(rel);
            let usec: u64 = read(dir.join("cpu.stat"))?
                .lines()
                .find_map(|l| l.strip_prefix("usage_usec "))?
                .trim()
                .parse()
                .ok()?;
            let mem = read(dir.join("memory.current"))?.trim().parse().ok()?;
            return Some(CgroupStats {
                cpu_ns: usec * 1000,
                memory_bytes: mem,
            });
        }
        let cpu_ns = read(root.join("cpuacct").join(rel).join("cpuacct.usage"))?
            .trim()
            .parse()
            .ok()?;
        let memory_bytes = read(root.join("memory").join(rel).join("memory.usage_in_bytes"))?
            .trim()
            .parse()
            .ok()?;
        Some(CgroupStats {
            cpu_ns,
            memory_bytes,
        })
    }

    /// Unmount and remove a container's bundle (its log stays).
    pub fn cleanup(&self, id: &str) {
        let bundle = self.bundle(id);
        let _ = nix::mount::umount2(&bundle.join("rootfs"), nix::mount::MntFlags::MNT_DETACH);
        let _ = std::fs::remove_dir_all(&bundle);
    }
}

#[async_trait::async_trait]
impl Driver for NativeRuntime {
    fn name(&self) -> &'static str {
        "native"
    }

    async fn start(
        &self,
        id: &str,
        image_rootfs: &Path,
        spec: &ContainerSpec,
    ) -> Result<Container, RuntimeError> {
        NativeRuntime::start(self, id, image_rootfs, spec).await
    }

    async fn attach(
        &self,
        id: &str,
        pid: i32,
        shim_pid: i32,
    ) -> Result<Option<Container>, RuntimeError> {
        NativeRuntime::attach(self, id, pid, shim_pid)
    }

    async fn exit_of(&self, id: &str) -> Option<Exit> {
        NativeRuntime::exit_of(self, id)
    }

    async fn started_pids(&self, id: &str, patience: Duration) -> Option<(i32, i32)> {
        NativeRuntime::started_pids(self, id, patience).await
    }

    async fn signal(&self, _id: &str, pid: i32, signal: Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
    }

    async fn exec(
        &self,
        id: &str,
        pid: i32,
        args: &[String],
        timeout: Duration,
    ) -> Result<(i32, String), RuntimeError> {
        self.exec_pid(id, pid, args, timeout).await
    }

    async fn stats(&self, _id: &str, cgroup: &str) -> Option<CgroupStats> {
        NativeRuntime::cgroup_stats(cgroup)
    }

    async fn task_cgroup(
        &self,
        rel: &str,
        cpu_vcpus: Option<f64>,
        memory_mib: Option<i64>,
    ) -> Result<(), RuntimeError> {
        NativeRuntime::task_cgroup(self, rel, cpu_vcpus, memory_mib)
    }

    async fn remove_task_cgroup(&self, rel: &str) {
        self.remove_cgroup(rel)
    }

    async fn cleanup(&self, id: &str) {
        NativeRuntime::cleanup(self, id)
    }

    fn log_dir(&self) -> Option<PathBuf> {
        Some(self.root.join("logs"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ends a stand-in shim by its pid, even when an assertion fails.
    struct Child(std::process::Child);

    impl Drop for Child {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// A container whose start the agent died before recording is found by its shim's record,
    /// also while the shim is still starting it; with neither a shim nor a record (or a shim
    /// that ended without one) there is none, at once.
    #[tokio::test]
    #[allow(
        clippy::disallowed_methods,
        reason = "waits on real processes, in real time"
    )]
    async fn a_start_the_agent_did_not_record_is_found_by_the_shims_record() {
        if NativeRuntime::check().is_err() {
            eprintln!("skipping: /proc of other users' processes needs root here");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let rt = NativeRuntime::new(dir.path(), Path::new("/bin/true")).unwrap();
        let id = format!("{:032x}-c", std::process::id());
        let t0 = std::time::Instant::now();
        assert_eq!(rt.started_pids(&id, Duration::from_secs(5)).await, None);
        assert!(t0.elapsed() < Duration::from_secs(1), "nothing to wait for");

        // A stand-in shim (`sh -c SCRIPT shim --id ID`: the shim's arguments) that records
        // the start after a while, then keeps running.
        let bundle = rt.bundle(&id);
        std::fs::create_dir_all(&bundle).unwrap();
        let script = format!(
            "sleep 0.4; echo \"{{\\\"pid\\\":4242,\\\"shim_pid\\\":$$}}\" > {b}/started.json.tmp \
             && mv {b}/started.json.tmp {b}/started.json; exec sleep 30",
            b = bundle.display()
        );
        let shim = Child(
            std::process::Command::new("/bin/sh")
                .args(["-c", &script, "shim", "--id", &id])
                .spawn()
                .unwrap(),
        );
        let shim_pid = shim.0.id() as i32;
        // (Once it has exec'd: until then its command line is the test's.)
        while !is_shim_of(shim_pid, &id) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let got = rt.started_pids(&id, Duration::from_secs(10)).await;
        assert_eq!(got, Some((4242, shim_pid)), "waited for the shim's record");
        drop(shim);
        // The record outlives its shim: the pids are known (attach then finds it ended).
        assert_eq!(
            rt.started_pids(&id, Duration::from_secs(5)).await,
            Some((4242, shim_pid))
        );
        assert!(rt.attach(&id, 4242, shim_pid).unwrap().is_none());

        // A shim that ends before it starts the container leaves no record: none, at once.
        rt.cleanup(&id);
        std::fs::create_dir_all(&bundle).unwrap();
        let short = Child(
            std::process::Command::new("/bin/sh")
                .args(["-c", "sleep 0.3; true", "shim", "--id", &id])
                .spawn()
                .unwrap(),
        );
        while !is_shim_of(short.0.id() as i32, &id) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let t0 = std::time::Instant::now();
        assert_eq!(rt.started_pids(&id, Duration::from_secs(10)).await, None);
        assert!(
            t0.elapsed() >= Duration::from_millis(100),
            "waited while the shim ran"
        );
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
        drop(short);
    }
}
