//! `berth port-forward`, the forwarder process of a bridge container's host port, run for
//! real: a TCP and a UDP host port handed over as fd 3, forwarded to local echo servers, for
//! as long as a watched process lives or until SIGTERM. Needs no root and no containers.

#![allow(
    clippy::disallowed_methods,
    reason = "waits on real processes and sockets, in real time"
)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use berth_runtime::forward;
use berth_runtime::net::{Proto, bind_host_port};

fn exe() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_berth"))
}

fn alive(pid: i32) -> bool {
    // A forwarder its parent has not reaped yet (a zombie) counts as gone.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit(')')
                .next()
                .map(|r| !r.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

fn wait_gone(pid: i32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if !alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

#[test]
fn tcp_and_udp_ports_are_forwarded_until_stopped() {
    // Echo servers standing in for containers.
    let tcp_echo = TcpListener::bind("127.0.0.1:0").unwrap();
    let tcp_target = tcp_echo.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in tcp_echo.incoming() {
            let Ok(mut s) = s else { continue };
            let mut buf = [0u8; 64];
            if let Ok(n) = s.read(&mut buf) {
                let _ = s.write_all(&buf[..n]);
            }
        }
    });
    let udp_echo = UdpSocket::bind("127.0.0.1:0").unwrap();
    let udp_target = udp_echo.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        while let Ok((n, from)) = udp_echo.recv_from(&mut buf) {
            let _ = udp_echo.send_to(&buf[..n], from);
        }
    });
    // This test process stands in for the container's init.
    let me = std::process::id() as i32;
    let (tcp_sock, tcp_port) = bind_host_port(Proto::Tcp, local(0)).unwrap();
    let tcp_fwd = forward::spawn(exe(), tcp_sock, Proto::Tcp, tcp_port, tcp_target, me).unwrap();
    let (udp_sock, udp_port) = bind_host_port(Proto::Udp, local(0)).unwrap();
    let udp_fwd = forward::spawn(exe(), udp_sock, Proto::Udp, udp_port, udp_target, me).unwrap();
    // The kernel fills in a new program's command line a moment after exec has closed the
    // close-on-exec pipe `spawn` waits on, so a busy machine may show it empty at first.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !forward::is_forwarder(tcp_fwd, Proto::Tcp, tcp_port, tcp_target, me)
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(forward::is_forwarder(
        tcp_fwd,
        Proto::Tcp,
        tcp_port,
        tcp_target,
        me
    ));
    assert!(!forward::is_forwarder(
        tcp_fwd,
        Proto::Tcp,
        tcp_port,
        udp_target,
        me
    ));
    assert!(!forward::is_forwarder(
        tcp_fwd,
        Proto::Tcp,
        tcp_port,
        tcp_target,
        me + 1
    ));

    let mut c = TcpStream::connect(local(tcp_port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(b"over tcp").unwrap();
    let mut got = [0u8; 8];
    c.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"over tcp");

    let u = UdpSocket::bind("127.0.0.1:0").unwrap();
    u.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    u.send_to(b"over udp", local(udp_port)).unwrap();
    let mut buf = [0u8; 64];
    let (n, _) = u.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"over udp");

    // SIGTERM ends a forwarder and frees its port.
    forward::stop(tcp_fwd);
    forward::stop(udp_fwd);
    assert!(wait_gone(tcp_fwd) && wait_gone(udp_fwd));
    assert!(TcpStream::connect(local(tcp_port)).is_err());
    assert!(
        bind_host_port(Proto::Tcp, local(tcp_port)).is_ok(),
        "the port is free again"
    );
}

#[test]
fn a_forwarder_ends_with_the_process_it_watches() {
    let target = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut watched = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let pid = watched.id() as i32;
    let start = || {
        let (sock, port) = bind_host_port(Proto::Tcp, local(0)).unwrap();
        let fwd = forward::spawn(exe(), sock, Proto::Tcp, port, target, pid).unwrap();
        (fwd, port)
    };
    let (fwd, port) = start();
    assert!(TcpStream::connect(local(port)).is_ok());
    assert!(alive(fwd));
    watched.kill().unwrap();
    watched.wait().unwrap();
    assert!(
        wait_gone(fwd),
        "the forwarder outlived the process it watches"
    );
    // A forwarder for a process already gone ends at once.
    let (fwd, _) = start();
    assert!(wait_gone(fwd));
}
