//! [`RedbStore`]: the durable, embedded implementation on redb — one file.
//!
//! Writes go through one writer thread that batches every transaction waiting for it into a
//! single redb write transaction (group commit): each transaction still gets its own revision
//! and sees the ones before it in the batch, the batch is committed with full durability, and
//! only then is any of them acknowledged and published to watchers. Reads use redb's MVCC
//! read transactions directly from the caller.

use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;

use ::redb::{Database, ReadableTable, Table, TableDefinition};
use async_trait::async_trait;
use parking_lot::Mutex;

use crate::engine::{self, Hub, Kv};
use crate::{
    KeyValue, RangeRequest, RangeResponse, Revision, Store, StoreError, Txn, TxnResponse,
    WatchResponse, Watcher,
};

const KV: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv");
const HISTORY: TableDefinition<u64, &[u8]> = TableDefinition::new("history");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const META_REV: &str = "revision";
const META_COMPACT: &str = "compact";

/// Most transactions folded into one commit.
const MAX_BATCH: usize = 1024;

fn be(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

type Reply = tokio::sync::oneshot::Sender<Result<TxnResponse, StoreError>>;

enum Work {
    Txn(Txn, Reply),
}

/// A durable [`Store`] in one redb file.
/// redb's page cache.
pub const CACHE_BYTES: usize = 64 << 20;

pub struct RedbStore {
    db: Arc<Database>,
    /// Registration and publication of watchers happen under this lock.
    hub: Arc<Mutex<Hub>>,
    tx: Mutex<Option<mpsc::Sender<Work>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

struct TableKv<'a, 'b> {
    t: &'a mut Table<'b, &'static [u8], &'static [u8]>,
}

impl Kv for TableKv<'_, '_> {
    fn get(&mut self, key: &[u8]) -> Result<Option<KeyValue>, StoreError> {
        match self.t.get(key).map_err(be)? {
            Some(v) => Ok(Some(engine::decode_record(key, v.value())?)),
            None => Ok(None),
        }
    }
    fn put(&mut self, kv: &KeyValue) -> Result<(), StoreError> {
        self.t
            .insert(kv.key.as_slice(), engine::encode_record(kv).as_slice())
            .map_err(be)?;
        Ok(())
    }
    fn del(&mut self, key: &[u8]) -> Result<(), StoreError> {
        self.t.remove(key).map_err(be)?;
        Ok(())
    }
    fn keys_in(&mut self, start: &[u8], end: &[u8]) -> Result<Vec<Vec<u8>>, StoreError> {
        let req = RangeRequest {
            start: start.to_vec(),
            end: end.to_vec(),
            ..Default::default()
        };
        let mut out = Vec::new();
        for item in self.t.range(start..).map_err(be)? {
            let (k, _) = item.map_err(be)?;
            if !engine::in_range(&req, k.value()) {
                break;
            }
            out.push(k.value().to_vec());
        }
        Ok(out)
    }
}

impl RedbStore {
    /// Open (or create) the store at `path`.
    pub fn open(path: &Path) -> Result<RedbStore, StoreError> {
        // The control plane reads from its own view; the page cache here serves the writer.
        // redb's default (1 GiB) would be resident memory the server does not need.
        let db = redb::Builder::new()
            .set_cache_size(CACHE_BYTES)
            .create(path)
            .map_err(be)?;
        {
            let w = db.begin_write().map_err(be)?;
            w.open_table(KV).map_err(be)?;
            w.open_table(HISTORY).map_err(be)?;
            w.open_table(META).map_err(be)?;
            w.commit().map_err(be)?;
        }
        let db = Arc::new(db);
        let hub = Arc::new(Mutex::new(Hub::default()));
        let (tx, rx) = mpsc::channel::<Work>();
        let (wdb, whub) = (db.clone(), hub.clone());
        let writer = std::thread::Builder::new()
            .name("berth-store-writer".into())
            .spawn(move || writer_loop(&wdb, &whub, rx))
            .map_err(be)?;
        Ok(RedbStore {
            db,
            hub,
            tx: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(writer)),
        })
    }

    /// Finish queued writes and stop the writer thread. Later writes fail with `Closed`.
    pub fn close(&self) {
        self.tx.lock().take();
        if let Some(h) = self.writer.lock().take() {
            let _ = h.join();
        }
    }

    fn meta(&self, key: &str) -> Result<i64, StoreError> {
        let r = self.db.begin_read().map_err(be)?;
        let t = r.open_table(META).map_err(be)?;
        Ok(t.get(key).map_err(be)?.map_or(0, |v| v.value() as i64))
    }
}

impl Drop for RedbStore {
    fn drop(&mut self) {
        self.close();
    }
}

fn writer_loop(db: &Database, hub: &Mutex<Hub>, rx: mpsc::Receiver<Work>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        match commit_batch(db, &batch) {
            Ok(results) => {
                // Publish before answering, under the hub lock, so that a caller that
                // watches right after its write never misses its own revision.
                {
                    let mut h = hub.lock();
                    for (_, rev, events) in &results {
                        if !events.is_empty() {
                            h.publish(*rev, events);
                        }
                    }
                }
                for (Work::Txn(_, reply), (ok, rev, _)) in batch.into_iter().zip(results) {
                    let _ = reply.send(Ok(TxnResponse {
                        succeeded: ok,
                        revision: rev,
                    }));
                }
            }
            Err(e) => {
                tracing::error!("store commit failed: {e}");
                for Work::Txn(_, reply) in batch {
                    let _ = reply.send(Err(StoreError::Backend(e.to_string())));
                }
            }
        }
    }
}

