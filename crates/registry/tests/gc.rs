//! Garbage collection and lifecycle policies over the in-memory store and a temp blob
//! directory; the ones that wait do so on a paused clock (`tokio::time::advance` moves the
//! registry's clock, so days pass in no real time).

use std::sync::Arc;

use berth_registry::{Digest, Registry, RegistryConfig};
use berth_store::{
    KeyValue, MemStore, Op, RangeRequest, RangeResponse, Revision, Store, StoreError, Txn,
    TxnResponse, Watcher,
};

async fn registry(dir: &std::path::Path) -> Arc<Registry> {
    let store: Arc<dyn Store> = Arc::new(MemStore::new());
    Registry::open(
        RegistryConfig {
            region: "us-east-1".into(),
            account_id: "000000000000".into(),
            host: "127.0.0.1:1".into(),
            create_on_push: true,
            bearer_challenge: false,
            tls: false,
        },
        store,
        dir,
    )
    .await
    .unwrap()
}

async fn push_blob(r: &Registry, repo: &str, data: &[u8]) -> Digest {
    let id = r.start_upload(repo, "tester").await.unwrap();
    let mut s = r.open_upload(repo, &id).await.unwrap();
    s.write(bytes::Bytes::copy_from_slice(data)).await.unwrap();
    let d = Digest::of(data);
    r.complete_upload(s, &d).await.unwrap();
    d
}

#[tokio::test(start_paused = true)]
async fn unreferenced_blobs_go_young_and_referenced_stay() {
    let dir = tempfile::tempdir().unwrap();
    let r = registry(dir.path()).await;
    let cfg = push_blob(&r, "app", b"{}").await;
    let layer = push_blob(&r, "app", b"layer bytes").await;
    let orphan = push_blob(&r, "app", b"nobody refers to me").await;
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{cfg}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer}","size":11}}]}}"#
    );
    r.put_manifest("app", "v1", None, manifest.as_bytes())
        .await
        .unwrap();

    // Within the grace period nothing goes: a push may still be on its way.
    let rep = r.gc(3600.0, 86_400).await.unwrap();
    assert_eq!(rep.blobs_removed, 0);
    assert!(r.blob("app", &orphan).await.is_ok());

    // Past it (by the registry's clock), only the blob no manifest needs goes.
    tokio::time::advance(std::time::Duration::from_secs(3601)).await;
    let rep = r.gc(3600.0, 86_400).await.unwrap();
    assert_eq!((rep.links_removed, rep.blobs_removed), (1, 1));
    assert!(r.blob("app", &orphan).await.is_err());
    assert!(r.blob("app", &layer).await.is_ok());
    assert!(r.blob_store().stat(&orphan).await.unwrap().is_none());

    // A blob shared with another repository stays while that one links it.
    r.mount("other", "app", &layer).await.unwrap();
    let d = r.manifest("app", "v1").await.unwrap().digest;
    r.delete_manifest("app", &d).await.unwrap();
    let rep = r.gc(0.0, 86_400).await.unwrap();
    assert_eq!(
        rep.links_removed, 3,
        "app's config and layer links, other's layer link"
    );
    assert_eq!(rep.blobs_removed, 2);
    assert!(r.blob_store().stat(&layer).await.unwrap().is_none());
}

/// The maintenance loop applies a lifecycle policy as images age, then collects what the
/// expired image alone needed once the link grace has passed.
#[tokio::test(start_paused = true)]
async fn maintenance_expires_old_images_and_collects_their_blobs() {
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let r = registry(dir.path()).await;
    let cfg = push_blob(&r, "app", b"{}").await;
    let layer = push_blob(&r, "app", b"old layer").await;
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{cfg}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer}","size":9}}]}}"#
    );
    r.put_manifest("app", "v1", None, manifest.as_bytes())
        .await
        .unwrap();
    r.put_lifecycle_policy(berth_model::wire::ecr::PutLifecyclePolicyRequest {
        repository_name: Some("app".into()),
        lifecycle_policy_text: Some(
            r#"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"any","countType":"sinceImagePushed","countUnit":"days","countNumber":1},"action":{"type":"expire"}}]}"#
                .into(),
        ),
        ..Default::default()
    })
    .await
    .unwrap();
    assert!(r.manifest("app", "v1").await.is_ok(), "a young image stays");
    let hour = Duration::from_secs(3600);
    Registry::spawn_maintenance(&r, hour);
    // (Half-hours: never at the instant of a run, whose outcome would then be a race.)
    tokio::time::sleep(hour * 23 + hour / 2).await;
    assert!(r.manifest("app", "v1").await.is_ok(), "not a day old yet");
    assert!(r.blob_store().stat(&layer).await.unwrap().is_some());
    // A day old, and the next hourly run has passed: expired, and its blobs, linked long
    // before the link grace, collected in the same run.
    tokio::time::sleep(hour * 2).await;
    assert!(
        r.manifest("app", "v1").await.is_err(),
        "expired after a day"
    );
    assert!(r.blob_store().stat(&layer).await.unwrap().is_none());
    assert!(r.blob_store().stat(&cfg).await.unwrap().is_none());
}

