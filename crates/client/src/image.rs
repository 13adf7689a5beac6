//! Images on the client side: build one from a directory (packed as one layer), a rootfs
//! tarball, a `docker save` archive or an OCI image layout; push it with progress bars; pull
//! one into an OCI image layout.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::digest::{Digest, Document};
use crate::registry::{ImageRef, RegistryClient};
use crate::{ClientError, io_err};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";

/// Runtime settings written into the image config.
#[derive(Debug, Clone, Default)]
pub struct ConfigOptions {
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub env: Vec<String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
}

/// A blob on disk.
#[derive(Debug, Clone)]
pub struct BlobFile {
    pub digest: String,
    pub size: u64,
    pub path: PathBuf,
}

/// An image ready to push: its blobs and manifests (children first for an index).
pub struct Built {
    pub blobs: Vec<BlobFile>,
    /// (media type, bytes) of each manifest; the last one is the image's top manifest.
    pub manifests: Vec<(String, Vec<u8>)>,
    /// Keeps generated files alive until the push is done.
    pub _work: tempfile::TempDir,
}

struct HashWriter<W: Write> {
    inner: W,
    hash: Sha256,
    n: u64,
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn sha256_file(p: &Path) -> Result<(String, u64), ClientError> {
    let mut f = BufReader::new(File::open(p).map_err(io_err("open", p))?);
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf).map_err(io_err("read", p))?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((format!("sha256:{}", hex::encode(h.finalize())), n))
}

/// Pack a directory as a gzipped layer: (blob, diff id). Entries are in a stable order with
/// fixed times and root ownership, so the same tree gives the same digest.
fn layer_from_dir(dir: &Path, work: &Path) -> Result<(BlobFile, String), ClientError> {
    let out = work.join("layer.tar.gz");
    let f = File::create(&out).map_err(io_err("create", &out))?;
    let gz_hash = HashWriter {
        inner: BufWriter::new(f),
        hash: Sha256::new(),
        n: 0,
    };
    let gz = flate2::write::GzEncoder::new(gz_hash, flate2::Compression::fast());
    let tar_hash = HashWriter {
        inner: gz,
        hash: Sha256::new(),
        n: 0,
    };
    let mut b = tar::Builder::new(tar_hash);
    b.mode(tar::HeaderMode::Deterministic);
    b.follow_symlinks(false);
    b.append_dir_all(".", dir).map_err(io_err("pack", dir))?;
    let tar_hash = b.into_inner().map_err(io_err("pack", dir))?;
    let diff_id = format!("sha256:{}", hex::encode(tar_hash.hash.finalize()));
    let gz_hash = tar_hash.inner.finish().map_err(io_err("compress", &out))?;
    let digest = format!("sha256:{}", hex::encode(gz_hash.hash.clone().finalize()));
    let size = gz_hash.n;
    let mut w = gz_hash.inner;
    w.flush().map_err(io_err("write", &out))?;
    Ok((
        BlobFile {
            digest,
            size,
            path: out,
        },
        diff_id,
    ))
}

fn platform_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn config_json(opts: &ConfigOptions, diff_ids: &[String]) -> Vec<u8> {
    let mut c = serde_json::Map::new();
    if let Some(e) = &opts.entrypoint {
        c.insert("Entrypoint".into(), json!(e));
    }
    if let Some(cmd) = &opts.cmd {
        c.insert("Cmd".into(), json!(cmd));
    }
    let mut env = opts.env.clone();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(
            0,
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        );
    }
    c.insert("Env".into(), json!(env));
    if let Some(w) = &opts.workdir {
        c.insert("WorkingDir".into(), json!(w));
    }
    if let Some(u) = &opts.user {
        c.insert("User".into(), json!(u));
    }
    serde_json::to_vec(&json!({
        "architecture": platform_arch(),
        "os": "linux",
        "config": c,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap_or_default()
}

fn write_blob(work: &Path, data: &[u8]) -> Result<BlobFile, ClientError> {
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(data)));
    let path = work.join(digest.replace(':', "-"));
    std::fs::write(&path, data).map_err(io_err("write", &path))?;
    Ok(BlobFile {
        digest,
        size: data.len() as u64,
        path,
    })
}

fn image_manifest(config: &BlobFile, layers: &[(BlobFile, &str)]) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config.digest, "size": config.size},
        "layers": layers.iter().map(|(l, mt)| json!({"mediaType": mt, "digest": l.digest, "size": l.size})).collect::<Vec<_>>(),
    }))
    .unwrap_or_default()
}

