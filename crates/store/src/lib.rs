//! berth-store: a revisioned key-value store modelled on etcd's v3 API.
//!
//! Owns: the [`Store`] trait (get / range / transactions with compare-and-swap / watch from a
//! revision), its embedded implementation on redb ([`RedbStore`], with group commit) and an
//! in-memory one ([`MemStore`], for tests), plus the contract test suite every implementation
//! must pass ([`contract`]). An etcd implementation must fit the same trait unchanged.
//!
//! Semantics follow etcd:
//! - one global revision; every transaction that writes at least one key bumps it by one, and
//!   every key written in it gets that revision as `mod_revision`;
//! - a key's `create_revision` is the revision that created it (since its last delete) and
//!   `version` counts writes since creation (a deleted or missing key has version 0);
//! - a transaction evaluates all `compare`s against the state before it; if all hold, its
//!   `success` ops apply, otherwise its `failure` ops;
//! - a watch from revision `r` delivers every event with revision >= `r`, in revision order,
//!   then live events; `r == 0` means "from now on". Asking for a compacted revision fails with
//!   [`StoreError::Compacted`].
//!
//! Must not: interpret keys or values (they are opaque bytes), or acknowledge a write before it
//! is durable on disk (for the redb implementation).

use async_trait::async_trait;

mod disk;
mod engine;
mod mem;

#[cfg(any(test, feature = "test-util"))]
pub mod contract;

pub use disk::RedbStore;
pub use mem::MemStore;

/// A store revision. 0 means "none" (a key that does not exist has mod_revision 0).
pub type Revision = i64;

/// A key with its value and revision metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub create_revision: Revision,
    pub mod_revision: Revision,
    pub version: i64,
}

/// What a [`Compare`] looks at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CompareTarget {
    /// The key's version (0 when missing).
    Version(i64),
    /// The key's create revision (0 when missing).
    CreateRevision(Revision),
    /// The key's mod revision (0 when missing).
    ModRevision(Revision),
    /// The key's value (a missing key never compares equal, and never compares unequal either:
    /// like etcd, a value compare on a missing key is false).
    Value(Vec<u8>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompareOp {
    Equal,
    NotEqual,
    Greater,
    Less,
}

/// One condition of a transaction: `key.<target field> <op> <target value>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compare {
    pub key: Vec<u8>,
    pub op: CompareOp,
    pub target: CompareTarget,
}

impl Compare {
    /// The key does not exist.
    pub fn missing(key: impl Into<Vec<u8>>) -> Self {
        Compare {
            key: key.into(),
            op: CompareOp::Equal,
            target: CompareTarget::Version(0),
        }
    }
    /// The key exists.
    pub fn exists(key: impl Into<Vec<u8>>) -> Self {
        Compare {
            key: key.into(),
            op: CompareOp::Greater,
            target: CompareTarget::Version(0),
        }
    }
    /// The key was last modified at exactly `rev` (0 = it does not exist).
    pub fn mod_revision_is(key: impl Into<Vec<u8>>, rev: Revision) -> Self {
        Compare {
            key: key.into(),
            op: CompareOp::Equal,
            target: CompareTarget::ModRevision(rev),
        }
    }
}

/// A write inside a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
    },
    /// Delete one key (no-op if missing).
    Delete {
        key: Vec<u8>,
    },
    /// Delete every key in `[start, end)`.
    DeleteRange {
        start: Vec<u8>,
        end: Vec<u8>,
    },
}

impl Op {
    pub fn put(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        Op::Put {
            key: key.into(),
            value: value.into(),
        }
    }
    pub fn delete(key: impl Into<Vec<u8>>) -> Self {
        Op::Delete { key: key.into() }
    }
}

/// An atomic compare-and-swap transaction.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Txn {
    pub compare: Vec<Compare>,
    pub success: Vec<Op>,
    pub failure: Vec<Op>,
}

