//! The OCI Distribution API under `/v2/` on the front door: path parsing, authentication
//! (HTTP Basic `AWS:<token>` as ECR's `GetAuthorizationToken` hands out, or a Bearer token
//! from `/v2/token`), streaming bodies in and out, and the spec's headers and error bodies.
//! Every decision about repositories, blobs and manifests is the registry crate's.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use berth_control::command::Access;
use berth_registry::dist::Page;
use berth_registry::{Digest, DistError, Registry};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::{AppState, Principal};

const API_VERSION: &str = "registry/2.0";

/// What a `/v2/…` path names.
#[derive(Debug, PartialEq, Eq)]
enum Route<'a> {
    Base,
    Catalog,
    Token,
    Tags(&'a str),
    Manifest(&'a str, &'a str),
    Blob(&'a str, &'a str),
    Uploads(&'a str),
    Upload(&'a str, &'a str),
    Referrers(&'a str, &'a str),
}

fn route(rest: &str) -> Option<Route<'_>> {
    match rest {
        "" => return Some(Route::Base),
        "_catalog" => return Some(Route::Catalog),
        "token" => return Some(Route::Token),
        _ => {}
    }
    if let Some(name) = rest.strip_suffix("/tags/list") {
        return Some(Route::Tags(name));
    }
    if let Some(name) = rest
        .strip_suffix("/blobs/uploads/")
        .or_else(|| rest.strip_suffix("/blobs/uploads"))
    {
        return Some(Route::Uploads(name));
    }
    if let Some(i) = rest.rfind("/blobs/uploads/") {
        return Some(Route::Upload(&rest[..i], &rest[i + 15..]));
    }
    for (sep, kind) in [("/manifests/", 0), ("/blobs/", 1), ("/referrers/", 2)] {
        if let Some(i) = rest.rfind(sep) {
            let (name, r) = (&rest[..i], &rest[i + sep.len()..]);
            if name.is_empty() || r.is_empty() {
                return None;
            }
            return Some(match kind {
                0 => Route::Manifest(name, r),
                1 => Route::Blob(name, r),
                _ => Route::Referrers(name, r),
            });
        }
    }
    None
}

/// Every value of a repeated query parameter (`scope`).
fn query_params(q: Option<&str>, name: &str) -> Vec<String> {
    q.unwrap_or_default()
        .split('&')
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k == name).then(|| percent_decode(v))
        })
        .collect()
}

fn query_param(q: Option<&str>, name: &str) -> Option<String> {
    q?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then(|| percent_decode(v))
    })
}

/// A query parameter's value (`+` is a space).
#[doc(hidden)]
pub fn percent_decode(s: &str) -> String {
    berth_auth::percent_decode(s, true)
}

fn err(e: DistError, base: &str, host: &str, bearer: bool) -> Response {
    let mut r = (
        StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST),
        e.body(),
    )
        .into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let challenge = if bearer {
        format!("Bearer realm=\"{base}/v2/token\",service=\"{host}\"")
    } else {
        format!("Basic realm=\"{base}/\",service=\"ecr.amazonaws.com\"")
    };
    if e.status == 401
        && let Ok(v) = HeaderValue::from_str(&challenge)
    {
        h.insert(header::WWW_AUTHENTICATE, v);
    }
    r
}

fn hv(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Who is behind the request's registry credentials: an access key, or a role session
/// (whose registry token names its access key id and session token, `AKID~TOKEN`).
fn authenticate(
    state: &AppState,
    reg: &Registry,
    headers: &HeaderMap,
) -> Result<(Principal, berth_registry::token::Claims), DistError> {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| DistError::unauthorized("authentication required"))?;
    let token = if let Some(t) = auth.strip_prefix("Bearer ") {
        t.trim().to_string()
    } else {
        berth_registry::token::from_basic(auth).ok_or_else(|| {
            DistError::unauthorized("use the user name AWS and a token from ecr get-login-password")
        })?
    };
    let claims = reg
        .verify_claims(&token)
        .ok_or_else(|| DistError::unauthorized("the token is invalid or has expired"))?;
    let subject = claims.subject.clone();
    if let Some((akid, session)) = subject.split_once('~') {
        let p = state
            .control
            .principal(akid, Some(session))
            .map_err(|e| DistError::unauthorized(format!("the token's session: {e}")))?;
        return Ok((p, claims));
    }
    // The key it was issued to must still be active.
    if berth_auth::SecretLookup::secret_for(state.control.as_ref(), &subject).is_none() {
        return Err(DistError::unauthorized(
            "the token's access key is no longer active",
        ));
    }
    Ok((Principal::Key(subject), claims))
}