#[tokio::test]
async fn idle_uploads_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let r = registry(dir.path()).await;
    let id = r.start_upload("app", "tester").await.unwrap();
    let mut s = r.open_upload("app", &id).await.unwrap();
    s.write(bytes::Bytes::from_static(b"partial"))
        .await
        .unwrap();
    drop(s);
    assert_eq!(r.gc(0.0, 3600).await.unwrap().uploads_removed, 0);
    assert_eq!(r.gc(0.0, 0).await.unwrap().uploads_removed, 1);
    assert!(r.open_upload("app", &id).await.is_err());
}

/// A store that stops one chosen call until the test lets it go, so that a manifest commit
/// and a collection interleave exactly as a test says.
struct GateStore {
    inner: MemStore,
    gate: parking_lot::Mutex<Option<Gate>>,
}

struct Gate {
    matches: fn(&Call<'_>) -> bool,
    reached: tokio::sync::oneshot::Sender<()>,
    release: tokio::sync::oneshot::Receiver<()>,
}

enum Call<'a> {
    Txn(&'a Txn),
    Range(&'a RangeRequest),
}

impl GateStore {
    /// Stop the first call that `matches`; returns (it was reached, let it go).
    fn arm(
        &self,
        matches: fn(&Call<'_>) -> bool,
    ) -> (
        tokio::sync::oneshot::Receiver<()>,
        tokio::sync::oneshot::Sender<()>,
    ) {
        let (reached_tx, reached) = tokio::sync::oneshot::channel();
        let (release, release_rx) = tokio::sync::oneshot::channel();
        *self.gate.lock() = Some(Gate {
            matches,
            reached: reached_tx,
            release: release_rx,
        });
        (reached, release)
    }

    async fn pass(&self, call: Call<'_>) {
        let gate = {
            let mut g = self.gate.lock();
            match g.as_ref() {
                Some(gate) if (gate.matches)(&call) => g.take(),
                _ => None,
            }
        };
        if let Some(gate) = gate {
            let _ = gate.reached.send(());
            let _ = gate.release.await;
        }
    }
}

#[async_trait::async_trait]
impl Store for GateStore {
    async fn get(&self, key: &[u8]) -> Result<Option<KeyValue>, StoreError> {
        self.inner.get(key).await
    }
    async fn range(&self, req: RangeRequest) -> Result<RangeResponse, StoreError> {
        self.pass(Call::Range(&req)).await;
        self.inner.range(req).await
    }
    async fn txn(&self, txn: Txn) -> Result<TxnResponse, StoreError> {
        self.pass(Call::Txn(&txn)).await;
        self.inner.txn(txn).await
    }
    async fn watch(&self, prefix: &[u8], from: Revision) -> Result<Watcher, StoreError> {
        self.inner.watch(prefix, from).await
    }
    async fn revision(&self) -> Result<Revision, StoreError> {
        self.inner.revision().await
    }
    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        self.inner.compact(revision).await
    }
}

fn puts_under(txn: &Txn, prefix: &str) -> bool {
    txn.success
        .iter()
        .any(|op| matches!(op, Op::Put { key, .. } if key.starts_with(prefix.as_bytes())))
}

fn deletes_under(txn: &Txn, prefix: &str) -> bool {
    txn.success
        .iter()
        .any(|op| matches!(op, Op::Delete { key } if key.starts_with(prefix.as_bytes())))
}

/// A registry over a [`GateStore`] with a config and a layer uploaded to `app` (linked, no
/// manifest yet), and the manifest that refers to them.
async fn race_setup(dir: &std::path::Path) -> (Arc<GateStore>, Arc<Registry>, Digest, String) {
    let gs = Arc::new(GateStore {
        inner: MemStore::new(),
        gate: parking_lot::Mutex::new(None),
    });
    let store: Arc<dyn Store> = gs.clone();
    let r = Registry::open(
        RegistryConfig {
            region: "us-east-1".into(),
            account_id: "000000000000".into(),
            host: "127.0.0.1:1".into(),
            create_on_push: true,
            bearer_challenge: false,
            tls: false,
        },
        store,
        dir,
    )
    .await
    .unwrap();
    let cfg = push_blob(&r, "app", b"{}").await;
    let layer = push_blob(&r, "app", b"layer bytes").await;
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{cfg}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer}","size":11}}]}}"#
    );
    (gs, r, layer, manifest)
}

