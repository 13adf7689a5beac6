//! Container networking on a node: a Linux bridge with its own subnet, and endpoints on it —
//! a network namespace (bind-mounted to a file, as `ip netns add` does) whose `eth0` is one
//! end of a veth pair, the other end attached to the bridge, with an address from the
//! subnet and a default route through the bridge. `awsvpc` tasks get one endpoint for the
//! task (their containers share it, and talk over localhost); `bridge` containers get one
//! each, and host ports reach them through [`PortProxy`].
//!
//! Everything on the hot path is plain rtnetlink (no `ip` processes): an endpoint costs a few
//! netlink round trips. Namespace changes happen on a short-lived thread of our own, never on
//! a tokio worker. Address allocations are files created exclusively under the state
//! directory, so a restarted agent never hands out an address twice.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage,
    NetlinkPayload,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{Socket, SocketAddr as NlAddr, protocols::NETLINK_ROUTE};
use serde::{Deserialize, Serialize};

/// The node's network settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConfig {
    /// Bridge interface name (≤ 15 characters).
    pub bridge: String,
    /// The subnet: network address and prefix length.
    pub subnet: (Ipv4Addr, u8),
    /// Address allocations, endpoint records and namespace files.
    pub state_dir: PathBuf,
}

/// Why the network could not do something.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("host port {0} is already in use")]
    PortInUse(u16),
    #[error("no free address left in {0}")]
    Exhausted(String),
    #[error("{0}: {1}")]
    Io(String, io::Error),
}

fn ioe(what: impl Into<String>) -> impl FnOnce(io::Error) -> NetError {
    let w = what.into();
    move |e| NetError::Io(w, e)
}

/// One network namespace on the bridge.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Endpoint {
    pub id: String,
    /// The namespace file (what a container's spec joins).
    pub netns: PathBuf,
    pub ip: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    pub mac: String,
    pub host_veth: String,
}

/// The host addresses of a subnet a container may get: not the network address, not the
/// gateway (the first host), not the broadcast address.
pub fn host_range(subnet: (Ipv4Addr, u8)) -> (u32, u32) {
    let (net, prefix) = subnet;
    let size = 1u64 << (32 - prefix as u32);
    let base = u32::from(net) & (u32::MAX.checked_shl(32 - prefix as u32).unwrap_or(0));
    (base + 2, (base as u64 + size - 2) as u32)
}

/// The gateway (bridge) address of a subnet: its first host.
pub fn gateway(subnet: (Ipv4Addr, u8)) -> Ipv4Addr {
    let base = u32::from(subnet.0) & (u32::MAX.checked_shl(32 - subnet.1 as u32).unwrap_or(0));
    Ipv4Addr::from(base + 1)
}

/// The host-side veth name of an endpoint: `bth` + 8 hex digits of a hash of the id.
pub fn veth_name(id: &str) -> String {
    // FNV-1a: stable across versions and platforms.
    let mut h: u32 = 0x811c9dc5;
    for b in id.bytes() {
        h ^= b as u32;
        h = h.wrapping_mul(0x01000193);
    }
    format!("bth{h:08x}")
}

// ---- netlink ------------------------------------------------------------------------------

/// A route netlink socket in the namespace of the thread that opened it.
struct Nl {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl Nl {
    fn open() -> io::Result<Nl> {
        let mut sock = Socket::new(NETLINK_ROUTE)?;
        sock.bind_auto()?;
        sock.connect(&NlAddr::new(0, 0))?;
        Ok(Nl {
            sock,
            seq: 0,
            buf: vec![0; 64 * 1024],
        })
    }