/// The principal behind a registry token in `headers` (for routes outside `/v2` that accept
/// the same credentials, such as `/metrics`).
pub(crate) fn token_principal(
    state: &AppState,
    reg: &Registry,
    headers: &HeaderMap,
) -> Result<Principal, DistError> {
    authenticate(state, reg, headers).map(|(p, _)| p)
}

pub async fn handle(State(state): State<Arc<AppState>>, req: Request<Body>) -> Response {
    let Some(reg) = state.registry.clone() else {
        return (StatusCode::NOT_FOUND, "registry not enabled").into_response();
    };
    let host = reg.config().host.clone();
    let base = reg.config().base_url();
    let bearer = reg.config().bearer_challenge;
    let started = reg.clock().instant();
    // The metric label: the ECR action the request amounts to.
    let op = {
        let path = req.uri().path();
        let rest = path
            .strip_prefix("/v2/")
            .or_else(|| path.strip_prefix("/v2"))
            .unwrap_or("");
        route(rest).map_or("unknown", |r| ecr_action(&r, req.method()))
    };
    let (parts, body) = req.into_parts();
    let (version, expects_continue) = (parts.version, parts.headers.contains_key(header::EXPECT));
    let mut body = ReqBody { body, done: false };
    let (code, mut resp) = match serve(&state, &reg, parts, &mut body).await {
        Ok(r) => ("OK", r),
        Err(e) => (e.code, err(e, &base, &host, bearer)),
    };
    if !body.finished() {
        finish_unread(body.body, version, expects_continue, &mut resp);
    }
    state
        .metrics
        .record("registry", op, code, reg.clock().elapsed(started));
    resp.headers_mut().insert(
        "docker-distribution-api-version",
        HeaderValue::from_static(API_VERSION),
    );
    resp
}

/// How much of an unread request body is read and dropped after the answer while the
/// connection stays open for the next request.
const DRAIN_KEEP_ALIVE: u64 = 1 << 20;
/// At most this much (and for at most [`DRAIN_TIME`]) is drained of a larger one before the
/// connection closes.
const DRAIN_MAX: usize = 16 << 20;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(10);

/// The request body, read through here so that [`handle`] knows afterwards whether the
/// handler read all of it.
struct ReqBody {
    body: Body,
    done: bool,
}

impl ReqBody {
    /// The next bytes of the body, `None` at its end.
    async fn data(&mut self) -> Result<Option<Bytes>, DistError> {
        while !self.done {
            match self.body.frame().await {
                None => self.done = true,
                Some(Err(e)) => {
                    return Err(DistError::upload_invalid(format!("reading the body: {e}")));
                }
                Some(Ok(f)) => {
                    if let Ok(d) = f.into_data() {
                        return Ok(Some(d));
                    }
                }
            }
        }
        Ok(None)
    }

    fn finished(&self) -> bool {
        self.done || axum::body::HttpBody::is_end_stream(&self.body)
    }
}

