//! Container networking on a node, over rtnetlink.
//!
//! What this module owns:
//!
//! - **the bridge** (`berth0` by default) with the gateway address — the first host of the
//!   node's subnet — plus `net.ipv4.ip_forward`, one `MASQUERADE` rule for the subnet so
//!   containers reach the outside, and one `FORWARD … REJECT` rule so that requests for the
//!   credentials address (`169.254.170.2`) never leave the node when no agent redirects them
//!   ([`Network::open`], [`Network::destroy`]; [`teardown`] after the agent stopped);
//! - **endpoints**: a network namespace per task or container, bind-mounted to a file under
//!   `state_dir/netns/` the way `ip netns add` does (that directory is made a shared mount
//!   point, as iproute2 does with `/run/netns`), whose `eth0` is one end of a veth pair; the
//!   host end (`bth` + 8 hex digits of a hash of the id) is attached to the bridge
//!   ([`Network::create_endpoint`], [`Network::remove_endpoint`]);
//! - **address management**: a file per allocated address under `state_dir/ipam/`, created
//!   with `O_EXCL`, so a restarted agent never hands out an address twice; and a record per
//!   endpoint under `state_dir/endpoints/` so the agent finds its endpoints again
//!   ([`Network::endpoint`]);
//! - **host ports**: [`bind_host_port`] and [`PortProxy`], a userspace TCP/UDP forwarder (like
//!   `docker-proxy`); [`crate::forward`] runs one in its own process;
//! - **redirects** ([`Redirect`]): a DNAT rule per bridge that sends containers' connections
//!   to a well-known address to a service of the node.
//!
//! The hot path spawns no processes: an endpoint is a handful of netlink round trips made on a
//! short-lived thread of our own, which is the only thread that ever changes namespace (tokio
//! workers never leave the host namespace). Only the one-time setup in [`Network::open`] and
//! [`Redirect`] run `iptables`.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::fs::{self, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

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
use nix::mount::{MntFlags, MsFlags};
use serde::{Deserialize, Serialize};

/// The node's network settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConfig {
    /// Bridge interface name (1–15 bytes).
    pub bridge: String,
    /// The subnet: network address and prefix length (8..=30).
    pub subnet: (Ipv4Addr, u8),
    /// Holds address allocations (`ipam/`), endpoint records (`endpoints/`) and namespace
    /// files (`netns/`).
    pub state_dir: PathBuf,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            bridge: "berth0".into(),
            subnet: (Ipv4Addr::new(10, 213, 0, 0), 16),
            state_dir: PathBuf::from("/var/lib/berth/net"),
        }
    }
}

/// Why the network could not do something.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The host port is taken (ECS: `RESOURCE:PORTS`).
    #[error("host port {0} is already in use")]
    PortInUse(u16),
    /// Every port of the dynamic range is taken.
    #[error("no free host port in {}..={}", DYNAMIC_PORTS.start(), DYNAMIC_PORTS.end())]
    NoFreePort,
    /// Every address of the subnet is allocated.
    #[error("no free address left in {0}")]
    Exhausted(String),
    /// `create_endpoint` for an id that has a live endpoint.
    #[error("endpoint {0} already exists")]
    Exists(String),
    /// An id that cannot name a file.
    #[error("invalid endpoint id {0:?}")]
    InvalidId(String),
    #[error("invalid network configuration: {0}")]
    Config(String),
    #[error("{0}: {1}")]
    Io(String, #[source] io::Error),
}

fn ioe(what: impl Into<String>) -> impl FnOnce(io::Error) -> NetError {
    let what = what.into();
    move |e| NetError::Io(what, e)
}

fn nixe(what: impl Into<String>) -> impl FnOnce(nix::Error) -> NetError {
    let what = what.into();
    move |e| NetError::Io(what, e.into())
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
    /// The MAC address of `eth0` (derived from `ip`).
    pub mac: String,
    /// The host end of the veth pair, attached to the bridge.
    pub host_veth: String,
}

// ---- pure arithmetic ---------------------------------------------------------------------------

/// The netmask of a prefix length.
pub fn netmask(prefix: u8) -> u32 {
    u32::MAX
        .checked_shl(32 - u32::from(prefix.min(32)))
        .unwrap_or(0)
}

/// The gateway (bridge) address of a subnet: its first host.
pub fn gateway(subnet: (Ipv4Addr, u8)) -> Ipv4Addr {
    Ipv4Addr::from((u32::from(subnet.0) & netmask(subnet.1)) + 1)
}

/// The addresses an endpoint may get, as integers: every host of the subnet except the
/// network address, the gateway and the broadcast address. Empty for prefixes over 30.
pub fn host_range(subnet: (Ipv4Addr, u8)) -> std::ops::RangeInclusive<u32> {
    let (net, prefix) = subnet;
    if prefix > 30 {
        #[allow(clippy::reversed_empty_ranges)]
        return 1..=0;
    }
    let base = u32::from(net) & netmask(prefix);
    let broadcast = base | !netmask(prefix);
    (base + 2)..=(broadcast - 1)
}

/// The `n`-th address (wrapping) of [`host_range`].
pub fn nth_host(subnet: (Ipv4Addr, u8), n: u32) -> Ipv4Addr {
    let r = host_range(subnet);
    let size = r.end() - r.start() + 1;
    Ipv4Addr::from(r.start() + n % size)
}

/// The host-side veth name of an endpoint: `bth` + 8 hex digits of an FNV-1a hash of the id
/// (11 bytes; interface names may have 15). Stable across versions and platforms.
pub fn veth_name(id: &str) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in id.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("bth{h:08x}")
}

/// The MAC address of an interface holding `ip`: locally administered, unicast, `02:b7` and
/// the four address bytes (as Docker derives its `02:42:…` from the address).
pub fn mac_for(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x02, 0xb7, o[0], o[1], o[2], o[3]]
}

fn mac_string(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Whether `id` may name an endpoint: 1–128 of `[A-Za-z0-9_.-]`, not starting with a dot.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace())
}

// ---- rtnetlink --------------------------------------------------------------------------------

/// A blocking route netlink socket, in the network namespace of the thread that opened it.
struct Rtnl {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl Rtnl {
    fn open() -> io::Result<Rtnl> {
        let mut sock = Socket::new(NETLINK_ROUTE)?;
        sock.bind_auto()?;
        sock.connect(&NlAddr::new(0, 0))?;
        Ok(Rtnl {
            sock,
            seq: 0,
            buf: Vec::with_capacity(32 * 1024),
        })
    }