/// Whatever the interleaving, a manifest that was committed has its blobs.
async fn assert_committed_manifest_is_whole(
    r: &Registry,
    put: Result<Digest, berth_registry::DistError>,
    layer: &Digest,
) {
    match put {
        Ok(_) => {
            assert!(r.manifest("app", "v1").await.is_ok());
            assert!(
                r.blob_store().stat(layer).await.unwrap().is_some(),
                "GC deleted the layer of a committed manifest"
            );
            assert!(
                r.blob("app", layer).await.is_ok(),
                "the layer's link is gone"
            );
        }
        Err(e) => {
            assert_eq!(e.code, "MANIFEST_BLOB_UNKNOWN", "{e}");
            assert!(r.manifest("app", "v1").await.is_err(), "nothing committed");
        }
    }
}

/// GC runs to the end while the manifest's commit waits between its check and its write.
#[tokio::test]
async fn gc_between_a_manifests_check_and_its_commit() {
    let dir = tempfile::tempdir().unwrap();
    let (gs, r, layer, manifest) = race_setup(dir.path()).await;
    let (reached, release) = gs.arm(|c| matches!(c, Call::Txn(t) if puts_under(t, "reg/m/")));
    let put = {
        let r = r.clone();
        tokio::spawn(async move { r.put_manifest("app", "v1", None, manifest.as_bytes()).await })
    };
    reached.await.unwrap();
    let rep = r.gc(0.0, 86_400).await.unwrap();
    assert_eq!(rep.blobs_removed, 2, "nothing referred to them yet");
    release.send(()).unwrap();
    let put = put.await.unwrap();
    assert!(put.is_err(), "the commit must notice its blobs went");
    assert_committed_manifest_is_whole(&r, put, &layer).await;
}

/// The manifest is committed after GC decided to drop its links, before GC deletes them.
#[tokio::test]
async fn manifest_commit_between_gcs_decision_and_its_delete() {
    let dir = tempfile::tempdir().unwrap();
    let (gs, r, layer, manifest) = race_setup(dir.path()).await;
    let (reached, release) = gs.arm(|c| matches!(c, Call::Txn(t) if deletes_under(t, "reg/l/")));
    let gc = {
        let r = r.clone();
        tokio::spawn(async move { r.gc(0.0, 86_400).await })
    };
    reached.await.unwrap();
    let put = r.put_manifest("app", "v1", None, manifest.as_bytes()).await;
    assert!(put.is_ok());
    release.send(()).unwrap();
    let rep = gc.await.unwrap().unwrap();
    assert_eq!((rep.links_removed, rep.blobs_removed), (0, 0));
    assert_committed_manifest_is_whole(&r, put, &layer).await;
}

/// The manifest is committed while GC has read the manifests but not yet listed the links.
#[tokio::test]
async fn manifest_commit_between_gcs_reads() {
    let dir = tempfile::tempdir().unwrap();
    let (gs, r, layer, manifest) = race_setup(dir.path()).await;
    // Whichever of its two listings GC makes second waits; the manifest commits meanwhile.
    let (reached, release) = gs.arm(|c| {
        matches!(c, Call::Range(q) if q.start.starts_with(b"reg/l/") || q.start.starts_with(b"reg/m/"))
    });
    let gc = {
        let r = r.clone();
        tokio::spawn(async move { r.gc(0.0, 86_400).await })
    };
    reached.await.unwrap();
    release.send(()).unwrap();
    // The first listing has gone through; stop the second.
    let (reached, release) = gs.arm(|c| {
        matches!(c, Call::Range(q) if q.start.starts_with(b"reg/l/") || q.start.starts_with(b"reg/m/"))
    });
    reached.await.unwrap();
    let put = r.put_manifest("app", "v1", None, manifest.as_bytes()).await;
    release.send(()).unwrap();
    gc.await.unwrap().unwrap();
    assert_committed_manifest_is_whole(&r, put, &layer).await;
}
