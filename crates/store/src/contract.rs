//! The contract every [`Store`] implementation must pass. Each check takes a fresh, empty
//! store; `run_all` runs every one. Implementations call it from their own tests.

use std::sync::Arc;
use std::time::Duration;

use crate::{
    Compare, CompareOp, CompareTarget, EventKind, Op, RangeRequest, Store, StoreError, Txn,
};

async fn next_batch(w: &mut crate::Watcher) -> crate::WatchResponse {
    tokio::time::timeout(Duration::from_secs(5), w.next())
        .await
        .expect("watch delivered nothing within 5 s")
        .expect("watch closed")
        .expect("watch error")
}

async fn nothing_more(w: &mut crate::Watcher) {
    let r = tokio::time::timeout(Duration::from_millis(50), w.next()).await;
    assert!(r.is_err(), "unexpected extra watch event: {r:?}");
}

pub async fn put_get_versions(s: &dyn Store) {
    assert_eq!(s.revision().await.unwrap(), 0);
    assert_eq!(s.get(b"a").await.unwrap(), None);
    let r1 = s.put(b"a", b"1").await.unwrap();
    assert_eq!(r1, 1);
    let r2 = s.put(b"a", b"2").await.unwrap();
    assert_eq!(r2, 2);
    let kv = s.get(b"a").await.unwrap().unwrap();
    assert_eq!(kv.value, b"2");
    assert_eq!(kv.create_revision, 1);
    assert_eq!(kv.mod_revision, 2);
    assert_eq!(kv.version, 2);
    let r3 = s.delete(b"a").await.unwrap();
    assert_eq!(r3, 3);
    assert_eq!(s.get(b"a").await.unwrap(), None);
    // Deleting what is not there writes nothing and does not bump the revision.
    assert_eq!(s.delete(b"a").await.unwrap(), 3);
    s.put(b"a", b"again").await.unwrap();
    let kv = s.get(b"a").await.unwrap().unwrap();
    assert_eq!(
        (kv.create_revision, kv.version),
        (4, 1),
        "recreated after delete"
    );
    assert_eq!(s.revision().await.unwrap(), 4);
}

pub async fn compares(s: &dyn Store) {
    s.put(b"k", b"v").await.unwrap(); // rev 1
    let cases: Vec<(Compare, bool)> = vec![
        (Compare::exists("k"), true),
        (Compare::missing("k"), false),
        (Compare::missing("nope"), true),
        (Compare::exists("nope"), false),
        (Compare::mod_revision_is("k", 1), true),
        (Compare::mod_revision_is("k", 2), false),
        (Compare::mod_revision_is("nope", 0), true),
        (
            Compare {
                key: b"k".to_vec(),
                op: CompareOp::Greater,
                target: CompareTarget::CreateRevision(0),
            },
            true,
        ),
        (
            Compare {
                key: b"k".to_vec(),
                op: CompareOp::Less,
                target: CompareTarget::Version(1),
            },
            false,
        ),
        (
            Compare {
                key: b"k".to_vec(),
                op: CompareOp::NotEqual,
                target: CompareTarget::Version(7),
            },
            true,
        ),
        (
            Compare {
                key: b"k".to_vec(),
                op: CompareOp::Equal,
                target: CompareTarget::Value(b"v".to_vec()),
            },
            true,
        ),
        (
            Compare {
                key: b"k".to_vec(),
                op: CompareOp::Greater,
                target: CompareTarget::Value(b"a".to_vec()),
            },
            true,
        ),
        (
            Compare {
                key: b"nope".to_vec(),
                op: CompareOp::NotEqual,
                target: CompareTarget::Value(b"v".to_vec()),
            },
            false,
        ),
    ];
    for (i, (c, want)) in cases.into_iter().enumerate() {
        let r = s
            .txn(Txn {
                compare: vec![c.clone()],
                success: vec![Op::put("ok", format!("{i}"))],
                failure: vec![Op::put("failed", format!("{i}"))],
            })
            .await
            .unwrap();
        assert_eq!(r.succeeded, want, "case {i}: {c:?}");
        let which: &[u8] = if want { b"ok" } else { b"failed" };
        assert_eq!(
            s.get(which).await.unwrap().unwrap().value,
            format!("{i}").into_bytes()
        );
    }
    // A failed compare with no failure ops writes nothing.
    let before = s.revision().await.unwrap();
    let r = s
        .txn(Txn {
            compare: vec![Compare::missing("k")],
            success: vec![Op::put("x", "y")],
            failure: vec![],
        })
        .await
        .unwrap();
    assert!(!r.succeeded);
    assert_eq!(r.revision, before);
    assert_eq!(s.get(b"x").await.unwrap(), None);
}

pub async fn multi_op_txn_is_one_revision(s: &dyn Store) {
    let r = s
        .txn(Txn::ops(vec![
            Op::put("a", "1"),
            Op::put("b", "2"),
            Op::put("c", "3"),
        ]))
        .await
        .unwrap();
    assert_eq!(r.revision, 1);
    for k in [b"a", b"b", b"c"] {
        assert_eq!(s.get(k).await.unwrap().unwrap().mod_revision, 1);
    }
    let r = s
        .txn(Txn::ops(vec![Op::DeleteRange {
            start: b"a".to_vec(),
            end: b"c".to_vec(),
        }]))
        .await
        .unwrap();
    assert_eq!(r.revision, 2);
    assert_eq!(s.get(b"a").await.unwrap(), None);
    assert_eq!(s.get(b"b").await.unwrap(), None);
    assert!(s.get(b"c").await.unwrap().is_some());
}

