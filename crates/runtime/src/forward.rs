//! Host-port forwarders in their own processes (`berth port-forward`), so that a bridge-mode
//! container's published ports keep answering while its agent restarts or is away — the way
//! `docker-proxy` processes outlive a restarting dockerd with live-restore.
//!
//! The agent binds the host port itself ([`crate::net::bind_host_port`]: a taken port fails the
//! container's start at once), then [`spawn`] hands the bound socket to a forwarder process as
//! its descriptor 3. The forwarder forwards to the container with a [`crate::net::PortProxy`]
//! for as long as the container's init process lives, and ends on SIGTERM. Its command line
//! names what it forwards, so a restarted agent recognises its forwarders by pid
//! ([`is_forwarder`]) and keeps them instead of binding the port again.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;

use crate::net::{HostSocket, NetError, PortProxy, Proto};

/// The subcommand of the `berth` binary that runs a forwarder.
pub const SUBCOMMAND: &str = "port-forward";

/// The descriptor a forwarder finds its bound socket on.
const SOCKET_FD: i32 = 3;

fn proto_name(p: Proto) -> &'static str {
    match p {
        Proto::Tcp => "tcp",
        Proto::Udp => "udp",
    }
}

/// The arguments after `berth` (the forwarder's identity as [`is_forwarder`] checks it).
fn args(proto: Proto, host_port: u16, target: SocketAddr, watch_pid: i32) -> Vec<String> {
    vec![
        SUBCOMMAND.to_string(),
        "--proto".into(),
        proto_name(proto).into(),
        "--host-port".into(),
        host_port.to_string(),
        "--target".into(),
        target.to_string(),
        "--watch-pid".into(),
        watch_pid.to_string(),
    ]
}

/// Start a forwarder process (`exe` is the `berth` binary) that owns `socket` (bound to
/// `host_port`) and forwards it to `target` until process `watch_pid` ends. Returns its pid.
/// It runs in its own process group, so a signal to the agent's group does not reach it, and
/// nothing waits for it but a detached reaper: it outlives the agent. Call it from the agent's
/// tokio runtime or from a plain thread.
pub fn spawn(
    exe: &Path,
    socket: HostSocket,
    proto: Proto,
    host_port: u16,
    target: SocketAddr,
    watch_pid: i32,
) -> Result<i32, NetError> {
    let fd: OwnedFd = socket.into_fd();
    let raw = fd.as_raw_fd();
    let mut cmd = std::process::Command::new(exe);
    cmd.args(args(proto, host_port, target, watch_pid))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0);
    // SAFETY: the closure runs in the child between fork and exec and calls only dup2 and
    // fcntl, which are async-signal-safe; `raw` stays open in the parent until `spawn` returns.
    unsafe {
        cmd.pre_exec(move || {
            // dup2 leaves the new descriptor without close-on-exec; every other descriptor
            // of the agent keeps its close-on-exec flag and does not reach the forwarder. When
            // the socket already is descriptor 3, dup2 does nothing (close-on-exec stays set and
            // exec would close it): clear the flag instead.
            let r = if raw == SOCKET_FD {
                nix::libc::fcntl(raw, nix::libc::F_SETFD, 0)
            } else {
                nix::libc::dup2(raw, SOCKET_FD)
            };
            if r < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let started = |e| NetError::Io(format!("starting the forwarder of port {host_port}"), e);
    // Reap it when it ends, without holding anything up: on the agent's runtime when there is
    // one (no thread per forwarder), else on a thread of its own.
    let pid = match tokio::runtime::Handle::try_current() {
        Ok(rt) => {
            let _enter = rt.enter();
            let mut child = tokio::process::Command::from(cmd)
                .spawn()
                .map_err(started)?;
            let pid = child.id().unwrap_or(0) as i32;
            rt.spawn(async move {
                let _ = child.wait().await;
            });
            pid
        }
        Err(_) => {
            let mut child = cmd.spawn().map_err(started)?;
            let pid = child.id() as i32;
            std::thread::spawn(move || {
                let _ = child.wait();
            });
            pid
        }
    };
    drop(fd);
    Ok(pid)
}

/// Whether `pid` is a live forwarder of `host_port` to `target` for process `watch_pid` (read
/// from its command line).
pub fn is_forwarder(
    pid: i32,
    proto: Proto,
    host_port: u16,
    target: SocketAddr,
    watch_pid: i32,
) -> bool {
    if pid <= 0 {
        return false;
    }
    let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let have: Vec<&[u8]> = raw
        .strip_suffix(b"\0")
        .unwrap_or(&raw)
        .split(|b| *b == 0)
        .skip(1)
        .collect();
    let want = args(proto, host_port, target, watch_pid);
    have.len() == want.len() && want.iter().zip(&have).all(|(w, h)| w.as_bytes() == *h)
}

/// Ask a forwarder to end (SIGTERM); it closes its port at once.
pub fn stop(pid: i32) {
    if pid > 0 {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
}

/// The forwarder process itself: forward the socket on descriptor 3 to `target` until
/// `watch_pid` ends or SIGTERM arrives. Returns the process's exit code.
pub fn serve(proto: Proto, target: SocketAddr, watch_pid: i32) -> i32 {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("berth port-forward: {e}");
            return 1;
        }
    };
    match rt.block_on(forward(proto, target, watch_pid)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("berth port-forward: {e}");
            1
        }
    }
}

async fn forward(proto: Proto, target: SocketAddr, watch_pid: i32) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let watched = match crate::native::pidfd_open(watch_pid) {
        Ok(fd) => fd,
        // Already gone: nothing to forward to.
        Err(e) if e.raw_os_error() == Some(nix::libc::ESRCH) => return Ok(()),
        Err(e) => return Err(e),
    };
    // SAFETY: `watched` is an OwnedFd moved into the AsyncFd, which keeps it open and
    // unchanged until the AsyncFd is dropped.
    let watched = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(watched, tokio::io::Interest::READABLE)
    }?;
    // SAFETY: descriptor 3 was set up by `spawn` (dup2 of the bound socket) and nothing else
    // in this process owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(SOCKET_FD) };
    let sock = match proto {
        Proto::Tcp => HostSocket::Tcp(fd.into()),
        Proto::Udp => HostSocket::Udp(fd.into()),
    };
    let port = match &sock {
        HostSocket::Tcp(l) => l.local_addr()?.port(),
        HostSocket::Udp(s) => s.local_addr()?.port(),
    };
    let proxy = PortProxy::serve(sock, port, target).map_err(std::io::Error::other)?;
    tokio::select! {
        _ = watched.readable() => {}
        _ = term.recv() => {}
    }
    proxy.stop();
    Ok(())
}