impl Txn {
    /// A transaction that applies `ops` unconditionally.
    pub fn ops(ops: Vec<Op>) -> Self {
        Txn {
            compare: Vec::new(),
            success: ops,
            failure: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnResponse {
    /// Whether every compare held (and so `success` was applied).
    pub succeeded: bool,
    /// The store revision after this transaction (its own revision if it wrote anything).
    pub revision: Revision,
}

/// Keys in `[start, end)`; an empty `end` means just the key `start`, and `end == [0]`
/// means every key from `start` on (etcd's convention). `limit == 0` means no limit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeRequest {
    pub start: Vec<u8>,
    pub end: Vec<u8>,
    pub limit: usize,
    /// Return keys only (values empty) — for counting and listing.
    pub keys_only: bool,
}

impl RangeRequest {
    /// Every key starting with `prefix`.
    pub fn prefix(prefix: impl Into<Vec<u8>>) -> Self {
        let start = prefix.into();
        let mut end = prefix_end(&start);
        if end.is_empty() {
            end = vec![0];
        }
        RangeRequest {
            start,
            end,
            limit: 0,
            keys_only: false,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeResponse {
    /// Matching keys in ascending key order.
    pub kvs: Vec<KeyValue>,
    /// More keys matched than `limit` allowed.
    pub more: bool,
    /// The store revision the range was read at.
    pub revision: Revision,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// One change. For a delete, `kv.value` is empty and `kv.mod_revision` is the deleting revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub kv: KeyValue,
}

/// All matching events of one revision (one transaction), delivered together.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchResponse {
    pub revision: Revision,
    pub events: Vec<Event>,
}

/// A live watch. Dropping it cancels the watch.
pub struct Watcher {
    rx: tokio::sync::mpsc::UnboundedReceiver<Result<WatchResponse, StoreError>>,
}

impl Watcher {
    pub fn new(
        rx: tokio::sync::mpsc::UnboundedReceiver<Result<WatchResponse, StoreError>>,
    ) -> Self {
        Watcher { rx }
    }
    /// The next batch of events; `None` when the store has shut down.
    pub async fn next(&mut self) -> Option<Result<WatchResponse, StoreError>> {
        self.rx.recv().await
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The requested watch revision has been compacted away.
    #[error(
        "required revision {requested} has been compacted (compact revision {compact_revision})"
    )]
    Compacted {
        requested: Revision,
        compact_revision: Revision,
    },
    /// The store's backing storage failed.
    #[error("storage error: {0}")]
    Backend(String),
    /// The store has been closed.
    #[error("store is closed")]
    Closed,
}

/// The smallest key greater than every key starting with `prefix` (etcd's `prefixEnd`).
/// An empty result means "to the end of the keyspace".
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    Vec::new()
}

/// The value at `key`, put there first with `make()` if the key is missing (exactly one
/// writer wins when several start at once): for secrets made on first start.
pub async fn load_or_create(
    store: &dyn Store,
    key: &str,
    make: impl Fn() -> Vec<u8>,
) -> Result<Vec<u8>, StoreError> {
    loop {
        if let Some(kv) = store.get(key.as_bytes()).await? {
            return Ok(kv.value);
        }
        store
            .txn(Txn {
                compare: vec![Compare::missing(key)],
                success: vec![Op::put(key, make())],
                failure: vec![],
            })
            .await?;
    }
}

/// A revisioned key-value store. Implementations: [`RedbStore`], [`MemStore`]; etcd later.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// One key, or `None`.
    async fn get(&self, key: &[u8]) -> Result<Option<KeyValue>, StoreError>;
    /// Keys in a range, ascending.
    async fn range(&self, req: RangeRequest) -> Result<RangeResponse, StoreError>;
    /// Apply a transaction atomically. Returns only after it is durable.
    async fn txn(&self, txn: Txn) -> Result<TxnResponse, StoreError>;
    /// Watch keys starting with `prefix` from revision `from` (0 = from the next revision).
    async fn watch(&self, prefix: &[u8], from: Revision) -> Result<Watcher, StoreError>;
    /// The current global revision.
    async fn revision(&self) -> Result<Revision, StoreError>;
    /// Forget history before `revision` (watches from older revisions fail afterwards).
    async fn compact(&self, revision: Revision) -> Result<(), StoreError>;

    /// Unconditional put; returns the new revision.
    async fn put(&self, key: &[u8], value: &[u8]) -> Result<Revision, StoreError> {
        Ok(self
            .txn(Txn::ops(vec![Op::put(key, value)]))
            .await?
            .revision)
    }
    /// Unconditional delete; returns the store revision afterwards.
    async fn delete(&self, key: &[u8]) -> Result<Revision, StoreError> {
        Ok(self.txn(Txn::ops(vec![Op::delete(key)])).await?.revision)
    }
}
