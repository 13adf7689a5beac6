//! What every implementation shares: transaction evaluation over a key-value backend (the
//! etcd rules for compares, versions and revisions), the binary encoding of records and
//! events, and the hub that fans committed events out to watchers.

use tokio::sync::mpsc::UnboundedSender;

use crate::{
    Compare, CompareOp, CompareTarget, Event, EventKind, KeyValue, Op, RangeRequest, Revision,
    StoreError, Txn, WatchResponse,
};

/// The few operations transaction evaluation needs from a backend.
pub(crate) trait Kv {
    fn get(&mut self, key: &[u8]) -> Result<Option<KeyValue>, StoreError>;
    fn put(&mut self, kv: &KeyValue) -> Result<(), StoreError>;
    fn del(&mut self, key: &[u8]) -> Result<(), StoreError>;
    /// Keys in `[start, end)` (`end == [0]`: to the end).
    fn keys_in(&mut self, start: &[u8], end: &[u8]) -> Result<Vec<Vec<u8>>, StoreError>;
}

fn holds(kv: Option<&KeyValue>, c: &Compare) -> bool {
    use std::cmp::Ordering;
    let ord = match &c.target {
        CompareTarget::Version(v) => kv.map_or(0, |k| k.version).cmp(v),
        CompareTarget::CreateRevision(r) => kv.map_or(0, |k| k.create_revision).cmp(r),
        CompareTarget::ModRevision(r) => kv.map_or(0, |k| k.mod_revision).cmp(r),
        CompareTarget::Value(v) => match kv {
            None => return false,
            Some(k) => k.value.as_slice().cmp(v.as_slice()),
        },
    };
    match c.op {
        CompareOp::Equal => ord == Ordering::Equal,
        CompareOp::NotEqual => ord != Ordering::Equal,
        CompareOp::Greater => ord == Ordering::Greater,
        CompareOp::Less => ord == Ordering::Less,
    }
}

/// Evaluate and apply one transaction at revision `rev` (used only if it writes).
/// Returns whether the compares held and the events it produced (empty: no revision used).
pub(crate) fn apply(
    kv: &mut impl Kv,
    txn: &Txn,
    rev: Revision,
) -> Result<(bool, Vec<Event>), StoreError> {
    let mut ok = true;
    for c in &txn.compare {
        let cur = kv.get(&c.key)?;
        if !holds(cur.as_ref(), c) {
            ok = false;
            break;
        }
    }
    let ops = if ok { &txn.success } else { &txn.failure };
    let mut events = Vec::new();
    for op in ops {
        match op {
            Op::Put { key, value } => {
                let prev = kv.get(key)?;
                let new = KeyValue {
                    key: key.clone(),
                    value: value.clone(),
                    create_revision: prev.as_ref().map_or(rev, |p| p.create_revision),
                    mod_revision: rev,
                    version: prev.as_ref().map_or(0, |p| p.version) + 1,
                };
                kv.put(&new)?;
                events.push(Event {
                    kind: EventKind::Put,
                    kv: new,
                });
            }
            Op::Delete { key } => {
                if let Some(p) = kv.get(key)? {
                    kv.del(key)?;
                    events.push(deleted(p, rev));
                }
            }
            Op::DeleteRange { start, end } => {
                for k in kv.keys_in(start, end)? {
                    if let Some(p) = kv.get(&k)? {
                        kv.del(&k)?;
                        events.push(deleted(p, rev));
                    }
                }
            }
        }
    }
    Ok((ok, events))
}

fn deleted(p: KeyValue, rev: Revision) -> Event {
    Event {
        kind: EventKind::Delete,
        kv: KeyValue {
            key: p.key,
            value: Vec::new(),
            create_revision: p.create_revision,
            mod_revision: rev,
            version: 0,
        },
    }
}

/// Whether `key` is inside a range request's bounds.
pub(crate) fn in_range(req: &RangeRequest, key: &[u8]) -> bool {
    if req.end.is_empty() {
        return key == req.start.as_slice();
    }
    key >= req.start.as_slice() && (req.end == [0] || key < req.end.as_slice())
}

// --- encoding ---------------------------------------------------------------------------