/// A request body the handler did not read to its end (it answered first: 401, 404, 416,
/// …). Left alone, hyper closes the connection after the answer without saying so, and a
/// client that sends its next request on that connection fails with `EOF` (Go's net/http
/// does, and does not retry a PATCH, PUT or POST). So the rest is read and dropped after the
/// answer: a small remainder keeps the connection usable; for a large or unknown one the
/// answer says `Connection: close`, and draining for a while still keeps the close from
/// resetting the connection under the answer. A client waiting for `100 Continue` sends
/// nothing more: its connection closes.
fn finish_unread(body: Body, version: http::Version, expects_continue: bool, resp: &mut Response) {
    let remaining = axum::body::HttpBody::size_hint(&body).exact();
    let keep_alive = !expects_continue && remaining.is_some_and(|n| n <= DRAIN_KEEP_ALIVE);
    if !keep_alive && version < http::Version::HTTP_2 {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    if expects_continue {
        return;
    }
    tokio::spawn(async move {
        let mut body = ReqBody { body, done: false };
        let _ = tokio::time::timeout(DRAIN_TIME, async {
            let mut n = 0;
            while let Ok(Some(d)) = body.data().await {
                n += d.len();
                if n > DRAIN_MAX {
                    break;
                }
            }
        })
        .await;
    });
}

async fn serve(
    state: &AppState,
    reg: &Registry,
    parts: http::request::Parts,
    body: &mut ReqBody,
) -> Result<Response, DistError> {
    let path = parts.uri.path().to_string();
    let rest = path
        .strip_prefix("/v2/")
        .or_else(|| path.strip_prefix("/v2"))
        .unwrap_or("");
    let q = parts.uri.query();
    let r = route(rest).ok_or_else(|| DistError::name_invalid(rest))?;
    let (who, claims) = authenticate(state, reg, &parts.headers)?;
    let m = &parts.method;
    // The repository policy may deny this principal pulls or pushes.
    let repo = match &r {
        Route::Tags(n)
        | Route::Manifest(n, _)
        | Route::Blob(n, _)
        | Route::Uploads(n)
        | Route::Upload(n, _)
        | Route::Referrers(n, _) => Some(*n),
        _ => None,
    };
    // Who is asking, as the control plane authorizes every operation: the identity's
    // policies (join tokens: pulls; role sessions: their role's) and the repository's policy,
    // evaluated together by one evaluator.
    let caller = crate::caller(&parts, who);
    let control = &state.control;
    let denied = |e: berth_control::ControlError| DistError::denied(e.to_string());
    // Listing every repository acts on no repository (`*` in AWS).
    // A bearer token from `/v2/token` grants only the scopes it was issued for (a password
    // carries none, and is limited by its issuer alone).
    let out_of_scope = || DistError::denied("the token's scope does not cover this request");
    if matches!(r, Route::Catalog) {
        if !claims.allows("registry", "catalog", "*") {
            return Err(out_of_scope());
        }
        control
            .authorize_access(&caller, "ecr", "DescribeRepositories", &Access::any())
            .map_err(denied)?;
    }
    if let Some(repo) = repo {
        let action = ecr_action(&r, m);
        if !claims.allows(
            "repository",
            repo,
            berth_registry::token::scope_action(action),
        ) {
            return Err(out_of_scope());
        }
        let op = action.trim_start_matches("ecr:");
        control
            .authorize_access(&caller, "ecr", op, &reg.repo_access(repo).await)
            .map_err(denied)?;
    }
    match (r, m) {
        (Route::Base, &Method::GET | &Method::HEAD) => {
            Ok(json_response(StatusCode::OK, b"{}".to_vec()))
        }
        (Route::Token, &Method::GET) => {
            // Only a password mints a token, which carries the scopes asked for and never
            // outlives the password (the registry decides).
            let auth = parts
                .headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            let (t, ttl) = reg.token_endpoint(auth, &query_params(q, "scope"))?;
            let body = serde_json::json!({"token": t, "access_token": t, "expires_in": ttl});
            Ok(json_response(StatusCode::OK, body.to_string().into_bytes()))
        }
        (Route::Catalog, &Method::GET) => {
            let (n, last) = page_params(q)?;
            let p = reg.catalog(n, last.as_deref()).await?;
            Ok(paged(
                "/v2/_catalog",
                n,
                &p,
                serde_json::json!({"repositories": p.names}),
            ))
        }
        (Route::Tags(name), &Method::GET) => {
            let (n, last) = page_params(q)?;
            let p = reg.tags_list(name, n, last.as_deref()).await?;
            Ok(paged(
                &format!("/v2/{name}/tags/list"),
                n,
                &p,
                serde_json::json!({"name": name, "tags": p.names}),
            ))
        }
        (Route::Manifest(name, reference), &Method::GET | &Method::HEAD) => {
            let rec = reg.manifest(name, reference).await?;
            let len = rec.body.len();
            let mut resp = if m == Method::HEAD {
                Response::new(Body::empty())
            } else {
                Response::new(Body::from(rec.body))
            };
            let h = resp.headers_mut();
            h.insert(header::CONTENT_TYPE, hv(&rec.media_type));
            h.insert(header::CONTENT_LENGTH, hv(&len.to_string()));
            h.insert("docker-content-digest", hv(&rec.digest));
            h.insert(header::ETAG, hv(&format!("\"{}\"", rec.digest)));
            Ok(resp)
        }
        (Route::Manifest(name, reference), &Method::PUT) => {
            let ct = parts
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let body = read_limited(body, berth_registry::manifest::MAX_MANIFEST).await?;
            let d = reg
                .put_manifest(name, reference, ct.as_deref(), &body)
                .await?;
            let mut resp = created(&format!("/v2/{name}/manifests/{d}"));
            resp.headers_mut()
                .insert("docker-content-digest", hv(d.as_str()));
            // OCI 1.1: a manifest with a subject acknowledges the referrers API.
            if let Ok(p) = berth_registry::manifest::parse(&body, ct.as_deref())
                && let Some(s) = p.subject
            {
                resp.headers_mut().insert("oci-subject", hv(&s.digest));
            }
            Ok(resp)
        }
        (Route::Manifest(name, reference), &Method::DELETE) => {
            reg.delete_manifest(name, reference).await?;
            Ok(status(StatusCode::ACCEPTED))
        }
        (Route::Blob(name, d), &Method::GET | &Method::HEAD) => {
            let d = Digest::parse(d).map_err(DistError::digest_invalid)?;
            let size = reg.blob(name, &d).await?;
            blob_response(
                reg,
                &d,
                size,
                m == Method::HEAD,
                parts.headers.get(header::RANGE),
            )
            .await
        }
        (Route::Blob(name, d), &Method::DELETE) => {
            let d = Digest::parse(d).map_err(DistError::digest_invalid)?;
            reg.delete_blob(name, &d).await?;
            Ok(status(StatusCode::ACCEPTED))
        }
        (Route::Referrers(name, d), &Method::GET) => {
            let d = Digest::parse(d).map_err(DistError::digest_invalid)?;
            let at = query_param(q, "artifactType");
            let refs = reg.referrers(name, &d, at.as_deref()).await?;
            let body = serde_json::json!({
                "schemaVersion": 2,
                "mediaType": berth_registry::manifest::OCI_INDEX,
                "manifests": refs,
            });
            let mut resp = Response::new(Body::from(body.to_string()));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(berth_registry::manifest::OCI_INDEX),
            );
            if at.is_some() {
                resp.headers_mut().insert(
                    "oci-filters-applied",
                    HeaderValue::from_static("artifactType"),
                );
            }
            Ok(resp)
        }
        (Route::Uploads(name), &Method::POST) => {
            if let (Some(from), Some(d)) = (query_param(q, "from"), query_param(q, "mount")) {
                let d = Digest::parse(&d).map_err(DistError::digest_invalid)?;
                // Mounting reads the source repository: the caller must be allowed to pull
                // from it. If not, this is a normal upload, which says nothing of whether the
                // source or the blob exists.
                let may_pull = claims.allows("repository", &from, "pull")
                    && control
                        .authorize_access(
                            &caller,
                            "ecr",
                            "BatchGetImage",
                            &reg.repo_access(&from).await,
                        )
                        .is_ok();
                if may_pull && reg.mount(name, &from, &d).await?.is_some() {
                    let mut resp = created(&format!("/v2/{name}/blobs/{d}"));
                    resp.headers_mut()
                        .insert("docker-content-digest", hv(d.as_str()));
                    return Ok(resp);
                }
            }
            let owner = state.control.principal_arn_of(&caller.principal);
            let id = reg.start_upload(name, &owner).await?;
            if let Some(d) = query_param(q, "digest") {
                // Monolithic: the whole blob in this request.
                let d = Digest::parse(&d).map_err(DistError::digest_invalid)?;
                let mut s = reg.open_upload(name, &id).await?;
                stream_into(&mut s, body).await?;
                reg.complete_upload(s, &d).await?;
                let mut resp = created(&format!("/v2/{name}/blobs/{d}"));
                resp.headers_mut()
                    .insert("docker-content-digest", hv(d.as_str()));
                return Ok(resp);
            }
            Ok(upload_status(name, &id, 0, StatusCode::ACCEPTED))
        }
        (Route::Upload(name, id), &Method::PATCH) => {
            let mut s = reg.open_upload(name, id).await?;
            if let Some(cr) = parts.headers.get(header::CONTENT_RANGE) {
                let (start, end) = parse_content_range(cr)?;
                Registry::check_range(&s, start, end)?;
            }
            stream_into(&mut s, body).await?;
            Ok(upload_status(name, id, s.size(), StatusCode::ACCEPTED))
        }
        (Route::Upload(name, id), &Method::PUT) => {
            let d = query_param(q, "digest").ok_or_else(|| {
                DistError::digest_invalid("the digest query parameter is required")
            })?;
            let d = Digest::parse(&d).map_err(DistError::digest_invalid)?;
            let mut s = reg.open_upload(name, id).await?;
            if let Some(cr) = parts.headers.get(header::CONTENT_RANGE) {
                let (start, end) = parse_content_range(cr)?;
                Registry::check_range(&s, start, end)?;
            }
            stream_into(&mut s, body).await?;
            reg.complete_upload(s, &d).await?;
            let mut resp = created(&format!("/v2/{name}/blobs/{d}"));
            resp.headers_mut()
                .insert("docker-content-digest", hv(d.as_str()));
            Ok(resp)
        }
        (Route::Upload(name, id), &Method::GET) => {
            let s = reg.open_upload(name, id).await?;
            Ok(upload_status(name, id, s.size(), StatusCode::NO_CONTENT))
        }
        (Route::Upload(name, id), &Method::DELETE) => {
            let s = reg.open_upload(name, id).await?;
            reg.cancel_upload(s).await?;
            Ok(status(StatusCode::NO_CONTENT))
        }
        _ => Err(DistError::unsupported(format!(
            "{m} is not supported on this path"
        ))),
    }
}