/// Build an image from `src`: an OCI layout directory, a `docker save` archive, a rootfs
/// tarball, or a directory (its contents become the image's filesystem).
pub fn build(src: &Path, opts: &ConfigOptions) -> Result<Built, ClientError> {
    let work = tempfile::tempdir().map_err(io_err("create temp dir", Path::new("/tmp")))?;
    let meta = std::fs::metadata(src).map_err(io_err("stat", src))?;
    if meta.is_dir() && src.join("oci-layout").exists() {
        return from_oci_layout(src, work);
    }
    if meta.is_dir() {
        let (layer, diff) = layer_from_dir(src, work.path())?;
        let cfg = write_blob(work.path(), &config_json(opts, std::slice::from_ref(&diff)))?;
        let manifest = image_manifest(&cfg, &[(layer.clone(), OCI_LAYER_GZIP)]);
        return Ok(Built {
            blobs: vec![cfg, layer],
            manifests: vec![(OCI_MANIFEST.to_string(), manifest)],
            _work: work,
        });
    }
    // A file: look inside for docker save / OCI archive markers.
    let extracted = work.path().join("x");
    let names = tar_names(src)?;
    if names.iter().any(|n| n == "manifest.json") && !names.iter().any(|n| n == "oci-layout") {
        unpack(src, &extracted)?;
        return from_docker_save(&extracted, work);
    }
    if names.iter().any(|n| n == "oci-layout") {
        unpack(src, &extracted)?;
        return from_oci_layout(&extracted.clone(), work);
    }
    // A rootfs tarball: its bytes (gzipped or not) are the layer.
    let (digest, size) = sha256_file(src)?;
    let gz = is_gzip(src)?;
    let diff = if gz {
        let mut d = flate2::read::GzDecoder::new(BufReader::new(
            File::open(src).map_err(io_err("open", src))?,
        ));
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let k = d.read(&mut buf).map_err(io_err("decompress", src))?;
            if k == 0 {
                break;
            }
            h.update(&buf[..k]);
        }
        format!("sha256:{}", hex::encode(h.finalize()))
    } else {
        digest.clone()
    };
    let layer = BlobFile {
        digest,
        size,
        path: src.to_path_buf(),
    };
    let cfg = write_blob(work.path(), &config_json(opts, std::slice::from_ref(&diff)))?;
    let mt = if gz { OCI_LAYER_GZIP } else { OCI_LAYER_TAR };
    let manifest = image_manifest(&cfg, &[(layer.clone(), mt)]);
    Ok(Built {
        blobs: vec![cfg, layer],
        manifests: vec![(OCI_MANIFEST.to_string(), manifest)],
        _work: work,
    })
}

fn is_gzip(p: &Path) -> Result<bool, ClientError> {
    let mut f = File::open(p).map_err(io_err("open", p))?;
    let mut m = [0u8; 2];
    Ok(f.read_exact(&mut m).is_ok() && m == [0x1f, 0x8b])
}

fn tar_names(p: &Path) -> Result<Vec<String>, ClientError> {
    let f = File::open(p).map_err(io_err("open", p))?;
    let mut a = tar::Archive::new(BufReader::new(f));
    let mut out = Vec::new();
    let Ok(entries) = a.entries() else {
        return Ok(out);
    };
    for e in entries.take(10_000) {
        let Ok(e) = e else { break };
        if let Ok(path) = e.path() {
            out.push(path.to_string_lossy().trim_start_matches("./").to_string());
        }
    }
    Ok(out)
}

/// Unpack an archive of image metadata and blobs (not a rootfs: no device files or links
/// are needed, and the tar crate refuses paths that escape `dest`).
fn unpack(p: &Path, dest: &Path) -> Result<(), ClientError> {
    let f = File::open(p).map_err(io_err("open", p))?;
    let mut a = tar::Archive::new(BufReader::new(f));
    std::fs::create_dir_all(dest).map_err(io_err("create", dest))?;
    a.unpack(dest).map_err(io_err("unpack", p))
}

fn read_json(p: &Path) -> Result<Value, ClientError> {
    let b = std::fs::read(p).map_err(io_err("read", p))?;
    serde_json::from_slice(&b).map_err(|e| ClientError::Invalid(format!("{}: {e}", p.display())))
}

fn from_docker_save(dir: &Path, work: tempfile::TempDir) -> Result<Built, ClientError> {
    let m = read_json(&dir.join("manifest.json"))?;
    let first = &m[0];
    let cfg_path = inside(dir, first["Config"].as_str().unwrap_or_default())?;
    let cfg_bytes = std::fs::read(&cfg_path).map_err(io_err("read", &cfg_path))?;
    let cfg = write_blob(work.path(), &cfg_bytes)?;
    let mut layers = Vec::new();
    for l in first["Layers"].as_array().cloned().unwrap_or_default() {
        let p = inside(dir, l.as_str().unwrap_or_default())?;
        let (digest, size) = sha256_file(&p)?;
        let mt = if is_gzip(&p)? {
            OCI_LAYER_GZIP
        } else {
            OCI_LAYER_TAR
        };
        layers.push((
            BlobFile {
                digest,
                size,
                path: p,
            },
            mt,
        ));
    }
    let manifest = image_manifest(&cfg, &layers);
    let mut blobs = vec![cfg];
    blobs.extend(layers.into_iter().map(|(b, _)| b));
    Ok(Built {
        blobs,
        manifests: vec![(OCI_MANIFEST.to_string(), manifest)],
        _work: work,
    })
}