fn put_u64(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(&(v as u64).to_be_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_be_bytes());
    out.extend_from_slice(b);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        if self.0.len() < n {
            return Err(StoreError::Backend("corrupt record: truncated".into()));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u64(&mut self) -> Result<i64, StoreError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a) as i64)
    }
    fn bytes(&mut self) -> Result<Vec<u8>, StoreError> {
        let b = self.take(4)?;
        let mut a = [0u8; 4];
        a.copy_from_slice(b);
        let n = u32::from_be_bytes(a) as usize;
        Ok(self.take(n)?.to_vec())
    }
}

/// A stored value: create revision, mod revision, version, then the value bytes.
pub(crate) fn encode_record(kv: &KeyValue) -> Vec<u8> {
    let mut out = Vec::with_capacity(24 + kv.value.len());
    put_u64(&mut out, kv.create_revision);
    put_u64(&mut out, kv.mod_revision);
    put_u64(&mut out, kv.version);
    out.extend_from_slice(&kv.value);
    out
}

pub(crate) fn decode_record(key: &[u8], b: &[u8]) -> Result<KeyValue, StoreError> {
    let mut r = Reader(b);
    let create_revision = r.u64()?;
    let mod_revision = r.u64()?;
    let version = r.u64()?;
    Ok(KeyValue {
        key: key.to_vec(),
        value: r.0.to_vec(),
        create_revision,
        mod_revision,
        version,
    })
}

pub(crate) fn encode_events(events: &[Event]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in events {
        out.push(match e.kind {
            EventKind::Put => 1,
            EventKind::Delete => 2,
        });
        put_bytes(&mut out, &e.kv.key);
        put_bytes(&mut out, &e.kv.value);
        put_u64(&mut out, e.kv.create_revision);
        put_u64(&mut out, e.kv.mod_revision);
        put_u64(&mut out, e.kv.version);
    }
    out
}

pub(crate) fn decode_events(b: &[u8]) -> Result<Vec<Event>, StoreError> {
    let mut r = Reader(b);
    let mut out = Vec::new();
    while !r.0.is_empty() {
        let kind = match r.take(1)?[0] {
            1 => EventKind::Put,
            2 => EventKind::Delete,
            k => return Err(StoreError::Backend(format!("corrupt event kind {k}"))),
        };
        let key = r.bytes()?;
        let value = r.bytes()?;
        out.push(Event {
            kind,
            kv: KeyValue {
                key,
                value,
                create_revision: r.u64()?,
                mod_revision: r.u64()?,
                version: r.u64()?,
            },
        });
    }
    Ok(out)
}

// --- watch hub ------------------------------------------------------------------------------

struct WatcherSlot {
    prefix: Vec<u8>,
    /// Highest revision already delivered (replay included): later publishes skip it.
    sent: Revision,
    tx: UnboundedSender<Result<WatchResponse, StoreError>>,
}

/// Live watchers. Callers publish under the same lock that registration takes, so a watcher
/// sees every revision after its replay exactly once.
#[derive(Default)]
pub(crate) struct Hub {
    watchers: Vec<WatcherSlot>,
}

pub(crate) fn matching(prefix: &[u8], events: &[Event]) -> Vec<Event> {
    events
        .iter()
        .filter(|e| e.kv.key.starts_with(prefix))
        .cloned()
        .collect()
}

impl Hub {
    pub(crate) fn register(
        &mut self,
        prefix: Vec<u8>,
        sent: Revision,
        tx: UnboundedSender<Result<WatchResponse, StoreError>>,
    ) {
        self.watchers.push(WatcherSlot { prefix, sent, tx });
    }

    pub(crate) fn publish(&mut self, revision: Revision, events: &[Event]) {
        self.watchers.retain_mut(|w| {
            if w.tx.is_closed() {
                return false;
            }
            if revision <= w.sent {
                return true;
            }
            w.sent = revision;
            let evs = matching(&w.prefix, events);
            if evs.is_empty() {
                return true;
            }
            w.tx.send(Ok(WatchResponse {
                revision,
                events: evs,
            }))
            .is_ok()
        });
    }
}