pub async fn ranges(s: &dyn Store) {
    for k in ["p/1", "p/2", "p/3", "q/1", "p0"] {
        s.put(k.as_bytes(), b"v").await.unwrap();
    }
    s.put(&[b'z', 0xff], b"v").await.unwrap();
    s.put(&[b'z', 0xff, 0xff], b"v").await.unwrap();
    let r = s.range(RangeRequest::prefix("p/")).await.unwrap();
    let keys: Vec<_> = r.kvs.iter().map(|k| k.key.clone()).collect();
    assert_eq!(
        keys,
        vec![b"p/1".to_vec(), b"p/2".to_vec(), b"p/3".to_vec()]
    );
    assert!(!r.more);
    assert_eq!(r.revision, 7);
    let mut req = RangeRequest::prefix("p/");
    req.limit = 2;
    req.keys_only = true;
    let r = s.range(req).await.unwrap();
    assert_eq!(r.kvs.len(), 2);
    assert!(r.more);
    assert!(r.kvs[0].value.is_empty());
    let r = s
        .range(RangeRequest::prefix(vec![b'z', 0xff]))
        .await
        .unwrap();
    assert_eq!(r.kvs.len(), 2, "0xff prefix reaches to the end");
    let r = s
        .range(RangeRequest {
            start: b"q/1".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(r.kvs.len(), 1, "empty end: exactly one key");
    let all = s
        .range(RangeRequest {
            start: vec![],
            end: vec![0],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.kvs.len(), 7);
}

pub async fn watch_replay_then_live(s: &dyn Store) {
    s.put(b"w/a", b"1").await.unwrap(); // 1
    s.put(b"other", b"1").await.unwrap(); // 2
    s.put(b"w/b", b"1").await.unwrap(); // 3
    s.delete(b"w/a").await.unwrap(); // 4
    let mut w = s.watch(b"w/", 1).await.unwrap();
    let b = next_batch(&mut w).await;
    assert_eq!((b.revision, b.events[0].kind), (1, EventKind::Put));
    let b = next_batch(&mut w).await;
    assert_eq!(b.revision, 3, "revision 2 has no matching event");
    let b = next_batch(&mut w).await;
    assert_eq!((b.revision, b.events[0].kind), (4, EventKind::Delete));
    assert_eq!(b.events[0].kv.mod_revision, 4);
    s.put(b"w/c", b"1").await.unwrap(); // 5
    s.put(b"zzz", b"1").await.unwrap(); // 6
    s.txn(Txn::ops(vec![Op::put("w/d", "1"), Op::put("w/e", "1")]))
        .await
        .unwrap(); // 7
    let b = next_batch(&mut w).await;
    assert_eq!(b.revision, 5);
    let b = next_batch(&mut w).await;
    assert_eq!((b.revision, b.events.len()), (7, 2));
    nothing_more(&mut w).await;

    // From 0: only what comes next.
    let mut w0 = s.watch(b"", 0).await.unwrap();
    nothing_more(&mut w0).await;
    s.put(b"x", b"1").await.unwrap(); // 8
    assert_eq!(next_batch(&mut w0).await.revision, 8);
}

pub async fn watch_has_no_gap_under_concurrent_writes(s: Arc<dyn Store>) {
    let writer = {
        let s = s.clone();
        tokio::spawn(async move {
            for i in 0..200 {
                s.put(format!("g/{i}").as_bytes(), b"v").await.unwrap();
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(5)).await;
    let mut w = s.watch(b"g/", 1).await.unwrap();
    writer.await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 200 {
        let b = next_batch(&mut w).await;
        seen.push(b.revision);
    }
    let want: Vec<i64> = (1..=200).collect();
    assert_eq!(seen, want, "every revision once, in order");
    nothing_more(&mut w).await;
}

pub async fn compaction(s: &dyn Store) {
    for i in 0..10 {
        s.put(b"c", format!("{i}").as_bytes()).await.unwrap();
    }
    s.compact(5).await.unwrap();
    match s.watch(b"", 3).await {
        Err(StoreError::Compacted {
            compact_revision, ..
        }) => assert_eq!(compact_revision, 5),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("watch from a compacted revision must fail"),
    }
    let mut w = s.watch(b"", 5).await.unwrap();
    assert_eq!(next_batch(&mut w).await.revision, 5);
    assert_eq!(s.get(b"c").await.unwrap().unwrap().value, b"9");
}

pub async fn concurrent_cas_counter(s: Arc<dyn Store>) {
    s.put(b"n", b"0").await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..100 {
                loop {
                    let cur = s.get(b"n").await.unwrap().unwrap();
                    let n: i64 = String::from_utf8(cur.value).unwrap().parse().unwrap();
                    let r = s
                        .txn(Txn {
                            compare: vec![Compare::mod_revision_is("n", cur.mod_revision)],
                            success: vec![Op::put("n", (n + 1).to_string())],
                            failure: vec![],
                        })
                        .await
                        .unwrap();
                    if r.succeeded {
                        break;
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let v = s.get(b"n").await.unwrap().unwrap();
    assert_eq!(v.value, b"6400");
    assert_eq!(v.version, 6401);
}

/// Run every check, each on a fresh store from `make`.
pub async fn run_all<F: FnMut() -> Arc<dyn Store>>(mut make: F) {
    put_get_versions(&*make()).await;
    compares(&*make()).await;
    multi_op_txn_is_one_revision(&*make()).await;
    ranges(&*make()).await;
    watch_replay_then_live(&*make()).await;
    watch_has_no_gap_under_concurrent_writes(make()).await;
    compaction(&*make()).await;
    concurrent_cas_counter(make()).await;
}
