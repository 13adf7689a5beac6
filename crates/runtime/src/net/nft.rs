//! A small nf_tables client: the netlink messages (protocol `NETLINK_NETFILTER`, subsystem
//! `NFNL_SUBSYS_NFTABLES`) for the few things berth does to the packet filter — add and delete
//! a table, add a base chain, add a rule, delete a rule by handle, list a chain's rules — sent
//! as one batch, which the kernel applies as a single transaction (all of it or none).
//!
//! Why our own encoder: the maintained pure-Rust nf_tables crate is GPL-licensed (berth is
//! Apache-2.0), the others bind to `libnftnl`/`libmnl` (a C `-dev` package to build) or run the
//! `nft` binary. What berth needs is a dozen message and expression types; they are encoded
//! here over `netlink-sys`, which the tree already has for rtnetlink. The numbers are the
//! kernel's UAPI (`linux/netfilter/nf_tables.h`, `linux/netfilter/nfnetlink.h`); integer
//! attributes of nf_tables are big-endian, netlink headers native-endian.
//!
//! Must not: hold anything about berth's own rules (that is [`super::rules`]), or block an
//! async worker (every call is a blocking socket round trip).

use std::io;
use std::net::Ipv4Addr;

use netlink_packet_core::{NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REQUEST};
use netlink_sys::{Socket, SocketAddr as NlAddr, protocols::NETLINK_NETFILTER};

// ---- UAPI numbers --------------------------------------------------------------------------

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_CAPPED: u16 = 0x100;
const NLM_F_ACK_TLVS: u16 = 0x200;
const NLMSGERR_ATTR_MSG: u16 = 1;
const NLA_F_NESTED: u16 = 0x8000;
const NLA_TYPE_MASK: u16 = 0x3fff;

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
/// The family of berth's tables: `ip` (IPv4).
const NFPROTO_IPV4: u8 = 2;

const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_GETRULE: u16 = 7;
const NFT_MSG_DELRULE: u16 = 8;
const NFT_MSG_NEWGEN: u16 = 15;
const NFT_MSG_GETGEN: u16 = 16;

const NFTA_TABLE_NAME: u16 = 1;

const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NF_ACCEPT: u32 = 1;

const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_HANDLE: u16 = 3;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_RULE_USERDATA: u16 = 7;
/// The rule's comment in its user data, as `nft` writes and shows it (libnftnl's
/// `NFTNL_UDATA_RULE_COMMENT`): type, length, the NUL-terminated text.
const UDATA_RULE_COMMENT: u8 = 0;

const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;

/// `NFT_REG_1` and `NFT_REG_2`: 16-byte registers.
const REG_1: u32 = 1;
const REG_2: u32 = 2;

const NFTA_META_DREG: u16 = 1;
const NFTA_META_KEY: u16 = 2;
const NFT_META_IIFNAME: u32 = 6;
const NFT_META_OIFNAME: u32 = 7;
const NFT_META_L4PROTO: u32 = 16;

const NFTA_PAYLOAD_DREG: u16 = 1;
const NFTA_PAYLOAD_BASE: u16 = 2;
const NFTA_PAYLOAD_OFFSET: u16 = 3;
const NFTA_PAYLOAD_LEN: u16 = 4;
const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
const NFT_PAYLOAD_TRANSPORT_HEADER: u32 = 2;

const NFTA_BITWISE_SREG: u16 = 1;
const NFTA_BITWISE_DREG: u16 = 2;
const NFTA_BITWISE_LEN: u16 = 3;
const NFTA_BITWISE_MASK: u16 = 4;
const NFTA_BITWISE_XOR: u16 = 5;

const NFTA_CMP_SREG: u16 = 1;
const NFTA_CMP_OP: u16 = 2;
const NFTA_CMP_DATA: u16 = 3;
const NFT_CMP_EQ: u32 = 0;
const NFT_CMP_NEQ: u32 = 1;

const NFTA_IMMEDIATE_DREG: u16 = 1;
const NFTA_IMMEDIATE_DATA: u16 = 2;

