//! The node's packet filter rules: one nf_tables table of berth's own per bridge,
//! `ip berth-<bridge>` ([`table_name`]), programmed over netlink ([`super::nft`]) — no
//! `iptables` or `nft` binary. Agents in different network namespaces (the multi-node tests)
//! each have their own tables; two bridges in one namespace have two tables.
//!
//! | chain | hook, priority | rule |
//! |---|---|---|
//! | `postrouting` | nat postrouting, srcnat (100) | `ip saddr <subnet> oifname != <bridge> masquerade`: containers reach beyond the node |
//! | `forward` | filter forward, filter (0) | `iifname <bridge> ip daddr 169.254.170.2 reject`: while no agent redirects the credentials address, requests for it (their path holds a credentials id) are refused instead of routed off the node |
//! | `prerouting` | nat prerouting, dstnat − 10 (−110) | one [`Redirect`] per well-known address: `iifname <bridge> ip daddr <from> tcp dport <port> dnat to <to>` |
//!
//! The redirect chain runs before iptables' `nat PREROUTING` (−100), so a DNAT of another tool
//! (or an older berth's, left in iptables) for the same address cannot take the connection
//! first: the first NAT binding of a connection wins. Other rules of the host (iptables-nft,
//! iptables-legacy, nftables) are left alone; a packet they drop stays dropped.
//!
//! [`install_node_rules`] replaces the whole table in one transaction (whatever an earlier run
//! left, in whatever shape, goes; the agent then installs its redirect again), and
//! [`remove_table`] deletes it with everything in it. Without nf_tables (an old kernel, no
//! `CAP_NET_ADMIN`) both fail with [`NetError::Netfilter`], which says so.
//!
//! Must not: touch any table but berth's own.

use std::net::{Ipv4Addr, SocketAddrV4};

use super::nft::{BaseChain, Batch, Expr, Hook, Nft};
use super::{NetError, netmask, valid_ifname};

/// The address where tasks find their role credentials (the agent's endpoint, reached by a
/// [`Redirect`] on the bridge while the agent runs).
pub const CREDENTIALS_ADDRESS: Ipv4Addr = Ipv4Addr::new(169, 254, 170, 2);

const POSTROUTING: BaseChain = BaseChain {
    name: "postrouting",
    kind: "nat",
    hook: Hook::Postrouting,
    priority: 100,
};
const FORWARD: BaseChain = BaseChain {
    name: "forward",
    kind: "filter",
    hook: Hook::Forward,
    priority: 0,
};
const PREROUTING: BaseChain = BaseChain {
    name: "prerouting",
    kind: "nat",
    hook: Hook::Prerouting,
    priority: -110,
};

/// The name of the nf_tables table (family `ip`) that holds the rules of `bridge`.
pub fn table_name(bridge: &str) -> String {
    format!("berth-{bridge}")
}

fn netfilter(subject: String) -> impl FnOnce((String, std::io::Error)) -> NetError {
    move |(what, source)| NetError::Netfilter {
        subject,
        what,
        source,
    }
}

fn open(subject: &str) -> Result<Nft, NetError> {
    Nft::open().map_err(|e| netfilter(subject.to_string())(("opening nfnetlink".into(), e)))
}

/// Make the table of `bridge` hold exactly the masquerade of `subnet` and the credentials
/// guard, as one transaction. Blocking.
pub(crate) fn install_node_rules(bridge: &str, subnet: (Ipv4Addr, u8)) -> Result<(), NetError> {
    let subject = format!("masquerading and the credentials guard of bridge {bridge}");
    let table = table_name(bridge);
    let (net, prefix) = subnet;
    let net = Ipv4Addr::from(u32::from(net) & netmask(prefix));
    let mut b = Batch::default();
    // Add first, so the delete finds a table whether or not one was there.
    b.add_table(&table);
    b.del_table(&table);
    b.add_table(&table);
    b.add_chain(&table, &POSTROUTING);
    b.add_rule(
        &table,
        POSTROUTING.name,
        &[
            Expr::IpSaddr,
            Expr::Prefix(prefix),
            Expr::Eq(net.octets().to_vec()),
            Expr::OifName,
            Expr::Ne(Expr::ifname(bridge)),
            Expr::Masquerade,
        ],
        &format!("berth: containers of {bridge} reach beyond the node"),
    );
    b.add_chain(&table, &FORWARD);
    b.add_rule(
        &table,
        FORWARD.name,
        &[
            Expr::IifName,
            Expr::Eq(Expr::ifname(bridge)),
            Expr::IpDaddr,
            Expr::Eq(CREDENTIALS_ADDRESS.octets().to_vec()),
            Expr::Reject,
        ],
        "berth: credential requests stay on the node",
    );
    open(&subject)?.apply(&b).map_err(netfilter(subject))
}

/// Delete the table of `bridge` and everything in it; one that does not exist is not an
/// error. Blocking.
pub(crate) fn remove_table(bridge: &str) -> Result<(), NetError> {
    let subject = format!("removing the rules of bridge {bridge}");
    let mut b = Batch::default();
    b.del_table(&table_name(bridge));
    match open(&subject)?.apply(&b) {
        Err((_, e)) if e.raw_os_error() == Some(nix::libc::ENOENT) => Ok(()),
        r => r.map_err(netfilter(subject)),
    }
}

// ---- redirects to the node's own services ------------------------------------------------------