    /// Send one request and collect the answers until its ACK (or the end of a dump).
    fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        self.seq += 1;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        header.sequence_number = self.seq;
        let mut m = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        m.finalize();
        let mut out = vec![0u8; m.buffer_len()];
        m.serialize(&mut out);
        self.sock.send(&out, 0)?;
        let mut answers = Vec::new();
        loop {
            let n = self.sock.recv(&mut &mut self.buf[..], 0)?;
            let mut off = 0;
            while off < n {
                let m = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&self.buf[off..n])
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                let len = m.header.length as usize;
                if m.header.sequence_number == self.seq {
                    match m.payload {
                        NetlinkPayload::Error(e) => {
                            return match e.code {
                                None => Ok(answers),
                                Some(c) => Err(io::Error::from_raw_os_error(-c.get())),
                            };
                        }
                        NetlinkPayload::Done(_) => return Ok(answers),
                        NetlinkPayload::InnerMessage(r) => answers.push(r),
                        _ => {}
                    }
                }
                if len == 0 {
                    break;
                }
                off += len;
            }
        }
    }

    fn link(&mut self, name: &str) -> io::Result<Option<LinkMessage>> {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        match self.request(RouteNetlinkMessage::GetLink(m), 0) {
            Ok(v) => Ok(v.into_iter().find_map(|r| match r {
                RouteNetlinkMessage::NewLink(l) => Some(l),
                _ => None,
            })),
            Err(e) if e.raw_os_error() == Some(nix::libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn index(&mut self, name: &str) -> io::Result<u32> {
        self.link(name)?
            .map(|l| l.header.index)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no interface {name}")))
    }

    fn set_link(&mut self, index: u32, up: bool, controller: Option<u32>) -> io::Result<()> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        if up {
            m.header.flags = LinkFlags::Up;
            m.header.change_mask = LinkFlags::Up;
        }
        if let Some(c) = controller {
            m.attributes.push(LinkAttribute::Controller(c));
        }
        self.request(RouteNetlinkMessage::SetLink(m), 0).map(|_| ())
    }

    fn add_bridge(&mut self, name: &str) -> io::Result<()> {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        m.attributes
            .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
                InfoKind::Bridge,
            )]));
        self.request(RouteNetlinkMessage::NewLink(m), NLM_F_CREATE | NLM_F_EXCL)
            .map(|_| ())
    }

    /// A veth pair: `host` here, `peer` created directly in the namespace of `ns_fd`.
    fn add_veth(&mut self, host: &str, peer: &str, ns_fd: i32) -> io::Result<()> {
        let mut p = LinkMessage::default();
        p.attributes.push(LinkAttribute::IfName(peer.to_string()));
        p.attributes.push(LinkAttribute::NetNsFd(ns_fd));
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(host.to_string()));
        m.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(p))),
        ]));
        self.request(RouteNetlinkMessage::NewLink(m), NLM_F_CREATE | NLM_F_EXCL)
            .map(|_| ())
    }

    fn del_link(&mut self, name: &str) -> io::Result<()> {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        match self.request(RouteNetlinkMessage::DelLink(m), 0) {
            Err(e) if e.raw_os_error() == Some(nix::libc::ENODEV) => Ok(()),
            r => r.map(|_| ()),
        }
    }

    fn add_addr(&mut self, index: u32, ip: Ipv4Addr, prefix: u8) -> io::Result<()> {
        let mut m = AddressMessage::default();
        m.header.family = AddressFamily::Inet;
        m.header.prefix_len = prefix;
        m.header.index = index;
        m.attributes.push(AddressAttribute::Local(IpAddr::V4(ip)));
        m.attributes.push(AddressAttribute::Address(IpAddr::V4(ip)));
        match self.request(
            RouteNetlinkMessage::NewAddress(m),
            NLM_F_CREATE | NLM_F_EXCL,
        ) {
            Err(e) if e.raw_os_error() == Some(nix::libc::EEXIST) => Ok(()),
            r => r.map(|_| ()),
        }
    }

    fn add_default_route(&mut self, gw: Ipv4Addr, index: u32) -> io::Result<()> {
        let mut m = RouteMessage::default();
        m.header.address_family = AddressFamily::Inet;
        m.header.table = 254; // main
        m.header.protocol = RouteProtocol::Boot;
        m.header.scope = RouteScope::Universe;
        m.header.kind = RouteType::Unicast;
        m.attributes
            .push(RouteAttribute::Gateway(RouteAddress::Inet(gw)));
        m.attributes.push(RouteAttribute::Oif(index));
        self.request(RouteNetlinkMessage::NewRoute(m), NLM_F_CREATE | NLM_F_EXCL)
            .map(|_| ())
    }
}

fn mac_of(l: &LinkMessage) -> String {
    l.attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::Address(b) => Some(
                b.iter()
                    .map(|x| format!("{x:02x}"))
                    .collect::<Vec<_>>()
                    .join(":"),
            ),
            _ => None,
        })
        .unwrap_or_default()
}

