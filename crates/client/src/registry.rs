//! An OCI distribution client: authentication, blob and manifest push (chunked and
//! resumable), and verified pulls: manifests by a strictly parsed digest and at most
//! [`MAX_DOCUMENT`] bytes, blobs by descriptor (exactly its size, its digest, into a
//! random temp file renamed into place only once verified).

use std::path::Path;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::sync::Mutex;

use crate::digest::{Descriptor, Digest, MAX_DOCUMENT};
use crate::tls::{TlsTrust, describe, is_untrusted};
use crate::{ClientError, HttpClient, http_client, io_err};

/// Chunk size of PATCH uploads.
const CHUNK: usize = 16 << 20;

/// `host[:port]/repo[/more]:tag` or `…@sha256:…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    pub host: String,
    pub repo: String,
    /// A tag or a digest.
    pub reference: String,
}

impl ImageRef {
    pub fn parse(s: &str) -> Result<ImageRef, ClientError> {
        let bad =
            || ClientError::Invalid(format!("'{s}' is not host[:port]/repository[:tag|@digest]"));
        let (host, rest) = s.split_once('/').ok_or_else(bad)?;
        if !(host.contains('.') || host.contains(':') || host == "localhost") {
            return Err(bad());
        }
        let (repo, reference) = if let Some((r, d)) = rest.split_once('@') {
            (r, d.to_string())
        } else {
            match rest.rsplit_once(':') {
                Some((r, t)) if !t.contains('/') => (r, t.to_string()),
                _ => (rest, "latest".to_string()),
            }
        };
        if repo.is_empty() || reference.is_empty() {
            return Err(bad());
        }
        Ok(ImageRef {
            host: host.to_string(),
            repo: repo.to_string(),
            reference,
        })
    }
}

/// Credentials for a registry.
#[derive(Debug, Clone)]
pub enum RegistryAuth {
    Anonymous,
    Basic { user: String, password: String },
}

pub struct RegistryClient {
    http: HttpClient,
    /// `https://host` or `http://host`; may fall back from the first to the second once.
    base: std::sync::Mutex<String>,
    /// Plain HTTP allowed for this host (loopback, or said insecure), tried when TLS fails.
    fallback: Option<String>,
    auth: RegistryAuth,
    bearer: Mutex<Option<String>>,
}

fn hv(s: &str) -> Result<HeaderValue, ClientError> {
    HeaderValue::from_str(s).map_err(|e| ClientError::Invalid(e.to_string()))
}

