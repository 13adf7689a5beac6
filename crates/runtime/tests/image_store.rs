//! The image store against berth's real registry (in-process, on an ephemeral loopback port):
//! push with the client, pull + verify + unpack with the store.

use std::sync::Arc;

use berth_client::image::{self, ConfigOptions};
use berth_client::{AwsClient, ImageRef, RegistryAuth, RegistryClient};
use berth_runtime::{ImageStore, PullPolicy};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_unpack_and_cache() {
    let store: Arc<dyn berth_store::Store> = Arc::new(berth_store::MemStore::new());
    let control = berth_control::Control::open(
        berth_control::ControlConfig {
            region: "us-east-1".into(),
            account_id: "000000000000".into(),
            ..Default::default()
        },
        store.clone(),
    )
    .await
    .unwrap();
    let key = control.ensure_root_key().await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let blobs = tempfile::tempdir().unwrap();
    let registry = berth_registry::Registry::open(
        berth_registry::RegistryConfig {
            region: "us-east-1".into(),
            account_id: "000000000000".into(),
            host: addr.to_string(),
            create_on_push: true,
            bearer_challenge: false,
        },
        store,
        blobs.path(),
    )
    .await
    .unwrap();
    let state = Arc::new(berth_api::AppState::new(
        control,
        Some(registry),
        berth_api::Metrics::new(),
    ));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(berth_api::serve(listener, state, async {
        let _ = stop_rx.await;
    }));

    // An image from a directory: busybox-like tree with a symlink and a nested file.
    let src = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(src.path().join("bin")).unwrap();
    std::fs::write(src.path().join("bin/tool"), b"#!/bin/sh\necho tool\n").unwrap();
    std::os::unix::fs::symlink("tool", src.path().join("bin/alias")).unwrap();
    std::fs::create_dir_all(src.path().join("etc/app")).unwrap();
    std::fs::write(src.path().join("etc/app/conf"), b"x=1\n").unwrap();
    let built = image::build(
        src.path(),
        &ConfigOptions {
            cmd: Some(vec!["/bin/tool".into()]),
            ..Default::default()
        },
    )
    .unwrap();
    let aws = AwsClient::new(
        &format!("http://{addr}"),
        "us-east-1",
        berth_auth::Credentials {
            access_key_id: key.access_key_id,
            secret_access_key: key.secret_access_key,
            session_token: None,
        },
    );
    let client = RegistryClient::new(
        &addr.to_string(),
        RegistryAuth::Basic {
            user: "AWS".into(),
            password: aws.ecr_password().await.unwrap(),
        },
    );
    let name = format!("{addr}/apps/tool:1");
    let pushed = image::push(&client, &ImageRef::parse(&name).unwrap(), &built)
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let images = ImageStore::open(dir.path()).unwrap();
    let img = images
        .ensure(&client, &name, PullPolicy::Default)
        .await
        .unwrap();
    assert_eq!(img.manifest_digest, pushed);
    assert_eq!(
        std::fs::read(img.rootfs.join("bin/tool")).unwrap(),
        b"#!/bin/sh\necho tool\n"
    );
    assert_eq!(
        std::fs::read_link(img.rootfs.join("bin/alias")).unwrap(),
        std::path::Path::new("tool")
    );
    assert_eq!(
        std::fs::read(img.rootfs.join("etc/app/conf")).unwrap(),
        b"x=1\n"
    );
    assert_eq!(img.config["Cmd"], serde_json::json!(["/bin/tool"]));

    // Cached: with the registry gone, `Once` and `Default` still have the image; `Always`
    // must fail.
    let _ = stop_tx.send(());
    server.await.unwrap().unwrap();
    let again = images
        .ensure(&client, &name, PullPolicy::Once)
        .await
        .unwrap();
    assert_eq!(again.manifest_digest, pushed);
    let fallback = images
        .ensure(&client, &name, PullPolicy::Default)
        .await
        .unwrap();
    assert_eq!(fallback.manifest_digest, pushed);
    assert!(
        images
            .ensure(&client, &name, PullPolicy::Always)
            .await
            .is_err()
    );
    // Unknown image: a clear error.
    assert!(
        images
            .ensure(&client, &format!("{addr}/apps/nope:1"), PullPolicy::Always)
            .await
            .is_err()
    );
}
