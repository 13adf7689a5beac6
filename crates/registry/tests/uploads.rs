//! Upload sessions: idle ones hold no thread, are bounded per principal and in total, and
//! expire. Over the in-memory store and a temp blob directory; expiry on a paused clock
//! (`tokio::time::advance` moves the registry's clock, so minutes of idleness take none).

use std::sync::Arc;
use std::time::Duration;

use berth_clock::Clock;
use berth_registry::{Digest, Registry, RegistryConfig, UploadLimits};
use berth_store::{MemStore, Store};
use bytes::Bytes;

fn config() -> RegistryConfig {
    RegistryConfig {
        region: "us-east-1".into(),
        account_id: "000000000000".into(),
        host: "127.0.0.1:1".into(),
        create_on_push: true,
        bearer_challenge: false,
        tls: false,
    }
}

async fn registry(
    store: Arc<dyn Store>,
    dir: &std::path::Path,
    limits: UploadLimits,
) -> Arc<Registry> {
    Registry::open_with(config(), limits, Clock::system(), store, dir)
        .await
        .unwrap()
}

fn limits(per_principal: usize, total: usize, idle_secs: u64) -> UploadLimits {
    UploadLimits {
        per_principal,
        total,
        idle_timeout: Duration::from_secs(idle_secs),
    }
}

/// Push one blob as a client does: a first request with half the bytes, a second with the
/// rest that commits.
async fn push(r: &Registry, repo: &str, data: &[u8]) -> Digest {
    let id = r.start_upload(repo, "pusher").await.unwrap();
    let (a, b) = data.split_at(data.len() / 2);
    let mut s = r.open_upload(repo, &id).await.unwrap();
    for c in a.chunks(64 << 10) {
        s.write(Bytes::copy_from_slice(c)).await.unwrap();
    }
    s.flush().await.unwrap();
    drop(s);
    let mut s = r.open_upload(repo, &id).await.unwrap();
    assert_eq!(s.size(), a.len() as u64);
    for c in b.chunks(64 << 10) {
        s.write(Bytes::copy_from_slice(c)).await.unwrap();
    }
    let d = Digest::of(data);
    assert_eq!(r.complete_upload(s, &d).await.unwrap(), data.len() as u64);
    d
}

/// 600 idle sessions (each with a chunk written) on a runtime whose blocking pool has only 8
/// threads: a push and a read still complete at once. With a writer thread per session the
/// 9th session would pin the last thread and everything after it would hang.
#[test]
fn idle_sessions_hold_no_thread() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(8)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(MemStore::new());
        let r = registry(store, dir.path(), limits(1000, 1000, 300)).await;
        for i in 0..600 {
            let id = r.start_upload("app", "idler").await.unwrap();
            let mut s = r.open_upload("app", &id).await.unwrap();
            s.write(Bytes::from(format!("chunk {i}"))).await.unwrap();
            s.flush().await.unwrap();
        }
        let data: Vec<u8> = (0..4u32 << 20).map(|i| (i % 251) as u8).collect();
        let d = tokio::time::timeout(Duration::from_secs(20), push(&r, "app", &data))
            .await
            .expect("a push with 600 idle sessions open hung");
        let back = tokio::time::timeout(
            Duration::from_secs(20),
            tokio::fs::read(r.blob_store().path(&d)),
        )
        .await
        .expect("a read with 600 idle sessions open hung")
        .unwrap();
        assert!(back == data, "the pushed blob reads back");
        assert_eq!(r.blob("app", &d).await.unwrap(), data.len() as u64);
    });
}

#[tokio::test]
async fn a_digest_mismatch_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(MemStore::new());
    let r = registry(store, dir.path(), UploadLimits::default()).await;
    let id = r.start_upload("app", "p").await.unwrap();
    let mut s = r.open_upload("app", &id).await.unwrap();
    s.write(Bytes::from_static(b"some bytes")).await.unwrap();
    let e = r
        .complete_upload(s, &Digest::of(b"other bytes"))
        .await
        .unwrap_err();
    assert_eq!(e.code, "DIGEST_INVALID");
    assert!(
        r.blob_store()
            .stat(&Digest::of(b"some bytes"))
            .await
            .unwrap()
            .is_none()
    );
    assert!(r.blob_store().uploads().await.unwrap().is_empty());
}