    /// Send one request; collect the answers until its ACK (or error).
    fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        self.seq = self.seq.wrapping_add(1);
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
            self.buf.clear();
            let n = self.sock.recv(&mut self.buf, 0)?;
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
                off += (len + 3) & !3;
            }
        }
    }

    /// The index of the interface `name`, if it exists.
    fn index(&mut self, name: &str) -> io::Result<Option<u32>> {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        match self.request(RouteNetlinkMessage::GetLink(m), 0) {
            Ok(v) => Ok(v.into_iter().find_map(|r| match r {
                RouteNetlinkMessage::NewLink(l) => Some(l.header.index),
                _ => None,
            })),
            Err(e) if e.raw_os_error() == Some(nix::libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn set_up(&mut self, index: u32) -> io::Result<()> {
        self.request(msg_up(index), 0).map(|_| ())
    }

    /// Set an interface down by name; one that does not exist is not an error.
    fn set_down(&mut self, name: &str) -> io::Result<()> {
        let mut m = LinkMessage::default();
        m.header.change_mask = LinkFlags::Up;
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        match self.request(RouteNetlinkMessage::SetLink(m), 0) {
            Err(e) if e.raw_os_error() == Some(nix::libc::ENODEV) => Ok(()),
            r => r.map(|_| ()),
        }
    }

    /// Send several requests in one write (the kernel handles them in order) and wait for
    /// every ACK. The first failure wins, with its position.
    fn batch(&mut self, msgs: Vec<RouteNetlinkMessage>) -> Result<(), (usize, io::Error)> {
        let first = self.seq.wrapping_add(1);
        let mut out = Vec::new();
        for msg in msgs {
            self.seq = self.seq.wrapping_add(1);
            let mut header = NetlinkHeader::default();
            header.flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
            header.sequence_number = self.seq;
            let mut m = NetlinkMessage::new(header, NetlinkPayload::from(msg));
            m.finalize();
            let at = out.len();
            out.resize(at + m.buffer_len(), 0);
            m.serialize(&mut out[at..]);
        }
        let count = self.seq.wrapping_sub(first).wrapping_add(1) as usize;
        self.sock.send(&out, 0).map_err(|e| (0, e))?;
        let mut acked = 0;
        let mut failure: Option<(usize, io::Error)> = None;
        while acked < count {
            self.buf.clear();
            let n = self.sock.recv(&mut self.buf, 0).map_err(|e| (acked, e))?;
            let mut off = 0;
            while off < n {
                let m = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&self.buf[off..n])
                    .map_err(|e| {
                        (
                            acked,
                            io::Error::new(io::ErrorKind::InvalidData, e.to_string()),
                        )
                    })?;
                let len = m.header.length as usize;
                let pos = m.header.sequence_number.wrapping_sub(first) as usize;
                if pos < count
                    && let NetlinkPayload::Error(e) = m.payload
                {
                    acked += 1;
                    if let (Some(c), None) = (e.code, &failure) {
                        failure = Some((pos, io::Error::from_raw_os_error(-c.get())));
                    }
                }
                if len == 0 {
                    break;
                }
                off += (len + 3) & !3;
            }
        }
        failure.map_or(Ok(()), Err)
    }

    /// A bridge with a fixed MAC address (so it does not follow its ports' addresses).
    fn add_bridge(&mut self, name: &str, mac: [u8; 6]) -> io::Result<()> {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        m.attributes.push(LinkAttribute::Address(mac.to_vec()));
        m.attributes
            .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
                InfoKind::Bridge,
            )]));
        self.request(RouteNetlinkMessage::NewLink(m), NLM_F_CREATE | NLM_F_EXCL)
            .map(|_| ())
    }

    /// One round trip: a veth pair whose host end `host` is up and attached to `controller`,
    /// and whose peer `peer` (with address `peer_mac`, down) is created directly in the
    /// namespace `ns_fd`.
    fn add_veth(
        &mut self,
        host: &str,
        controller: u32,
        peer: &str,
        peer_mac: [u8; 6],
        ns_fd: i32,
    ) -> io::Result<()> {
        // The peer cannot be created up: veth_open() refuses (ENOTCONN) until both ends exist.
        let mut p = LinkMessage::default();
        p.attributes.push(LinkAttribute::IfName(peer.to_string()));
        p.attributes.push(LinkAttribute::Address(peer_mac.to_vec()));
        p.attributes.push(LinkAttribute::NetNsFd(ns_fd));
        let mut m = LinkMessage::default();
        m.header.flags = LinkFlags::Up;
        m.header.change_mask = LinkFlags::Up;
        m.attributes.push(LinkAttribute::IfName(host.to_string()));
        m.attributes.push(LinkAttribute::Controller(controller));
        m.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(p))),
        ]));
        self.request(RouteNetlinkMessage::NewLink(m), NLM_F_CREATE | NLM_F_EXCL)
            .map(|_| ())
    }

    /// Delete an interface; one that does not exist is not an error.
    fn del_link(&mut self, name: &str) -> io::Result<()> {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        match self.request(RouteNetlinkMessage::DelLink(m), 0) {
            Err(e) if e.raw_os_error() == Some(nix::libc::ENODEV) => Ok(()),
            r => r.map(|_| ()),
        }
    }

    /// Add an address; one that is already there is not an error.
    fn add_addr(&mut self, index: u32, ip: Ipv4Addr, prefix: u8) -> io::Result<()> {
        match self.request(msg_addr(index, ip, prefix), NLM_F_CREATE | NLM_F_EXCL) {
            Err(e) if e.raw_os_error() == Some(nix::libc::EEXIST) => Ok(()),
            r => r.map(|_| ()),
        }
    }
}

fn msg_up(index: u32) -> RouteNetlinkMessage {
    let mut m = LinkMessage::default();
    m.header.index = index;
    m.header.flags = LinkFlags::Up;
    m.header.change_mask = LinkFlags::Up;
    RouteNetlinkMessage::SetLink(m)
}

fn msg_addr(index: u32, ip: Ipv4Addr, prefix: u8) -> RouteNetlinkMessage {
    let mut m = AddressMessage::default();
    m.header.family = AddressFamily::Inet;
    m.header.prefix_len = prefix;
    m.header.index = index;
    m.attributes.push(AddressAttribute::Local(IpAddr::V4(ip)));
    m.attributes.push(AddressAttribute::Address(IpAddr::V4(ip)));
    RouteNetlinkMessage::NewAddress(m)
}

fn msg_default_route(gw: Ipv4Addr, oif: u32) -> RouteNetlinkMessage {
    let mut m = RouteMessage::default();
    m.header.address_family = AddressFamily::Inet;
    m.header.table = 254; // RT_TABLE_MAIN
    m.header.protocol = RouteProtocol::Boot;
    m.header.scope = RouteScope::Universe;
    m.header.kind = RouteType::Unicast;
    m.attributes
        .push(RouteAttribute::Gateway(RouteAddress::Inet(gw)));
    m.attributes.push(RouteAttribute::Oif(oif));
    RouteNetlinkMessage::NewRoute(m)
}