/// Run `f` on a fresh thread (namespace changes stay off every other thread).
async fn on_thread<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, NetError> + Send + 'static,
) -> Result<T, NetError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("berth-net".into())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .map_err(ioe("starting a network thread"))?;
    rx.await.map_err(|_| {
        NetError::Io(
            "network thread".into(),
            io::Error::other("ended without an answer"),
        )
    })?
}

// ---- the network ----------------------------------------------------------------------------

/// The bridge and its endpoints.
pub struct Network {
    cfg: NetConfig,
    gateway: Ipv4Addr,
    /// Next address to try (an offset into the host range), so that released addresses are
    /// not reused at once.
    cursor: parking_lot::Mutex<u32>,
    masquerade_added: bool,
}

impl Network {
    /// Create (or adopt) the bridge with the gateway address and set it up; enable forwarding
    /// and, when `iptables` exists, masquerade the subnet's traffic leaving the node.
    pub async fn open(cfg: NetConfig) -> Result<Network, NetError> {
        for d in ["ipam", "endpoints", "netns"] {
            let p = cfg.state_dir.join(d);
            std::fs::create_dir_all(&p).map_err(ioe(format!("creating {}", p.display())))?;
        }
        let gw = gateway(cfg.subnet);
        let (bridge, prefix) = (cfg.bridge.clone(), cfg.subnet.1);
        on_thread(move || {
            let mut nl = Nl::open().map_err(ioe("netlink"))?;
            if nl.link(&bridge).map_err(ioe("netlink"))?.is_none() {
                match nl.add_bridge(&bridge) {
                    Err(e) if e.raw_os_error() == Some(nix::libc::EEXIST) => {}
                    r => r.map_err(ioe(format!("creating bridge {bridge}")))?,
                }
            }
            let idx = nl.index(&bridge).map_err(ioe(format!("bridge {bridge}")))?;
            nl.add_addr(idx, gw, prefix)
                .map_err(ioe(format!("addressing bridge {bridge}")))?;
            nl.set_link(idx, true, None)
                .map_err(ioe(format!("bringing {bridge} up")))?;
            Ok(())
        })
        .await?;
        let _ = std::fs::write("/proc/sys/net/ipv4/ip_forward", "1");
        let subnet = format!("{}/{}", cfg.subnet.0, cfg.subnet.1);
        let rule = [
            "-t",
            "nat",
            "POSTROUTING",
            "-s",
            &subnet,
            "!",
            "-o",
            &cfg.bridge,
            "-j",
            "MASQUERADE",
        ];
        let mut masquerade_added = false;
        let iptables = |op: &str| {
            let mut args: Vec<&str> = rule.to_vec();
            args.insert(2, op);
            std::process::Command::new("iptables")
                .args(&args)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
        };
        match iptables("-C") {
            Ok(s) if s.success() => {}
            Ok(_) => {
                masquerade_added = iptables("-A").is_ok_and(|s| s.success());
            }
            Err(_) => tracing::info!("no iptables: containers reach the node and each other only"),
        }
        Ok(Network {
            cfg,
            gateway: gw,
            cursor: parking_lot::Mutex::new(0),
            masquerade_added,
        })
    }

    fn record_path(&self, id: &str) -> PathBuf {
        self.cfg
            .state_dir
            .join("endpoints")
            .join(format!("{id}.json"))
    }

    fn netns_path(&self, id: &str) -> PathBuf {
        self.cfg.state_dir.join("netns").join(id)
    }

    /// Reserve the next free address (a file per address, created exclusively).
    fn allocate(&self, id: &str) -> Result<Ipv4Addr, NetError> {
        let (lo, hi) = host_range(self.cfg.subnet);
        let n = hi - lo + 1;
        let mut cur = self.cursor.lock();
        for i in 0..n {
            let off = (*cur + i) % n;
            let ip = Ipv4Addr::from(lo + off);
            let p = self.cfg.state_dir.join("ipam").join(ip.to_string());
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&p)
            {
                Ok(mut f) => {
                    use std::io::Write;
                    let _ = f.write_all(id.as_bytes());
                    *cur = (off + 1) % n;
                    return Ok(ip);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(NetError::Io(format!("allocating {ip}"), e)),
            }
        }
        Err(NetError::Exhausted(format!(
            "{}/{}",
            self.cfg.subnet.0, self.cfg.subnet.1
        )))
    }