/// The `errors[0]` of an OCI error body.
fn oci_error(status: StatusCode, body: &[u8]) -> ClientError {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or(serde_json::Value::Null);
    let e = &v["errors"][0];
    ClientError::Registry {
        status: status.as_u16(),
        code: e["code"].as_str().unwrap_or("UNKNOWN").to_string(),
        message: e["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned()),
    }
}

/// Parse `Bearer realm="…",service="…",scope="…"`.
fn bearer_params(v: &str) -> Option<Vec<(String, String)>> {
    let rest = v.strip_prefix("Bearer ")?;
    let mut out = Vec::new();
    for part in rest.split(',') {
        let (k, val) = part.trim().split_once('=')?;
        out.push((k.to_string(), val.trim_matches('"').to_string()));
    }
    Some(out)
}

impl RegistryClient {
    /// A client for `host` over plain HTTP (berth's registry on loopback and test hosts).
    /// A registry by host: HTTPS, except that a loopback host (`localhost`, `127.0.0.0/8`,
    /// `::1`) may fall back to plain HTTP, as Docker treats it.
    pub fn new(host: &str, auth: RegistryAuth) -> RegistryClient {
        let name = host
            .rsplit_once(':')
            .filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()))
            .map_or(host, |(h, _)| h)
            .trim_start_matches('[')
            .trim_end_matches(']');
        let loopback = name == "localhost"
            || name
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        RegistryClient {
            http: http_client(&TlsTrust::system()),
            base: std::sync::Mutex::new(format!("https://{host}")),
            fallback: loopback.then(|| format!("http://{host}")),
            auth,
            bearer: Mutex::new(None),
        }
    }

    /// A registry at a base URL whose scheme is known (`http://host:port`, `https://…`).
    pub fn with_base(base: &str, auth: RegistryAuth) -> RegistryClient {
        RegistryClient {
            http: http_client(&TlsTrust::system()),
            base: std::sync::Mutex::new(base.trim_end_matches('/').to_string()),
            fallback: None,
            auth,
            bearer: Mutex::new(None),
        }
    }

    /// The same client, trusting the HTTPS servers `trust` trusts (instead of the system's
    /// roots and `AWS_CA_BUNDLE` only).
    pub fn with_trust(mut self, trust: &TlsTrust) -> RegistryClient {
        self.http = http_client(trust);
        self
    }

    /// A registry reached over plain HTTP (an insecure registry, as Docker calls it).
    pub fn insecure(host: &str, auth: RegistryAuth) -> RegistryClient {
        Self::with_base(&format!("http://{host}"), auth)
    }

    fn base(&self) -> String {
        self.base.lock().map(|b| b.clone()).unwrap_or_default()
    }

    async fn auth_header(&self) -> Option<String> {
        if let Some(t) = self.bearer.lock().await.clone() {
            return Some(format!("Bearer {t}"));
        }
        match &self.auth {
            RegistryAuth::Anonymous => None,
            RegistryAuth::Basic { user, password } => {
                use base64::Engine;
                Some(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
                ))
            }
        }
    }

    fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_string()
        } else {
            format!("{}{path}", self.base())
        }
    }

    /// A request to the registry's current base, with the credentials it takes.
    async fn request(
        &self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
        body: &Bytes,
    ) -> Result<http::Request<Full<Bytes>>, ClientError> {
        let mut req = http::Request::builder()
            .method(method.clone())
            .uri(self.url(path))
            .body(Full::new(body.clone()))
            .map_err(|e| ClientError::Http(e.to_string()))?;
        *req.headers_mut() = headers.clone();
        if let Some(a) = self.auth_header().await {
            req.headers_mut().insert(header::AUTHORIZATION, hv(&a)?);
        }
        Ok(req)
    }

    /// Send a request; follow one Bearer challenge by fetching a token.
    async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<http::Response<Incoming>, ClientError> {
        for attempt in 0..2 {
            let req = self.request(&method, path, headers, &body).await?;
            let resp = match self.http.request(req).await {
                Ok(r) => r,
                Err(e) => {
                    // TLS refused by a loopback registry speaking plain HTTP: switch for good.
                    // (Not when it speaks TLS with a certificate we do not trust: say that.)
                    let base = self.base();
                    match &self.fallback {
                        Some(f)
                            if base.starts_with("https://")
                                && !path.starts_with("http")
                                && !is_untrusted(&e) =>
                        {
                            tracing::debug!("{base}: {}; trying {f}", describe(&e));
                            if let Ok(mut b) = self.base.lock() {
                                *b = f.clone();
                            }
                            let req = self.request(&method, path, headers, &body).await?;
                            self.http
                                .request(req)
                                .await
                                .map_err(|e| ClientError::Http(format!("{f}: {}", describe(&e))))?
                        }
                        _ => return Err(ClientError::Http(format!("{base}: {}", describe(&e)))),
                    }
                }
            };
            if resp.status() == StatusCode::UNAUTHORIZED && attempt == 0 {
                let challenge = resp
                    .headers()
                    .get(header::WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                if let Some(params) = challenge.as_deref().and_then(bearer_params) {
                    self.fetch_token(&params).await?;
                    continue;
                }
            }
            return Ok(resp);
        }
        Err(ClientError::Http("authentication failed".into()))
    }

    async fn fetch_token(&self, params: &[(String, String)]) -> Result<(), ClientError> {
        let get = |k: &str| params.iter().find(|(a, _)| a == k).map(|(_, v)| v.clone());
        let realm = get("realm")
            .ok_or_else(|| ClientError::Invalid("Bearer challenge without realm".into()))?;
        let mut url = realm;
        let mut sep = if url.contains('?') { '&' } else { '?' };
        for k in ["service", "scope"] {
            if let Some(v) = get(k) {
                url.push(sep);
                url.push_str(&format!("{k}={v}"));
                sep = '&';
            }
        }
        let mut req = http::Request::get(url)
            .body(Full::new(Bytes::new()))
            .map_err(|e| ClientError::Http(e.to_string()))?;
        if let RegistryAuth::Basic { user, password } = &self.auth {
            use base64::Engine;
            req.headers_mut().insert(
                header::AUTHORIZATION,
                hv(&format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
                ))?,
            );
        }
        let resp = self
            .http
            .request(req)
            .await
            .map_err(|e| ClientError::Http(describe(&e)))?;
        let status = resp.status();
        let body = collect(resp).await?;
        if !status.is_success() {
            return Err(oci_error(status, &body));
        }
        let v: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| ClientError::Invalid(e.to_string()))?;
        let t = v["token"]
            .as_str()
            .or(v["access_token"].as_str())
            .ok_or_else(|| ClientError::Invalid("token endpoint answered no token".into()))?;
        *self.bearer.lock().await = Some(t.to_string());
        Ok(())
    }

    /// Size of a blob, if the repository has it.
    pub async fn blob_exists(&self, repo: &str, digest: &str) -> Result<Option<u64>, ClientError> {
        let resp = self
            .send(
                Method::HEAD,
                &format!("/v2/{repo}/blobs/{digest}"),
                &HeaderMap::new(),
                Bytes::new(),
            )
            .await?;
        match resp.status() {
            StatusCode::OK => Ok(resp
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())),
            StatusCode::NOT_FOUND => Ok(None),
            s => Err(oci_error(s, &collect(resp).await?)),
        }
    }

    /// Upload a blob from a file in chunks, resuming after a failed chunk from the offset
    /// the registry reports. `progress` is told how many bytes went.
    pub async fn push_blob(
        &self,
        repo: &str,
        digest: &str,
        path: &Path,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<(), ClientError> {
        let resp = self
            .send(
                Method::POST,
                &format!("/v2/{repo}/blobs/uploads/"),
                &HeaderMap::new(),
                Bytes::new(),
            )
            .await?;
        if resp.status() != StatusCode::ACCEPTED {
            let s = resp.status();
            return Err(oci_error(s, &collect(resp).await?));
        }
        let mut location = location(&resp)?;
        let mut f = tokio::fs::File::open(path)
            .await
            .map_err(io_err("open", path))?;
        let size = f.metadata().await.map_err(io_err("stat", path))?.len();
        let mut offset = 0u64;
        let mut failures = 0;
        let mut buf = vec![0u8; CHUNK];
        while offset < size {
            f.seek(std::io::SeekFrom::Start(offset))
                .await
                .map_err(io_err("seek", path))?;
            let want = CHUNK.min((size - offset) as usize);
            f.read_exact(&mut buf[..want])
                .await
                .map_err(io_err("read", path))?;
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, hv("application/octet-stream")?);
            h.insert(
                header::CONTENT_RANGE,
                hv(&format!("{offset}-{}", offset + want as u64 - 1))?,
            );
            let r = self
                .send(
                    Method::PATCH,
                    &location,
                    &h,
                    Bytes::copy_from_slice(&buf[..want]),
                )
                .await;
            match r {
                Ok(resp) if resp.status() == StatusCode::ACCEPTED => {
                    location = location_or(&resp, &location);
                    offset += want as u64;
                    progress(offset);
                    failures = 0;
                }
                other => {
                    // Resume from what the registry actually has.
                    failures += 1;
                    if failures > 3 {
                        return match other {
                            Ok(resp) => {
                                let s = resp.status();
                                Err(oci_error(s, &collect(resp).await?))
                            }
                            Err(e) => Err(e),
                        };
                    }
                    let st = self
                        .send(Method::GET, &location, &HeaderMap::new(), Bytes::new())
                        .await?;
                    offset = st
                        .headers()
                        .get(header::RANGE)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|r| r.split('-').nth(1))
                        .and_then(|e| e.parse::<u64>().ok())
                        .map_or(0, |e| e + 1);
                    if st
                        .headers()
                        .get(header::RANGE)
                        .and_then(|v| v.to_str().ok())
                        == Some("0-0")
                    {
                        offset = 0;
                    }
                }
            }
        }
        let sep = if location.contains('?') { '&' } else { '?' };
        let resp = self
            .send(
                Method::PUT,
                &format!("{location}{sep}digest={digest}"),
                &HeaderMap::new(),
                Bytes::new(),
            )
            .await?;
        if resp.status() != StatusCode::CREATED {
            let s = resp.status();
            return Err(oci_error(s, &collect(resp).await?));
        }
        Ok(())
    }

    /// Upload a small blob in one request.
    pub async fn push_blob_bytes(&self, repo: &str, data: &[u8]) -> Result<String, ClientError> {
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(data)));
        if self.blob_exists(repo, &digest).await?.is_some() {
            return Ok(digest);
        }
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, hv("application/octet-stream")?);
        let resp = self
            .send(
                Method::POST,
                &format!("/v2/{repo}/blobs/uploads/?digest={digest}"),
                &h,
                Bytes::copy_from_slice(data),
            )
            .await?;
        if resp.status() != StatusCode::CREATED {
            let s = resp.status();
            return Err(oci_error(s, &collect(resp).await?));
        }
        Ok(digest)
    }

    /// Store a manifest under a tag (or its digest); returns its digest.
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> Result<String, ClientError> {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, hv(media_type)?);
        let resp = self
            .send(
                Method::PUT,
                &format!("/v2/{repo}/manifests/{reference}"),
                &h,
                Bytes::copy_from_slice(body),
            )
            .await?;
        if resp.status() != StatusCode::CREATED {
            let s = resp.status();
            return Err(oci_error(s, &collect(resp).await?));
        }
        Ok(format!("sha256:{}", hex::encode(Sha256::digest(body))))
    }

    /// Fetch a manifest: (media type, bytes), at most [`MAX_DOCUMENT`] bytes. A reference
    /// that looks like a digest must be a valid one, and the bytes are verified against it.
    pub async fn get_manifest(
        &self,
        repo: &str,
        reference: &str,
    ) -> Result<(String, Vec<u8>), ClientError> {
        if reference.contains(':') {
            let d = Digest::parse(reference)?;
            let (mt, body) = self.fetch_manifest(repo, d.as_str(), MAX_DOCUMENT).await?;
            verify_manifest(&d, &body)?;
            return Ok((mt, body));
        }
        self.fetch_manifest(repo, reference, MAX_DOCUMENT).await
    }

    /// Fetch the manifest a descriptor names: exactly `size` bytes (at most
    /// [`MAX_DOCUMENT`]) with its digest.
    pub async fn get_manifest_for(
        &self,
        repo: &str,
        desc: &Descriptor,
    ) -> Result<(String, Vec<u8>), ClientError> {
        if desc.size > MAX_DOCUMENT {
            return Err(ClientError::Invalid(format!(
                "manifest {} says it is {} bytes, more than the {MAX_DOCUMENT} allowed",
                desc.digest, desc.size
            )));
        }
        let (mt, body) = self
            .fetch_manifest(repo, desc.digest.as_str(), desc.size)
            .await?;
        if body.len() as u64 != desc.size {
            return Err(ClientError::Invalid(format!(
                "manifest {} arrived with {} bytes, its descriptor says {}",
                desc.digest,
                body.len(),
                desc.size
            )));
        }
        verify_manifest(&desc.digest, &body)?;
        Ok((mt, body))
    }

    async fn fetch_manifest(
        &self,
        repo: &str,
        reference: &str,
        limit: u64,
    ) -> Result<(String, Vec<u8>), ClientError> {
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCEPT,
            hv("application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json")?,
        );
        let resp = self
            .send(
                Method::GET,
                &format!("/v2/{repo}/manifests/{reference}"),
                &h,
                Bytes::new(),
            )
            .await?;
        let status = resp.status();
        let mt = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        if !status.is_success() {
            return Err(oci_error(status, &collect(resp).await?));
        }
        let body = collect_at_most(resp, limit)
            .await
            .map_err(|e| ClientError::Invalid(format!("manifest {reference}: {e}")))?;
        Ok((mt, body.to_vec()))
    }

    /// Download the blob `desc` names into `dest`. Reads at most `desc.size` bytes and fails
    /// unless exactly that many arrive with the right digest. The bytes go to a temp file
    /// with a random name beside `dest` (removed on every failure) and are renamed to `dest`
    /// only once verified.
    pub async fn pull_blob(
        &self,
        repo: &str,
        desc: &Descriptor,
        dest: &Path,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<u64, ClientError> {
        let digest = &desc.digest;
        let resp = self
            .send(
                Method::GET,
                &format!("/v2/{repo}/blobs/{digest}"),
                &HeaderMap::new(),
                Bytes::new(),
            )
            .await?;
        if resp.status() != StatusCode::OK {
            let s = resp.status();
            return Err(oci_error(s, &collect(resp).await?));
        }
        let announced = resp
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if let Some(len) = announced.filter(|l| *l != desc.size) {
            return Err(ClientError::Invalid(format!(
                "blob {digest} is {len} bytes, its descriptor says {}",
                desc.size
            )));
        }
        let dir = dest.parent().unwrap_or(Path::new("."));
        let tmp = tempfile::Builder::new()
            .prefix(PARTIAL_PREFIX)
            .tempfile_in(dir)
            .map_err(io_err("create temp file in", dir))?;
        let (file, tmp_path) = tmp.into_parts();
        let mut f = tokio::fs::File::from_std(file);
        let mut h = Sha256::new();
        let mut n = 0u64;
        let mut body = resp.into_body();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| ClientError::Http(e.to_string()))?;
            if let Ok(data) = frame.into_data() {
                n += data.len() as u64;
                if n > desc.size {
                    return Err(ClientError::Invalid(format!(
                        "blob {digest} is longer than the {} bytes its descriptor says",
                        desc.size
                    )));
                }
                h.update(&data);
                f.write_all(&data)
                    .await
                    .map_err(io_err("write", &tmp_path))?;
                progress(n);
            }
        }
        if n != desc.size {
            return Err(ClientError::Invalid(format!(
                "blob {digest} ended after {n} of the {} bytes its descriptor says",
                desc.size
            )));
        }
        let got = Digest::from_hasher(h);
        if &got != digest {
            return Err(ClientError::Invalid(format!(
                "blob {digest} arrived with digest {got}"
            )));
        }
        f.sync_all().await.map_err(io_err("sync", &tmp_path))?;
        drop(f);
        tmp_path
            .persist(dest)
            .map_err(|e| io_err("rename", dest)(e.error))?;
        Ok(n)
    }
}

