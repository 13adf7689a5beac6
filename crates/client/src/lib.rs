//! berth-client: clients for the APIs berth speaks, for berth's own tools.
//!
//! - [`AwsClient`]: SigV4-signed AWS JSON protocol calls (ECS, ECR) to a berth endpoint.
//! - [`RegistryClient`]: an OCI distribution client — authentication (ECR's Basic token,
//!   Bearer challenges, anonymous), blob and manifest push with resumable chunked uploads,
//!   pull with digest verification.
//! - [`digest`]: strict digests and descriptors for everything a manifest names.
//! - [`image`]: images from a directory, a tarball, a `docker save` archive or an OCI layout,
//!   and OCI layouts on disk.
//!
//! Must not: decide anything about what a server stores; it only speaks the protocols.

pub mod digest;
pub mod image;
mod registry;
pub mod tls;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

pub use digest::{Descriptor, Digest, Document};
pub use registry::{ImageRef, PARTIAL_PREFIX, RegistryAuth, RegistryClient};
pub use tls::{TlsTrust, TrustOptions};

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("HTTP: {0}")]
    Http(String),
    #[error("{service} {op}: {code}: {message}")]
    Aws {
        service: String,
        op: String,
        code: String,
        message: String,
    },
    #[error("registry: HTTP {status} {code}: {message}")]
    Registry {
        status: u16,
        code: String,
        message: String,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: String,
        source: std::io::Error,
    },
}

pub(crate) fn io_err<'a>(
    op: &'static str,
    path: &'a std::path::Path,
) -> impl FnOnce(std::io::Error) -> ClientError + 'a {
    move |source| ClientError::Io {
        op,
        path: path.display().to_string(),
        source,
    }
}

pub(crate) type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// An HTTP/1 client for `http://` and `https://` (rustls; the servers `trust` trusts).
pub(crate) fn http_client(trust: &TlsTrust) -> HttpClient {
    let mut c = HttpConnector::new();
    c.set_nodelay(true);
    c.set_connect_timeout(Some(Duration::from_secs(10)));
    c.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(trust.client_config())
        .https_or_http()
        .enable_http1()
        .wrap_connector(c);
    Client::builder(TokioExecutor::new()).build(https)
}

/// Longest an API call may take, answer included.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// SigV4-signed calls to an AWS JSON-protocol endpoint.
pub struct AwsClient {
    http: HttpClient,
    endpoint: String,
    region: String,
    creds: berth_auth::Credentials,
}

impl AwsClient {
    /// A client that trusts the system's roots and `AWS_CA_BUNDLE` ([`TlsTrust::system`]).
    pub fn new(endpoint: &str, region: &str, creds: berth_auth::Credentials) -> AwsClient {
        Self::with_trust(endpoint, region, creds, &TlsTrust::system())
    }

    /// A client that trusts the servers `trust` does.
    pub fn with_trust(
        endpoint: &str,
        region: &str,
        creds: berth_auth::Credentials,
        trust: &TlsTrust,
    ) -> AwsClient {
        AwsClient {
            http: http_client(trust),
            endpoint: endpoint.trim_end_matches('/').to_string(),
            region: region.to_string(),
            creds,
        }
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Call `target_prefix.op` with a JSON body; returns the JSON answer.
    pub async fn call(
        &self,
        target_prefix: &str,
        signing_name: &str,
        op: &str,
        body: &Value,
    ) -> Result<Value, ClientError> {
        let uri: http::Uri = format!("{}/", self.endpoint)
            .parse()
            .map_err(|e| ClientError::Invalid(format!("endpoint {}: {e}", self.endpoint)))?;
        let host = uri
            .authority()
            .map(|a| a.to_string())
            .ok_or_else(|| ClientError::Invalid("endpoint has no host".into()))?;
        let data = serde_json::to_vec(body).map_err(|e| ClientError::Invalid(e.to_string()))?;
        let mut headers = http::HeaderMap::new();
        let hv = |s: &str| {
            http::HeaderValue::from_str(s).map_err(|e| ClientError::Invalid(e.to_string()))
        };
        headers.insert("host", hv(&host)?);
        headers.insert("content-type", hv("application/x-amz-json-1.1")?);
        headers.insert("x-amz-target", hv(&format!("{target_prefix}.{op}"))?);
        #[allow(
            clippy::disallowed_methods,
            reason = "a client signs with its machine's wall time, which the server checks"
        )]
        let signed_at = time::OffsetDateTime::now_utc();
        berth_auth::sign(
            "POST",
            "/",
            None,
            &mut headers,
            &data,
            &self.creds,
            &self.region,
            signing_name,
            signed_at,
        );
        let mut req = http::Request::post(uri)
            .body(Full::new(Bytes::from(data)))
            .map_err(|e| ClientError::Http(e.to_string()))?;
        *req.headers_mut() = headers;
        // A peer that stopped answering (a cut link) must not hold the caller forever.
        let (status, bytes) = tokio::time::timeout(CALL_TIMEOUT, async {
            let resp = self.http.request(req).await.map_err(|e| {
                ClientError::Http(format!("{}: {}", self.endpoint, tls::describe(&e)))
            })?;
            let status = resp.status();
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| ClientError::Http(e.to_string()))?
                .to_bytes();
            Ok::<_, ClientError>((status, bytes))
        })
        .await
        .map_err(|_| {
            ClientError::Http(format!("{}: no answer in {CALL_TIMEOUT:?}", self.endpoint))
        })??;
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if !status.is_success() {
            return Err(ClientError::Aws {
                service: signing_name.to_string(),
                op: op.to_string(),
                code: v["__type"].as_str().unwrap_or("Unknown").to_string(),
                message: v["message"]
                    .as_str()
                    .or(v["Message"].as_str())
                    .unwrap_or("")
                    .to_string(),
            });
        }
        Ok(v)
    }

    /// ECR's `GetAuthorizationToken`: the password for `AWS` on the registry.
    pub async fn ecr_password(&self) -> Result<String, ClientError> {
        let v = self
            .call(
                "AmazonEC2ContainerRegistry_V20150921",
                "ecr",
                "GetAuthorizationToken",
                &serde_json::json!({}),
            )
            .await?;
        let tok = v["authorizationData"][0]["authorizationToken"]
            .as_str()
            .ok_or_else(|| ClientError::Invalid("no authorization token in the answer".into()))?;
        use base64::Engine;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(tok)
            .map_err(|e| ClientError::Invalid(format!("authorization token: {e}")))?;
        let raw = String::from_utf8(raw).map_err(|e| ClientError::Invalid(e.to_string()))?;
        raw.strip_prefix("AWS:")
            .map(str::to_string)
            .ok_or_else(|| ClientError::Invalid("authorization token is not AWS:<password>".into()))
    }
}