    fn release(&self, ip: Ipv4Addr) {
        let _ = std::fs::remove_file(self.cfg.state_dir.join("ipam").join(ip.to_string()));
    }

    /// A new network namespace for `id` on the bridge.
    pub async fn create_endpoint(&self, id: &str) -> Result<Endpoint, NetError> {
        let ip = self.allocate(id)?;
        let ns = self.netns_path(id);
        let ep = Endpoint {
            id: id.to_string(),
            netns: ns.clone(),
            ip,
            prefix: self.cfg.subnet.1,
            gateway: self.gateway,
            mac: String::new(),
            host_veth: veth_name(id),
        };
        let (bridge, ep2) = (self.cfg.bridge.clone(), ep.clone());
        let made = on_thread(move || build_endpoint(&bridge, &ep2)).await;
        match made {
            Ok(mac) => {
                let ep = Endpoint { mac, ..ep };
                let rec = self.record_path(id);
                std::fs::write(&rec, serde_json::to_vec(&ep).unwrap_or_default())
                    .map_err(ioe(format!("writing {}", rec.display())))?;
                Ok(ep)
            }
            Err(e) => {
                let _ = self.teardown(&ep).await;
                self.release(ip);
                Err(e)
            }
        }
    }

    /// The endpoint of `id` if it exists (after a restart, from its record).
    pub async fn endpoint(&self, id: &str) -> Option<Endpoint> {
        let ep: Endpoint =
            serde_json::from_slice(&std::fs::read(self.record_path(id)).ok()?).ok()?;
        ep.netns.exists().then_some(ep)
    }

    async fn teardown(&self, ep: &Endpoint) -> Result<(), NetError> {
        let veth = ep.host_veth.clone();
        on_thread(move || {
            let mut nl = Nl::open().map_err(ioe("netlink"))?;
            nl.del_link(&veth).map_err(ioe(format!("deleting {veth}")))
        })
        .await?;
        let _ = nix::mount::umount2(&ep.netns, nix::mount::MntFlags::MNT_DETACH);
        let _ = std::fs::remove_file(&ep.netns);
        Ok(())
    }

    /// Remove the endpoint of `id`: its veth pair, namespace and address. Idempotent.
    pub async fn remove_endpoint(&self, id: &str) -> Result<(), NetError> {
        let Some(ep) = serde_json::from_slice::<Endpoint>(
            &std::fs::read(self.record_path(id)).unwrap_or_default(),
        )
        .ok() else {
            // No record: at most a namespace file without an address.
            let ns = self.netns_path(id);
            let _ = nix::mount::umount2(&ns, nix::mount::MntFlags::MNT_DETACH);
            let _ = std::fs::remove_file(&ns);
            return Ok(());
        };
        self.teardown(&ep).await?;
        self.release(ep.ip);
        let _ = std::fs::remove_file(self.record_path(id));
        Ok(())
    }

    /// Remove the bridge (and the masquerade rule this network added).
    pub async fn destroy(self) -> Result<(), NetError> {
        let bridge = self.cfg.bridge.clone();
        on_thread(move || {
            let mut nl = Nl::open().map_err(ioe("netlink"))?;
            nl.del_link(&bridge)
                .map_err(ioe(format!("deleting {bridge}")))
        })
        .await?;
        if self.masquerade_added {
            let subnet = format!("{}/{}", self.cfg.subnet.0, self.cfg.subnet.1);
            let _ = std::process::Command::new("iptables")
                .args([
                    "-t",
                    "nat",
                    "-D",
                    "POSTROUTING",
                    "-s",
                    &subnet,
                    "!",
                    "-o",
                    &self.cfg.bridge,
                    "-j",
                    "MASQUERADE",
                ])
                .status();
        }
        Ok(())
    }
}