const NFTA_NAT_TYPE: u16 = 1;
const NFTA_NAT_FAMILY: u16 = 2;
const NFTA_NAT_REG_ADDR_MIN: u16 = 3;
const NFTA_NAT_REG_ADDR_MAX: u16 = 4;
const NFTA_NAT_REG_PROTO_MIN: u16 = 5;
const NFTA_NAT_REG_PROTO_MAX: u16 = 6;
const NFTA_NAT_FLAGS: u16 = 7;
const NFT_NAT_DNAT: u32 = 1;
/// `NF_NAT_RANGE_MAP_IPS | NF_NAT_RANGE_PROTO_SPECIFIED`.
const NAT_FLAGS_ADDR_AND_PORT: u32 = 0x3;

const NFTA_REJECT_TYPE: u16 = 1;
const NFTA_REJECT_ICMP_CODE: u16 = 2;
const NFT_REJECT_ICMP_UNREACH: u32 = 0;
const ICMP_PORT_UNREACH: u8 = 3;

const IPPROTO_TCP: u8 = 6;
const IFNAMSIZ: usize = 16;

/// The netfilter hooks of IPv4 berth hooks chains at (`NF_INET_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hook {
    Prerouting = 0,
    Forward = 2,
    Postrouting = 4,
}

/// A base chain: its type (`filter`, `nat`), hook and priority; its policy is accept.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BaseChain {
    pub name: &'static str,
    pub kind: &'static str,
    pub hook: Hook,
    pub priority: i32,
}

/// One step of a rule. Loads go to register 1, which the next step reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Expr {
    /// Load the name of the input (or output) interface.
    IifName,
    OifName,
    /// Load the layer 4 protocol number.
    L4Proto,
    /// Load the IPv4 source (or destination) address.
    IpSaddr,
    IpDaddr,
    /// Load the TCP/UDP destination port.
    DPort,
    /// Keep the first `prefix` bits of the loaded address.
    Prefix(u8),
    /// Compare what was loaded; a mismatch ends the rule.
    Eq(Vec<u8>),
    Ne(Vec<u8>),
    /// Rewrite the destination to `addr:port` (a `nat` chain at prerouting).
    Dnat(Ipv4Addr, u16),
    /// Rewrite the source to the outgoing interface's address (a `nat` chain at
    /// postrouting).
    Masquerade,
    /// Drop, answering ICMP port unreachable.
    Reject,
}

impl Expr {
    /// An interface name as the kernel compares it: NUL-padded to `IFNAMSIZ`.
    pub(crate) fn ifname(name: &str) -> Vec<u8> {
        let mut v = name.as_bytes().to_vec();
        v.resize(IFNAMSIZ, 0);
        v
    }

    pub(crate) fn tcp() -> Vec<u8> {
        vec![IPPROTO_TCP]
    }

    /// Encode as one or more elements of `NFTA_RULE_EXPRESSIONS`.
    fn encode(&self, a: &mut Attrs) {
        match self {
            Expr::IifName => meta(a, NFT_META_IIFNAME),
            Expr::OifName => meta(a, NFT_META_OIFNAME),
            Expr::L4Proto => meta(a, NFT_META_L4PROTO),
            Expr::IpSaddr => payload(a, NFT_PAYLOAD_NETWORK_HEADER, 12, 4),
            Expr::IpDaddr => payload(a, NFT_PAYLOAD_NETWORK_HEADER, 16, 4),
            Expr::DPort => payload(a, NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2),
            Expr::Prefix(bits) => {
                let mask = super::netmask(*bits).to_be_bytes();
                element(a, "bitwise", |d| {
                    d.be32(NFTA_BITWISE_SREG, REG_1);
                    d.be32(NFTA_BITWISE_DREG, REG_1);
                    d.be32(NFTA_BITWISE_LEN, 4);
                    d.nest(NFTA_BITWISE_MASK, |v| v.put(NFTA_DATA_VALUE, &mask));
                    d.nest(NFTA_BITWISE_XOR, |v| v.put(NFTA_DATA_VALUE, &[0; 4]));
                })
            }
            Expr::Eq(data) => cmp(a, NFT_CMP_EQ, data),
            Expr::Ne(data) => cmp(a, NFT_CMP_NEQ, data),
            Expr::Dnat(addr, port) => {
                immediate(a, REG_1, &addr.octets());
                immediate(a, REG_2, &port.to_be_bytes());
                element(a, "nat", |d| {
                    d.be32(NFTA_NAT_TYPE, NFT_NAT_DNAT);
                    d.be32(NFTA_NAT_FAMILY, u32::from(NFPROTO_IPV4));
                    d.be32(NFTA_NAT_REG_ADDR_MIN, REG_1);
                    d.be32(NFTA_NAT_REG_ADDR_MAX, REG_1);
                    d.be32(NFTA_NAT_REG_PROTO_MIN, REG_2);
                    d.be32(NFTA_NAT_REG_PROTO_MAX, REG_2);
                    d.be32(NFTA_NAT_FLAGS, NAT_FLAGS_ADDR_AND_PORT);
                })
            }
            Expr::Masquerade => a.nest(NFTA_LIST_ELEM, |e| e.str(NFTA_EXPR_NAME, "masq")),
            Expr::Reject => element(a, "reject", |d| {
                d.be32(NFTA_REJECT_TYPE, NFT_REJECT_ICMP_UNREACH);
                d.put(NFTA_REJECT_ICMP_CODE, &[ICMP_PORT_UNREACH]);
            }),
        }
    }
}

