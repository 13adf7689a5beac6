//! The AWS query protocol, as IAM and STS speak it: `POST /` with a form body
//! (`Action=CreateRole&Version=2010-05-08&RoleName=…`) — or `GET /` with the same parameters
//! in the (signed) query string, as presigned `GetCallerIdentity` URLs send them — answered in
//! XML
//! (`<CreateRoleResponse><CreateRoleResult>…</CreateRoleResult><ResponseMetadata>…`) and
//! errors as `<ErrorResponse><Error><Type/><Code/><Message/></Error><RequestId/>`. The service
//! is the one the request's SigV4 credential scope names (`iam` or `sts`).
//!
//! A codec in front of the control plane's IAM and STS operation tables
//! ([`berth_control::iam_ops`]): [`form`] decodes a form into the operation's typed request,
//! [`xml`] encodes its answer. Authorization and handlers are the tables'.

pub mod form;
pub mod xml;

use std::fmt::Write as _;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Limited};

use crate::AppState;
use crate::error::AwsError;

const IAM_NS: &str = "https://iam.amazonaws.com/doc/2010-05-08/";
const STS_NS: &str = "https://sts.amazonaws.com/doc/2011-06-15/";

/// IAM operations berth implements (for dispatch and the README).
pub const IAM_OPERATIONS: &[&str] = berth_control::iam_ops::iam::OPERATIONS;
/// STS operations berth implements.
pub const STS_OPERATIONS: &[&str] = berth_control::iam_ops::sts::OPERATIONS;

/// `<tag>text</tag>`.
fn el(out: &mut String, tag: &str, text: &str) {
    let _ = write!(out, "<{tag}>");
    xml::escape(text, out);
    let _ = write!(out, "</{tag}>");
}

/// A form's `(name, value)` pairs, percent-decoded (`+` is a space in forms).
pub fn form_pairs(body: &str) -> Vec<(String, String)> {
    body.split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            let dec = |s: &str| berth_auth::percent_decode(s, true);
            (dec(k), dec(v))
        })
        .collect()
}

/// The query protocol as a codec of the operation tables: the form in, XML out (`None`: an
/// operation that answers with its request id alone).
struct QueryCodec(Option<form::Node>);

impl berth_control::command::Codec for QueryCodec {
    type Output = Option<String>;
    type Error = AwsError;
    fn decode<T>(&mut self) -> Result<T, AwsError>
    where
        T: serde::de::DeserializeOwned + berth_model::wire::Validate,
    {
        let node = self
            .0
            .take()
            .unwrap_or(form::Node::Branch(Default::default()));
        let req: T = form::from_node(node).map_err(|e| AwsError::client("ValidationError", e.0))?;
        if let Some(first) = berth_model::wire::validate(&req).first() {
            return Err(AwsError::client(
                "ValidationError",
                validation_message(first),
            ));
        }
        Ok(req)
    }
    fn encode<T: serde::Serialize>(&mut self, v: &T) -> Result<Option<String>, AwsError> {
        xml::to_xml(v).map_err(|e| AwsError::new(500, "ServiceFailure", e.0))
    }
}

/// IAM's words for a member that breaks the model's constraints (member paths in
/// lowerCamelCase, as IAM reports them).
fn validation_message(e: &berth_model::wire::FieldError) -> String {
    use berth_model::wire::FieldErrorKind as K;
    let path: String = e
        .path
        .split('.')
        .map(|p| {
            let mut c = p.chars();
            match c.next() {
                Some(f) => f.to_lowercase().chain(c).collect(),
                None => String::new(),
            }
        })
        .collect::<Vec<String>>()
        .join(".");
    let constraint = match &e.kind {
        K::Missing => {
            return format!(
                "1 validation error detected: Value null at '{path}' failed to satisfy \
             constraint: Member must not be null"
            );
        }
        K::BadEnum { allowed, .. } => format!(
            "Member must satisfy enum value set: [{}]",
            allowed.join(", ")
        ),
        K::TooShort { min } => format!("Member must have length greater than or equal to {min}"),
        K::TooLong { max } => format!("Member must have length less than or equal to {max}"),
        K::OutOfRange { min: Some(m), .. }
            if !matches!(e.kind, K::OutOfRange { max: Some(_), .. }) =>
        {
            format!("Member must have value greater than or equal to {m}")
        }
        K::OutOfRange { min, max } => format!(
            "Member must have value between {} and {}",
            min.unwrap_or(f64::MIN),
            max.unwrap_or(f64::MAX)
        ),
    };
    let value = match &e.kind {
        K::BadEnum { value, .. } => format!(" '{value}'"),
        _ => String::new(),
    };
    format!(
        "1 validation error detected: Value{value} at '{path}' failed to satisfy constraint: {constraint}"
    )
}

