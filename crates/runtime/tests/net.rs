//! Container networking against the real kernel: bridges, namespaces, veths, masquerading and
//! port forwarding. Needs root (skips otherwise):
//! `cargo test -p berth-runtime --test net -- --nocapture`.
//!
//! Each test has its own bridge (`bthtestN`) and subnet (`10.214.N.0/…`), and a [`Guard`] that
//! removes whatever the test created even when it fails. Traffic goes only to loopback and to
//! the test's own namespaces.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_runtime::net::{
    DYNAMIC_PORTS, Endpoint, NetConfig, NetError, Network, PortProxy, Proto,
    credentials_guard_args, masquerade_args, veth_name,
};

fn is_root() -> bool {
    if nix::unistd::Uid::effective().is_root() {
        return true;
    }
    eprintln!("skipping: the network tests need root");
    false
}

/// Removes everything a test may have created, whatever state it stopped in.
struct Guard {
    bridge: String,
    subnet: String,
    dir: tempfile::TempDir,
    ids: Vec<String>,
}

impl Guard {
    fn new(n: u8, prefix: u8) -> Guard {
        Guard {
            bridge: format!("bthtest{n}"),
            subnet: format!("10.214.{n}.0/{prefix}"),
            dir: tempfile::tempdir().unwrap(),
            ids: Vec::new(),
        }
    }

    fn cfg(&self) -> NetConfig {
        let (ip, prefix) = self.subnet.split_once('/').unwrap();
        NetConfig {
            bridge: self.bridge.clone(),
            subnet: (ip.parse().unwrap(), prefix.parse().unwrap()),
            state_dir: self.dir.path().to_path_buf(),
        }
    }

    /// An id this test uses (its veth is removed on drop).
    fn id(&mut self, name: &str) -> String {
        let id = format!("{}-{name}", self.bridge);
        self.ids.push(id.clone());
        id
    }

