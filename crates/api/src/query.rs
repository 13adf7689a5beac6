//! The AWS query protocol, as IAM and STS speak it: `POST /` with a form body
//! (`Action=CreateRole&Version=2010-05-08&RoleName=…`) — or `GET /` with the same parameters
//! in the (signed) query string, as presigned `GetCallerIdentity` URLs send them — answered in
//! XML
//! (`<CreateRoleResponse><CreateRoleResult>…</CreateRoleResult><ResponseMetadata>…`) and
//! errors as `<ErrorResponse><Error><Type/><Code/><Message/></Error><RequestId/>`. The service
//! is the one the request's SigV4 credential scope names (`iam` or `sts`).
//!
//! Owns: form decoding, XML encoding, the operations' wire names. The roles, sessions and
//! decisions are the control plane's ([`berth_control::iam`]).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use berth_control::iam::{NewRole, iso8601};
use berth_control::records::RoleRecord;
use http::{HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Limited};

use crate::AppState;
use crate::error::AwsError;

const IAM_NS: &str = "https://iam.amazonaws.com/doc/2010-05-08/";
const STS_NS: &str = "https://sts.amazonaws.com/doc/2011-06-15/";

/// IAM operations berth implements (for dispatch and the README).
pub const IAM_OPERATIONS: &[&str] = &[
    "CreateRole",
    "GetRole",
    "ListRoles",
    "DeleteRole",
    "UpdateAssumeRolePolicy",
    "PutRolePolicy",
    "GetRolePolicy",
    "ListRolePolicies",
    "DeleteRolePolicy",
    "CreatePolicy",
    "GetPolicy",
    "GetPolicyVersion",
    "ListPolicies",
    "DeletePolicy",
    "AttachRolePolicy",
    "DetachRolePolicy",
    "ListAttachedRolePolicies",
];
/// STS operations berth implements.
pub const STS_OPERATIONS: &[&str] = &["AssumeRole", "GetCallerIdentity"];

/// Decoded form parameters.
pub struct Params(HashMap<String, String>);

impl Params {
    /// Decode an `application/x-www-form-urlencoded` body.
    pub fn parse(body: &str) -> Params {
        let mut m = HashMap::new();
        for kv in body.split('&').filter(|s| !s.is_empty()) {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            let dec = |s: &str| crate::percent_decode(&s.replace('+', " "));
            m.insert(dec(k), dec(v));
        }
        Params(m)
    }

    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str)
    }

    /// A required parameter, or the error IAM gives for its absence.
    pub fn req(&self, k: &str) -> Result<&str, AwsError> {
        self.get(k).ok_or_else(|| {
            let mut member = k.to_string();
            if let Some(f) = member.get_mut(..1) {
                f.make_ascii_lowercase();
            }
            AwsError::client(
                "ValidationError",
                format!(
                    "1 validation error detected: Value null at '{member}' failed to satisfy \
                     constraint: Member must not be null"
                ),
            )
        })
    }

    pub fn int(&self, k: &str) -> Result<Option<i64>, AwsError> {
        self.get(k)
            .map(|v| {
                v.parse().map_err(|_| {
                    AwsError::client("ValidationError", format!("{k} must be a number."))
                })
            })
            .transpose()
    }

    /// A list of structures, `Name.member.N.Field`, in N order.
    pub fn members(&self, name: &str, fields: &[&str]) -> Vec<Vec<String>> {
        let mut out = Vec::new();
        for n in 1.. {
            let get = |f: &str| {
                self.get(&format!("{name}.member.{n}.{f}"))
                    .map(str::to_string)
            };
            if fields.iter().all(|f| get(f).is_none()) {
                break;
            }
            out.push(fields.iter().map(|f| get(f).unwrap_or_default()).collect());
        }
        out
    }
}

/// XML text with the five escapes.
fn esc(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
}

/// `<tag>text</tag>`.
fn el(out: &mut String, tag: &str, text: &str) {
    let _ = write!(out, "<{tag}>");
    esc(text, out);
    let _ = write!(out, "</{tag}>");
}

