//! berth-api: the front door. One HTTP listener serves every API berth speaks:
//! the AWS JSON protocol (`POST /` + `X-Amz-Target`, dispatched to a [`JsonService`] per AWS
//! service), the AWS query protocol for IAM and STS ([`query`]: a form-encoded `POST /`, or a
//! `GET /` with the parameters in the query string as presigned URLs carry them, answered in
//! XML), `/healthz`, `/metrics`, the agents' websockets on `/ws` (the ACS session,
//! [`acs`], and the telemetry session, [`tcs`]), and — with the registry — the OCI `/v2/`
//! routes.
//!
//! With a certificate the same listener serves HTTPS only ([`serve_tls`]).
//!
//! Owns: request ids, body limits, SigV4 verification against the stored access keys (and
//! role sessions' tokens), who called and how ([`berth_control::command::Caller`]), the
//! protocols' codecs in front of the control plane's operation tables, AWS-shaped errors.
//! Must not: hold business logic or state of its own, or decide authorization: services hand
//! typed commands to the control plane, which authorizes and runs them (IAM/STS and the admin
//! API still call `Control::authorize` before they move onto tables).

pub mod acs;
pub mod admin;
pub mod agent_ws;
pub mod awsjson;
pub mod ecr;
pub mod ecs;
pub mod error;
pub mod metrics;
pub mod query;
pub mod registry;
pub mod serve;
pub mod tcs;
pub mod tls;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use berth_control::Control;
pub use berth_control::iam::Principal;
use http::request::Parts;
use tokio::net::TcpListener;

pub use awsjson::{JsonService, RequestContext};
pub use error::AwsError;
pub use metrics::Metrics;

/// Maximum difference between a request's signing time and ours (AWS allows 15 minutes).
pub const MAX_CLOCK_SKEW: time::Duration = time::Duration::minutes(15);

/// Everything the handlers share.
pub struct AppState {
    pub control: Arc<Control>,
    /// The image registry (`/v2/` and the ECR API), when this role serves it.
    pub registry: Option<Arc<berth_registry::Registry>>,
    pub services: Vec<Box<dyn JsonService>>,
    pub metrics: Arc<Metrics>,
}

impl AppState {
    /// The standard set of services over one control plane.
    pub fn new(
        control: Arc<Control>,
        registry: Option<Arc<berth_registry::Registry>>,
        mut metrics: Metrics,
    ) -> Self {
        control.register_metrics(&mut metrics.registry);
        let mut services: Vec<Box<dyn JsonService>> = vec![
            Box::new(ecs::Ecs::new(control.clone())),
            Box::new(admin::Admin::new(control.clone())),
        ];
        if let Some(r) = &registry {
            services.push(Box::new(ecr::Ecr::new(r.clone(), control.clone())));
        }
        AppState {
            control,
            registry,
            services,
            metrics: Arc::new(metrics),
        }
    }

    /// Verify the request's SigV4 signature against the stored access keys (or a role
    /// session's), and say who signed it.
    pub fn authenticate(
        &self,
        parts: &Parts,
        body: &[u8],
    ) -> Result<(berth_auth::Verified, Principal), AwsError> {
        let req = berth_auth::RequestParts {
            method: parts.method.as_str(),
            path: parts.uri.path(),
            query: parts.uri.query(),
            headers: &parts.headers,
            body,
        };
        let verified = berth_auth::verify(
            &req,
            self.control.as_ref(),
            offset_date_time(self.control.clock().now()),
            MAX_CLOCK_SKEW,
        )
        .map_err(|e| AwsError::new(e.http_status(), e.code(), e.to_string()))?;
        let region = self.control.region();
        // IAM is global: clients sign its requests for us-east-1 whatever their region.
        let global = verified.service == "iam" && verified.region == "us-east-1";
        if verified.region != region && !global {
            return Err(AwsError::client(
                "InvalidSignatureException",
                format!(
                    "Credential should be scoped to a valid region, not '{}'. ",
                    verified.region
                ),
            ));
        }
        let token = session_token(parts);
        let principal = self
            .control
            .principal(&verified.access_key_id, token.as_deref())
            .map_err(AwsError::from)?;
        Ok((verified, principal))
    }
}

/// `t` as the `time` crate has it (what SigV4 verification compares signing times with).
fn offset_date_time(t: berth_model::Timestamp) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(t.as_millis()) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// Who signed a request (`principal`, as [`AppState::authenticate`] found) and how it came:
/// over TLS or not, from which address, to which front door.
pub(crate) fn caller(parts: &Parts, principal: Principal) -> berth_control::command::Caller {
    let secure = parts.extensions.get::<ServedOverTls>().is_some();
    let transport = parts
        .extensions
        .get::<axum::extract::ConnectInfo<PeerAddr>>()
        .map(|c| berth_control::command::Transport {
            secure,
            source_ip: c.0.0.ip().to_canonical(),
        });
    let host = parts
        .headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    berth_control::command::Caller {
        principal,
        transport,
        endpoint: format!("{}://{host}", if secure { "https" } else { "http" }),
        session_token: session_token(parts),
    }
}

