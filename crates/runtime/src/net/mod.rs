//! Container networking on a node, over netlink: rtnetlink for links, addresses and routes,
//! nf_tables for the packet filter. No `ip`, `iptables` or `nft` processes.
//!
//! What this module owns, file by file:
//!
//! - `network`: **the bridge** (`berth0` by default) with the gateway address — the first
//!   host of the node's subnet — plus `net.ipv4.ip_forward` and the bridge's rules
//!   ([`Network::open`], [`Network::destroy`]; [`teardown`] after the agent stopped);
//!   **endpoints**: a network namespace per task or container whose `eth0` is one end of a veth
//!   pair, the host end (`bth` + 8 hex digits of a hash of the id) on the bridge
//!   ([`Network::create_endpoint`], [`Network::remove_endpoint`]); **address management**: a
//!   file per allocated address under `state_dir/ipam/`, created with `O_EXCL`, so a restarted
//!   agent never hands out an address twice; and a record per endpoint under
//!   `state_dir/endpoints/` so the agent finds its endpoints again ([`Network::endpoint`]);
//! - `netns`: namespace files, bind-mounted under `state_dir/netns/` the way `ip netns add`
//!   does (that directory is made a shared mount point, as iproute2 does with `/run/netns`),
//!   and the wiring of a new one, on a thread of its own;
//! - `rtnl`: the route netlink socket those use;
//! - `rules`: the bridge's nf_tables table: one masquerade rule for the subnet so containers
//!   reach the outside, a guard so that requests for the credentials address (`169.254.170.2`)
//!   never leave the node when no agent redirects them, and **redirects** ([`Redirect`]): a
//!   DNAT rule per bridge that sends containers' connections to a well-known address to a
//!   service of the node; `nft`: the nf_tables netlink messages they are made of;
//! - `ports`: **host ports**: [`bind_host_port`] and [`PortProxy`], a userspace TCP/UDP
//!   forwarder (like `docker-proxy`); [`crate::forward`] runs one in its own process.
//!
//! The hot path spawns no processes: an endpoint is a handful of netlink round trips made on a
//! short-lived thread of our own, which is the only thread that ever changes namespace (tokio
//! workers never leave the host namespace). The rules are programmed once, in
//! [`Network::open`] and [`Redirect::install`], each as one nf_tables transaction.

use std::io;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

mod netns;
mod network;
mod nft;
mod ports;
mod rtnl;
mod rules;

pub use network::{Network, teardown};
pub use ports::{DYNAMIC_PORTS, HostSocket, PortProxy, Proto, bind_host_port};
pub use rules::{CREDENTIALS_ADDRESS, Redirect, table_name};

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
    /// A packet filter rule could not be programmed: berth needs nf_tables for masquerading
    /// and for task role credentials on the bridge, and says so instead of running without.
    #[error(
        "{subject} needs nf_tables (a Linux kernel with nf_tables, and CAP_NET_ADMIN): {what}: {source}"
    )]
    Netfilter {
        subject: String,
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("{0}: {1}")]
    Io(String, #[source] io::Error),
}

pub(crate) fn ioe(what: impl Into<String>) -> impl FnOnce(io::Error) -> NetError {
    let what = what.into();
    move |e| NetError::Io(what, e)
}

pub(crate) fn nixe(what: impl Into<String>) -> impl FnOnce(nix::Error) -> NetError {
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

pub(crate) fn mac_string(mac: [u8; 6]) -> String {
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

pub(crate) fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace())
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
}
