//! The container shim: a small, single-threaded process of the same binary (`berth shim`)
//! that creates and starts one container with libcontainer, stays its parent to reap it, and
//! reports on its standard output: `{"pid":N}` once started, then `{"exit_code":C}` or
//! `{"signal":S}` when it ends (also written to `<bundle>/exit.json`, so a restarted agent can
//! learn how a container ended while it was away). The start is recorded in
//! `<bundle>/started.json` (`{"pid":N,"shim_pid":M,"start_time":T}`) too, for an agent that
//! died before it read the report, and for health checks to name the init by its start time. The container's stdout and stderr go to
//! the log file. libcontainer forks and changes namespaces: it must never run inside the
//! multi-threaded tokio process, which is why this process exists.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::PathBuf;

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;

/// Arguments of `berth shim`.
#[derive(Debug, Clone)]
pub struct ShimArgs {
    pub id: String,
    pub bundle: PathBuf,
    pub state_root: PathBuf,
    pub log: PathBuf,
}

fn report(out: &mut std::fs::File, line: &serde_json::Value) {
    // The agent may be gone (restarting): the exit file is the durable record.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Run the shim; returns the process exit code (0: the container ran, whatever its status).
pub fn run(a: &ShimArgs) -> i32 {
    // Keep the report channel (our stdout) on a close-on-exec descriptor, then point fds 1
    // and 2 at the log so that the container inherits them.
    let status_fd = match nix::fcntl::fcntl(1, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(10)) {
        Ok(fd) => fd,
        Err(e) => {
            eprintln!("shim: cannot keep the status channel: {e}");
            return 2;
        }
    };
    // SAFETY: `status_fd` was just created by F_DUPFD_CLOEXEC and is owned by nothing else.
    let mut status = unsafe { std::fs::File::from_raw_fd(status_fd) };
    let log = match OpenOptions::new().create(true).append(true).open(&a.log) {
        Ok(f) => f,
        Err(e) => {
            report(
                &mut status,
                &serde_json::json!({"error": format!("opening log {}: {e}", a.log.display())}),
            );
            return 2;
        }
    };
    let devnull = OpenOptions::new().read(true).open("/dev/null");
    if let Ok(n) = &devnull {
        let _ = nix::unistd::dup2(n.as_raw_fd(), 0);
    }
    let _ = nix::unistd::dup2(log.as_raw_fd(), 1);
    let _ = nix::unistd::dup2(log.as_raw_fd(), 2);
    drop(log);
    // Orphans of the container are reaped here too.
    let _ = nix::sys::prctl::set_child_subreaper(true);

    let cfg: serde_json::Value = std::fs::read(a.bundle.join("config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let confined = cfg["annotations"][crate::seccomp::ANNOTATION] != "unconfined";
    let init = cfg["annotations"][crate::seccomp::INIT_ANNOTATION] == "true";
    let programs = if confined {
        match crate::seccomp::default_programs() {
            Ok(p) => p,
            Err(e) => {
                report(
                    &mut status,
                    &serde_json::json!({"error": format!("compiling the seccomp policy: {e}")}),
                );
                return 1;
            }
        }
    } else {
        vec![]
    };
    let built = ContainerBuilder::new(a.id.clone(), SyscallType::default())
        .with_executor(crate::seccomp::SeccompExecutor { programs, init })
        .with_root_path(&a.state_root)
        .map(|b| b.as_init(&a.bundle).with_systemd(false).with_detach(true))
        .and_then(|b| b.build());
    let mut container = match built {
        Ok(c) => c,
        Err(e) => {
            report(
                &mut status,
                &serde_json::json!({"error": format!("creating the container: {e}")}),
            );
            return 1;
        }
    };
    if let Err(e) = container.start() {
        report(
            &mut status,
            &serde_json::json!({"error": format!("starting the container: {e}")}),
        );
        let _ = container.delete(true);
        return 1;
    }
    let pid = container.pid().map(|p| p.as_raw()).unwrap_or(-1);
    // The durable record of the start, written before the report: an agent that dies
    // before it has read and saved the report re-attaches by this record (see
    // `NativeRuntime::started_pids`) instead of taking the running container for ended.
    // The init's start time goes with it: health checks name the container to `berth nsexec`
    // by pid and start time, so a pid reused once the container has ended is refused.
    let start_time = crate::nsexec::start_time(pid).ok();
    let record =
        serde_json::json!({"pid": pid, "shim_pid": std::process::id(), "start_time": start_time});
    let tmp = a.bundle.join("started.json.tmp");
    if std::fs::write(&tmp, record.to_string()).is_ok() {
        let _ = std::fs::rename(&tmp, a.bundle.join("started.json"));
    }
    report(&mut status, &serde_json::json!({"pid": pid}));
    // From here on the shim only waits: give back what starting the container used.
    // SAFETY: malloc_trim only releases free heap memory back to the kernel.
    unsafe { nix::libc::malloc_trim(0) };
    let result: serde_json::Value = loop {
        match waitpid(Pid::from_raw(-1), None) {
            Ok(WaitStatus::Exited(p, code)) if p.as_raw() == pid => {
                break serde_json::json!({"exit_code": code});
            }
            Ok(WaitStatus::Signaled(p, sig, _)) if p.as_raw() == pid => {
                break serde_json::json!({"signal": sig as i32});
            }
            Ok(_) => continue, // an orphan, or a stop/continue
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => break serde_json::json!({"error": format!("waiting for the container: {e}")}),
        }
    };
    // Was it the kernel's OOM killer? Read the cgroup's counter before the cgroup goes.
    let mut result = result;
    if result.get("signal").is_some() && oom_killed(&a.bundle) {
        result["oom_killed"] = serde_json::json!(true);
    }
    let exit_file = a.bundle.join("exit.json");
    let tmp = a.bundle.join("exit.json.tmp");
    if std::fs::write(&tmp, result.to_string()).is_ok() {
        let _ = std::fs::rename(&tmp, &exit_file);
    }
    let _ = container.delete(true);
    report(&mut status, &result);
    0
}

/// Whether the container's memory cgroup recorded an OOM kill (cgroup v2 `memory.events` or
/// v1 `memory.oom_control`, both say `oom_kill N`).
fn oom_killed(bundle: &std::path::Path) -> bool {
    let cfg: serde_json::Value = std::fs::read(bundle.join("config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let Some(path) = cfg["linux"]["cgroupsPath"].as_str() else {
        return false;
    };
    let rel = path.trim_start_matches('/');
    let candidates = [
        format!("/sys/fs/cgroup/{rel}/memory.events"),
        format!("/sys/fs/cgroup/memory/{rel}/memory.oom_control"),
    ];
    candidates.iter().any(|p| {
        std::fs::read_to_string(p).is_ok_and(|text| {
            text.lines().any(|l| {
                l.strip_prefix("oom_kill ")
                    .and_then(|n| n.trim().parse::<u64>().ok())
                    .is_some_and(|n| n > 0)
            })
        })
    })
}
