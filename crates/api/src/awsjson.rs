//! The AWS JSON protocol (awsJson1_0 / awsJson1_1): `POST /` with `X-Amz-Target:
//! <TargetPrefix>.<Operation>`. This module owns the request pipeline every JSON service shares
//! — request id, body limit, SigV4 verification, dispatch to the service by target prefix,
//! metrics, error shaping — and nothing service-specific. Authorization is not here: services
//! hand typed commands to the control plane, which authorizes them.

use std::sync::Arc;

use async_trait::async_trait;
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderValue, Request};
use http_body_util::{BodyExt, Limited};
use tracing::{Instrument, info_span};

use berth_control::command::{Caller, Codec};

use crate::AppState;
use crate::error::AwsError;

/// Largest request body accepted on the JSON protocols (AWS answers larger ones with 413).
pub const MAX_BODY: usize = 1024 * 1024;

/// What a handler knows about the request it serves.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub request_id: String,
    /// Who signed it (with the session token of temporary credentials) and how it came.
    pub caller: Caller,
}

/// The awsJson codec over one request body, for the control plane's operation tables.
pub struct JsonCodec<'a>(pub &'a [u8]);

impl Codec for JsonCodec<'_> {
    type Output = Vec<u8>;
    type Error = AwsError;
    fn decode<T>(&mut self) -> Result<T, AwsError>
    where
        T: serde::de::DeserializeOwned + berth_model::wire::Validate,
    {
        decode(self.0)
    }
    fn encode<T: serde::Serialize>(&mut self, v: &T) -> Result<Vec<u8>, AwsError> {
        serde_json::to_vec(v).map_err(|e| AwsError::new(500, "ServerException", e.to_string()))
    }
}

/// One AWS service spoken over the JSON protocol.
#[async_trait]
pub trait JsonService: Send + Sync + 'static {
    /// Short name for metrics and logs ("ecs").
    fn name(&self) -> &'static str;
    /// The `X-Amz-Target` prefix, e.g. `AmazonEC2ContainerServiceV20141113`.
    fn target_prefix(&self) -> &'static str;
    /// The SigV4 signing name the credential scope must carry (`ecs`).
    fn signing_name(&self) -> &'static str;
    /// `Some(static name)` when `op` is an operation of this service.
    fn operation(&self, op: &str) -> Option<&'static str>;
    /// Serve one operation: request body in, response body out. The service authorizes it
    /// (through the control plane's command boundary).
    async fn call(
        &self,
        op: &'static str,
        body: Bytes,
        ctx: &RequestContext,
    ) -> Result<Vec<u8>, AwsError>;
}

/// Turn a body into a checked request shape, or the error AWS gives for it.
pub fn decode<I: serde::de::DeserializeOwned + berth_model::wire::Validate>(
    body: &[u8],
) -> Result<I, AwsError> {
    let req: I = berth_model::wire::from_json(body).map_err(|e| match e {
        berth_model::wire::DecodeError::Syntax(m) => AwsError::serialization(m),
        berth_model::wire::DecodeError::Type { message, .. } => AwsError::serialization(message),
    })?;
    let errs = berth_model::wire::validate(&req);
    if let Some(first) = errs.first() {
        let msg = match &first.kind {
            berth_model::wire::FieldErrorKind::Missing => {
                format!("{} can not be blank.", first.path)
            }
            _ => first.to_string(),
        };
        return Err(AwsError::client("InvalidParameterException", msg));
    }
    Ok(req)
}

/// Decode a request shape (checked against the model), run an operation on it, encode the
/// answer: what every operation of every JSON service does.
pub async fn run<I, O, E, Fut>(body: &[u8], f: impl FnOnce(I) -> Fut) -> Result<Vec<u8>, AwsError>
where
    I: serde::de::DeserializeOwned + berth_model::wire::Validate,
    O: serde::Serialize,
    E: Into<AwsError>,
    Fut: std::future::Future<Output = Result<O, E>>,
{
    let req: I = decode(body)?;
    let out = f(req).await.map_err(Into::into)?;
    serde_json::to_vec(&out).map_err(|e| AwsError::new(500, "ServerException", e.to_string()))
}

pub async fn handle(State(state): State<Arc<AppState>>, req: Request<Body>) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let clock = state.control.clock();
    let started = clock.instant();
    let span = info_span!("request", id = %request_id, op = tracing::field::Empty);
    let (service, op, result) = pipeline(&state, req, &request_id)
        .instrument(span.clone())
        .await;
    let elapsed = clock.elapsed(started);
    let code = match &result {
        Ok(_) => "OK".to_string(),
        Err(e) => e.code.clone(),
    };
    state.metrics.record(service, op, &code, elapsed);
    let mut resp = match result {
        Ok(body) => {
            let mut r = Response::new(Body::from(body));
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-amz-json-1.1"),
            );
            r
        }
        Err(e) => {
            span.in_scope(|| {
                if e.status >= 500 {
                    tracing::error!(service, op, code = %e.code, message = %e.message, "request failed");
                } else {
                    tracing::debug!(service, op, code = %e.code, message = %e.message, "request refused");
                }
            });
            e.into_response()
        }
    };
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert("x-amzn-requestid", v);
    }
    resp
}

/// Returns (service label, operation label, result).
async fn pipeline(
    state: &AppState,
    req: Request<Body>,
    request_id: &str,
) -> (&'static str, &'static str, Result<Vec<u8>, AwsError>) {
    let (parts, body) = req.into_parts();
    let target = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let (prefix, op_name) = target.split_once('.').unwrap_or((target, ""));
    let service = state.services.iter().find(|s| s.target_prefix() == prefix);
    let service_label = service.map(|s| s.name()).unwrap_or("unknown");

    // Refuse oversized bodies before reading them.
    let declared = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return (service_label, "unknown", Err(too_large()));
    }
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                return (service_label, "unknown", Err(too_large()));
            }
            return (
                service_label,
                "unknown",
                Err(AwsError::serialization("Failed to read the request body")),
            );
        }
    };

    let (verified, principal) = match state.authenticate(&parts, &body) {
        Ok(v) => v,
        Err(e) => return (service_label, "unknown", Err(e)),
    };

    let Some(service) = service else {
        return (
            service_label,
            "unknown",
            Err(AwsError::client(
                "UnknownOperationException",
                if target.is_empty() {
                    "Missing X-Amz-Target header".to_string()
                } else {
                    format!("Unknown operation {target}")
                },
            )),
        );
    };
    if verified.service != service.signing_name() {
        return (
            service_label,
            "unknown",
            Err(AwsError::client(
                "InvalidSignatureException",
                format!(
                    "Credential should be scoped to correct service: '{}'. ",
                    service.signing_name()
                ),
            )),
        );
    }
    let Some(op) = service.operation(op_name) else {
        return (
            service_label,
            "unknown",
            Err(AwsError::client(
                "UnknownOperationException",
                format!("Unknown operation {target}"),
            )),
        );
    };
    tracing::Span::current().record("op", op);
    let ctx = RequestContext {
        request_id: request_id.to_string(),
        caller: crate::caller(&parts, principal),
    };
    let result = service.call(op, body, &ctx).await;
    (service_label, op, result)
}

fn too_large() -> AwsError {
    AwsError::new(
        413,
        "RequestEntityTooLargeException",
        format!("Request body exceeds the limit of {MAX_BODY} bytes"),
    )
}