/// The session token that came with temporary credentials (header, or presigned query).
pub(crate) fn session_token(parts: &Parts) -> Option<String> {
    parts
        .headers
        .get("x-amz-security-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| {
            parts.uri.query().and_then(|q| {
                q.split('&').find_map(|kv| {
                    let v = kv.strip_prefix("X-Amz-Security-Token=")?;
                    Some(berth_auth::percent_decode(v, false))
                })
            })
        })
}

/// The router for every route on the front door.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", post(post_root).get(query::handle))
        .route("/healthz", get(healthz))
        .route("/ws", get(acs::handle))
        .route("/metrics", get(metrics_text))
        .route("/v2", axum::routing::any(registry::handle))
        .route("/v2/", axum::routing::any(registry::handle))
        .route("/v2/{*rest}", axum::routing::any(registry::handle))
        .with_state(state)
}

/// `POST /`: the JSON protocols by `X-Amz-Target`, the query protocol (IAM, STS) by its form
/// body.
async fn post_root(
    state: State<Arc<AppState>>,
    req: http::Request<axum::body::Body>,
) -> axum::response::Response {
    let form = !req.headers().contains_key("x-amz-target")
        && req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if form {
        query::handle(state, req).await
    } else {
        awsjson::handle(state, req).await.into_response()
    }
}

async fn healthz(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    match state.control.health().await {
        Ok(()) => (http::StatusCode::OK, "ok\n"),
        Err(_) => (http::StatusCode::SERVICE_UNAVAILABLE, "store unavailable\n"),
    }
}

/// `GET /metrics`, as `--metrics` allows: loopback freely; other addresses with credentials
/// whose principal may `berth:GetMetrics` (a SigV4-signed GET, or the registry's token as
/// Basic `AWS:<token>` or Bearer, which Prometheus's `basic_auth`/`authorization` send).
async fn metrics_text(
    State(state): State<Arc<AppState>>,
    req: http::Request<axum::body::Body>,
) -> axum::response::Response {
    use metrics::MetricsAccess;
    let (parts, _) = req.into_parts();
    let loopback = parts
        .extensions
        .get::<axum::extract::ConnectInfo<PeerAddr>>()
        .is_some_and(|c| c.0.0.ip().to_canonical().is_loopback());
    let allowed = match state.metrics.access {
        MetricsAccess::Off => {
            return (
                http::StatusCode::NOT_FOUND,
                "metrics are off (--metrics off)\n",
            )
                .into_response();
        }
        MetricsAccess::Open => Ok(()),
        MetricsAccess::Auth if loopback => Ok(()),
        MetricsAccess::Auth => metrics_caller(&state, &parts).and_then(|caller| {
            state
                .control
                .authorize_access(
                    &caller,
                    "berth",
                    "GetMetrics",
                    &berth_control::command::Access::any(),
                )
                .map_err(AwsError::from)
        }),
    };
    match allowed {
        Ok(()) => (
            [(
                http::header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            state.metrics.encode(),
        )
            .into_response(),
        Err(e) => {
            let status =
                http::StatusCode::from_u16(e.status).unwrap_or(http::StatusCode::FORBIDDEN);
            let mut r = (status, format!("{}: {}\n", e.code, e.message)).into_response();
            if status == http::StatusCode::UNAUTHORIZED {
                r.headers_mut().insert(
                    http::header::WWW_AUTHENTICATE,
                    http::HeaderValue::from_static("Basic realm=\"berth metrics\""),
                );
            }
            r
        }
    }
}

/// Who asks for `/metrics` from another address: a SigV4 signature, or a registry token.
fn metrics_caller(
    state: &AppState,
    parts: &Parts,
) -> Result<berth_control::command::Caller, AwsError> {
    let auth = parts
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if auth.starts_with("AWS4-")
        || parts
            .uri
            .query()
            .is_some_and(|q| q.contains("X-Amz-Signature"))
    {
        let (_, principal) = state.authenticate(parts, &[])?;
        return Ok(caller(parts, principal));
    }
    let principal = state
        .registry
        .as_ref()
        .and_then(|reg| registry::token_principal(state, reg, &parts.headers).ok())
        .ok_or_else(|| {
            AwsError::new(
                401,
                "MissingAuthenticationToken",
                "/metrics from another address needs credentials: a SigV4-signed GET, or \
                 Basic AWS:<token> / Bearer <token> with a token from ecr get-login-password.",
            )
        })?;
    Ok(caller(parts, principal))
}

/// Serve on an already-bound listener until `shutdown` resolves, then finish in-flight
/// requests and return.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    limits: serve::Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve::serve_on(listener, router(state), limits, shutdown).await
}

/// The address of the peer a request came from (plain and TLS listeners alike).
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub std::net::SocketAddr);

/// Marks requests that came over TLS (a request extension), so that answers naming an
/// endpoint name it `https://`.
#[derive(Debug, Clone, Copy)]
pub struct ServedOverTls;

/// Like [`serve`], with every connection TLS-terminated with `config` (HTTPS only).
pub async fn serve_tls(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    state: Arc<AppState>,
    limits: serve::Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(state).layer(axum::Extension(ServedOverTls));
    serve::serve_on(
        tls::TlsListener::new(listener, config)?,
        app,
        limits,
        shutdown,
    )
    .await
}
