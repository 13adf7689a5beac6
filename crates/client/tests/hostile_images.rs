//! `berth pull` (an image into an OCI layout) from a hostile registry, and `berth push` of a
//! hostile `docker save` archive: nothing outside the destination or the archive is read or
//! written.

#[path = "support/mini_registry.rs"]
mod mini_registry;

use std::path::Path;

use berth_client::ImageRef;
use berth_client::image::{self, ConfigOptions};
use mini_registry::MiniRegistry;
use serde_json::json;

fn sha256(data: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

fn desc(digest: &str, size: usize) -> serde_json::Value {
    json!({"mediaType": "application/octet-stream", "digest": digest, "size": size})
}

fn manifest(config: serde_json::Value, layers: &[serde_json::Value]) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": mini_registry::OCI_MANIFEST,
        "config": config,
        "layers": layers,
    }))
    .unwrap()
}

fn files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            out.push(e.path().strip_prefix(dir).unwrap().display().to_string());
            if e.file_type().unwrap().is_dir() {
                todo.push(e.path());
            }
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn pull_into_a_layout_refuses_hostile_descriptors() {
    let reg = MiniRegistry::start().await;
    let client = reg.client();
    let outside = tempfile::tempdir().unwrap();
    let host = b"a host file that must not be taken for a blob".to_vec();
    std::fs::write(outside.path().join("x"), &host).unwrap();
    let cfg = br#"{"config":{}}"#.to_vec();
    let cfg_d = sha256(&cfg);
    let layer = b"layer bytes".to_vec();
    let layer_d = sha256(&layer);
    let abs = format!("sha256:{}/x", outside.path().display());
    let child = manifest(desc(&cfg_d, cfg.len()), &[desc(&layer_d, layer.len())]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "absolute digest",
            manifest(desc(&cfg_d, cfg.len()), &[desc(&abs, host.len())]),
        ),
        (
            "relative digest",
            manifest(desc(&cfg_d, cfg.len()), &[desc("sha256:../../x", 1)]),
        ),
        (
            "index entry",
            serde_json::to_vec(&json!({"manifests": [desc(&abs, child.len())]})).unwrap(),
        ),
        (
            "blob longer than its descriptor",
            manifest(desc(&cfg_d, cfg.len()), &[desc(&layer_d, layer.len() - 1)]),
        ),
    ];
    for (i, (what, m)) in cases.iter().enumerate() {
        let repo = format!("r{i}");
        reg.blob(&repo, &cfg_d, &cfg);
        reg.blob_chunked(&repo, &layer_d, &layer);
        reg.blob(&repo, &abs, &host);
        reg.manifest(&repo, "1", m);
        let dest = tempfile::tempdir().unwrap();
        let src = ImageRef::parse(&format!("{}/{repo}:1", reg.addr)).unwrap();
        image::pull(&client, &src, dest.path())
            .await
            .expect_err(what);
        assert_eq!(files(outside.path()), ["x"], "{what}");
        assert_eq!(std::fs::read(outside.path().join("x")).unwrap(), host);
        let left: Vec<String> = files(dest.path())
            .into_iter()
            .filter(|f| f.starts_with("blobs/sha256/") && !f.ends_with(&cfg_d[7..]))
            .collect();
        assert!(left.is_empty(), "{what}: {left:?}");
        assert!(
            !reg.asked()
                .iter()
                .any(|p| p.contains(&format!("/{repo}/blobs/sha256:/"))
                    || p.contains(&format!("/{repo}/blobs/sha256:.."))),
            "{what}: a refused digest was fetched"
        );
    }
    // Honest descriptors: the same blobs make a layout.
    reg.blob("ok", &cfg_d, &cfg);
    reg.blob_chunked("ok", &layer_d, &layer);
    reg.manifest("ok", "1", &child);
    let dest = tempfile::tempdir().unwrap();
    let src = ImageRef::parse(&format!("{}/ok:1", reg.addr)).unwrap();
    let d = image::pull(&client, &src, dest.path()).await.unwrap();
    assert_eq!(d, sha256(&child));
    let blob = dest.path().join("blobs/sha256").join(&layer_d[7..]);
    assert_eq!(std::fs::read(blob).unwrap(), layer);
}

/// A `docker save` archive whose manifest names files outside itself.
fn docker_save(dir: &Path, config: &str, symlink: Option<(&str, &Path)>) -> std::path::PathBuf {
    let mut b = tar::Builder::new(Vec::new());
    let m = serde_json::to_vec(&json!([{"Config": config, "Layers": []}])).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_size(m.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, "manifest.json", &m[..]).unwrap();
    if let Some((name, target)) = symlink {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, name, target).unwrap();
    }
    let p = dir.join("image.tar");
    std::fs::write(&p, b.into_inner().unwrap()).unwrap();
    p
}

#[test]
fn docker_save_archives_cannot_name_host_files() {
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("secret.json");
    std::fs::write(&secret, br#"{"secret":"host"}"#).unwrap();
    let work = tempfile::tempdir().unwrap();
    let abs = secret.display().to_string();
    for (what, archive) in [
        ("absolute path", docker_save(work.path(), &abs, None)),
        (
            "climbing path",
            docker_save(work.path(), &format!("../../../../../../../..{abs}"), None),
        ),
        (
            "symlink to the host",
            docker_save(work.path(), "cfg.json", Some(("cfg.json", &secret))),
        ),
    ] {
        let err = image::build(&archive, &ConfigOptions::default())
            .err()
            .unwrap_or_else(|| panic!("{what}: a host file was taken into the image"));
        assert!(
            err.to_string().contains("cfg.json") || err.to_string().contains("secret"),
            "{what}: {err}"
        );
    }
}