/// Run `f` on a new thread of our own and wait for it without blocking the runtime. Anything
/// that changes namespace runs here; the thread ends with `f`, taking its namespace with it.
async fn on_own_thread<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, NetError> + Send + 'static,
) -> Result<T, NetError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("berth-netns".into())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .map_err(ioe("starting a network thread"))?;
    rx.await
        .map_err(|_| NetError::Io("network thread".into(), io::Error::other("panicked")))?
}

/// Whether `p` is a bind-mounted namespace file (an nsfs mount).
fn is_netns_mount(p: &Path) -> bool {
    const NSFS_MAGIC: i64 = 0x6e73_6673;
    // f_type's integer type differs between targets.
    #[allow(clippy::unnecessary_cast)]
    nix::sys::statfs::statfs(p).is_ok_and(|s| s.filesystem_type().0 as i64 == NSFS_MAGIC)
}

/// Make `dir` a mount point with shared propagation, as `ip netns add` does for /run/netns:
/// unmounting a namespace file here then unmounts it in every mount namespace that copied it,
/// so the namespace is freed.
fn make_shared_mount(dir: &Path) -> Result<(), NetError> {
    let mut made = false;
    loop {
        match nix::mount::mount(
            None::<&str>,
            dir,
            None::<&str>,
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        ) {
            Ok(()) => return Ok(()),
            Err(nix::Error::EINVAL) if !made => {
                nix::mount::mount(
                    Some(dir),
                    dir,
                    None::<&str>,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None::<&str>,
                )
                .map_err(nixe(format!("mount --bind {0} {0}", dir.display())))?;
                made = true;
            }
            Err(e) => {
                return Err(NetError::Io(
                    format!("mount --make-shared {}", dir.display()),
                    e.into(),
                ));
            }
        }
    }
}

/// Unmount a namespace file (if mounted) and delete it (if present).
fn drop_netns_file(p: &Path) -> Result<(), NetError> {
    match nix::mount::umount2(p, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
        Err(e) => return Err(NetError::Io(format!("umount {}", p.display()), e.into())),
    }
    match fs::remove_file(p) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(NetError::Io(format!("removing {}", p.display()), e))
        }
        _ => Ok(()),
    }
}

fn remove_if_present(p: &Path) -> Result<(), NetError> {
    match fs::remove_file(p) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(NetError::Io(format!("removing {}", p.display()), e))
        }
        _ => Ok(()),
    }
}

/// The `iptables` arguments of the masquerade rule of a bridge's subnet, with `op` (`-C`, `-A`, `-D`).
pub fn masquerade_args<'a>(op: &'a str, subnet: &'a str, bridge: &'a str) -> [&'a str; 12] {
    [
        "-w",
        "-t",
        "nat",
        op,
        "POSTROUTING",
        "-s",
        subnet,
        "!",
        "-o",
        bridge,
        "-j",
        "MASQUERADE",
    ]
}

/// The address where tasks find their role credentials (the agent's endpoint, reached by a
/// DNAT rule on the bridge while the agent runs).
pub const CREDENTIALS_ADDRESS: &str = "169.254.170.2/32";

/// The rule that keeps tasks' requests for credentials on the node: without the agent's DNAT
/// rule they would be forwarded to the network (with the credentials id in their path).
pub fn credentials_guard_args<'a>(op: &'a str, bridge: &'a str) -> [&'a str; 11] {
    [
        "-w",
        "-t",
        "filter",
        op,
        "FORWARD",
        "-i",
        bridge,
        "-d",
        CREDENTIALS_ADDRESS,
        "-j",
        "REJECT",
    ]
}

fn iptables(args: &[&str]) -> io::Result<bool> {
    Command::new("iptables")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
}

/// Run `iptables` with `args`; Ok(stdout) when it succeeds, its stderr as the error otherwise.
fn iptables_output(args: &[&str]) -> Result<String, NetError> {
    let what = || format!("iptables {}", args.join(" "));
    let out = Command::new("iptables")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                NetError::Io(what(), io::Error::other("iptables is not installed"))
            } else {
                NetError::Io(what(), e)
            }
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
        Err(NetError::Io(what(), io::Error::other(err)))
    }
}

// ---- redirects to the node's own services ------------------------------------------------------

/// A `nat PREROUTING` DNAT rule: TCP connections that arrive on `bridge` for `from` go to `to`,
/// an address of the node instead. This is how containers on the bridge reach a service of the
/// agent at a well-known address (the task credentials endpoint at `169.254.170.2:80`, as on
/// ECS). Each network namespace has its own rules, so agents in different namespaces never
/// see each other's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    pub bridge: String,
    pub from: SocketAddrV4,
    pub to: SocketAddrV4,
}

impl Redirect {
    fn args(&self, op: &str) -> Vec<String> {
        [
            "-w",
            "-t",
            "nat",
            op,
            "PREROUTING",
            "-i",
            &self.bridge,
            "-d",
            &format!("{}/32", self.from.ip()),
            "-p",
            "tcp",
            "--dport",
            &self.from.port().to_string(),
            "-j",
            "DNAT",
            "--to-destination",
            &self.to.to_string(),
        ]
        .map(str::to_string)
        .to_vec()
    }

    fn run(&self, op: &str) -> Result<String, NetError> {
        let args = self.args(op);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        iptables_output(&args)
    }

    fn present(&self) -> bool {
        self.run("-C").is_ok()
    }

    /// Make this the bridge's only redirect of `from`: rules that point elsewhere (left by an
    /// earlier run of the agent, whose port was another) are removed, and this one is added
    /// unless it is there already. Idempotent. Runs `iptables`: call off the async workers.
    pub fn install(&self) -> Result<(), NetError> {
        if !valid_ifname(&self.bridge) {
            return Err(NetError::Config(format!("bridge name {:?}", self.bridge)));
        }
        let listing = iptables_output(&["-w", "-t", "nat", "-S", "PREROUTING"])?;
        for old in redirect_targets(&listing, &self.bridge, self.from) {
            if old != self.to {
                let stale = Redirect {
                    to: old,
                    ..self.clone()
                };
                stale.run("-D")?;
            }
        }
        if !self.present() {
            self.run("-A")?;
        }
        Ok(())
    }

    /// Remove this rule (every copy of it); other redirects stay. Runs `iptables`.
    pub fn remove(&self) -> Result<(), NetError> {
        for _ in 0..16 {
            if !self.present() {
                return Ok(());
            }
            self.run("-D")?;
        }
        Ok(())
    }
}