/// On a thread of its own: a new namespace, bind-mounted at `ep.netns`, wired to the bridge.
/// Returns the MAC address of the namespace's `eth0`.
fn build_endpoint(bridge: &str, ep: &Endpoint) -> Result<String, NetError> {
    let mut host = Nl::open().map_err(ioe("netlink"))?;
    let bridge_idx = host
        .index(bridge)
        .map_err(ioe(format!("bridge {bridge}")))?;
    // A stale veth of the same name (a crash between creation and record) goes first.
    let _ = host.del_link(&ep.host_veth);
    std::fs::File::create(&ep.netns).map_err(ioe(format!("creating {}", ep.netns.display())))?;
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| NetError::Io("unshare(CLONE_NEWNET)".into(), e.into()))?;
    nix::mount::mount(
        Some("/proc/thread-self/ns/net"),
        &ep.netns,
        None::<&str>,
        nix::mount::MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| NetError::Io(format!("mounting {}", ep.netns.display()), e.into()))?;
    let ns_file = std::fs::File::open(&ep.netns).map_err(ioe("opening the namespace"))?;
    let mut inside = Nl::open().map_err(ioe("netlink in the namespace"))?;
    host.add_veth(&ep.host_veth, "eth0", ns_file.as_raw_fd())
        .map_err(ioe(format!("creating veth {}", ep.host_veth)))?;
    let hidx = host.index(&ep.host_veth).map_err(ioe("veth"))?;
    host.set_link(hidx, true, Some(bridge_idx))
        .map_err(ioe(format!("attaching {} to {bridge}", ep.host_veth)))?;
    let lo = inside.index("lo").map_err(ioe("lo"))?;
    inside.set_link(lo, true, None).map_err(ioe("lo up"))?;
    let eth = inside
        .link("eth0")
        .map_err(ioe("eth0"))?
        .ok_or_else(|| NetError::Io("eth0".into(), io::Error::other("missing in the namespace")))?;
    let idx = eth.header.index;
    inside
        .add_addr(idx, ep.ip, ep.prefix)
        .map_err(ioe("eth0 address"))?;
    inside.set_link(idx, true, None).map_err(ioe("eth0 up"))?;
    inside
        .add_default_route(ep.gateway, idx)
        .map_err(ioe("default route"))?;
    Ok(mac_of(&eth))
}

// ---- port forwarding ------------------------------------------------------------------------

/// TCP or UDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
}

/// The dynamic host port range (ECS's default on Linux).
pub const DYNAMIC_PORTS: std::ops::RangeInclusive<u16> = 49153..=65535;

/// A userspace forwarder from a host port to a container (like docker-proxy).
pub struct PortProxy {
    port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl PortProxy {
    /// Bind now (a taken port is [`NetError::PortInUse`]); port 0 picks a free port from
    /// [`DYNAMIC_PORTS`]. Forwards until stopped or dropped.
    pub async fn start(
        proto: Proto,
        bind: SocketAddr,
        target: SocketAddr,
    ) -> Result<PortProxy, NetError> {
        let candidates: Vec<u16> = if bind.port() == 0 {
            let span = (*DYNAMIC_PORTS.end() - *DYNAMIC_PORTS.start()) as u32 + 1;
            let start = rand_u32() % span;
            (0..span.min(4096))
                .map(|i| *DYNAMIC_PORTS.start() + ((start + i * 7919) % span) as u16)
                .collect()
        } else {
            vec![bind.port()]
        };
        for port in &candidates {
            let addr = SocketAddr::new(bind.ip(), *port);
            match proto {
                Proto::Tcp => match tokio::net::TcpListener::bind(addr).await {
                    Ok(l) => {
                        return Ok(PortProxy {
                            port: *port,
                            task: tokio::spawn(tcp_forward(l, target)),
                        });
                    }
                    Err(e) if e.kind() == io::ErrorKind::AddrInUse => continue,
                    Err(e) => return Err(NetError::Io(format!("binding {addr}"), e)),
                },
                Proto::Udp => match tokio::net::UdpSocket::bind(addr).await {
                    Ok(s) => {
                        return Ok(PortProxy {
                            port: *port,
                            task: tokio::spawn(udp_forward(Arc::new(s), target)),
                        });
                    }
                    Err(e) if e.kind() == io::ErrorKind::AddrInUse => continue,
                    Err(e) => return Err(NetError::Io(format!("binding {addr}"), e)),
                },
            }
        }
        Err(NetError::PortInUse(bind.port()))
    }

    pub fn host_port(&self) -> u16 {
        self.port
    }

    pub fn stop(self) {}
}

impl Drop for PortProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn rand_u32() -> u32 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    t.subsec_nanos() ^ std::process::id().rotate_left(16)
}