/// The blob `digest` (parsed strictly: it becomes a file name) of the layout at `dir`.
fn layout_blob(dir: &Path, digest: &str) -> Result<BlobFile, ClientError> {
    let digest = Digest::parse(digest)?;
    let path = inside(dir, &format!("blobs/sha256/{}", digest.hex()))?;
    let size = std::fs::metadata(&path)
        .map_err(io_err("stat", &path))?
        .len();
    Ok(BlobFile {
        digest: digest.to_string(),
        size,
        path,
    })
}

/// `dir/name`, refused unless it names a regular file inside `dir` once symlinks are
/// resolved (a `docker save` manifest or an unpacked archive could point anywhere).
fn inside(dir: &Path, name: &str) -> Result<PathBuf, ClientError> {
    let refuse = |why: &str| ClientError::Invalid(format!("{name:?} in {}: {why}", dir.display()));
    let rel = Path::new(name);
    if rel.is_absolute()
        || rel.components().any(|c| {
            !matches!(
                c,
                std::path::Component::Normal(_) | std::path::Component::CurDir
            )
        })
    {
        return Err(refuse("not a relative path inside the image"));
    }
    let path = dir.join(rel);
    let real = path.canonicalize().map_err(io_err("resolve", &path))?;
    let base = dir.canonicalize().map_err(io_err("resolve", dir))?;
    if !real.starts_with(&base) {
        return Err(refuse("resolves outside the image"));
    }
    if !real.is_file() {
        return Err(refuse("not a regular file"));
    }
    Ok(path)
}

fn from_oci_layout(dir: &Path, work: tempfile::TempDir) -> Result<Built, ClientError> {
    let index = read_json(&dir.join("index.json"))?;
    let top = index["manifests"][0].clone();
    let mut blobs = Vec::new();
    let mut manifests = Vec::new();
    collect_manifest(dir, &top, 0, &mut blobs, &mut manifests)?;
    Ok(Built {
        blobs,
        manifests,
        _work: work,
    })
}

/// Indexes nest at most this deep in a layout (a hostile layout could make a cycle: its
/// files are found by name, not verified).
const MAX_NESTING: usize = 8;

fn collect_manifest(
    dir: &Path,
    desc: &Value,
    depth: usize,
    blobs: &mut Vec<BlobFile>,
    manifests: &mut Vec<(String, Vec<u8>)>,
) -> Result<(), ClientError> {
    let digest = desc["digest"].as_str().unwrap_or_default();
    let b = layout_blob(dir, digest)?;
    if depth > MAX_NESTING || b.size > crate::digest::MAX_DOCUMENT {
        return Err(ClientError::Invalid(format!(
            "{}: manifest {digest} is nested too deep or too large",
            dir.display()
        )));
    }
    let bytes = std::fs::read(&b.path).map_err(io_err("read", &b.path))?;
    let v: Value =
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Invalid(e.to_string()))?;
    let mt = desc["mediaType"]
        .as_str()
        .or(v["mediaType"].as_str())
        .unwrap_or(OCI_MANIFEST)
        .to_string();
    if let Some(children) = v["manifests"].as_array() {
        for c in children {
            collect_manifest(dir, c, depth + 1, blobs, manifests)?;
        }
    } else {
        let refs =
            std::iter::once(&v["config"]).chain(v["layers"].as_array().into_iter().flatten());
        for r in refs {
            if let Some(d) = r["digest"].as_str() {
                blobs.push(layout_blob(dir, d)?);
            }
        }
    }
    manifests.push((mt, bytes));
    Ok(())
}