/// Where the redirects of `from` on `bridge` go, from an `iptables -t nat -S PREROUTING`
/// listing (rules with negations or other matches are not ours and are left out).
pub fn redirect_targets(listing: &str, bridge: &str, from: SocketAddrV4) -> Vec<SocketAddrV4> {
    let dst = format!("{}/32", from.ip());
    let port = from.port().to_string();
    listing
        .lines()
        .filter_map(|line| {
            let t: Vec<&str> = line.split_whitespace().collect();
            if t.len() != 16 || t[..2] != ["-A", "PREROUTING"] {
                return None;
            }
            let val = |flag: &str| t.windows(2).find(|w| w[0] == flag).map(|w| w[1]);
            let ours = val("-i") == Some(bridge)
                && val("-d") == Some(dst.as_str())
                && val("-p") == Some("tcp")
                && val("-m") == Some("tcp")
                && val("--dport") == Some(port.as_str())
                && val("-j") == Some("DNAT");
            if !ours {
                return None;
            }
            val("--to-destination")?.parse().ok()
        })
        .collect()
}

// ---- background deletion -----------------------------------------------------------------------

/// Deletes host veths on a thread of its own. Unregistering a device costs the kernel ~20 ms of
/// RCU waits (`rcu_barrier` in `netdev_run_todo`), which `remove_endpoint` need not wait for:
/// the veth is set down (off the bridge's forwarding) at once and deleted here.
struct Reaper {
    tx: Option<std::sync::mpsc::Sender<String>>,
    pending: Arc<Pending>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct Pending {
    names: parking_lot::Mutex<HashSet<String>>,
    changed: tokio::sync::Notify,
}

impl Reaper {
    fn start() -> io::Result<Reaper> {
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let pending = Arc::new(Pending {
            names: parking_lot::Mutex::new(HashSet::new()),
            changed: tokio::sync::Notify::new(),
        });
        let p = pending.clone();
        let thread = std::thread::Builder::new()
            .name("berth-veth-reaper".into())
            .spawn(move || {
                let mut nl: Option<Rtnl> = None;
                while let Ok(name) = rx.recv() {
                    let r = match nl.as_mut() {
                        Some(nl) => nl.del_link(&name),
                        None => Rtnl::open().and_then(|mut n| {
                            let r = n.del_link(&name);
                            nl = Some(n);
                            r
                        }),
                    };
                    if let Err(e) = r {
                        tracing::warn!(veth = %name, error = %e, "deleting a veth");
                        nl = None;
                    }
                    p.names.lock().remove(&name);
                    p.changed.notify_waiters();
                }
            })?;
        Ok(Reaper {
            tx: Some(tx),
            pending,
            thread: Some(thread),
        })
    }

    fn queue(&self, name: String) {
        self.pending.names.lock().insert(name.clone());
        if let Some(tx) = &self.tx
            && tx.send(name.clone()).is_err()
        {
            self.pending.names.lock().remove(&name);
        }
    }

