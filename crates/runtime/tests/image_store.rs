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
            tls: false,
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
    let server = tokio::spawn(berth_api::serve(
        listener,
        state,
        Default::default(),
        async {
            let _ = stop_rx.await;
        },
    ));

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

// --- Hostile registries: manifests and blobs berth's own registry would never store. ---

#[path = "../../client/tests/support/mini_registry.rs"]
mod mini_registry;

use mini_registry::MiniRegistry;

/// A sha256 digest, computed here (not with the code under test).
struct Digest(String);

impl Digest {
    fn of(data: &[u8]) -> Digest {
        use sha2::Digest as _;
        Digest(format!(
            "sha256:{}",
            hex::encode(sha2::Sha256::digest(data))
        ))
    }
    fn as_str(&self) -> &str {
        &self.0
    }
    fn hex(&self) -> &str {
        &self.0["sha256:".len()..]
    }
}

/// A tar layer of regular files; paths are written raw (a hostile layer may hold anything).
fn layer(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (p, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.as_gnu_mut().unwrap().name[..p.len()].copy_from_slice(p.as_bytes());
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap()
}

const CONFIG: &[u8] = br#"{"architecture":"amd64","os":"linux","config":{"Cmd":["/x"]},"rootfs":{"type":"layers","diff_ids":[]}}"#;

fn desc(digest: &str, size: u64) -> serde_json::Value {
    serde_json::json!({
        "mediaType": "application/vnd.oci.image.layer.v1.tar",
        "digest": digest,
        "size": size,
    })
}

fn manifest(config: serde_json::Value, layers: &[serde_json::Value]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": mini_registry::OCI_MANIFEST,
        "config": config,
        "layers": layers,
    }))
    .unwrap()
}

/// Serve an honest image (config + these layers) as `repo:tag`.
fn publish(reg: &MiniRegistry, repo: &str, tag: &str, layers: &[Vec<u8>]) {
    let cfg = Digest::of(CONFIG);
    reg.blob(repo, cfg.as_str(), CONFIG);
    let mut descs = Vec::new();
    for l in layers {
        let d = Digest::of(l);
        reg.blob(repo, d.as_str(), l);
        descs.push(desc(d.as_str(), l.len() as u64));
    }
    reg.manifest(
        repo,
        tag,
        &manifest(desc(cfg.as_str(), CONFIG.len() as u64), &descs),
    );
}

/// Every path under `dir`, relative, sorted.
fn tree(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            out.push(p.strip_prefix(dir).unwrap().display().to_string());
            if e.file_type().unwrap().is_dir() {
                todo.push(p);
            }
        }
    }
    out.sort();
    out
}