async fn tcp_forward(l: tokio::net::TcpListener, target: SocketAddr) {
    // Dropping the set (when this task is aborted) ends every connection.
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            acc = l.accept() => {
                let Ok((mut inbound, _)) = acc else { continue };
                conns.spawn(async move {
                    let _ = inbound.set_nodelay(true);
                    if let Ok(mut out) = tokio::net::TcpStream::connect(target).await {
                        let _ = out.set_nodelay(true);
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

async fn udp_forward(s: Arc<tokio::net::UdpSocket>, target: SocketAddr) {
    // One upstream socket per client address, answering back through the listening socket.
    let mut peers: HashMap<SocketAddr, Arc<tokio::net::UdpSocket>> = HashMap::new();
    let mut tasks = tokio::task::JoinSet::new();
    let mut buf = vec![0u8; 65536];
    loop {
        let Ok((n, from)) = s.recv_from(&mut buf).await else {
            continue;
        };
        let up = match peers.get(&from) {
            Some(u) => u.clone(),
            None => {
                let Ok(u) = tokio::net::UdpSocket::bind(("0.0.0.0", 0)).await else {
                    continue;
                };
                if u.connect(target).await.is_err() {
                    continue;
                }
                let u = Arc::new(u);
                peers.insert(from, u.clone());
                let (back, u2) = (s.clone(), u.clone());
                tasks.spawn(async move {
                    let mut b = vec![0u8; 65536];
                    while let Ok(n) = u2.recv(&mut b).await {
                        let _ = back.send_to(&b[..n], from).await;
                    }
                });
                u
            }
        };
        let _ = up.send(&buf[..n]).await;
    }
}

/// Whether a path is a mount point (its own entry in mountinfo).
pub fn is_mounted(p: &Path) -> bool {
    let s = p.to_string_lossy();
    std::fs::read_to_string("/proc/self/mountinfo")
        .is_ok_and(|m| m.lines().any(|l| l.split_whitespace().nth(4) == Some(&s)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_arithmetic() {
        let s = (Ipv4Addr::new(10, 213, 0, 0), 16);
        assert_eq!(gateway(s), Ipv4Addr::new(10, 213, 0, 1));
        let (lo, hi) = host_range(s);
        assert_eq!(Ipv4Addr::from(lo), Ipv4Addr::new(10, 213, 0, 2));
        assert_eq!(Ipv4Addr::from(hi), Ipv4Addr::new(10, 213, 255, 254));
        let (lo, hi) = host_range((Ipv4Addr::new(10, 215, 0, 0), 24));
        assert_eq!(hi - lo + 1, 253);
    }

    #[test]
    fn veth_names_fit_and_are_stable() {
        let n = veth_name("0123456789abcdef0123456789abcdef-web");
        assert_eq!(n.len(), 11);
        assert_eq!(n, veth_name("0123456789abcdef0123456789abcdef-web"));
        assert_ne!(n, veth_name("other"));
    }

    #[test]
    fn allocation_is_exclusive_and_released() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("ipam")).unwrap();
        let n = Network {
            cfg: NetConfig {
                bridge: "x".into(),
                subnet: (Ipv4Addr::new(10, 9, 0, 0), 29),
                state_dir: d.path().to_path_buf(),
            },
            gateway: Ipv4Addr::new(10, 9, 0, 1),
            cursor: parking_lot::Mutex::new(0),
            masquerade_added: false,
        };
        let got: Vec<Ipv4Addr> = (0..5)
            .map(|i| n.allocate(&i.to_string()).unwrap())
            .collect();
        assert_eq!(got[0], Ipv4Addr::new(10, 9, 0, 2));
        assert_eq!(got[4], Ipv4Addr::new(10, 9, 0, 6));
        assert!(matches!(n.allocate("x"), Err(NetError::Exhausted(_))));
        n.release(got[1]);
        // A second network on the same directory (a restarted agent) sees the allocations.
        let n2 = Network {
            cursor: parking_lot::Mutex::new(0),
            cfg: n.cfg.clone(),
            gateway: n.gateway,
            masquerade_added: false,
        };
        assert_eq!(n2.allocate("y").unwrap(), got[1]);
    }
}