/// Percent-encoding of a policy document, as IAM returns them (botocore decodes it).
fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 2);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn role_xml(out: &mut String, r: &RoleRecord, tag: &str) {
    let _ = write!(out, "<{tag}>");
    el(out, "Path", &r.path);
    el(out, "RoleName", &r.role_name);
    el(out, "RoleId", &r.role_id);
    el(out, "Arn", &r.arn);
    el(out, "CreateDate", &iso8601(r.create_date));
    el(
        out,
        "AssumeRolePolicyDocument",
        &url_encode(&r.assume_role_policy),
    );
    if let Some(d) = &r.description {
        el(out, "Description", d);
    }
    el(
        out,
        "MaxSessionDuration",
        &r.max_session_duration.to_string(),
    );
    if !r.tags.is_empty() {
        out.push_str("<Tags>");
        for (k, v) in &r.tags {
            out.push_str("<member>");
            el(out, "Key", k);
            el(out, "Value", v);
            out.push_str("</member>");
        }
        out.push_str("</Tags>");
    }
    let _ = write!(out, "</{tag}>");
}

fn policy_xml(out: &mut String, p: &berth_control::iam_managed::PolicyInfo, tag: &str) {
    let r = &p.policy;
    let _ = write!(out, "<{tag}>");
    el(out, "PolicyName", &r.policy_name);
    el(out, "PolicyId", &r.policy_id);
    el(out, "Arn", &r.arn);
    el(out, "Path", &r.path);
    el(out, "DefaultVersionId", "v1");
    el(out, "AttachmentCount", &p.attachment_count.to_string());
    el(out, "PermissionsBoundaryUsageCount", "0");
    el(out, "IsAttachable", "true");
    if let Some(d) = &r.description {
        el(out, "Description", d);
    }
    el(out, "CreateDate", &iso8601(r.create_date));
    el(out, "UpdateDate", &iso8601(r.create_date));
    let _ = write!(out, "</{tag}>");
}

fn page_tail(out: &mut String, next: Option<String>) {
    el(
        out,
        "IsTruncated",
        if next.is_some() { "true" } else { "false" },
    );
    if let Some(m) = next {
        el(out, "Marker", &m);
    }
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
    xml(status, x)
}

fn xml(status: StatusCode, body: String) -> Response {
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
            xml(StatusCode::OK, x)
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
    let params = if parts.method == http::Method::GET || parts.method == http::Method::HEAD {
        Params::parse(parts.uri.query().unwrap_or_default())
    } else {
        Params::parse(&String::from_utf8_lossy(&body))
    };
    let action = params.get("Action").unwrap_or_default().to_string();
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
    let c = &state.control;
    // What the operation acts on, for role sessions' policies.
    let resource = match (service, op) {
        ("sts", "AssumeRole") => params.get("RoleArn").map(str::to_string),
        ("iam", "ListRoles" | "ListPolicies") => Some("*".to_string()),
        ("iam", "CreatePolicy") => params.get("PolicyName").map(|n| {
            format!(
                "arn:aws:iam::{}:policy{}{n}",
                c.partition().account_id,
                params.get("Path").unwrap_or("/")
            )
        }),
        ("iam", "GetPolicy" | "GetPolicyVersion" | "DeletePolicy") => {
            params.get("PolicyArn").map(str::to_string)
        }
        ("iam", "CreateRole") => params.get("RoleName").map(|n| {
            format!(
                "arn:aws:iam::{}:role{}{n}",
                c.partition().account_id,
                params.get("Path").unwrap_or("/")
            )
        }),
        ("iam", _) => params.get("RoleName").map(|n| {
            c.get_role(n)
                .map(|r| r.arn)
                .unwrap_or_else(|_| format!("arn:aws:iam::{}:role/{n}", c.partition().account_id))
        }),
        _ => None,
    };
    // Anyone may ask who they are.
    let caller = crate::caller(&parts, principal.clone());
    let access = berth_control::command::Access {
        resources: resource.into_iter().collect(),
        ..Default::default()
    };
    if op != "GetCallerIdentity"
        && let Err(e) = c.authorize_access(&caller, service, op, &access)
    {
        return (service, op, ns, Err(e.into()));
    }
    let out = run(state, &caller, service, op, &params).await;
    (service, op, ns, out)
}