/// Temp files of blobs being downloaded start with this (so stores can tell them apart).
pub const PARTIAL_PREFIX: &str = ".partial-";

fn verify_manifest(want: &Digest, body: &[u8]) -> Result<(), ClientError> {
    let got = Digest::of(body);
    if &got != want {
        return Err(ClientError::Invalid(format!(
            "manifest digest {got} does not match {want}"
        )));
    }
    Ok(())
}

fn location(resp: &http::Response<Incoming>) -> Result<String, ClientError> {
    resp.headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .ok_or_else(|| ClientError::Invalid("upload answer without Location".into()))
}

fn location_or(resp: &http::Response<Incoming>, old: &str) -> String {
    location(resp).unwrap_or_else(|_| old.to_string())
}

/// A whole (small) answer body: token, error, upload status; at most [`MAX_DOCUMENT`] bytes.
async fn collect(resp: http::Response<Incoming>) -> Result<Bytes, ClientError> {
    collect_at_most(resp, MAX_DOCUMENT).await
}

/// A body of at most `limit` bytes; a longer one is refused without reading the rest.
async fn collect_at_most(resp: http::Response<Incoming>, limit: u64) -> Result<Bytes, ClientError> {
    let mut out = Vec::new();
    let mut body = resp.into_body();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ClientError::Http(e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            if (out.len() + data.len()) as u64 > limit {
                return Err(ClientError::Invalid(format!(
                    "answer is longer than the {limit} bytes allowed"
                )));
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_refs() {
        let r = ImageRef::parse("127.0.0.1:8470/team/web:1").unwrap();
        assert_eq!(
            (r.host.as_str(), r.repo.as_str(), r.reference.as_str()),
            ("127.0.0.1:8470", "team/web", "1")
        );
        let r = ImageRef::parse("localhost/web").unwrap();
        assert_eq!(r.reference, "latest");
        let d = format!("sha256:{}", "a".repeat(64));
        let r = ImageRef::parse(&format!("host.example:5000/web@{d}")).unwrap();
        assert_eq!(r.reference, d);
        assert!(ImageRef::parse("web:1").is_err());
        assert!(ImageRef::parse("host:1/").is_err());
        let p = bearer_params(r#"Bearer realm="http://h/v2/token",service="h""#).unwrap();
        assert_eq!(p[0], ("realm".to_string(), "http://h/v2/token".to_string()));
    }
}