/// Apply a batch in one write transaction; per transaction: (succeeded, revision, events).
#[allow(clippy::type_complexity)]
fn commit_batch(
    db: &Database,
    batch: &[Work],
) -> Result<Vec<(bool, Revision, Vec<crate::Event>)>, StoreError> {
    let w = db.begin_write().map_err(be)?;
    let mut out = Vec::with_capacity(batch.len());
    {
        let mut meta = w.open_table(META).map_err(be)?;
        let mut rev = meta.get(META_REV).map_err(be)?.map_or(0, |v| v.value()) as i64;
        let mut kv = w.open_table(KV).map_err(be)?;
        let mut hist = w.open_table(HISTORY).map_err(be)?;
        for Work::Txn(txn, _) in batch {
            let mut t = TableKv { t: &mut kv };
            let (ok, events) = engine::apply(&mut t, txn, rev + 1)?;
            if !events.is_empty() {
                rev += 1;
                hist.insert(rev as u64, engine::encode_events(&events).as_slice())
                    .map_err(be)?;
            }
            out.push((ok, rev, events));
        }
        meta.insert(META_REV, rev as u64).map_err(be)?;
    }
    w.commit().map_err(be)?;
    Ok(out)
}

#[async_trait]
impl Store for RedbStore {
    async fn get(&self, key: &[u8]) -> Result<Option<KeyValue>, StoreError> {
        let r = self.db.begin_read().map_err(be)?;
        let t = r.open_table(KV).map_err(be)?;
        match t.get(key).map_err(be)? {
            Some(v) => Ok(Some(engine::decode_record(key, v.value())?)),
            None => Ok(None),
        }
    }

    async fn range(&self, req: RangeRequest) -> Result<RangeResponse, StoreError> {
        let r = self.db.begin_read().map_err(be)?;
        let meta = r.open_table(META).map_err(be)?;
        let revision = meta.get(META_REV).map_err(be)?.map_or(0, |v| v.value()) as i64;
        let t = r.open_table(KV).map_err(be)?;
        let mut kvs = Vec::new();
        let mut more = false;
        for item in t.range(req.start.as_slice()..).map_err(be)? {
            let (k, v) = item.map_err(be)?;
            if !engine::in_range(&req, k.value()) {
                break;
            }
            if req.limit > 0 && kvs.len() == req.limit {
                more = true;
                break;
            }
            let mut rec = engine::decode_record(k.value(), v.value())?;
            if req.keys_only {
                rec.value.clear();
            }
            kvs.push(rec);
        }
        Ok(RangeResponse {
            kvs,
            more,
            revision,
        })
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse, StoreError> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        {
            let g = self.tx.lock();
            let tx = g.as_ref().ok_or(StoreError::Closed)?;
            tx.send(Work::Txn(txn, reply))
                .map_err(|_| StoreError::Closed)?;
        }
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn watch(&self, prefix: &[u8], from: Revision) -> Result<Watcher, StoreError> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        // Under the hub lock no revision can be published, so replay (up to what is committed
        // now) and registration leave no gap; revisions committed but not yet published are
        // replayed here and skipped by the hub.
        let mut hub = self.hub.lock();
        let r = self.db.begin_read().map_err(be)?;
        let meta = r.open_table(META).map_err(be)?;
        let current = meta.get(META_REV).map_err(be)?.map_or(0, |v| v.value()) as i64;
        let compacted = meta.get(META_COMPACT).map_err(be)?.map_or(0, |v| v.value()) as i64;
        if from > 0 && from < compacted {
            return Err(StoreError::Compacted {
                requested: from,
                compact_revision: compacted,
            });
        }
        if from > 0 && from <= current {
            let hist = r.open_table(HISTORY).map_err(be)?;
            for item in hist.range(from as u64..=current as u64).map_err(be)? {
                let (k, v) = item.map_err(be)?;
                let events = engine::decode_events(v.value())?;
                let evs = engine::matching(prefix, &events);
                if !evs.is_empty() {
                    let _ = tx.send(Ok(WatchResponse {
                        revision: k.value() as i64,
                        events: evs,
                    }));
                }
            }
        }
        hub.register(prefix.to_vec(), current, tx);
        Ok(Watcher::new(rx))
    }

    async fn revision(&self) -> Result<Revision, StoreError> {
        self.meta(META_REV)
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        let w = self.db.begin_write().map_err(be)?;
        {
            let mut meta = w.open_table(META).map_err(be)?;
            let current = meta.get(META_REV).map_err(be)?.map_or(0, |v| v.value()) as i64;
            let old = meta.get(META_COMPACT).map_err(be)?.map_or(0, |v| v.value()) as i64;
            let r = revision.min(current + 1);
            if r > old {
                let mut hist = w.open_table(HISTORY).map_err(be)?;
                hist.retain_in(..r as u64, |_, _| false).map_err(be)?;
                meta.insert(META_COMPACT, r as u64).map_err(be)?;
            }
        }
        w.commit().map_err(be)?;
        Ok(())
    }
}