/// The ECR IAM action a registry request amounts to (what repository policies name).
fn ecr_action(r: &Route<'_>, m: &Method) -> &'static str {
    match (r, m) {
        (Route::Blob(..), &Method::GET) => "ecr:GetDownloadUrlForLayer",
        (Route::Blob(..), &Method::HEAD) => "ecr:BatchCheckLayerAvailability",
        (Route::Blob(..) | Route::Manifest(..), &Method::DELETE) => "ecr:BatchDeleteImage",
        (Route::Manifest(..), &Method::PUT) => "ecr:PutImage",
        (Route::Manifest(..) | Route::Referrers(..), _) => "ecr:BatchGetImage",
        (Route::Tags(..), _) => "ecr:ListImages",
        (Route::Uploads(..), _) => "ecr:InitiateLayerUpload",
        (Route::Upload(..), &Method::PUT) => "ecr:CompleteLayerUpload",
        (Route::Upload(..), _) => "ecr:UploadLayerPart",
        _ => "ecr:DescribeRepositories",
    }
}

fn status(s: StatusCode) -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = s;
    r
}

fn json_response(s: StatusCode, body: Vec<u8>) -> Response {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = s;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn created(location: &str) -> Response {
    let mut r = status(StatusCode::CREATED);
    r.headers_mut().insert(header::LOCATION, hv(location));
    r.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    r
}

fn upload_status(name: &str, id: &str, size: u64, s: StatusCode) -> Response {
    let mut r = status(s);
    let h = r.headers_mut();
    h.insert(
        header::LOCATION,
        hv(&format!("/v2/{name}/blobs/uploads/{id}")),
    );
    h.insert("docker-upload-uuid", hv(id));
    // The spec's Range is inclusive; an empty upload reports 0-0 as registries do.
    h.insert(header::RANGE, hv(&format!("0-{}", size.saturating_sub(1))));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    r
}

fn page_params(q: Option<&str>) -> Result<(Option<usize>, Option<String>), DistError> {
    let n = match query_param(q, "n") {
        Some(v) => Some(
            v.parse::<usize>()
                .map_err(|_| DistError::size_invalid(format!("invalid n: {v}")))?,
        ),
        None => None,
    };
    Ok((n, query_param(q, "last")))
}

fn paged(path: &str, n: Option<usize>, p: &Page, body: serde_json::Value) -> Response {
    let mut r = json_response(StatusCode::OK, body.to_string().into_bytes());
    if let (Some(n), Some(last)) = (n, &p.next_last) {
        r.headers_mut().insert(
            header::LINK,
            hv(&format!("<{path}?n={n}&last={last}>; rel=\"next\"")),
        );
    }
    r
}

/// `Content-Range: <start>-<end>` (inclusive), as the distribution spec uses it.
#[doc(hidden)]
pub fn parse_content_range(v: &HeaderValue) -> Result<(u64, u64), DistError> {
    let s = v
        .to_str()
        .map_err(|_| DistError::range_invalid("unreadable Content-Range"))?;
    let s = s.strip_prefix("bytes ").unwrap_or(s);
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| DistError::range_invalid(format!("invalid Content-Range {s}")))?;
    let b = b.split('/').next().unwrap_or(b);
    match (a.trim().parse::<u64>(), b.trim().parse::<u64>()) {
        (Ok(a), Ok(b)) if b >= a => Ok((a, b)),
        _ => Err(DistError::range_invalid(format!(
            "invalid Content-Range {s}"
        ))),
    }
}