fn element(a: &mut Attrs, name: &str, data: impl FnOnce(&mut Attrs)) {
    a.nest(NFTA_LIST_ELEM, |e| {
        e.str(NFTA_EXPR_NAME, name);
        e.nest(NFTA_EXPR_DATA, data);
    })
}

fn meta(a: &mut Attrs, key: u32) {
    element(a, "meta", |d| {
        d.be32(NFTA_META_KEY, key);
        d.be32(NFTA_META_DREG, REG_1);
    })
}

fn payload(a: &mut Attrs, base: u32, offset: u32, len: u32) {
    element(a, "payload", |d| {
        d.be32(NFTA_PAYLOAD_DREG, REG_1);
        d.be32(NFTA_PAYLOAD_BASE, base);
        d.be32(NFTA_PAYLOAD_OFFSET, offset);
        d.be32(NFTA_PAYLOAD_LEN, len);
    })
}

fn cmp(a: &mut Attrs, op: u32, data: &[u8]) {
    element(a, "cmp", |d| {
        d.be32(NFTA_CMP_SREG, REG_1);
        d.be32(NFTA_CMP_OP, op);
        d.nest(NFTA_CMP_DATA, |v| v.put(NFTA_DATA_VALUE, data));
    })
}

fn immediate(a: &mut Attrs, reg: u32, data: &[u8]) {
    element(a, "immediate", |d| {
        d.be32(NFTA_IMMEDIATE_DREG, reg);
        d.nest(NFTA_IMMEDIATE_DATA, |v| v.put(NFTA_DATA_VALUE, data));
    })
}

// ---- attributes ----------------------------------------------------------------------------

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Netlink attributes being written: `{u16 len, u16 type, value}`, each padded to 4 bytes.
#[derive(Default)]
struct Attrs(Vec<u8>);

impl Attrs {
    fn put(&mut self, ty: u16, value: &[u8]) {
        let len = u16::try_from(4 + value.len()).unwrap_or(u16::MAX);
        self.0.extend_from_slice(&len.to_ne_bytes());
        self.0.extend_from_slice(&ty.to_ne_bytes());
        self.0.extend_from_slice(value);
        self.0.resize(align4(self.0.len()), 0);
    }

    /// A NUL-terminated string.
    fn str(&mut self, ty: u16, s: &str) {
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        self.put(ty, &v);
    }

    fn be32(&mut self, ty: u16, v: u32) {
        self.put(ty, &v.to_be_bytes());
    }

    fn nest(&mut self, ty: u16, inner: impl FnOnce(&mut Attrs)) {
        let at = self.0.len();
        self.0.extend_from_slice(&[0; 4]);
        inner(self);
        let len = u16::try_from(self.0.len() - at).unwrap_or(u16::MAX);
        self.0[at..at + 2].copy_from_slice(&len.to_ne_bytes());
        self.0[at + 2..at + 4].copy_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
    }
}