#[tokio::test]
async fn upload_limits_answer_toomanyrequests() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(MemStore::new());
    let r = registry(store, dir.path(), limits(2, 3, 300)).await;
    let a1 = r.start_upload("app", "alice").await.unwrap();
    r.start_upload("app", "alice").await.unwrap();
    let e = r.start_upload("app", "alice").await.unwrap_err();
    assert_eq!((e.code, e.status), ("TOOMANYREQUESTS", 429));
    assert!(
        e.message.contains("alice") && e.message.contains("per principal"),
        "{e}"
    );
    // Another principal is not held up by alice's sessions, up to the total.
    r.start_upload("app", "bob").await.unwrap();
    let e = r.start_upload("app", "bob").await.unwrap_err();
    assert_eq!((e.code, e.status), ("TOOMANYREQUESTS", 429));
    assert!(e.message.contains("the registry has 3"), "{e}");
    // A refused start leaves nothing behind.
    assert_eq!(r.blob_store().uploads().await.unwrap().len(), 3);
    // Finishing one frees its place.
    let s = r.open_upload("app", &a1).await.unwrap();
    r.cancel_upload(s).await.unwrap();
    r.start_upload("app", "bob").await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn idle_upload_expires_but_a_busy_one_stays() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(MemStore::new());
    let idle = Duration::from_secs(300);
    let r = registry(store, dir.path(), limits(10, 10, 300)).await;
    let idle_id = r.start_upload("app", "p").await.unwrap();
    let mut s = r.open_upload("app", &idle_id).await.unwrap();
    s.write(Bytes::from_static(b"partial")).await.unwrap();
    s.flush().await.unwrap();
    drop(s);
    let busy_id = r.start_upload("app", "p").await.unwrap();
    let busy = r.open_upload("app", &busy_id).await.unwrap();
    tokio::time::advance(idle - Duration::from_secs(1)).await;
    assert_eq!(
        r.expire_uploads(idle).await.unwrap(),
        0,
        "not idle long enough"
    );
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(r.expire_uploads(idle).await.unwrap(), 1);
    let e = r.open_upload("app", &idle_id).await.err().unwrap();
    assert_eq!(e.code, "BLOB_UPLOAD_UNKNOWN");
    let files: Vec<String> = r
        .blob_store()
        .uploads()
        .await
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(files, vec![busy_id.clone()], "the idle one's file is gone");
    // The busy one carries on, and its idle time starts when its request ends.
    drop(busy);
    tokio::time::advance(idle - Duration::from_secs(1)).await;
    assert_eq!(r.expire_uploads(idle).await.unwrap(), 0);
    let s = r.open_upload("app", &busy_id).await.unwrap();
    r.complete_upload(s, &Digest::of(b"")).await.unwrap();
}

/// The registry's own expiry loop (a quarter of the idle timeout apart) removes a session
/// left idle, on its clock: five idle minutes pass in no real time.
#[tokio::test(start_paused = true)]
async fn the_expiry_loop_removes_sessions_left_idle() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(MemStore::new());
    let r = registry(store, dir.path(), limits(10, 10, 300)).await;
    Registry::spawn_upload_expiry(&r);
    let id = r.start_upload("app", "p").await.unwrap();
    tokio::time::sleep(Duration::from_secs(290)).await;
    assert!(r.open_upload("app", &id).await.is_ok(), "not idle for long");
    // Touched again at 290 s: it goes between 300 s and 375 s (one loop period) later.
    tokio::time::sleep(Duration::from_secs(299)).await;
    assert!(
        r.open_upload("app", &id).await.is_ok(),
        "still not idle for long"
    );
    tokio::time::sleep(Duration::from_secs(300 + 75 + 1)).await;
    assert_eq!(
        r.open_upload("app", &id).await.err().unwrap().code,
        "BLOB_UPLOAD_UNKNOWN"
    );
    assert!(r.blob_store().uploads().await.unwrap().is_empty());
}

#[tokio::test]
async fn sessions_of_an_earlier_process_resume_and_expire() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(MemStore::new());
    let first = registry(store.clone(), dir.path(), UploadLimits::default()).await;
    let (a, b) = (
        first.start_upload("app", "p").await.unwrap(),
        first.start_upload("app", "p").await.unwrap(),
    );
    for id in [&a, &b] {
        let mut s = first.open_upload("app", id).await.unwrap();
        s.write(Bytes::from_static(b"half ")).await.unwrap();
        s.flush().await.unwrap();
        drop(s);
        // A request's last write is not waited for (a process that stops loses at most
        // that write, and a resumed upload says what it has): wait for it here.
        let path = dir.path().join("uploads").join(id);
        for _ in 0..500 {
            if std::fs::metadata(&path).unwrap().len() == 5 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    drop(first);
    // From here on the clock moves only when the test says.
    tokio::time::pause();
    let second = registry(store, dir.path(), UploadLimits::default()).await;
    // One is picked up again where it was.
    let mut s = second.open_upload("app", &a).await.unwrap();
    assert_eq!(s.size(), 5);
    s.write(Bytes::from_static(b"whole")).await.unwrap();
    second
        .complete_upload(s, &Digest::of(b"half whole"))
        .await
        .unwrap();
    // The other, never touched again, goes with its file and record once its file is older
    // than the idle timeout by the registry's clock.
    let idle = UploadLimits::default().idle_timeout;
    assert_eq!(second.expire_uploads(idle).await.unwrap(), 0, "young");
    assert_eq!(second.blob_store().uploads().await.unwrap().len(), 1);
    tokio::time::advance(idle + Duration::from_secs(1)).await;
    assert_eq!(second.expire_uploads(idle).await.unwrap(), 1);
    assert!(second.blob_store().uploads().await.unwrap().is_empty());
    assert_eq!(
        second.open_upload("app", &b).await.err().unwrap().code,
        "BLOB_UPLOAD_UNKNOWN"
    );
}