async fn read_limited(body: &mut ReqBody, max: usize) -> Result<Bytes, DistError> {
    let mut buf = bytes::BytesMut::new();
    while let Some(d) = body.data().await? {
        if buf.len() + d.len() > max {
            return Err(DistError::size_invalid(format!(
                "body larger than {max} bytes"
            )));
        }
        buf.extend_from_slice(&d);
    }
    Ok(buf.freeze())
}

/// The body into an upload session, written to disk by the end of the request.
async fn stream_into(
    s: &mut berth_registry::dist::UploadSession,
    body: &mut ReqBody,
) -> Result<(), DistError> {
    while let Some(data) = body.data().await? {
        s.write(data).await?;
    }
    s.flush().await
}

/// `Range: bytes=a-b` / `bytes=a-` / `bytes=-n` → (start, end inclusive).
#[doc(hidden)]
pub fn parse_range(v: &HeaderValue, size: u64) -> Option<(u64, u64)> {
    let s = v.to_str().ok()?.strip_prefix("bytes=")?;
    if s.contains(',') || size == 0 {
        return None;
    }
    let (a, b) = s.split_once('-')?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", n) => {
            let n: u64 = n.parse().ok()?;
            (size.saturating_sub(n), size - 1)
        }
        (a, "") => (a.parse().ok()?, size - 1),
        (a, b) => (a.parse().ok()?, b.parse::<u64>().ok()?.min(size - 1)),
    };
    (start <= end && start < size).then_some((start, end))
}