/// The attributes in `buf`, as (type without flags, value). Stops at the first malformed one.
fn parse_attrs(mut buf: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while buf.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([buf[0], buf[1]]));
        let ty = u16::from_ne_bytes([buf[2], buf[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > buf.len() {
            break;
        }
        out.push((ty, &buf[4..len]));
        buf = &buf[align4(len).min(buf.len())..];
    }
    out
}

/// The comment in a rule's user data, if it has one.
fn comment_of(udata: &[u8]) -> Option<String> {
    let mut rest = udata;
    while rest.len() >= 2 {
        let (ty, len) = (rest[0], usize::from(rest[1]));
        let value = rest.get(2..2 + len)?;
        if ty == UDATA_RULE_COMMENT {
            let text = value.split(|b| *b == 0).next().unwrap_or_default();
            return String::from_utf8(text.to_vec()).ok();
        }
        rest = &rest[2 + len..];
    }
    None
}

fn comment_udata(comment: &str) -> Vec<u8> {
    // nft keeps comments to 128 bytes; ours are far shorter.
    let text = &comment.as_bytes()[..comment.len().min(127)];
    let mut v = vec![UDATA_RULE_COMMENT, (text.len() + 1) as u8];
    v.extend_from_slice(text);
    v.push(0);
    v
}

// ---- messages ------------------------------------------------------------------------------

/// One message of a batch: what it does (for errors), its type, flags and attributes.
struct Msg {
    what: String,
    kind: u16,
    flags: u16,
    attrs: Attrs,
}

/// Changes to apply as one transaction ([`Nft::apply`]).
#[derive(Default)]
pub(crate) struct Batch {
    msgs: Vec<Msg>,
}

impl Batch {
    fn push(&mut self, what: String, kind: u16, flags: u16, attrs: Attrs) {
        self.msgs.push(Msg {
            what,
            kind,
            flags,
            attrs,
        });
    }

    /// Add table `ip <table>`; one that exists is kept as it is.
    pub(crate) fn add_table(&mut self, table: &str) {
        let mut a = Attrs::default();
        a.str(NFTA_TABLE_NAME, table);
        self.push(
            format!("adding table ip {table}"),
            NFT_MSG_NEWTABLE,
            NLM_F_CREATE,
            a,
        );
    }

    /// Delete table `ip <table>` and everything in it (it must exist: add it first in the same
    /// batch to delete one that may not).
    pub(crate) fn del_table(&mut self, table: &str) {
        let mut a = Attrs::default();
        a.str(NFTA_TABLE_NAME, table);
        self.push(format!("deleting table ip {table}"), NFT_MSG_DELTABLE, 0, a);
    }

    /// Add a base chain; one that exists with the same definition is kept as it is.
    pub(crate) fn add_chain(&mut self, table: &str, chain: &BaseChain) {
        let mut a = Attrs::default();
        a.str(NFTA_CHAIN_TABLE, table);
        a.str(NFTA_CHAIN_NAME, chain.name);
        a.nest(NFTA_CHAIN_HOOK, |h| {
            h.be32(NFTA_HOOK_HOOKNUM, chain.hook as u32);
            h.be32(NFTA_HOOK_PRIORITY, chain.priority as u32);
        });
        a.be32(NFTA_CHAIN_POLICY, NF_ACCEPT);
        a.str(NFTA_CHAIN_TYPE, chain.kind);
        self.push(
            format!("adding chain {} to table ip {table}", chain.name),
            NFT_MSG_NEWCHAIN,
            NLM_F_CREATE,
            a,
        );
    }

    /// Append a rule with a comment (`nft` shows it; [`Nft::rules`] returns it).
    pub(crate) fn add_rule(&mut self, table: &str, chain: &str, exprs: &[Expr], comment: &str) {
        let mut a = Attrs::default();
        a.str(NFTA_RULE_TABLE, table);
        a.str(NFTA_RULE_CHAIN, chain);
        a.nest(NFTA_RULE_EXPRESSIONS, |l| {
            for e in exprs {
                e.encode(l);
            }
        });
        a.put(NFTA_RULE_USERDATA, &comment_udata(comment));
        self.push(
            format!("adding rule \"{comment}\" to chain {chain} of table ip {table}"),
            NFT_MSG_NEWRULE,
            NLM_F_CREATE | NLM_F_APPEND,
            a,
        );
    }

    /// Delete the rule with `handle`.
    pub(crate) fn del_rule(&mut self, table: &str, chain: &str, handle: u64) {
        let mut a = Attrs::default();
        a.str(NFTA_RULE_TABLE, table);
        a.str(NFTA_RULE_CHAIN, chain);
        a.put(NFTA_RULE_HANDLE, &handle.to_be_bytes());
        self.push(
            format!("deleting rule {handle} of chain {chain} of table ip {table}"),
            NFT_MSG_DELRULE,
            0,
            a,
        );
    }
}

/// A rule as listed: its handle and comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RuleInfo {
    pub handle: u64,
    pub comment: Option<String>,
}