    fn state(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

fn quiet(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Drop for Guard {
    fn drop(&mut self) {
        let netns = self.dir.path().join("netns");
        if let Ok(rd) = std::fs::read_dir(&netns) {
            for e in rd.flatten() {
                let _ = nix::mount::umount2(&e.path(), nix::mount::MntFlags::MNT_DETACH);
                let _ = std::fs::remove_file(e.path());
            }
        }
        for id in &self.ids {
            let v = veth_name(id);
            if Path::new("/sys/class/net").join(&v).exists() {
                quiet("ip", &["link", "del", &v]);
            }
        }
        if Path::new("/sys/class/net").join(&self.bridge).exists() {
            quiet("ip", &["link", "del", &self.bridge]);
        }
        // The bridge's rules: masquerade, and the credentials guard.
        for _ in 0..8 {
            if !quiet(
                "iptables",
                &masquerade_args("-C", &self.subnet, &self.bridge),
            ) {
                break;
            }
            quiet(
                "iptables",
                &masquerade_args("-D", &self.subnet, &self.bridge),
            );
        }
        for _ in 0..8 {
            if !quiet("iptables", &credentials_guard_args("-C", &self.bridge)) {
                break;
            }
            quiet("iptables", &credentials_guard_args("-D", &self.bridge));
        }
        let _ = nix::mount::umount2(&netns, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Run `f` on a new thread inside the namespace file `ns`.
fn in_netns<T: Send + 'static>(ns: &Path, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = ns.to_path_buf();
    std::thread::spawn(move || {
        let file = std::fs::File::open(&ns).unwrap();
        nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        f()
    })
    .join()
    .unwrap()
}

/// Echo `conns` connections on a thread, then close the listener.
fn serve_echo(l: TcpListener, conns: usize) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for _ in 0..conns {
            let Ok((mut s, _)) = l.accept() else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 16384];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 || s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    })
}

fn echo_roundtrip(s: &mut TcpStream, msg: &[u8]) {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(msg).unwrap();
    let mut back = vec![0u8; msg.len()];
    s.read_exact(&mut back).unwrap();
    assert_eq!(back, msg);
}

fn connect(addr: SocketAddr) -> TcpStream {
    TcpStream::connect_timeout(&addr, Duration::from_secs(3))
        .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"))
}

fn mounted_under(p: &Path) -> Vec<String> {
    let p = p.to_string_lossy().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .filter(|m| m.starts_with(&p))
        .map(str::to_string)
        .collect()
}

fn assert_gone(ep: &Endpoint) {
    assert!(
        !Path::new("/sys/class/net").join(&ep.host_veth).exists(),
        "veth {} left behind",
        ep.host_veth
    );
    assert!(!ep.netns.exists(), "{} left behind", ep.netns.display());
    assert!(
        mounted_under(&ep.netns).is_empty(),
        "{} still mounted",
        ep.netns.display()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_reach_the_host_and_each_other() {
    if !is_root() {
        return;
    }
    let mut g = Guard::new(1, 24);
    let (ida, idb) = (g.id("a"), g.id("b"));
    let net = Network::open(g.cfg()).await.unwrap();
    let a = net.create_endpoint(&ida).await.unwrap();
    let b = net.create_endpoint(&idb).await.unwrap();
    println!("a = {a:?}\nb = {b:?}");
    assert_ne!(a.ip, b.ip);
    assert_eq!(a.gateway, Ipv4Addr::new(10, 214, 1, 1));
    assert_eq!(a.prefix, 24);
    for ep in [&a, &b] {
        assert_eq!(ep.ip.octets()[..3], [10, 214, 1]);
        let master = std::fs::read_link(format!("/sys/class/net/{}/master", ep.host_veth)).unwrap();
        assert!(
            master.ends_with(&g.bridge),
            "{} not on the bridge",
            ep.host_veth
        );
        assert!(net.endpoint(&ep.id).await.as_ref() == Some(ep));
    }
    // The masquerade rule is there, once.
    let rules = Command::new("iptables")
        .args(["-w", "-t", "nat", "-S", "POSTROUTING"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default();
    if Path::new("/usr/sbin/iptables").exists() || !rules.is_empty() {
        let n = rules
            .lines()
            .filter(|l| l.contains("10.214.1.0/24") && l.contains("MASQUERADE"))
            .count();
        assert_eq!(n, 1, "{rules}");
        // So is the guard that keeps credential requests on the node.
        let fwd = Command::new("iptables")
            .args(["-w", "-S", "FORWARD"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .unwrap_or_default();
        let n = fwd
            .lines()
            .filter(|l| {
                l.contains("169.254.170.2/32") && l.contains(&g.bridge) && l.contains("REJECT")
            })
            .count();
        assert_eq!(n, 1, "{fwd}");
    }

    // Host → A.
    let ip = a.ip;
    let la = in_netns(&a.netns, move || TcpListener::bind((ip, 8080)).unwrap());
    let served = serve_echo(la, 1);
    let mut s = connect((a.ip, 8080).into());
    echo_roundtrip(&mut s, b"host to a");
    drop(s);
    served.join().unwrap();

    // A → B over the bridge; and A sees its own eth0 address and its gateway route.
    let ip = b.ip;
    let lb = in_netns(&b.netns, move || TcpListener::bind((ip, 8081)).unwrap());
    let served = serve_echo(lb, 1);
    let (bip, aip) = (b.ip, a.ip);
    let local = in_netns(&a.netns, move || {
        let mut s = connect((bip, 8081).into());
        echo_roundtrip(&mut s, b"a to b");
        s.local_addr().unwrap()
    });
    assert_eq!(local.ip(), aip);
    served.join().unwrap();

    net.remove_endpoint(&a.id).await.unwrap();
    net.remove_endpoint(&b.id).await.unwrap();
    net.settle().await;
    assert_gone(&a);
    assert_gone(&b);
    net.destroy().await.unwrap();
    assert!(!Path::new("/sys/class/net").join(&g.bridge).exists());
    assert!(mounted_under(&g.state()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_proxy_forwards_tcp_and_udp() {
    if !is_root() {
        return;
    }
    let mut g = Guard::new(2, 24);
    let id = g.id("web");
    let net = Network::open(g.cfg()).await.unwrap();
    let ep = net.create_endpoint(&id).await.unwrap();

    // TCP.
    let ip = ep.ip;
    let l = in_netns(&ep.netns, move || TcpListener::bind((ip, 9000)).unwrap());
    let served = serve_echo(l, 3);
    let local: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let proxy = PortProxy::start(Proto::Tcp, local, (ep.ip, 9000).into())
        .await
        .unwrap();
    let port = proxy.host_port();
    assert!(DYNAMIC_PORTS.contains(&port), "{port}");
    let addr: SocketAddr = (Ipv4Addr::LOCALHOST, port).into();
    let big: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let echoed = tokio::task::spawn_blocking(move || {
        let mut s = connect(addr);
        echo_roundtrip(&mut s, b"hello through the proxy");
        // A megabyte each way, written while reading.
        let mut w = s.try_clone().unwrap();
        let big2 = big.clone();
        let writer = std::thread::spawn(move || w.write_all(&big2).unwrap());
        let mut back = vec![0u8; big.len()];
        s.read_exact(&mut back).unwrap();
        writer.join().unwrap();
        back == big
    })
    .await
    .unwrap();
    assert!(echoed, "the megabyte came back changed");
    // Two connections at once.
    let (mut s1, mut s2) = (connect(addr), connect(addr));
    echo_roundtrip(&mut s2, b"second");
    echo_roundtrip(&mut s1, b"first");

    // The same port again: a conflict, reported at once.
    match PortProxy::start(Proto::Tcp, addr, (ep.ip, 9000).into()).await {
        Err(NetError::PortInUse(p)) => assert_eq!(p, port),
        Err(e) => panic!("expected PortInUse, got {e}"),
        Ok(_) => panic!("expected PortInUse, got a second proxy"),
    }

    // Stopping closes the listener and the forwards in progress.
    proxy.stop();
    let deadline = Instant::now() + Duration::from_secs(2);
    while TcpStream::connect(addr).is_ok() {
        assert!(
            Instant::now() < deadline,
            "port {port} still open after stop"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    s1.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = [0u8; 8];
    assert!(matches!(s1.read(&mut buf), Ok(0) | Err(_)));
    served.join().unwrap();

    // UDP.
    let ip = ep.ip;
    let u = in_netns(&ep.netns, move || UdpSocket::bind((ip, 9001)).unwrap());
    let udp_served = std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        for _ in 0..2 {
            let (n, from) = u.recv_from(&mut buf).unwrap();
            u.send_to(&buf[..n], from).unwrap();
        }
    });
    let proxy = PortProxy::start(Proto::Udp, local, (ep.ip, 9001).into())
        .await
        .unwrap();
    let uaddr: SocketAddr = (Ipv4Addr::LOCALHOST, proxy.host_port()).into();
    tokio::task::spawn_blocking(move || {
        let c = UdpSocket::bind("127.0.0.1:0").unwrap();
        c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        for msg in [&b"ping"[..], b"pong"] {
            c.send_to(msg, uaddr).unwrap();
            let mut buf = [0u8; 64];
            let (n, from) = c.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], msg);
            assert_eq!(from, uaddr);
        }
    })
    .await
    .unwrap();
    udp_served.join().unwrap();
    match PortProxy::start(Proto::Udp, uaddr, (ep.ip, 9001).into()).await {
        Err(NetError::PortInUse(p)) => assert_eq!(p, uaddr.port()),
        other => panic!("expected PortInUse, got {:?}", other.map(|p| p.host_port())),
    }
    drop(proxy);

    net.remove_endpoint(&id).await.unwrap();
    net.settle().await;
    assert_gone(&ep);
    net.destroy().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn addresses_survive_a_restart() {
    if !is_root() {
        return;
    }
    let mut g = Guard::new(3, 29); // endpoints get .2 ..= .6
    let ids: Vec<String> = ["a", "b", "c", "d", "e", "f", "g"]
        .iter()
        .map(|n| g.id(n))
        .collect();
    let ipam = g.state().join("ipam");
    let host = |n: u8| Ipv4Addr::new(10, 214, 3, n);

    let net = Network::open(g.cfg()).await.unwrap();
    let a = net.create_endpoint(&ids[0]).await.unwrap();
    assert_eq!(a.ip, host(2));
    assert!(matches!(
        net.create_endpoint(&ids[0]).await,
        Err(NetError::Exists(_))
    ));
    drop(net); // the agent "restarts": no destroy

    let net = Network::open(g.cfg()).await.unwrap();
    assert_eq!(net.endpoint(&ids[0]).await, Some(a.clone()));
    assert_eq!(net.endpoint("nobody").await, None);
    let b = net.create_endpoint(&ids[1]).await.unwrap();
    assert_eq!(b.ip, host(3), "a restarted network must not reuse {}", a.ip);
    net.remove_endpoint(&ids[0]).await.unwrap();
    assert!(
        !ipam.join(a.ip.to_string()).exists(),
        "{} not released",
        a.ip
    );
    assert_eq!(net.endpoint(&ids[0]).await, None);
    net.settle().await;
    assert_gone(&a);

    // .4 .5 .6, then the released .2, then nothing.
    let mut got = Vec::new();
    for id in &ids[2..6] {
        got.push(net.create_endpoint(id).await.unwrap().ip);
    }
    assert_eq!(got, [host(4), host(5), host(6), host(2)]);
    assert!(matches!(
        net.create_endpoint(&ids[6]).await,
        Err(NetError::Exhausted(_))
    ));
    assert!(
        !Path::new("/sys/class/net")
            .join(veth_name(&ids[6]))
            .exists()
    );
    assert_eq!(net.recorded_ids(), ids[1..6].to_vec());

    // destroy removes the endpoints still there, the bridge and the netns mount point.
    net.destroy().await.unwrap();
    assert_eq!(std::fs::read_dir(&ipam).unwrap().count(), 0);
    for id in &ids {
        assert!(!Path::new("/sys/class/net").join(veth_name(id)).exists());
    }
    assert!(mounted_under(&g.state()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_is_idempotent_and_clean() {
    if !is_root() {
        return;
    }
    let mut g = Guard::new(4, 24);
    let id = g.id("x");
    let net = Network::open(g.cfg()).await.unwrap();
    let ep = net.create_endpoint(&id).await.unwrap();
    assert!(!mounted_under(&ep.netns).is_empty());
    net.remove_endpoint(&id).await.unwrap();
    net.remove_endpoint(&id).await.unwrap();
    net.remove_endpoint("never-created").await.unwrap();
    // Off the bridge at once, deleted moments later.
    let operstate = std::fs::read_to_string(format!("/sys/class/net/{}/operstate", ep.host_veth));
    assert!(operstate.map_or(true, |s| s.trim() == "down"));
    net.settle().await;
    assert_gone(&ep);
    assert_eq!(net.endpoint(&id).await, None);
    assert_eq!(
        std::fs::read_dir(g.state().join("ipam")).unwrap().count(),
        0
    );
    assert!(net.recorded_ids().is_empty());
    assert!(matches!(
        net.remove_endpoint("../x").await,
        Err(NetError::InvalidId(_))
    ));

    // Latency: create + remove, one after the other.
    let rounds = 30;
    let (mut create, mut remove, mut ids) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..rounds {
        let id = g.id(&format!("lat{i}"));
        let t = Instant::now();
        let ep = net.create_endpoint(&id).await.unwrap();
        create.push(t.elapsed());
        let t = Instant::now();
        net.remove_endpoint(&id).await.unwrap();
        remove.push(t.elapsed());
        ids.push(ep);
    }
    // The same id again right after its removal (waits for its veth name).
    let id = g.id("again");
    net.create_endpoint(&id).await.unwrap();
    net.remove_endpoint(&id).await.unwrap();
    let t = Instant::now();
    net.create_endpoint(&id).await.unwrap();
    println!("re-creating an id just removed: {:?}", t.elapsed());
    net.remove_endpoint(&id).await.unwrap();
    let t = Instant::now();
    net.settle().await;
    println!("settle after the last removal: {:?}", t.elapsed());
    for ep in &ids {
        assert_gone(ep);
    }
    let stats = |v: &mut Vec<Duration>| {
        v.sort();
        (v[0], v[v.len() / 2], v[v.len() * 9 / 10], v[v.len() - 1])
    };
    let (c, r) = (stats(&mut create), stats(&mut remove));
    println!(
        "create_endpoint over {rounds} rounds: min {:?} median {:?} p90 {:?} max {:?}",
        c.0, c.1, c.2, c.3
    );
    println!(
        "remove_endpoint over {rounds} rounds: min {:?} median {:?} p90 {:?} max {:?}",
        r.0, r.1, r.2, r.3
    );
    // Generous bounds (a loaded CI machine); the target is a few milliseconds.
    assert!(c.1 < Duration::from_millis(50), "create median {:?}", c.1);
    assert!(r.1 < Duration::from_millis(50), "remove median {:?}", r.1);

    net.destroy().await.unwrap();
    assert!(mounted_under(&g.state()).is_empty());
}
