//! [`MemStore`]: the whole store in memory behind one lock. For tests and for components
//! that need a store without a disk; same semantics as the durable implementation.

use std::collections::BTreeMap;

use async_trait::async_trait;
use parking_lot::Mutex;

use crate::engine::{self, Hub, Kv};
use crate::{
    Event, KeyValue, RangeRequest, RangeResponse, Revision, Store, StoreError, Txn, TxnResponse,
    WatchResponse, Watcher,
};

#[derive(Default)]
struct State {
    kv: BTreeMap<Vec<u8>, KeyValue>,
    history: BTreeMap<Revision, Vec<Event>>,
    rev: Revision,
    compacted: Revision,
    hub: Hub,
}

impl Kv for BTreeMap<Vec<u8>, KeyValue> {
    fn get(&mut self, key: &[u8]) -> Result<Option<KeyValue>, StoreError> {
        Ok(BTreeMap::get(self, key).cloned())
    }
    fn put(&mut self, kv: &KeyValue) -> Result<(), StoreError> {
        self.insert(kv.key.clone(), kv.clone());
        Ok(())
    }
    fn del(&mut self, key: &[u8]) -> Result<(), StoreError> {
        self.remove(key);
        Ok(())
    }
    fn keys_in(&mut self, start: &[u8], end: &[u8]) -> Result<Vec<Vec<u8>>, StoreError> {
        let req = RangeRequest {
            start: start.to_vec(),
            end: end.to_vec(),
            ..Default::default()
        };
        Ok(self
            .range(start.to_vec()..)
            .map(|(k, _)| k)
            .take_while(|k| engine::in_range(&req, k))
            .cloned()
            .collect())
    }
}

/// An in-memory [`Store`].
#[derive(Default)]
pub struct MemStore {
    state: Mutex<State>,
}

impl MemStore {
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl Store for MemStore {
    async fn get(&self, key: &[u8]) -> Result<Option<KeyValue>, StoreError> {
        Ok(self.state.lock().kv.get(key).cloned())
    }

    async fn range(&self, req: RangeRequest) -> Result<RangeResponse, StoreError> {
        let st = self.state.lock();
        let mut kvs = Vec::new();
        let mut more = false;
        for (k, v) in st.kv.range(req.start.clone()..) {
            if !engine::in_range(&req, k) {
                break;
            }
            if req.limit > 0 && kvs.len() == req.limit {
                more = true;
                break;
            }
            let mut v = v.clone();
            if req.keys_only {
                v.value.clear();
            }
            kvs.push(v);
        }
        Ok(RangeResponse {
            kvs,
            more,
            revision: st.rev,
        })
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse, StoreError> {
        let mut guard = self.state.lock();
        let st = &mut *guard;
        let next = st.rev + 1;
        // Apply to a scratch copy only when there is something to undo on error; the
        // in-memory backend cannot fail, so apply in place.
        let (succeeded, events) = engine::apply(&mut st.kv, &txn, next)?;
        if !events.is_empty() {
            st.rev = next;
            st.history.insert(next, events.clone());
            st.hub.publish(next, &events);
        }
        Ok(TxnResponse {
            succeeded,
            revision: st.rev,
        })
    }

    async fn watch(&self, prefix: &[u8], from: Revision) -> Result<Watcher, StoreError> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let mut st = self.state.lock();
        if from > 0 && from < st.compacted {
            return Err(StoreError::Compacted {
                requested: from,
                compact_revision: st.compacted,
            });
        }
        if from > 0 {
            for (rev, events) in st.history.range(from..) {
                let evs = engine::matching(prefix, events);
                if !evs.is_empty() {
                    let _ = tx.send(Ok(WatchResponse {
                        revision: *rev,
                        events: evs,
                    }));
                }
            }
        }
        let sent = st.rev;
        st.hub.register(prefix.to_vec(), sent, tx);
        Ok(Watcher::new(rx))
    }

    async fn revision(&self) -> Result<Revision, StoreError> {
        Ok(self.state.lock().rev)
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        let mut st = self.state.lock();
        let r = revision.min(st.rev + 1);
        if r > st.compacted {
            st.history = st.history.split_off(&r);
            st.compacted = r;
        }
        Ok(())
    }
}
