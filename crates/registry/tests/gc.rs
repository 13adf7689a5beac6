//! Garbage collection over the in-memory store and a temp blob directory.

use std::sync::Arc;

use berth_registry::{Digest, Registry, RegistryConfig};
use berth_store::{MemStore, Store};

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

#[tokio::test]
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

    // Past it, only the blob no manifest needs goes.
    let rep = r.gc(0.0, 86_400).await.unwrap();
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