/// Append one netlink message: header, `nfgenmsg`, attributes.
fn encode(out: &mut Vec<u8>, kind: u16, flags: u16, seq: u32, family: u8, res_id: u16, a: &[u8]) {
    let len = (16 + 4 + a.len()) as u32;
    out.extend_from_slice(&len.to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.push(family);
    out.push(0); // NFNETLINK_V0
    out.extend_from_slice(&res_id.to_be_bytes());
    out.extend_from_slice(a);
}

fn nft_type(msg: u16) -> u16 {
    (NFNL_SUBSYS_NFTABLES << 8) | msg
}

/// One received netlink message: its type, flags, sequence number and payload.
struct Received<'a> {
    kind: u16,
    flags: u16,
    seq: u32,
    payload: &'a [u8],
}

fn split_messages(mut buf: &[u8]) -> Vec<Received<'_>> {
    let mut out = Vec::new();
    while buf.len() >= 16 {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len < 16 || len > buf.len() {
            break;
        }
        out.push(Received {
            kind: u16::from_ne_bytes([buf[4], buf[5]]),
            flags: u16::from_ne_bytes([buf[6], buf[7]]),
            seq: u32::from_ne_bytes([buf[8], buf[9], buf[10], buf[11]]),
            payload: &buf[16..len],
        });
        buf = &buf[align4(len).min(buf.len())..];
    }
    out
}

/// The error of an `NLMSG_ERROR` message (`None`: an ACK), and the kernel's extended message
/// when it gave one.
fn error_of(m: &Received<'_>) -> Option<(io::Error, Option<String>)> {
    let p = m.payload;
    let code = i32::from_ne_bytes(p.get(..4)?.try_into().ok()?);
    if code == 0 {
        return None;
    }
    let e = io::Error::from_raw_os_error(-code);
    if m.flags & NLM_F_ACK_TLVS == 0 {
        return Some((e, None));
    }
    // After the code: the request's header, and its payload unless capped.
    let skip = if m.flags & NLM_F_CAPPED != 0 {
        20
    } else {
        p.get(4..8).map_or(20, |l| {
            4 + u32::from_ne_bytes(l.try_into().unwrap_or_default()) as usize
        })
    };
    let msg = parse_attrs(p.get(align4(skip)..).unwrap_or_default())
        .into_iter()
        .find(|(t, _)| *t == NLMSGERR_ATTR_MSG)
        .and_then(|(_, v)| std::str::from_utf8(v).ok())
        .map(|s| s.trim_end_matches('\0').to_string())
        .filter(|s| !s.is_empty());
    Some((e, msg))
}