    /// Wait until `name` (or, with `None`, every queued veth) is deleted.
    async fn wait(&self, name: Option<&str>) {
        loop {
            let changed = self.pending.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let names = self.pending.names.lock();
                let busy = match name {
                    Some(n) => names.contains(n),
                    None => !names.is_empty(),
                };
                if !busy {
                    return;
                }
            }
            changed.await;
        }
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        // Let the thread finish what is queued (a shutting-down agent leaves no veth behind).
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---- the network ------------------------------------------------------------------------------

/// The node's bridge and its endpoints.
pub struct Network {
    cfg: NetConfig,
    gateway: Ipv4Addr,
    /// The next offset into [`host_range`] to try, so a released address is not reused at once.
    cursor: parking_lot::Mutex<u32>,
    /// Whether [`Network::open`] added the masquerade rule (then [`Network::destroy`] removes it).
    masquerade_added: bool,
    /// Whether [`Network::open`] added the credentials guard (then [`Network::destroy`]
    /// removes it).
    guard_added: bool,
    reaper: Reaper,
}

impl Network {
    /// Create (or adopt) the bridge with the gateway address and set it up; enable IPv4
    /// forwarding and, when `iptables` exists, make sure one masquerade rule covers the subnet's
    /// traffic leaving through another interface.
    pub async fn open(cfg: NetConfig) -> Result<Network, NetError> {
        if !valid_ifname(&cfg.bridge) {
            return Err(NetError::Config(format!("bridge name {:?}", cfg.bridge)));
        }
        if !(8..=30).contains(&cfg.subnet.1) {
            return Err(NetError::Config(format!(
                "prefix /{} (must be 8..=30)",
                cfg.subnet.1
            )));
        }
        // The canonical network address.
        let cfg = NetConfig {
            subnet: (
                Ipv4Addr::from(u32::from(cfg.subnet.0) & netmask(cfg.subnet.1)),
                cfg.subnet.1,
            ),
            ..cfg
        };
        for d in ["ipam", "endpoints", "netns"] {
            let p = cfg.state_dir.join(d);
            fs::create_dir_all(&p).map_err(ioe(format!("creating {}", p.display())))?;
        }
        make_shared_mount(&cfg.state_dir.join("netns"))?;

        let gw = gateway(cfg.subnet);
        let (bridge, prefix) = (cfg.bridge.clone(), cfg.subnet.1);
        tokio::task::spawn_blocking(move || -> Result<(), NetError> {
            let mut nl = Rtnl::open().map_err(ioe("netlink"))?;
            if nl.index(&bridge).map_err(ioe("netlink"))?.is_none() {
                match nl.add_bridge(&bridge, mac_for(gw)) {
                    Err(e) if e.raw_os_error() == Some(nix::libc::EEXIST) => {}
                    r => r.map_err(ioe(format!("creating bridge {bridge}")))?,
                }
            }
            let idx = nl
                .index(&bridge)
                .map_err(ioe("netlink"))?
                .ok_or_else(|| NetError::Io(bridge.clone(), io::Error::other("vanished")))?;
            nl.add_addr(idx, gw, prefix)
                .map_err(ioe(format!("adding {gw}/{prefix} to {bridge}")))?;
            nl.set_up(idx)
                .map_err(ioe(format!("setting {bridge} up")))?;
            Ok(())
        })
        .await
        .map_err(|e| NetError::Io("bridge setup".into(), io::Error::other(e)))??;

        let fwd = "/proc/sys/net/ipv4/ip_forward";
        if fs::read_to_string(fwd)
            .map(|s| s.trim() != "1")
            .unwrap_or(true)
        {
            fs::write(fwd, "1").map_err(ioe("enabling net.ipv4.ip_forward"))?;
        }

        let subnet = format!("{}/{}", cfg.subnet.0, cfg.subnet.1);
        let bridge = cfg.bridge.clone();
        let masquerade_added = tokio::task::spawn_blocking(move || {
            match iptables(&masquerade_args("-C", &subnet, &bridge)) {
                Ok(true) => false,
                Ok(false) => match iptables(&masquerade_args("-A", &subnet, &bridge)) {
                    Ok(true) => true,
                    _ => {
                        tracing::warn!(%subnet, "could not add the masquerade rule");
                        false
                    }
                },
                Err(_) => {
                    tracing::info!("no iptables: containers reach the node and each other only");
                    false
                }
            }
        })
        .await
        .unwrap_or(false);
        let bridge = cfg.bridge.clone();
        let guard_added = tokio::task::spawn_blocking(move || {
            match iptables(&credentials_guard_args("-C", &bridge)) {
                Ok(false) => {
                    let added = matches!(iptables(&credentials_guard_args("-I", &bridge)), Ok(true));
                    if !added {
                        tracing::warn!(%bridge, "could not add the rule that keeps credential requests on the node");
                    }
                    added
                }
                _ => false,
            }
        })
        .await
        .unwrap_or(false);

        let net = Network {
            gateway: gw,
            cursor: parking_lot::Mutex::new(0),
            masquerade_added,
            guard_added,
            reaper: Reaper::start().map_err(ioe("starting the veth reaper"))?,
            cfg,
        };
        // Continue after the highest address in use, as before a restart.
        let range = host_range(net.cfg.subnet);
        let highest = fs::read_dir(net.cfg.state_dir.join("ipam"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<Ipv4Addr>().ok())
            .map(u32::from)
            .filter(|ip| range.contains(ip))
            .max();
        if let Some(h) = highest {
            *net.cursor.lock() = h - range.start() + 1;
        }
        Ok(net)
    }

    /// The configuration in force (the subnet canonicalised).
    pub fn config(&self) -> &NetConfig {
        &self.cfg
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

    fn ipam_path(&self, ip: Ipv4Addr) -> PathBuf {
        self.cfg.state_dir.join("ipam").join(ip.to_string())
    }

    /// Reserve the next free address for `id`: a file per address, created exclusively.
    fn allocate(&self, id: &str) -> Result<Ipv4Addr, NetError> {
        let range = host_range(self.cfg.subnet);
        let size = range.end() - range.start() + 1;
        let mut cursor = self.cursor.lock();
        for i in 0..size {
            let off = (*cursor + i) % size;
            let ip = nth_host(self.cfg.subnet, off);
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(self.ipam_path(ip))
            {
                Ok(mut f) => {
                    f.write_all(id.as_bytes())
                        .map_err(ioe(format!("recording {ip}")))?;
                    *cursor = (off + 1) % size;
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

    fn owner(&self, ip: Ipv4Addr) -> Option<String> {
        let mut s = String::new();
        fs::File::open(self.ipam_path(ip))
            .ok()?
            .read_to_string(&mut s)
            .ok()?;
        Some(s)
    }

    /// Release the address of `id`: `ip` when known, else whatever the allocation files say.
    fn release(&self, id: &str, ip: Option<Ipv4Addr>) -> Result<(), NetError> {
        let ips: Vec<Ipv4Addr> = match ip {
            Some(ip) => vec![ip],
            // No record (a crash between allocating and recording): look for it.
            None => fs::read_dir(self.cfg.state_dir.join("ipam"))
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect(),
        };
        for ip in ips {
            if self.owner(ip).as_deref() == Some(id) {
                remove_if_present(&self.ipam_path(ip))?;
            }
        }
        Ok(())
    }

    fn read_record(&self, id: &str) -> Option<Endpoint> {
        serde_json::from_slice(&fs::read(self.record_path(id)).ok()?).ok()
    }

    /// A new network namespace for `id`, bind-mounted at `state_dir/netns/<id>`, with `lo` up
    /// and `eth0` on the bridge: the next free address, a default route via the gateway.
    pub async fn create_endpoint(&self, id: &str) -> Result<Endpoint, NetError> {
        if !valid_id(id) {
            return Err(NetError::InvalidId(id.to_string()));
        }
        // The record, created exclusively, claims the id before anything else exists.
        let rec_path = self.record_path(id);
        let mut rec = match OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&rec_path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                if self.endpoint(id).await.is_some() {
                    return Err(NetError::Exists(id.to_string()));
                }
                // Left over from a crash or a reboot: clear it and claim again.
                self.remove_endpoint(id).await?;
                OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&rec_path)
                    .map_err(ioe(format!("creating {}", rec_path.display())))?
            }
            Err(e) => return Err(NetError::Io(format!("creating {}", rec_path.display()), e)),
        };
        let ip = match self.allocate(id) {
            Ok(ip) => ip,
            Err(e) => {
                let _ = fs::remove_file(&rec_path);
                return Err(e);
            }
        };
        let mac = mac_for(ip);
        let ep = Endpoint {
            id: id.to_string(),
            netns: self.netns_path(id),
            ip,
            prefix: self.cfg.subnet.1,
            gateway: self.gateway,
            mac: mac_string(mac),
            host_veth: veth_name(id),
        };
        let built = match rec.write_all(&serde_json::to_vec(&ep).unwrap_or_default()) {
            Err(e) => Err(NetError::Io(format!("writing {}", rec_path.display()), e)),
            Ok(()) => {
                drop(rec);
                // The same id removed a moment ago: its veth name frees up shortly.
                self.reaper.wait(Some(&ep.host_veth)).await;
                let (bridge, ep2) = (self.cfg.bridge.clone(), ep.clone());
                on_own_thread(move || build_endpoint(&bridge, &ep2, mac)).await
            }
        };
        match built {
            Ok(()) => Ok(ep),
            Err(e) => {
                if let Err(e2) = self.remove_endpoint(id).await {
                    tracing::warn!(id, error = %e2, "cleaning up a failed endpoint");
                }
                Err(e)
            }
        }
    }

    /// The endpoint of `id` as it exists (say after an agent restart): its record, if its
    /// namespace is still mounted.
    pub async fn endpoint(&self, id: &str) -> Option<Endpoint> {
        if !valid_id(id) {
            return None;
        }
        let ep = self.read_record(id)?;
        is_netns_mount(&ep.netns).then_some(ep)
    }

    /// The ids of every endpoint on record, live or not (after a reboot none is live; the
    /// agent removes those it no longer wants, which releases their addresses).
    pub fn recorded_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = fs::read_dir(self.cfg.state_dir.join("endpoints"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let n = e.file_name().into_string().ok()?;
                Some(n.strip_suffix(".json")?.to_string())
            })
            .filter(|id| valid_id(id))
            .collect();
        ids.sort();
        ids
    }

    /// Remove the endpoint of `id`: its veth pair, its namespace file (unmounted), its
    /// address, its record. Idempotent: whatever is already gone is skipped.
    ///
    /// The host veth is set down before this returns and deleted in the background moments
    /// later (the kernel needs ~20 ms to unregister a device); [`Network::settle`] waits for
    /// that, and re-creating the same id waits for it by itself.
    pub async fn remove_endpoint(&self, id: &str) -> Result<(), NetError> {
        if !valid_id(id) {
            return Err(NetError::InvalidId(id.to_string()));
        }
        let rec = self.read_record(id);
        let veth = rec
            .as_ref()
            .map_or_else(|| veth_name(id), |e| e.host_veth.clone());
        if fs::metadata(format!("/sys/class/net/{veth}")).is_ok() {
            let v = veth.clone();
            tokio::task::spawn_blocking(move || Rtnl::open()?.set_down(&v))
                .await
                .map_err(|e| NetError::Io("netlink".into(), io::Error::other(e)))?
                .map_err(ioe(format!("setting {veth} down")))?;
            self.reaper.queue(veth);
        }
        drop_netns_file(&self.netns_path(id))?;
        self.release(id, rec.as_ref().map(|e| e.ip))?;
        remove_if_present(&self.record_path(id))
    }

    /// Wait until the veths of removed endpoints are deleted from the kernel.
    pub async fn settle(&self) {
        self.reaper.wait(None).await
    }

    /// Remove every recorded endpoint, the bridge, the masquerade rule if [`Network::open`]
    /// added it, and the mount of `state_dir/netns`. For tests and uninstalling.
    pub async fn destroy(self) -> Result<(), NetError> {
        for id in self.recorded_ids() {
            self.remove_endpoint(&id).await?;
        }
        self.settle().await;
        let bridge = self.cfg.bridge.clone();
        tokio::task::spawn_blocking(move || Rtnl::open()?.del_link(&bridge))
            .await
            .map_err(|e| NetError::Io("netlink".into(), io::Error::other(e)))?
            .map_err(ioe(format!("deleting {}", self.cfg.bridge)))?;
        if self.masquerade_added {
            let subnet = format!("{}/{}", self.cfg.subnet.0, self.cfg.subnet.1);
            let bridge = self.cfg.bridge.clone();
            tokio::task::spawn_blocking(move || iptables(&masquerade_args("-D", &subnet, &bridge)))
                .await
                .map_err(|e| NetError::Io("iptables".into(), io::Error::other(e)))?
                .map_err(ioe("iptables -D"))?;
        }
        if self.guard_added {
            let bridge = self.cfg.bridge.clone();
            tokio::task::spawn_blocking(move || iptables(&credentials_guard_args("-D", &bridge)))
                .await
                .map_err(|e| NetError::Io("iptables".into(), io::Error::other(e)))?
                .map_err(ioe("iptables -D"))?;
        }
        // Busy (not detached) if namespace files of others are still mounted below.
        let _ = nix::mount::umount2(&self.cfg.state_dir.join("netns"), MntFlags::empty());
        Ok(())
    }
}

/// Undo [`Network::open`] of `cfg` once the agent that opened it has stopped and none of its
/// tasks runs (a graceful stop of `berth up` or `berth agent`): [`Network::destroy`], with the
/// masquerade rule and the credentials guard of this bridge removed when present, whichever run
/// added them. Whatever is already gone is skipped.
pub async fn teardown(cfg: NetConfig) -> Result<(), NetError> {
    if !valid_ifname(&cfg.bridge) {
        return Err(NetError::Config(format!("bridge name {:?}", cfg.bridge)));
    }
    let subnet = (
        Ipv4Addr::from(u32::from(cfg.subnet.0) & netmask(cfg.subnet.1)),
        cfg.subnet.1,
    );
    let (text, bridge) = (format!("{}/{}", subnet.0, subnet.1), cfg.bridge.clone());
    let (masquerade_added, guard_added) = tokio::task::spawn_blocking(move || {
        (
            iptables(&masquerade_args("-C", &text, &bridge)).unwrap_or(false),
            iptables(&credentials_guard_args("-C", &bridge)).unwrap_or(false),
        )
    })
    .await
    .map_err(|e| NetError::Io("iptables".into(), io::Error::other(e)))?;
    Network {
        gateway: gateway(subnet),
        cursor: parking_lot::Mutex::new(0),
        masquerade_added,
        guard_added,
        reaper: Reaper::start().map_err(ioe("starting the veth reaper"))?,
        cfg: NetConfig { subnet, ..cfg },
    }
    .destroy()
    .await
}

/// On a thread of its own: a new namespace, bind-mounted at `ep.netns`, wired to the bridge.
fn build_endpoint(bridge: &str, ep: &Endpoint, mac: [u8; 6]) -> Result<(), NetError> {
    // Still in the host namespace.
    let mut host = Rtnl::open().map_err(ioe("netlink"))?;
    let bridge_idx = host
        .index(bridge)
        .map_err(ioe("netlink"))?
        .ok_or_else(|| NetError::Io(format!("bridge {bridge}"), io::Error::other("missing")))?;
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o444)
        .open(&ep.netns)
        .map_err(ioe(format!("creating {}", ep.netns.display())))?;

    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).map_err(nixe("unshare(NEWNET)"))?;
    // From here on this thread is in the new namespace; it ends when we return.
    let own = format!("/proc/self/task/{}/ns/net", nix::unistd::gettid());
    nix::mount::mount(
        Some(own.as_str()),
        &ep.netns,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(nixe(format!("mount --bind {own} {}", ep.netns.display())))?;
    let ns = fs::File::open(&own).map_err(ioe(own.clone()))?;
    let mut inside = Rtnl::open().map_err(ioe("netlink in the namespace"))?;

    host.add_veth(&ep.host_veth, bridge_idx, "eth0", mac, ns.as_raw_fd())
        .map_err(|e| NetError::Io(format!("creating veth {} on {bridge}", ep.host_veth), e))?;
    let eth0 = inside
        .index("eth0")
        .map_err(ioe("netlink in the namespace"))?
        .ok_or_else(|| NetError::Io("eth0".into(), io::Error::other("missing")))?;
    // One write: lo up (always index 1), eth0 up, its address, the default route.
    inside
        .batch(vec![
            msg_up(1),
            msg_up(eth0),
            msg_addr(eth0, ep.ip, ep.prefix),
            msg_default_route(ep.gateway, eth0),
        ])
        .map_err(|(i, e)| {
            let what = [
                "setting lo up",
                "setting eth0 up",
                "adding eth0's address",
                "adding the default route",
            ];
            NetError::Io(
                format!(
                    "{} in {}",
                    what.get(i).unwrap_or(&"netlink"),
                    ep.netns.display()
                ),
                e,
            )
        })?;
    Ok(())
}

// ---- port forwarding ----------------------------------------------------------------------------

/// TCP or UDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Proto {
    Tcp,
    Udp,
}

/// The dynamic host port range (ECS's default on Linux).
pub const DYNAMIC_PORTS: std::ops::RangeInclusive<u16> = 49153..=65535;

/// How long a UDP flow lives without traffic (docker-proxy's 90 s).
const UDP_IDLE: Duration = Duration::from_secs(90);

/// A bound host-port socket (TCP already listening).
pub enum HostSocket {
    Tcp(std::net::TcpListener),
    Udp(std::net::UdpSocket),
}

impl HostSocket {
    pub fn into_fd(self) -> std::os::fd::OwnedFd {
        match self {
            HostSocket::Tcp(l) => l.into(),
            HostSocket::Udp(s) => s.into(),
        }
    }
}

/// Bind a host port now, so that a taken port is reported here as [`NetError::PortInUse`].
/// Port 0 picks a free port of [`DYNAMIC_PORTS`] (starting at a random one). Returns the
/// socket and the port bound.
pub fn bind_host_port(proto: Proto, bind: SocketAddr) -> Result<(HostSocket, u16), NetError> {
    let try_bind = |addr: SocketAddr| -> Result<Option<HostSocket>, NetError> {
        let r = match proto {
            Proto::Tcp => std::net::TcpListener::bind(addr).map(HostSocket::Tcp),
            Proto::Udp => std::net::UdpSocket::bind(addr).map(HostSocket::Udp),
        };
        match r {
            Ok(sock) => Ok(Some(sock)),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => Ok(None),
            Err(e) => Err(NetError::Io(format!("binding {proto:?} {addr}"), e)),
        }
    };
    if bind.port() != 0 {
        return try_bind(bind)?
            .map(|s| (s, bind.port()))
            .ok_or(NetError::PortInUse(bind.port()));
    }
    let (lo, hi) = (*DYNAMIC_PORTS.start(), *DYNAMIC_PORTS.end());
    let span = u32::from(hi - lo) + 1;
    let start = (RandomState::new().build_hasher().finish() % u64::from(span)) as u32;
    for i in 0..span {
        let port = lo + ((start + i) % span) as u16;
        if let Some(s) = try_bind(SocketAddr::new(bind.ip(), port))? {
            return Ok((s, port));
        }
    }
    Err(NetError::NoFreePort)
}

/// A userspace forwarder from a host port to a container (like `docker-proxy`). Dropping it
/// (or [`PortProxy::stop`]) closes the listener and every forward in progress.
pub struct PortProxy {
    port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl PortProxy {
    /// Bind now, so a taken port is reported here as [`NetError::PortInUse`]. Port 0 picks a
    /// free port of [`DYNAMIC_PORTS`]. Then forward every TCP connection (or every UDP flow, by
    /// client address) to `target` until stopped.
    pub async fn start(
        proto: Proto,
        bind: SocketAddr,
        target: SocketAddr,
    ) -> Result<PortProxy, NetError> {
        let (sock, port) = bind_host_port(proto, bind)?;
        PortProxy::serve(sock, port, target)
    }

    /// Forward an already bound host socket (bound to `port`) to `target` until stopped.
    pub fn serve(sock: HostSocket, port: u16, target: SocketAddr) -> Result<PortProxy, NetError> {
        let task = match sock {
            HostSocket::Tcp(l) => {
                l.set_nonblocking(true)
                    .map_err(ioe(format!("listening on tcp port {port}")))?;
                let l = tokio::net::TcpListener::from_std(l)
                    .map_err(ioe(format!("listening on tcp port {port}")))?;
                tokio::spawn(tcp_forward(l, target))
            }
            HostSocket::Udp(s) => {
                s.set_nonblocking(true)
                    .map_err(ioe(format!("listening on udp port {port}")))?;
                let s = tokio::net::UdpSocket::from_std(s)
                    .map_err(ioe(format!("listening on udp port {port}")))?;
                tokio::spawn(udp_forward(Arc::new(s), target))
            }
        };
        Ok(PortProxy { port, task })
    }

    /// The host port bound (the one picked, when asked for port 0).
    pub fn host_port(&self) -> u16 {
        self.port
    }

    /// Close the listener and every forward in progress.
    pub fn stop(self) {}
}

impl Drop for PortProxy {
    fn drop(&mut self) {
        // Aborting drops the listener and the set of forwards it owns.
        self.task.abort();
    }
}

async fn tcp_forward(l: tokio::net::TcpListener, target: SocketAddr) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            acc = l.accept() => match acc {
                Ok((mut inbound, _)) => {
                    conns.spawn(async move {
                        let _ = inbound.set_nodelay(true);
                        if let Ok(mut out) = tokio::net::TcpStream::connect(target).await {
                            let _ = out.set_nodelay(true);
                            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                        }
                    });
                }
                // Out of descriptors and the like: do not spin.
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

async fn udp_forward(s: Arc<tokio::net::UdpSocket>, target: SocketAddr) {
    // One upstream socket per client address; its task answers through the listening socket
    // and ends after UDP_IDLE without traffic either way.
    let mut flows: HashMap<SocketAddr, tokio::sync::mpsc::Sender<Vec<u8>>> = HashMap::new();
    let mut tasks = tokio::task::JoinSet::new();
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, from) = tokio::select! {
            r = s.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(_) => continue,
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
        };
        let datagram = buf[..n].to_vec();
        if let Some(tx) = flows.get(&from) {
            match tx.try_send(datagram) {
                Ok(()) => continue,
                // Full: drop it, as a congested link would.
                Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => continue,
                Err(tokio::sync::mpsc::error::TrySendError::Closed(d)) => {
                    flows.remove(&from);
                    flows.retain(|_, tx| !tx.is_closed());
                    start_flow(&mut flows, &mut tasks, &s, from, target, d).await;
                }
            }
        } else {
            flows.retain(|_, tx| !tx.is_closed());
            start_flow(&mut flows, &mut tasks, &s, from, target, datagram).await;
        }
    }
}

async fn start_flow(
    flows: &mut HashMap<SocketAddr, tokio::sync::mpsc::Sender<Vec<u8>>>,
    tasks: &mut tokio::task::JoinSet<()>,
    s: &Arc<tokio::net::UdpSocket>,
    from: SocketAddr,
    target: SocketAddr,
    first: Vec<u8>,
) {
    let local: SocketAddr = if target.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let Ok(up) = tokio::net::UdpSocket::bind(local).await else {
        return;
    };
    if up.connect(target).await.is_err() {
        return;
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(256);
    let _ = tx.try_send(first);
    flows.insert(from, tx);
    let back = s.clone();
    tasks.spawn(async move {
        let mut b = vec![0u8; 65536];
        loop {
            tokio::select! {
                d = rx.recv() => match d {
                    Some(d) => { let _ = up.send(&d).await; }
                    None => return,
                },
                // Errors (ICMP unreachable and the like) keep the flow until it idles out.
                r = up.recv(&mut b) => if let Ok(n) = r {
                    let _ = back.send_to(&b[..n], from).await;
                },
                _ = tokio::time::sleep(UDP_IDLE) => return,
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_and_host_range() {
        let s = (Ipv4Addr::new(10, 213, 0, 0), 16);
        assert_eq!(gateway(s), Ipv4Addr::new(10, 213, 0, 1));
        let r = host_range(s);
        assert_eq!(Ipv4Addr::from(*r.start()), Ipv4Addr::new(10, 213, 0, 2));
        assert_eq!(Ipv4Addr::from(*r.end()), Ipv4Addr::new(10, 213, 255, 254));
        // A host address in the config is taken as its network.
        let s = (Ipv4Addr::new(10, 214, 0, 77), 24);
        assert_eq!(gateway(s), Ipv4Addr::new(10, 214, 0, 1));
        assert_eq!(host_range(s).count(), 253);
        // /30: one address besides the gateway; /31 and /32: none.
        assert_eq!(host_range((Ipv4Addr::new(10, 0, 0, 0), 30)).count(), 1);
        assert_eq!(host_range((Ipv4Addr::new(10, 0, 0, 0), 31)).count(), 0);
        assert_eq!(netmask(0), 0);
        assert_eq!(netmask(32), u32::MAX);
        assert_eq!(netmask(24), 0xffff_ff00);
    }

    #[test]
    fn nth_host_wraps() {
        let s = (Ipv4Addr::new(10, 9, 0, 0), 29); // .2 ..= .6
        assert_eq!(nth_host(s, 0), Ipv4Addr::new(10, 9, 0, 2));
        assert_eq!(nth_host(s, 4), Ipv4Addr::new(10, 9, 0, 6));
        assert_eq!(nth_host(s, 5), Ipv4Addr::new(10, 9, 0, 2));
    }

    #[test]
    fn names_and_macs() {
        let n = veth_name("0123456789abcdef0123456789abcdef-web");
        assert_eq!(n.len(), 11);
        assert!(valid_ifname(&n));
        assert_eq!(n, veth_name("0123456789abcdef0123456789abcdef-web"));
        assert_ne!(n, veth_name("0123456789abcdef0123456789abcdef-weB"));
        assert_eq!(
            mac_string(mac_for(Ipv4Addr::new(10, 213, 0, 2))),
            "02:b7:0a:d5:00:02"
        );
        assert!(valid_id("task-1_a.b"));
        for bad in ["", ".", "..", ".x", "a/b", "a b", &"x".repeat(129)] {
            assert!(!valid_id(bad), "{bad:?}");
        }
        assert!(!valid_ifname("sixteen-chars-xx"));
    }

    fn offline(dir: &Path, subnet: (Ipv4Addr, u8)) -> Network {
        fs::create_dir_all(dir.join("ipam")).unwrap();
        Network {
            cfg: NetConfig {
                bridge: "x".into(),
                subnet,
                state_dir: dir.to_path_buf(),
            },
            gateway: gateway(subnet),
            cursor: parking_lot::Mutex::new(0),
            masquerade_added: false,
            guard_added: false,
            reaper: Reaper::start().unwrap(),
        }
    }

    #[test]
    fn allocation_is_exclusive_persistent_and_released() {
        let d = tempfile::tempdir().unwrap();
        let s = (Ipv4Addr::new(10, 9, 0, 0), 29);
        let n = offline(d.path(), s);
        let got: Vec<Ipv4Addr> = (0..5)
            .map(|i| n.allocate(&format!("e{i}")).unwrap())
            .collect();
        assert_eq!(got[0], Ipv4Addr::new(10, 9, 0, 2));
        assert_eq!(got[4], Ipv4Addr::new(10, 9, 0, 6));
        assert!(matches!(n.allocate("x"), Err(NetError::Exhausted(_))));
        // Releasing checks the owner.
        n.release("not-e1", Some(got[1])).unwrap();
        assert!(matches!(n.allocate("x"), Err(NetError::Exhausted(_))));
        n.release("e1", None).unwrap();
        // Another network on the same directory (a restarted agent) sees the rest.
        let n2 = offline(d.path(), s);
        assert_eq!(n2.allocate("y").unwrap(), got[1]);
        assert_eq!(n2.owner(got[1]).as_deref(), Some("y"));
    }

    #[test]
    fn redirect_rules_are_found_by_bridge_and_address() {
        let from: SocketAddrV4 = "169.254.170.2:80".parse().unwrap();
        let r = Redirect {
            bridge: "berth0".into(),
            from,
            to: "10.213.0.1:41234".parse().unwrap(),
        };
        assert_eq!(
            r.args("-A").join(" "),
            "-w -t nat -A PREROUTING -i berth0 -d 169.254.170.2/32 -p tcp --dport 80 -j DNAT --to-destination 10.213.0.1:41234"
        );
        // As `iptables -S` prints rules (it adds `-m tcp` and orders the matches its own way).
        let listing = "-P PREROUTING ACCEPT\n\
            -A PREROUTING -d 169.254.170.2/32 -i berth0 -p tcp -m tcp --dport 80 -j DNAT --to-destination 10.213.0.1:41234\n\
            -A PREROUTING -d 169.254.170.2/32 -i berth0 -p tcp -m tcp --dport 80 -j DNAT --to-destination 10.213.0.1:40000\n\
            -A PREROUTING -d 169.254.170.2/32 -i berth1 -p tcp -m tcp --dport 80 -j DNAT --to-destination 10.99.0.1:1\n\
            -A PREROUTING -d 169.254.170.2/32 -i berth0 -p tcp -m tcp --dport 81 -j DNAT --to-destination 10.213.0.1:2\n\
            -A PREROUTING -d 169.254.170.2/32 ! -i berth0 -p tcp -m tcp --dport 80 -j DNAT --to-destination 10.213.0.1:3\n\
            -A PREROUTING -d 169.254.170.2/32 -i berth0 -p tcp -m tcp --dport 80 -j REDIRECT --to-ports 5\n\
            -A PREROUTING -i berth0 -j DOCKER\n";
        let got = redirect_targets(listing, "berth0", from);
        let want: Vec<SocketAddrV4> = vec![
            "10.213.0.1:41234".parse().unwrap(),
            "10.213.0.1:40000".parse().unwrap(),
        ];
        assert_eq!(got, want);
        assert!(redirect_targets(listing, "berth9", from).is_empty());
    }

    #[test]
    fn masquerade_rule_text() {
        assert_eq!(
            masquerade_args("-C", "10.213.0.0/16", "berth0").join(" "),
            "-w -t nat -C POSTROUTING -s 10.213.0.0/16 ! -o berth0 -j MASQUERADE"
        );
    }
}