async fn run(
    state: &AppState,
    caller: &berth_control::command::Caller,
    service: &str,
    op: &str,
    p: &Params,
) -> Outcome {
    let c = &state.control;
    let who = &caller.principal;
    let mut x = String::new();
    match (service, op) {
        ("iam", "CreateRole") => {
            let r = c
                .create_role(NewRole {
                    role_name: p.req("RoleName")?.to_string(),
                    path: p.get("Path").map(str::to_string),
                    assume_role_policy: p.req("AssumeRolePolicyDocument")?.to_string(),
                    description: p.get("Description").map(str::to_string),
                    max_session_duration: p.int("MaxSessionDuration")?,
                    tags: p
                        .members("Tags", &["Key", "Value"])
                        .into_iter()
                        .map(|mut kv| (std::mem::take(&mut kv[0]), std::mem::take(&mut kv[1])))
                        .collect(),
                })
                .await?;
            role_xml(&mut x, &r, "Role");
        }
        ("iam", "GetRole") => role_xml(&mut x, &c.get_role(p.req("RoleName")?)?, "Role"),
        ("iam", "ListRoles") => {
            let (roles, next) =
                c.list_roles(p.get("PathPrefix"), p.get("Marker"), p.int("MaxItems")?)?;
            x.push_str("<Roles>");
            for r in &roles {
                role_xml(&mut x, r, "member");
            }
            x.push_str("</Roles>");
            page_tail(&mut x, next);
        }
        ("iam", "DeleteRole") => {
            c.delete_role(p.req("RoleName")?).await?;
            return Ok(None);
        }
        ("iam", "UpdateAssumeRolePolicy") => {
            c.update_assume_role_policy(p.req("RoleName")?, p.req("PolicyDocument")?)
                .await?;
            return Ok(None);
        }
        ("iam", "PutRolePolicy") => {
            c.put_role_policy(
                p.req("RoleName")?,
                p.req("PolicyName")?,
                p.req("PolicyDocument")?,
            )
            .await?;
            return Ok(None);
        }
        ("iam", "GetRolePolicy") => {
            let name = p.req("PolicyName")?;
            let (role, doc) = c.get_role_policy(p.req("RoleName")?, name)?;
            el(&mut x, "RoleName", &role);
            el(&mut x, "PolicyName", name);
            el(&mut x, "PolicyDocument", &url_encode(&doc));
        }
        ("iam", "ListRolePolicies") => {
            let (names, next) =
                c.list_role_policies(p.req("RoleName")?, p.get("Marker"), p.int("MaxItems")?)?;
            x.push_str("<PolicyNames>");
            for n in &names {
                el(&mut x, "member", n);
            }
            x.push_str("</PolicyNames>");
            page_tail(&mut x, next);
        }
        ("iam", "DeleteRolePolicy") => {
            c.delete_role_policy(p.req("RoleName")?, p.req("PolicyName")?)
                .await?;
            return Ok(None);
        }
        ("iam", "CreatePolicy") => {
            let info = c
                .create_policy(
                    p.req("PolicyName")?,
                    p.get("Path"),
                    p.req("PolicyDocument")?,
                    p.get("Description"),
                )
                .await?;
            policy_xml(&mut x, &info, "Policy");
        }
        ("iam", "GetPolicy") => policy_xml(&mut x, &c.get_policy(p.req("PolicyArn")?)?, "Policy"),
        ("iam", "GetPolicyVersion") => {
            let v = p.req("VersionId")?;
            let r = c.get_policy_version(p.req("PolicyArn")?, v)?;
            x.push_str("<PolicyVersion>");
            el(&mut x, "Document", &url_encode(&r.document));
            el(&mut x, "VersionId", v);
            el(&mut x, "IsDefaultVersion", "true");
            el(&mut x, "CreateDate", &iso8601(r.create_date));
            x.push_str("</PolicyVersion>");
        }
        ("iam", "ListPolicies") => {
            let (policies, next) = c.list_policies(
                p.get("Scope"),
                p.get("OnlyAttached") == Some("true"),
                p.get("PathPrefix"),
                p.get("Marker"),
                p.int("MaxItems")?,
            )?;
            x.push_str("<Policies>");
            for i in &policies {
                policy_xml(&mut x, i, "member");
            }
            x.push_str("</Policies>");
            page_tail(&mut x, next);
        }
        ("iam", "DeletePolicy") => {
            c.delete_policy(p.req("PolicyArn")?).await?;
            return Ok(None);
        }
        ("iam", "AttachRolePolicy") => {
            c.attach_role_policy(p.req("RoleName")?, p.req("PolicyArn")?)
                .await?;
            return Ok(None);
        }
        ("iam", "DetachRolePolicy") => {
            c.detach_role_policy(p.req("RoleName")?, p.req("PolicyArn")?)
                .await?;
            return Ok(None);
        }
        ("iam", "ListAttachedRolePolicies") => {
            let list = c.list_attached_role_policies(p.req("RoleName")?, p.get("PathPrefix"))?;
            x.push_str("<AttachedPolicies>");
            for (name, arn) in &list {
                x.push_str("<member>");
                el(&mut x, "PolicyName", name);
                el(&mut x, "PolicyArn", arn);
                x.push_str("</member>");
            }
            x.push_str("</AttachedPolicies>");
            page_tail(&mut x, None);
        }
        ("sts", "AssumeRole") => {
            if p.get("Policy").is_some() || p.get("PolicyArns.member.1.arn").is_some() {
                return Err(AwsError::client(
                    "ValidationError",
                    "berth does not support session policies (Policy, PolicyArns) yet.",
                ));
            }
            let s = c.assume_role(
                caller,
                p.req("RoleArn")?,
                p.req("RoleSessionName")?,
                p.int("DurationSeconds")?,
            )?;
            x.push_str("<Credentials>");
            el(&mut x, "AccessKeyId", &s.access_key_id);
            el(&mut x, "SecretAccessKey", &s.secret_access_key);
            el(&mut x, "SessionToken", &s.session_token);
            el(&mut x, "Expiration", &iso8601(s.expiration as f64));
            x.push_str("</Credentials><AssumedRoleUser>");
            el(&mut x, "AssumedRoleId", &s.assumed_role_id);
            el(&mut x, "Arn", &s.assumed_role_arn);
            x.push_str("</AssumedRoleUser>");
        }
        ("sts", "GetCallerIdentity") => {
            let id = c.caller_identity(who);
            el(&mut x, "UserId", &id.user_id);
            el(&mut x, "Account", &id.account);
            el(&mut x, "Arn", &id.arn);
        }
        _ => {
            return Err(AwsError::client(
                "InvalidAction",
                format!("{op} is not supported by berth yet."),
            ));
        }
    }
    Ok(Some(x))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_decode() {
        let p = Params::parse(
            "Action=CreateRole&RoleName=app&AssumeRolePolicyDocument=%7B%22a%22%3A+1%7D\
             &Tags.member.1.Key=team&Tags.member.1.Value=x+y&Tags.member.2.Key=k",
        );
        assert_eq!(p.get("Action"), Some("CreateRole"));
        assert_eq!(p.get("AssumeRolePolicyDocument"), Some("{\"a\": 1}"));
        assert_eq!(
            p.members("Tags", &["Key", "Value"]),
            vec![
                vec!["team".to_string(), "x y".to_string()],
                vec!["k".to_string(), String::new()]
            ]
        );
        assert!(p.req("Missing").is_err());
    }

    #[test]
    fn xml_escapes_and_policies_are_url_encoded() {
        let mut s = String::new();
        el(&mut s, "M", "a<b & 'c'");
        assert_eq!(s, "<M>a&lt;b &amp; &apos;c&apos;</M>");
        assert_eq!(url_encode("{\"A\": 1}"), "%7B%22A%22%3A%201%7D");
    }

    #[test]
    fn errors_take_query_codes() {
        let e = query_error(AwsError::client("AccessDeniedException", "no"));
        assert_eq!((e.code.as_str(), e.status), ("AccessDenied", 403));
        let e = query_error(AwsError::client("NoSuchEntity", "no"));
        assert_eq!((e.code.as_str(), e.status), ("NoSuchEntity", 400));
    }
}