/// After a refused pull: no image, no blob but the ones listed, no temp file or directory.
fn assert_store_clean(store: &std::path::Path, blobs: &[&Digest]) {
    let mut want: Vec<String> = ["blobs", "blobs/sha256", "images", "refs", "tmp"]
        .iter()
        .map(|s| s.to_string())
        .chain(blobs.iter().map(|d| format!("blobs/sha256/{}", d.hex())))
        .collect();
    want.sort();
    assert_eq!(tree(store), want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_digests_never_name_files() {
    let reg = MiniRegistry::start().await;
    let client = reg.client();
    // `outside` stands for any host directory; `base` holds the store and is watched too.
    let outside = tempfile::tempdir().unwrap();
    let base = tempfile::tempdir().unwrap();
    let store_dir = base.path().join("store");
    let images = ImageStore::open(&store_dir).unwrap();
    // Host files a hostile manifest could name: a tar that would pass for a layer, a secret
    // that would pass for a config.
    let host_layer = layer(&[("pwned", b"from the host")]);
    let secret = br#"{"config":{"Env":["SECRET=host"]}}"#;
    for dir in [outside.path(), base.path()] {
        std::fs::write(dir.join("x"), &host_layer).unwrap();
        std::fs::write(dir.join("cfg"), secret).unwrap();
    }
    let before_outside = tree(outside.path());
    let cfg = Digest::of(CONFIG);
    reg.blob("app", cfg.as_str(), CONFIG);
    let good_cfg = desc(cfg.as_str(), CONFIG.len() as u64);
    let real = Digest::of(&host_layer);
    let n = host_layer.len() as u64;
    let abs = format!("sha256:{}/x", outside.path().display());
    let abs_cfg = format!("sha256:{}/cfg", outside.path().display());
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "absolute layer",
            manifest(good_cfg.clone(), &[desc(&abs, n)]),
        ),
        (
            "relative layer",
            manifest(good_cfg.clone(), &[desc("sha256:../../x", n)]),
        ),
        (
            "climbing layer",
            manifest(good_cfg.clone(), &[desc("sha256:../../../x", n)]),
        ),
        (
            "absolute config",
            manifest(desc(&abs_cfg, secret.len() as u64), &[]),
        ),
        (
            "upper-case hex",
            manifest(
                good_cfg.clone(),
                &[desc(&format!("sha256:{}", real.hex().to_uppercase()), n)],
            ),
        ),
        (
            "sha512",
            manifest(
                good_cfg.clone(),
                &[desc(&format!("sha512:{}", "a".repeat(128)), n)],
            ),
        ),
    ];
    for (i, (what, m)) in cases.iter().enumerate() {
        let tag = format!("t{i}");
        reg.manifest("app", &tag, m);
        let before = reg.asked().len();
        let err = images
            .ensure(
                &client,
                &format!("{}/app:{tag}", reg.addr),
                PullPolicy::Always,
            )
            .await
            .expect_err(what);
        assert!(err.to_string().contains("digest"), "{what}: {err}");
        let asked = &reg.asked()[before..];
        assert!(
            asked.iter().all(|p| !p.contains("/blobs/")),
            "{what}: nothing is fetched once a digest is refused: {asked:?}"
        );
        assert_eq!(tree(outside.path()), before_outside, "{what}");
        assert_eq!(
            tree(base.path())
                .iter()
                .filter(|p| !p.starts_with("store"))
                .count(),
            2
        );
        assert_store_clean(&store_dir, &[]);
    }
    let e = images
        .ensure(&client, &format!("{}/app:t5", reg.addr), PullPolicy::Always)
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("sha512 digests are not supported"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blobs_and_manifests_are_bounded() {
    let reg = MiniRegistry::start().await;
    let client = reg.client();
    let base = tempfile::tempdir().unwrap();
    let images = ImageStore::open(base.path()).unwrap();
    let l = layer(&[("hello", b"world")]);
    let d = Digest::of(&l);
    let n = l.len() as u64;
    let cfg = Digest::of(CONFIG);
    let good_cfg = desc(cfg.as_str(), CONFIG.len() as u64);
    // The digest is right in every case: only the size is wrong.
    for (i, (what, size, chunked)) in [
        (
            "longer than its size, said by Content-Length",
            n - 10,
            false,
        ),
        ("longer than its size, streamed", n - 10, true),
        ("shorter than its size, streamed", n + 10, true),
    ]
    .into_iter()
    .enumerate()
    {
        let repo = format!("r{i}");
        reg.blob(&repo, cfg.as_str(), CONFIG);
        if chunked {
            reg.blob_chunked(&repo, d.as_str(), &l);
        } else {
            reg.blob(&repo, d.as_str(), &l);
        }
        reg.manifest(
            &repo,
            "1",
            &manifest(good_cfg.clone(), &[desc(d.as_str(), size)]),
        );
        let err = images
            .ensure(
                &client,
                &format!("{}/{repo}:1", reg.addr),
                PullPolicy::Always,
            )
            .await
            .expect_err(what);
        assert!(err.to_string().contains("descriptor says"), "{what}: {err}");
        assert_store_clean(base.path(), &[&cfg]);
    }
    // A manifest past 4 MiB (valid JSON, honest blobs) is refused.
    let mut big: serde_json::Value =
        serde_json::from_slice(&manifest(good_cfg.clone(), &[desc(d.as_str(), n)])).unwrap();
    big["annotations"] = serde_json::json!({"pad": "x".repeat(4 << 20)});
    reg.blob("big", cfg.as_str(), CONFIG);
    reg.blob("big", d.as_str(), &l);
    reg.manifest("big", "1", &serde_json::to_vec(&big).unwrap());
    let err = images
        .ensure(&client, &format!("{}/big:1", reg.addr), PullPolicy::Always)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("longer than"), "{err}");
    // A config that says it is larger than 4 MiB is not fetched.
    reg.manifest(
        "big",
        "2",
        &manifest(desc(cfg.as_str(), (4 << 20) + 1), &[desc(d.as_str(), n)]),
    );
    let err = images
        .ensure(&client, &format!("{}/big:2", reg.addr), PullPolicy::Always)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("more than"), "{err}");
    assert_store_clean(base.path(), &[&cfg]);
    // The same blobs with honest descriptors make an image.
    publish(&reg, "ok", "1", std::slice::from_ref(&l));
    let img = images
        .ensure(&client, &format!("{}/ok:1", reg.addr), PullPolicy::Always)
        .await
        .unwrap();
    assert_eq!(std::fs::read(img.rootfs.join("hello")).unwrap(), b"world");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_layers_leave_nothing_behind() {
    let reg = MiniRegistry::start().await;
    let client = reg.client();
    let base = tempfile::tempdir().unwrap();
    std::fs::write(base.path().join("sentinel"), b"keep").unwrap();
    let store_dir = base.path().join("store");
    let images = ImageStore::open(&store_dir).unwrap();
    let first = layer(&[("a/keep", b"k")]);
    for (i, (what, hostile)) in [
        ("whiteout of the parent", layer(&[(".wh...", b"")])),
        ("nested whiteout of the parent", layer(&[("a/.wh...", b"")])),
        (
            "path climbing out",
            layer(&[("../../../sentinel", b"pwned")]),
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let repo = format!("h{i}");
        publish(&reg, &repo, "1", &[first.clone(), hostile.clone()]);
        let err = images
            .ensure(
                &client,
                &format!("{}/{repo}:1", reg.addr),
                PullPolicy::Always,
            )
            .await
            .expect_err(what);
        assert!(err.to_string().contains("refused"), "{what}: {err}");
        assert_eq!(
            std::fs::read(base.path().join("sentinel")).unwrap(),
            b"keep",
            "{what}"
        );
        assert_eq!(
            tree(base.path())
                .iter()
                .filter(|p| !p.starts_with("store"))
                .count(),
            1
        );
        let blobs = [Digest::of(CONFIG), Digest::of(&first), Digest::of(&hostile)];
        assert_store_clean(&store_dir, &blobs.iter().collect::<Vec<_>>());
        for b in &blobs[2..] {
            std::fs::remove_file(store_dir.join("blobs/sha256").join(b.hex())).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distinct_references_are_cached_apart() {
    let reg = MiniRegistry::start().await;
    let client = reg.client();
    let base = tempfile::tempdir().unwrap();
    let images = ImageStore::open(base.path()).unwrap();
    publish(&reg, "a/b", "1", &[layer(&[("who", b"a/b")])]);
    publish(&reg, "a_b", "1", &[layer(&[("who", b"a_b")])]);
    for repo in ["a/b", "a_b"] {
        let img = images
            .ensure(&client, &format!("{}/{repo}:1", reg.addr), PullPolicy::Once)
            .await
            .unwrap();
        assert_eq!(
            std::fs::read(img.rootfs.join("who")).unwrap(),
            repo.as_bytes()
        );
    }
}