/// The error codes of the query protocol for what the JSON services call otherwise.
fn query_error(mut e: AwsError) -> AwsError {
    let (code, status) = match e.code.as_str() {
        "AccessDeniedException" => ("AccessDenied", 403),
        "UnrecognizedClientException" => ("InvalidClientTokenId", 403),
        "InvalidSignatureException" => ("SignatureDoesNotMatch", 403),
        "IncompleteSignatureException" => ("IncompleteSignature", 400),
        "MissingAuthenticationTokenException" => ("MissingAuthenticationToken", 403),
        "ExpiredTokenException" => ("ExpiredToken", 400),
        _ => return e,
    };
    e.code = code.into();
    e.status = status;
    e
}

fn error_response(e: &AwsError, ns: &str, request_id: &str) -> Response {
    let mut x = format!("<ErrorResponse xmlns=\"{ns}\"><Error>");
    el(
        &mut x,
        "Type",
        if e.status >= 500 {
            "Receiver"
        } else {
            "Sender"
        },
    );
    el(&mut x, "Code", &e.code);
    el(&mut x, "Message", &e.message);
    x.push_str("</Error>");
    el(&mut x, "RequestId", request_id);
    x.push_str("</ErrorResponse>");
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
    xml_response(status, x)
}

fn xml_response(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/xml"),
    );
    r
}

pub async fn handle(State(state): State<Arc<AppState>>, req: Request<Body>) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let clock = state.control.clock();
    let started = clock.instant();
    let (service, op, ns, result) = pipeline(&state, req).await;
    let code = match &result {
        Ok(_) => "OK".to_string(),
        Err(e) => e.code.clone(),
    };
    state
        .metrics
        .record(service, op, &code, clock.elapsed(started));
    let mut resp = match result {
        Ok(inner) => {
            let mut x = format!("<{op}Response xmlns=\"{ns}\">");
            if let Some(inner) = inner {
                let _ = write!(x, "<{op}Result>{inner}</{op}Result>");
            }
            x.push_str("<ResponseMetadata>");
            el(&mut x, "RequestId", &request_id);
            let _ = write!(x, "</ResponseMetadata></{op}Response>");
            xml_response(StatusCode::OK, x)
        }
        Err(e) => {
            tracing::debug!(service, op, code = %e.code, message = %e.message, "request refused");
            error_response(&query_error(e), ns, &request_id)
        }
    };
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert("x-amzn-requestid", v);
    }
    resp
}

type Outcome = Result<Option<String>, AwsError>;