async fn blob_response(
    reg: &Registry,
    d: &Digest,
    size: u64,
    head: bool,
    range: Option<&HeaderValue>,
) -> Result<Response, DistError> {
    let (start, end, partial) = match range {
        Some(r) => match parse_range(r, size) {
            Some((a, b)) => (a, b, true),
            None => {
                let mut resp = status(StatusCode::RANGE_NOT_SATISFIABLE);
                resp.headers_mut()
                    .insert(header::CONTENT_RANGE, hv(&format!("bytes */{size}")));
                return Ok(resp);
            }
        },
        None => (0, size.saturating_sub(1), false),
    };
    let len = if size == 0 { 0 } else { end - start + 1 };
    let mut resp = if head || len == 0 {
        Response::new(Body::empty())
    } else {
        let path = reg.blob_store().path(d);
        let mut f = tokio::fs::File::open(&path)
            .await
            .map_err(|_| DistError::blob_unknown(d.as_str()))?;
        if start > 0 {
            f.seek(std::io::SeekFrom::Start(start))
                .await
                .map_err(|e| DistError::internal(e.to_string()))?;
        }
        let stream = tokio_util::io::ReaderStream::with_capacity(f.take(len), 128 * 1024);
        Response::new(Body::from_stream(stream))
    };
    if partial {
        *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
        resp.headers_mut().insert(
            header::CONTENT_RANGE,
            hv(&format!("bytes {start}-{end}/{size}")),
        );
    }
    let h = resp.headers_mut();
    h.insert(header::CONTENT_LENGTH, hv(&len.to_string()));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert("docker-content-digest", hv(d.as_str()));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::ETAG, hv(&format!("\"{d}\"")));
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found while writing the fuzz targets (a file in fuzz/crashes/ replays it): `%` then a hex
    /// digit then a multi-byte character sliced the string inside that character and panicked (`GET
    /// /v2/token?scope=%a\u{e9}` needs no credentials). Escapes are two hex digits, read as bytes;
    /// `%+1` is not one either.
    #[test]
    fn query_values_decode_without_slicing_characters() {
        assert_eq!(percent_decode("%a\u{e9}"), "%a\u{e9}");
        assert_eq!(percent_decode("\u{e9}%\u{e9}%"), "\u{e9}%\u{e9}%");
        assert_eq!(percent_decode("%+1"), "% 1");
        assert_eq!(
            percent_decode("repository%3Aapp%2Fweb%3apull+x%zz%4"),
            "repository:app/web:pull x%zz%4"
        );
        assert_eq!(percent_decode("%C3%A9"), "\u{e9}");
    }

    #[test]
    fn routes() {
        assert_eq!(route(""), Some(Route::Base));
        assert_eq!(route("a/b/tags/list"), Some(Route::Tags("a/b")));
        assert_eq!(
            route("a/manifests/latest"),
            Some(Route::Manifest("a", "latest"))
        );
        assert_eq!(
            route("blobs/blobs/sha256:x"),
            Some(Route::Blob("blobs", "sha256:x"))
        );
        assert_eq!(route("a/blobs/uploads/"), Some(Route::Uploads("a")));
        assert_eq!(
            route("a/blobs/uploads/123"),
            Some(Route::Upload("a", "123"))
        );
        assert_eq!(
            route("a/referrers/sha256:x"),
            Some(Route::Referrers("a", "sha256:x"))
        );
        assert_eq!(route("/manifests/x"), None);
        assert_eq!(route("nonsense"), None);
    }

    #[test]
    fn ranges() {
        let v = |s: &str| HeaderValue::from_str(s).unwrap();
        assert_eq!(parse_range(&v("bytes=0-9"), 100), Some((0, 9)));
        assert_eq!(parse_range(&v("bytes=90-"), 100), Some((90, 99)));
        assert_eq!(parse_range(&v("bytes=-10"), 100), Some((90, 99)));
        assert_eq!(parse_range(&v("bytes=100-"), 100), None);
        assert_eq!(parse_range(&v("bytes=5-2"), 100), None);
        assert_eq!(parse_content_range(&v("0-99")).unwrap(), (0, 99));
        assert!(parse_content_range(&v("x-y")).is_err());
        assert!(parse_content_range(&v("9-1")).is_err());
    }
}