/// A blocking nfnetlink socket, in the network namespace of the thread that opened it.
pub(crate) struct Nft {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl Nft {
    pub(crate) fn open() -> io::Result<Nft> {
        let mut sock = Socket::new(NETLINK_NETFILTER)?;
        sock.bind_auto()?;
        sock.connect(&NlAddr::new(0, 0))?;
        // Errors carry only the request's header back, plus the kernel's message if any.
        let _ = sock.set_cap_ack(true);
        let _ = sock.set_ext_ack(true);
        Ok(Nft {
            sock,
            seq: 0,
            buf: Vec::with_capacity(64 * 1024),
        })
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Receive into `self.buf` (one datagram: one or more whole messages).
    fn recv(&mut self) -> io::Result<usize> {
        self.buf.clear();
        self.sock.recv(&mut self.buf, 0)
    }

    /// Apply `batch` as one transaction. On failure nothing of it is applied; the error names
    /// the message the kernel refused (or the batch, when nf_tables itself refused: no such
    /// subsystem, no `CAP_NET_ADMIN`).
    pub(crate) fn apply(&mut self, batch: &Batch) -> Result<(), (String, io::Error)> {
        if batch.msgs.is_empty() {
            return Ok(());
        }
        let begin = self.next_seq();
        let mut out = Vec::new();
        encode(
            &mut out,
            NFNL_MSG_BATCH_BEGIN,
            NLM_F_REQUEST,
            begin,
            0,
            NFNL_SUBSYS_NFTABLES,
            &[],
        );
        for m in &batch.msgs {
            let seq = self.next_seq();
            let flags = NLM_F_REQUEST | NLM_F_ACK | m.flags;
            let kind = nft_type(m.kind);
            encode(&mut out, kind, flags, seq, NFPROTO_IPV4, 0, &m.attrs.0);
        }
        let end = self.next_seq();
        encode(
            &mut out,
            NFNL_MSG_BATCH_END,
            NLM_F_REQUEST,
            end,
            0,
            NFNL_SUBSYS_NFTABLES,
            &[],
        );
        let whole = || "sending the batch".to_string();
        self.sock.send(&out, 0).map_err(|e| (whole(), e))?;
        // The kernel answers a batch while it is sent; a request sent after it is answered
        // after every answer of the batch, so its reply marks where they end.
        let fence = self.next_seq();
        let mut probe = Vec::new();
        encode(
            &mut probe,
            nft_type(NFT_MSG_GETGEN),
            NLM_F_REQUEST,
            fence,
            0,
            0,
            &[],
        );
        self.sock.send(&probe, 0).map_err(|e| (whole(), e))?;
        let mut failure: Option<(String, io::Error)> = None;
        loop {
            let n = self.recv().map_err(|e| (whole(), e))?;
            let mut fenced = false;
            for m in split_messages(&self.buf[..n]) {
                if m.seq == fence {
                    // NEWGEN, or an error if the kernel has no nf_tables at all.
                    if m.kind == nft_type(NFT_MSG_NEWGEN) || m.kind == NLMSG_ERROR {
                        fenced = true;
                    }
                    continue;
                }
                if m.kind != NLMSG_ERROR || failure.is_some() {
                    continue;
                }
                let Some((e, msg)) = error_of(&m) else {
                    continue;
                };
                let mut what = match m.seq.wrapping_sub(begin) {
                    0 => "starting an nf_tables transaction".to_string(),
                    i if (i as usize) <= batch.msgs.len() => {
                        batch.msgs[i as usize - 1].what.clone()
                    }
                    _ => "ending an nf_tables transaction".to_string(),
                };
                if let Some(msg) = msg {
                    what = format!("{what} ({msg})");
                }
                failure = Some((what, e));
            }
            if fenced {
                return failure.map_or(Ok(()), Err);
            }
        }
    }

    /// The rules of `chain` in table `ip <table>` (none if either does not exist).
    pub(crate) fn rules(&mut self, table: &str, chain: &str) -> io::Result<Vec<RuleInfo>> {
        let seq = self.next_seq();
        let mut a = Attrs::default();
        a.str(NFTA_RULE_TABLE, table);
        a.str(NFTA_RULE_CHAIN, chain);
        let mut out = Vec::new();
        encode(
            &mut out,
            nft_type(NFT_MSG_GETRULE),
            NLM_F_REQUEST | NLM_F_DUMP,
            seq,
            NFPROTO_IPV4,
            0,
            &a.0,
        );
        self.sock.send(&out, 0)?;
        let mut rules = Vec::new();
        loop {
            let n = self.recv()?;
            for m in split_messages(&self.buf[..n]) {
                if m.seq != seq {
                    continue;
                }
                match m.kind {
                    NLMSG_DONE => return Ok(rules),
                    NLMSG_ERROR => {
                        return match error_of(&m) {
                            None => Ok(rules),
                            Some((e, _)) if e.raw_os_error() == Some(nix::libc::ENOENT) => {
                                Ok(rules)
                            }
                            Some((e, _)) => Err(e),
                        };
                    }
                    k if k == nft_type(NFT_MSG_NEWRULE) => {
                        let attrs = parse_attrs(m.payload.get(4..).unwrap_or_default());
                        let mut rule = RuleInfo {
                            handle: 0,
                            comment: None,
                        };
                        let mut ours = true;
                        for (ty, v) in attrs {
                            match ty {
                                NFTA_RULE_HANDLE => {
                                    rule.handle = u64::from_be_bytes(v.try_into().unwrap_or([0; 8]))
                                }
                                NFTA_RULE_USERDATA => rule.comment = comment_of(v),
                                // Kernels before 4.x ignore the dump's filter: check it.
                                NFTA_RULE_TABLE => {
                                    ours &= v.split(|b| *b == 0).next() == Some(table.as_bytes())
                                }
                                NFTA_RULE_CHAIN => {
                                    ours &= v.split(|b| *b == 0).next() == Some(chain.as_bytes())
                                }
                                _ => {}
                            }
                        }
                        if ours && rule.handle != 0 {
                            rules.push(rule);
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_padded_nested_and_read_back() {
        let mut a = Attrs::default();
        a.str(NFTA_TABLE_NAME, "berth-x");
        a.nest(NFTA_CHAIN_HOOK, |h| {
            h.be32(NFTA_HOOK_HOOKNUM, Hook::Postrouting as u32);
            h.be32(NFTA_HOOK_PRIORITY, -110i32 as u32);
        });
        a.put(NFTA_REJECT_ICMP_CODE, &[3]);
        assert_eq!(a.0.len() % 4, 0);
        let got = parse_attrs(&a.0);
        assert_eq!(got.len(), 3);
        assert_eq!(got[0], (NFTA_TABLE_NAME, &b"berth-x\0"[..]));
        assert_eq!(got[1].0, NFTA_CHAIN_HOOK);
        // The nested flag is set on the wire and masked off when read.
        assert_eq!(
            u16::from_ne_bytes([a.0[14], a.0[15]]),
            NFTA_CHAIN_HOOK | NLA_F_NESTED
        );
        let hook = parse_attrs(got[1].1);
        assert_eq!(hook[0].1, &4u32.to_be_bytes()[..]);
        assert_eq!(i32::from_be_bytes(hook[1].1.try_into().unwrap()), -110);
        assert_eq!(got[2], (NFTA_REJECT_ICMP_CODE, &[3u8][..]));
        // A truncated attribute ends the walk instead of reading past the buffer.
        assert_eq!(parse_attrs(&a.0[..a.0.len() - 4]).len(), 2);
    }

    #[test]
    fn comments_round_trip_through_user_data() {
        let u = comment_udata("redirect 169.254.170.2:80 to 10.0.0.1:4000");
        assert_eq!(
            comment_of(&u).as_deref(),
            Some("redirect 169.254.170.2:80 to 10.0.0.1:4000")
        );
        // Other TLVs before the comment are skipped; a short buffer is no comment.
        let mut v = vec![7, 2, 0xaa, 0xbb];
        v.extend_from_slice(&u);
        assert_eq!(comment_of(&v), comment_of(&u));
        assert_eq!(comment_of(&u[..u.len() - 1]), None);
        assert_eq!(comment_of(&[]), None);
    }

    #[test]
    fn a_dnat_is_two_immediates_and_a_nat() {
        let mut a = Attrs::default();
        Expr::Dnat(Ipv4Addr::new(10, 0, 0, 1), 4000).encode(&mut a);
        let names: Vec<String> = parse_attrs(&a.0)
            .into_iter()
            .map(|(ty, v)| {
                assert_eq!(ty, NFTA_LIST_ELEM);
                let name = parse_attrs(v)[0].1;
                String::from_utf8_lossy(&name[..name.len() - 1]).into_owned()
            })
            .collect();
        assert_eq!(names, ["immediate", "immediate", "nat"]);
    }

    #[test]
    fn errors_carry_the_kernels_message() {
        // NLMSG_ERROR, capped, with an extended message.
        let mut payload = (-nix::libc::EPERM).to_ne_bytes().to_vec();
        payload.extend_from_slice(&[0; 16]);
        let mut tlv = Attrs::default();
        tlv.str(NLMSGERR_ATTR_MSG, "not allowed here");
        payload.extend_from_slice(&tlv.0);
        let m = Received {
            kind: NLMSG_ERROR,
            flags: NLM_F_CAPPED | NLM_F_ACK_TLVS,
            seq: 1,
            payload: &payload,
        };
        let (e, msg) = error_of(&m).unwrap();
        assert_eq!(e.raw_os_error(), Some(nix::libc::EPERM));
        assert_eq!(msg.as_deref(), Some("not allowed here"));
        let ack = 0i32.to_ne_bytes();
        let m = Received {
            kind: NLMSG_ERROR,
            flags: 0,
            seq: 1,
            payload: &ack,
        };
        assert!(error_of(&m).is_none());
    }
}