async fn pipeline(
    state: &AppState,
    req: Request<Body>,
) -> (&'static str, &'static str, &'static str, Outcome) {
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, crate::awsjson::MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return (
                "unknown",
                "unknown",
                IAM_NS,
                Err(AwsError::new(
                    413,
                    "RequestEntityTooLarge",
                    "The request body is too large.",
                )),
            );
        }
    };
    let (verified, principal) = match state.authenticate(&parts, &body) {
        Ok(v) => v,
        Err(e) => return ("unknown", "unknown", IAM_NS, Err(e)),
    };
    // A GET names its operation in the query string, which its signature covers (the auth
    // crate refuses a presigned request with a body).
    let pairs = if parts.method == http::Method::GET || parts.method == http::Method::HEAD {
        form_pairs(parts.uri.query().unwrap_or_default())
    } else {
        form_pairs(&String::from_utf8_lossy(&body))
    };
    let action = pairs
        .iter()
        .find(|(k, _)| k == "Action")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let (service, ns, ops): (&'static str, &'static str, &[&'static str]) = match verified
        .service
        .as_str()
    {
        "iam" => ("iam", IAM_NS, IAM_OPERATIONS),
        "sts" => ("sts", STS_NS, STS_OPERATIONS),
        other => {
            return (
                "unknown",
                "unknown",
                IAM_NS,
                Err(AwsError::client(
                    "InvalidAction",
                    format!("berth speaks the query protocol for iam and sts only, not {other:?}."),
                )),
            );
        }
    };
    let Some(op) = ops.iter().copied().find(|o| *o == action) else {
        return (
            service,
            "unknown",
            ns,
            Err(AwsError::client(
                "InvalidAction",
                format!("Could not find operation {action} for version NO_VERSION_SPECIFIED"),
            )),
        );
    };
    let node = match form::Node::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))) {
        Ok(n) => n,
        Err(e) => {
            return (
                service,
                op,
                ns,
                Err(AwsError::client("ValidationError", e.0)),
            );
        }
    };
    let caller = crate::caller(&parts, principal);
    let codec = QueryCodec(Some(node));
    let c = &state.control;
    let out = match service {
        "iam" => berth_control::iam_ops::iam::dispatch(c, c, &caller, op, codec).await,
        _ => berth_control::iam_ops::sts::dispatch(c, c, &caller, op, codec).await,
    };
    let out = out.unwrap_or_else(|| {
        Err(AwsError::client(
            "InvalidAction",
            format!("{op} is not supported by berth yet."),
        ))
    });
    (service, op, ns, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_decode() {
        let p = form_pairs(
            "Action=CreateRole&RoleName=app&AssumeRolePolicyDocument=%7B%22a%22%3A+1%7D\
             &Tags.member.1.Key=team&Tags.member.1.Value=x+y&Tags.member.2.Key=k",
        );
        let node = form::Node::from_pairs(p.iter().map(|(k, v)| (k.as_str(), v.as_str()))).unwrap();
        let r: berth_model::wire::iam::CreateRoleRequest = form::from_node(node).unwrap();
        assert_eq!(r.role_name.as_deref(), Some("app"));
        assert_eq!(r.assume_role_policy_document.as_deref(), Some("{\"a\": 1}"));
        let tags = r.tags.unwrap();
        assert_eq!(tags[0].value.as_deref(), Some("x y"));
        assert_eq!(tags[1].key.as_deref(), Some("k"));
    }

    #[test]
    fn model_constraints_read_as_iam_words() {
        let mut c = QueryCodec(Some(form::Node::from_pairs([("RoleName", "")]).unwrap()));
        use berth_control::command::Codec as _;
        let e = c
            .decode::<berth_model::wire::iam::GetRoleRequest>()
            .unwrap_err();
        assert_eq!(e.code, "ValidationError");
        assert!(e.message.contains("at 'roleName'"), "{}", e.message);
        let mut c = QueryCodec(Some(form::Node::from_pairs([]).unwrap()));
        let e = c
            .decode::<berth_model::wire::iam::GetRoleRequest>()
            .unwrap_err();
        assert!(
            e.message.contains("Value null at 'roleName'"),
            "{}",
            e.message
        );
    }

    #[test]
    fn xml_escapes() {
        let mut s = String::new();
        el(&mut s, "M", "a<b & 'c'");
        assert_eq!(s, "<M>a&lt;b &amp; &apos;c&apos;</M>");
    }

    #[test]
    fn errors_take_query_codes() {
        let e = query_error(AwsError::client("AccessDeniedException", "no"));
        assert_eq!((e.code.as_str(), e.status), ("AccessDenied", 403));
        let e = query_error(AwsError::client("NoSuchEntity", "no"));
        assert_eq!((e.code.as_str(), e.status), ("NoSuchEntity", 400));
    }
}
