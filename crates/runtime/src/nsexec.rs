//! `berth nsexec --pid P -- cmd…`: run a command inside a running container, the way a
//! health check or `docker exec` does. A short-lived, single-threaded process of the same
//! binary (namespace changes must not happen inside the tokio process): it joins the
//! container init's ipc, uts, net, pid and mount namespaces and its cgroups, takes its root
//! directory, environment, uid and gid, then forks (so that the child is inside the pid
//! namespace), execs the command in the child and exits with its status.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::AsRawFd;

use nix::sched::CloneFlags;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Gid, Uid};

fn ids(pid: i32) -> (u32, u32) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    (field("Uid:"), field("Gid:"))
}

fn join_cgroups(pid: i32) {
    let me = std::process::id().to_string();
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, ctrl, path) = match (parts.next(), parts.next(), parts.next()) {
            (Some(a), Some(b), Some(c)) => (a, b, c),
            _ => continue,
        };
        let dir = if ctrl.is_empty() {
            format!("/sys/fs/cgroup/unified{path}")
        } else {
            let c = ctrl.trim_start_matches("name=");
            format!("/sys/fs/cgroup/{c}{path}")
        };
        let _ = std::fs::write(format!("{dir}/cgroup.procs"), &me);
    }
}

/// Run the command; returns this process's exit code (the command's, or 126/127 as a
/// shell would for "cannot run" / "not found").
pub fn run(pid: i32, args: &[String]) -> i32 {
    if args.is_empty() {
        eprintln!("nsexec: no command");
        return 126;
    }
    let open = |what: &str| File::open(format!("/proc/{pid}/{what}"));
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
    let root = match open("root") {
        Ok(f) => f,
        Err(e) => {
            eprintln!("nsexec: container process {pid}: {e}");
            return 126;
        }
    };
    let (uid, gid) = ids(pid);
    let mut nss = Vec::new();
    for (name, flag) in [
        ("ns/ipc", CloneFlags::CLONE_NEWIPC),
        ("ns/uts", CloneFlags::CLONE_NEWUTS),
        ("ns/net", CloneFlags::CLONE_NEWNET),
        ("ns/pid", CloneFlags::CLONE_NEWPID),
        ("ns/mnt", CloneFlags::CLONE_NEWNS),
    ] {
        match open(name) {
            Ok(f) => nss.push((f, flag)),
            Err(e) => {
                eprintln!("nsexec: {name} of {pid}: {e}");
                return 126;
            }
        }
    }
    join_cgroups(pid);
    for (f, flag) in &nss {
        if let Err(e) = nix::sched::setns(f, *flag) {
            eprintln!("nsexec: joining {flag:?}: {e}");
            return 126;
        }
    }
    if nix::unistd::fchdir(root.as_raw_fd()).is_err()
        || nix::unistd::chroot(".").is_err()
        || nix::unistd::chdir("/").is_err()
    {
        eprintln!("nsexec: cannot enter the container's root");
        return 126;
    }
    let argv: Vec<CString> = args
        .iter()
        .filter_map(|a| CString::new(a.as_bytes()).ok())
        .collect();
    let envp: Vec<CString> = environ
        .split(|b| *b == 0)
        .filter(|e| !e.is_empty())
        .filter_map(|e| CString::new(e).ok())
        .collect();
    let path = envp
        .iter()
        .find_map(|e| e.to_str().ok()?.strip_prefix("PATH=").map(str::to_string))
        .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    // SAFETY: this process is single-threaded (no tokio, no other threads started), so the
    // child may run arbitrary code after fork.
    match unsafe { nix::unistd::fork() } {
        Ok(ForkResult::Child) => {
            let _ = nix::unistd::setgroups(&[Gid::from_raw(gid)]);
            let _ = nix::unistd::setgid(Gid::from_raw(gid));
            let _ = nix::unistd::setuid(Uid::from_raw(uid));
            let prog = &args[0];
            let candidates: Vec<String> = if prog.contains('/') {
                vec![prog.clone()]
            } else {
                path.split(':').map(|d| format!("{d}/{prog}")).collect()
            };
            let mut code = 127;
            for c in candidates {
                let Ok(p) = CString::new(c) else { continue };
                if let Err(e) = nix::unistd::execve(&p, &argv, &envp)
                    && e != nix::errno::Errno::ENOENT
                {
                    code = 126;
                }
            }
            eprintln!("nsexec: {prog}: cannot run");
            std::process::exit(code);
        }
        Ok(ForkResult::Parent { child }) => loop {
            match waitpid(child, None) {
                Ok(WaitStatus::Exited(_, c)) => return c,
                Ok(WaitStatus::Signaled(_, s, _)) => return 128 + s as i32,
                Ok(_) => continue,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return 126,
            }
        },
        Err(e) => {
            eprintln!("nsexec: fork: {e}");
            126
        }
    }
}
