//! The store contract, run against every implementation.

use std::sync::Arc;

use berth_store::{MemStore, RedbStore, Store, contract};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mem_store_meets_the_contract() {
    contract::run_all(|| Arc::new(MemStore::new()) as Arc<dyn Store>).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_store_meets_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let mut n = 0;
    contract::run_all(|| {
        n += 1;
        Arc::new(RedbStore::open(&dir.path().join(format!("s{n}.redb"))).unwrap()) as Arc<dyn Store>
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_store_reopens_with_everything() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    {
        let s = RedbStore::open(&path).unwrap();
        for i in 0..50 {
            s.put(format!("k{i}").as_bytes(), b"v").await.unwrap();
        }
        s.delete(b"k0").await.unwrap();
    }
    let s = RedbStore::open(&path).unwrap();
    assert_eq!(s.revision().await.unwrap(), 51);
    assert_eq!(s.get(b"k0").await.unwrap(), None);
    assert_eq!(s.get(b"k49").await.unwrap().unwrap().mod_revision, 50);
    // History survives too: a watch from the start replays everything.
    let mut w = s.watch(b"", 1).await.unwrap();
    let mut n = 0;
    while n < 51 {
        w.next().await.unwrap().unwrap();
        n += 1;
    }
    assert_eq!(s.put(b"new", b"v").await.unwrap(), 52);
}