/// A DNAT rule: TCP connections that arrive on `bridge` for `from` go to `to`, an address of
/// the node instead. This is how containers on the bridge reach a service of the agent at a
/// well-known address (the task credentials endpoint at `169.254.170.2:80`, as on ECS). It
/// lives in the bridge's table ([`table_name`]), chain `prerouting`, and is known again by its
/// comment (`redirect <from> to <to>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    pub bridge: String,
    pub from: SocketAddrV4,
    pub to: SocketAddrV4,
}

impl Redirect {
    fn comment(&self) -> String {
        format!("redirect {} to {}", self.from, self.to)
    }

    fn subject(&self) -> String {
        format!(
            "the redirect of {} on bridge {} (task role credentials)",
            self.from, self.bridge
        )
    }

    /// Make this the bridge's only redirect of `from`: rules that point elsewhere (left by an
    /// earlier run of the agent, whose port was another) are removed, and this one is added
    /// unless it is there already; in one transaction. Idempotent. Blocking: call off the async
    /// workers.
    pub fn install(&self) -> Result<(), NetError> {
        if !valid_ifname(&self.bridge) {
            return Err(NetError::Config(format!("bridge name {:?}", self.bridge)));
        }
        let subject = self.subject();
        let table = table_name(&self.bridge);
        let mut nft = open(&subject)?;
        let rules = nft
            .rules(&table, PREROUTING.name)
            .map_err(|e| netfilter(subject.clone())((format!("listing table ip {table}"), e)))?;
        let mut b = Batch::default();
        let mut present = false;
        for r in rules {
            let Some((from, to)) = r.comment.as_deref().and_then(parse_redirect) else {
                continue;
            };
            if from != self.from {
                continue;
            }
            if to == self.to && !present {
                present = true;
            } else {
                b.del_rule(&table, PREROUTING.name, r.handle);
            }
        }
        if !present {
            b.add_table(&table);
            b.add_chain(&table, &PREROUTING);
            b.add_rule(
                &table,
                PREROUTING.name,
                &[
                    Expr::IifName,
                    Expr::Eq(Expr::ifname(&self.bridge)),
                    Expr::IpDaddr,
                    Expr::Eq(self.from.ip().octets().to_vec()),
                    Expr::L4Proto,
                    Expr::Eq(Expr::tcp()),
                    Expr::DPort,
                    Expr::Eq(self.from.port().to_be_bytes().to_vec()),
                    Expr::Dnat(*self.to.ip(), self.to.port()),
                ],
                &self.comment(),
            );
        }
        nft.apply(&b).map_err(netfilter(subject))
    }

    /// Remove this rule (every copy of it); other redirects stay. Blocking.
    pub fn remove(&self) -> Result<(), NetError> {
        if !valid_ifname(&self.bridge) {
            return Err(NetError::Config(format!("bridge name {:?}", self.bridge)));
        }
        let subject = self.subject();
        let table = table_name(&self.bridge);
        let mut nft = open(&subject)?;
        let rules = nft
            .rules(&table, PREROUTING.name)
            .map_err(|e| netfilter(subject.clone())((format!("listing table ip {table}"), e)))?;
        let mut b = Batch::default();
        for r in rules {
            if r.comment.as_deref().and_then(parse_redirect) == Some((self.from, self.to)) {
                b.del_rule(&table, PREROUTING.name, r.handle);
            }
        }
        match nft.apply(&b) {
            // Gone meanwhile (the table deleted by a teardown): what we wanted.
            Err((_, e)) if e.raw_os_error() == Some(nix::libc::ENOENT) => Ok(()),
            r => r.map_err(netfilter(subject)),
        }
    }
}

/// `from` and `to` of a redirect's comment.
fn parse_redirect(comment: &str) -> Option<(SocketAddrV4, SocketAddrV4)> {
    let (from, to) = comment.strip_prefix("redirect ")?.split_once(" to ")?;
    Some((from.parse().ok()?, to.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_are_known_by_their_comment() {
        let r = Redirect {
            bridge: "berth0".into(),
            from: "169.254.170.2:80".parse().unwrap(),
            to: "10.213.0.1:41234".parse().unwrap(),
        };
        assert_eq!(r.comment(), "redirect 169.254.170.2:80 to 10.213.0.1:41234");
        assert_eq!(parse_redirect(&r.comment()), Some((r.from, r.to)));
        for other in [
            "",
            "redirect",
            "redirect 169.254.170.2:80",
            "redirect 169.254.170.2 to 10.213.0.1:1",
            "berth: credential requests stay on the node",
            "Redirect 169.254.170.2:80 to 10.213.0.1:41234",
        ] {
            assert_eq!(parse_redirect(other), None, "{other:?}");
        }
    }

    #[test]
    fn one_table_per_bridge() {
        assert_eq!(table_name("berth0"), "berth-berth0");
        assert_ne!(table_name("berth0"), table_name("berth1"));
        // nft's own limit on names is 256 bytes; a bridge name has at most 15.
        assert!(table_name(&"x".repeat(15)).len() < 256);
    }

    #[test]
    fn bad_bridge_names_change_nothing() {
        let r = Redirect {
            bridge: "no/such".into(),
            from: "169.254.170.2:80".parse().unwrap(),
            to: "10.213.0.1:1".parse().unwrap(),
        };
        assert!(matches!(r.install(), Err(NetError::Config(_))));
        assert!(matches!(r.remove(), Err(NetError::Config(_))));
    }
}