fn bar(mp: &MultiProgress, len: u64, label: &str) -> ProgressBar {
    let pb = mp.add(ProgressBar::new(len));
    pb.set_style(
        ProgressStyle::with_template(
            "{prefix:>14} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    pb.set_prefix(label.to_string());
    pb
}

fn short(d: &str) -> String {
    d.trim_start_matches("sha256:").chars().take(12).collect()
}

/// Push a built image to `dest` (blobs the registry already has are skipped). Returns the
/// top manifest's digest.
pub async fn push(
    client: &RegistryClient,
    dest: &ImageRef,
    img: &Built,
) -> Result<String, ClientError> {
    let mp = MultiProgress::new();
    let mut seen = std::collections::BTreeSet::new();
    for b in &img.blobs {
        if !seen.insert(b.digest.clone()) {
            continue;
        }
        let pb = Arc::new(bar(&mp, b.size, &short(&b.digest)));
        if client.blob_exists(&dest.repo, &b.digest).await?.is_some() {
            pb.finish_with_message("exists");
            continue;
        }
        let p = pb.clone();
        client
            .push_blob(&dest.repo, &b.digest, &b.path, &move |n| p.set_position(n))
            .await?;
        pb.finish();
    }
    let mut last = String::new();
    let n = img.manifests.len();
    for (i, (mt, bytes)) in img.manifests.iter().enumerate() {
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(bytes)));
        let reference = if i + 1 == n {
            dest.reference.clone()
        } else {
            digest.clone()
        };
        last = client
            .put_manifest(&dest.repo, &reference, mt, bytes)
            .await?;
    }
    Ok(last)
}

/// Most manifests one pull walks (an index, its images, nested indexes).
const MAX_MANIFESTS: usize = 1000;

/// Pull `src` into an OCI image layout at `dest` (created if needed; blobs already there
/// are kept). Every digest is parsed strictly and every blob read exactly as large as its
/// descriptor says. Returns the manifest digest.
pub async fn pull(
    client: &RegistryClient,
    src: &ImageRef,
    dest: &Path,
) -> Result<String, ClientError> {
    let blobs_dir = dest.join("blobs").join("sha256");
    tokio::fs::create_dir_all(&blobs_dir)
        .await
        .map_err(io_err("create", &blobs_dir))?;
    let (mt, bytes) = client.get_manifest(&src.repo, &src.reference).await?;
    let digest = Digest::of(&bytes);
    let mp = MultiProgress::new();
    let mut todo: Vec<(String, Vec<u8>)> = vec![(mt.clone(), bytes.clone())];
    let mut all = Vec::new();
    while let Some((mt, body)) = todo.pop() {
        match Document::parse(&body)? {
            Document::Index { manifests } => {
                if all.len() + todo.len() + manifests.len() >= MAX_MANIFESTS {
                    return Err(ClientError::Invalid(format!(
                        "{}: more than {MAX_MANIFESTS} manifests",
                        src.reference
                    )));
                }
                for m in &manifests {
                    todo.push(client.get_manifest_for(&src.repo, &m.manifest).await?);
                }
            }
            Document::Image { config, layers } => {
                for d in std::iter::once(&config).chain(&layers) {
                    let path = blobs_dir.join(d.digest.hex());
                    if tokio::fs::metadata(&path)
                        .await
                        .is_ok_and(|m| m.is_file() && m.len() == d.size)
                    {
                        continue;
                    }
                    let pb = Arc::new(bar(&mp, d.size, &short(d.digest.as_str())));
                    let p = pb.clone();
                    client
                        .pull_blob(&src.repo, d, &path, &move |n| p.set_position(n))
                        .await?;
                    pb.finish();
                }
            }
        }
        all.push((mt, body));
    }
    for (_, body) in &all {
        let p = blobs_dir.join(Digest::of(body).hex());
        tokio::fs::write(&p, body)
            .await
            .map_err(io_err("write", &p))?;
    }
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": mt,
            "digest": digest.as_str(),
            "size": bytes.len(),
            "annotations": {"org.opencontainers.image.ref.name": src.reference},
        }],
    });
    let ip = dest.join("index.json");
    tokio::fs::write(&ip, index.to_string())
        .await
        .map_err(io_err("write", &ip))?;
    let lp = dest.join("oci-layout");
    tokio::fs::write(&lp, r#"{"imageLayoutVersion":"1.0.0"}"#)
        .await
        .map_err(io_err("write", &lp))?;
    Ok(digest.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_layers_are_reproducible() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("bin")).unwrap();
        std::fs::write(d.path().join("bin/hello"), b"#!/bin/sh\necho hi\n").unwrap();
        let a = build(d.path(), &ConfigOptions::default()).unwrap();
        let b = build(d.path(), &ConfigOptions::default()).unwrap();
        assert_eq!(
            a.manifests[0].1, b.manifests[0].1,
            "same tree, same manifest"
        );
        let m: Value = serde_json::from_slice(&a.manifests[0].1).unwrap();
        assert_eq!(m["layers"][0]["mediaType"], OCI_LAYER_GZIP);
        let cfg: Value = serde_json::from_slice(&std::fs::read(&a.blobs[0].path).unwrap()).unwrap();
        assert_eq!(cfg["rootfs"]["diff_ids"].as_array().unwrap().len(), 1);
        // The blob on disk is what its digest says.
        for blob in &a.blobs {
            assert_eq!(sha256_file(&blob.path).unwrap().0, blob.digest);
        }
    }
}
