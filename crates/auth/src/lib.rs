//! berth-auth: AWS Signature Version 4 — verification of incoming requests (header and
//! presigned query forms, as botocore, the AWS CLI and the Go SDK send them) and signing for
//! berth's own clients, plus access-key generation. [`policy`] parses and evaluates IAM policy
//! documents (identity and trust policies); [`session`] mints and checks role sessions'
//! temporary credentials.
//!
//! Pure and synchronous: the caller supplies the request parts, a way to look up secrets and
//! the current time. Derived signing keys are cached (keyed by secret, date, region, service)
//! so a verification costs two SHA-256 passes and one HMAC.
//!
//! What a signature must cover, so that it cannot be replayed as another operation: a
//! header-signed request always has its real body hashed (`UNSIGNED-PAYLOAD` is refused — the
//! registry's `/v2` routes use tokens, not SigV4) and `X-Amz-Target` among its signed headers
//! when it has one. A presigned request carries its operation and every parameter in the
//! signed query string, so it must be a `GET` or `HEAD` without a body or `X-Amz-Target`, and
//! is honoured only within its `X-Amz-Expires` (1 s to 7 days).
//! Must not: trust a client-supplied payload hash without checking it against the body.

pub mod policy;
pub mod session;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Mutex;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use time::OffsetDateTime;
use time::macros::format_description;

type HmacSha256 = Hmac<Sha256>;

pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
const UNSIGNED: &str = "UNSIGNED-PAYLOAD";
/// The longest a presigned request may be valid for (seven days), as AWS allows.
const MAX_PRESIGN_EXPIRES: i64 = 604_800;

/// An access key pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

/// Everything of an HTTP request that SigV4 covers.
pub struct RequestParts<'a> {
    pub method: &'a str,
    /// The path as received (still percent-encoded).
    pub path: &'a str,
    /// The raw query string, without `?`.
    pub query: Option<&'a str>,
    pub headers: &'a http::HeaderMap,
    pub body: &'a [u8],
}

/// Where secrets come from.
pub trait SecretLookup {
    fn secret_for(&self, access_key_id: &str) -> Option<String>;
}

/// Who signed a request, and for what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub access_key_id: String,
    pub region: String,
    pub service: String,
    pub signed_at: OffsetDateTime,
}

/// Why a request is refused. Each carries AWS's error code and message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No signature at all.
    #[error("Missing Authentication Token")]
    MissingToken,
    /// The signature parts are malformed or incomplete.
    #[error("{0}")]
    Incomplete(String),
    /// The access key id is unknown.
    #[error("The security token included in the request is invalid.")]
    UnrecognizedClient,
    /// The signature does not match.
    #[error(
        "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details."
    )]
    SignatureMismatch,
    /// Signed too long ago (or too far in the future).
    #[error("{0}")]
    Expired(String),
}

impl AuthError {
    /// The AWS error code (`__type`).
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::MissingToken => "MissingAuthenticationTokenException",
            AuthError::Incomplete(_) => "IncompleteSignatureException",
            AuthError::UnrecognizedClient => "UnrecognizedClientException",
            AuthError::SignatureMismatch | AuthError::Expired(_) => "InvalidSignatureException",
        }
    }
    /// The HTTP status AWS's JSON services answer with.
    pub fn http_status(&self) -> u16 {
        match self {
            AuthError::MissingToken => 403,
            _ => 400,
        }
    }
}

/// SigV4's URI encoding: unreserved characters kept, everything else `%XX` (uppercase).
pub fn uri_encode(s: &str, encode_slash: bool, out: &mut String) {
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b'/' if !encode_slash => out.push('/'),
            _ => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
}

/// Percent-decoding, the one berth uses everywhere: `%XX` (two hex digits) is the byte XX,
/// anything else stays as it is, working on bytes (a `%` before a multi-byte character is no
/// escape); `+` is a space when `plus_is_space` (HTML forms, `application/x-www-form-urlencoded`)
/// and itself otherwise (SigV4's query strings encode spaces as `%20`). Bytes that are not
/// UTF-8 after decoding become U+FFFD.
pub fn percent_decode(s: &str, plus_is_space: bool) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex_val(bytes[i + 1]), hex_val(bytes[i + 2]))
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(if plus_is_space && bytes[i] == b'+' {
            b' '
        } else {
            bytes[i]
        });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The canonical URI: each segment decoded then encoded once (botocore's non-S3 behaviour
/// quotes the already-normalised path with `/` kept).
fn canonical_uri(path: &str) -> String {
    let p = if path.is_empty() { "/" } else { path };
    let mut out = String::with_capacity(p.len() + 8);
    uri_encode(&percent_decode(p, false), false, &mut out);
    out
}

/// The canonical query string: pairs decoded, re-encoded, sorted by key then value.
fn canonical_query(query: Option<&str>, skip_signature: bool) -> String {
    let Some(q) = query.filter(|q| !q.is_empty()) else {
        return String::new();
    };
    let mut pairs: Vec<(String, String)> = q
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            let dec = |s: &str| percent_decode(s, true);
            let mut ek = String::new();
            uri_encode(&dec(k), true, &mut ek);
            let mut ev = String::new();
            uri_encode(&dec(v), true, &mut ev);
            (ek, ev)
        })
        .filter(|(k, _)| !(skip_signature && k == "X-Amz-Signature"))
        .collect();
    pairs.sort();
    let mut out = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    out
}

/// Trim and collapse inner runs of spaces, as SigV4 canonical headers require.
fn collapse(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for (i, w) in v.split_whitespace().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(w);
    }
    out
}

fn canonical_headers(headers: &http::HeaderMap, signed: &[&str]) -> Result<String, AuthError> {
    let mut out = String::new();
    for name in signed {
        let vals: Vec<String> = headers
            .get_all(*name)
            .iter()
            .map(|v| collapse(&String::from_utf8_lossy(v.as_bytes())))
            .collect();
        if vals.is_empty() {
            return Err(AuthError::SignatureMismatch);
        }
        out.push_str(name);
        out.push(':');
        out.push_str(&vals.join(","));
        out.push('\n');
    }
    Ok(out)
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// HMAC-SHA256 of `data` under `key` (any length): the one MAC berth signs and seals with —
/// SigV4 keys and signatures, role-session tokens, registry tokens.
pub fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length; new_from_slice cannot fail for it.
    let mut m = <HmacSha256 as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    m.update(data);
    m.finalize().into_bytes().into()
}

type KeyCacheKey = (String, String, String, String);

/// A small cache of derived signing keys. Keyed by the secret itself, so a changed secret
/// never reuses an old key.
static KEY_CACHE: Mutex<Option<HashMap<KeyCacheKey, [u8; 32]>>> = Mutex::new(None);

fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> [u8; 32] {
    let ck = (
        secret.to_string(),
        date.to_string(),
        region.to_string(),
        service.to_string(),
    );
    if let Ok(g) = KEY_CACHE.lock()
        && let Some(k) = g.as_ref().and_then(|m| m.get(&ck))
    {
        return *k;
    }
    let k_date = hmac_sha256(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k_region = hmac_sha256(&k_date, region.as_bytes());
    let k_service = hmac_sha256(&k_region, service.as_bytes());
    let k = hmac_sha256(&k_service, b"aws4_request");
    if let Ok(mut g) = KEY_CACHE.lock() {
        let m = g.get_or_insert_with(HashMap::new);
        if m.len() > 1024 {
            m.clear();
        }
        m.insert(ck, k);
    }
    k
}

fn parse_amz_date(s: &str) -> Option<OffsetDateTime> {
    let fmt = format_description!("[year][month][day]T[hour][minute][second]Z");
    time::PrimitiveDateTime::parse(s, &fmt)
        .ok()
        .map(|p| p.assume_utc())
}

fn format_amz_date(t: OffsetDateTime) -> String {
    let fmt = format_description!("[year][month][day]T[hour][minute][second]Z");
    t.format(&fmt).unwrap_or_default()
}

/// The parsed signature of a request, from either form.
struct Sig<'a> {
    access_key_id: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
    signed_headers: Vec<&'a str>,
    signature: String,
    amz_date: String,
    presigned: bool,
    /// `X-Amz-Expires` of a presigned request, already checked to be in range.
    expires: i64,
}

fn parse_credential(c: &str) -> Result<(&str, &str, &str, &str), AuthError> {
    let parts: Vec<&str> = c.split('/').collect();
    match parts.as_slice() {
        [akid, date, region, service, "aws4_request"] => Ok((akid, date, region, service)),
        _ => Err(AuthError::Incomplete(format!(
            "Credential should be scoped to a valid region. Credential: {c}"
        ))),
    }
}

fn header_sig<'a>(auth: &'a str, headers: &http::HeaderMap) -> Result<Sig<'a>, AuthError> {
    let rest = auth
        .strip_prefix(ALGORITHM)
        .ok_or_else(|| {
            AuthError::Incomplete(format!(
                "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header. Unsupported algorithm in Authorization={auth}"
            ))
        })?
        .trim();
    let mut cred = None;
    let mut signed = None;
    let mut sig = None;
    for part in rest.split(',') {
        let part = part.trim();
        if let Some(v) = part.strip_prefix("Credential=") {
            cred = Some(v);
        } else if let Some(v) = part.strip_prefix("SignedHeaders=") {
            signed = Some(v);
        } else if let Some(v) = part.strip_prefix("Signature=") {
            sig = Some(v);
        }
    }
    let missing = |what: &str| {
        AuthError::Incomplete(format!(
            "Authorization header requires '{what}' parameter. Authorization={auth}"
        ))
    };
    let cred = cred.ok_or_else(|| missing("Credential"))?;
    let signed = signed.ok_or_else(|| missing("SignedHeaders"))?;
    let sig = sig.ok_or_else(|| missing("Signature"))?;
    let (access_key_id, date, region, service) = parse_credential(cred)?;
    let amz_date = headers
        .get("x-amz-date")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .ok_or_else(|| {
            AuthError::Incomplete(
                "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header."
                    .into(),
            )
        })?;
    Ok(Sig {
        access_key_id,
        date,
        region,
        service,
        signed_headers: signed.split(';').collect(),
        signature: sig.to_string(),
        amz_date,
        presigned: false,
        expires: 0,
    })
}

fn query_param(q: &str, name: &str) -> Option<String> {
    q.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| percent_decode(v, false))
    })
}

/// A presigned request's signature covers its method, path, query and signed headers but no
/// body: the operation and all its parameters must be in the query string. So only a `GET` or
/// `HEAD` with an empty body and no `X-Amz-Target` is accepted — otherwise a URL presigned
/// for `GetCallerIdentity` would carry any operation in a body or a target header.
fn presigned_shape(req: &RequestParts<'_>) -> Result<(), AuthError> {
    if !matches!(req.method, "GET" | "HEAD") {
        return Err(AuthError::Incomplete(format!(
            "Presigned (query-string) signatures are accepted for GET (or HEAD) requests only, not {}; sign it in the Authorization header.",
            req.method
        )));
    }
    if !req.body.is_empty() {
        return Err(AuthError::Incomplete(
            "A presigned (query-string) request must not have a body: its signature does not cover one."
                .into(),
        ));
    }
    if req.headers.contains_key("x-amz-target") {
        return Err(AuthError::Incomplete(
            "A presigned (query-string) request must not have an X-Amz-Target header: name the operation with Action in the signed query string."
                .into(),
        ));
    }
    Ok(())
}

/// `X-Amz-Expires` of a presigned request: required, whole seconds, 1 to 604800.
fn presign_expires(q: &str) -> Result<i64, AuthError> {
    let raw = query_param(q, "X-Amz-Expires")
        .ok_or_else(|| AuthError::Incomplete("Missing X-Amz-Expires".into()))?;
    match raw.parse::<i64>() {
        Ok(n) if (1..=MAX_PRESIGN_EXPIRES).contains(&n) => Ok(n),
        Ok(n) if n > MAX_PRESIGN_EXPIRES => Err(AuthError::Incomplete(format!(
            "X-Amz-Expires must be less than a week (in seconds) that is {MAX_PRESIGN_EXPIRES}, not {n}"
        ))),
        _ => Err(AuthError::Incomplete(format!(
            "X-Amz-Expires must be a whole number of seconds from 1 to {MAX_PRESIGN_EXPIRES}, not {raw:?}"
        ))),
    }
}

/// Verify a request's SigV4 signature.
pub fn verify(
    req: &RequestParts<'_>,
    secrets: &dyn SecretLookup,
    now: OffsetDateTime,
    max_skew: time::Duration,
) -> Result<Verified, AuthError> {
    let auth_header = req
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let presigned_q = req
        .query
        .filter(|q| query_param(q, "X-Amz-Signature").is_some());
    let cred_holder: String;
    let signed_holder: String;
    let sig = match (auth_header, presigned_q) {
        (Some(_), Some(_)) => {
            return Err(AuthError::Incomplete(
                "Only one auth mechanism allowed; only the X-Amz-Signature query parameter or the Authorization header should be specified."
                    .into(),
            ));
        }
        (Some(a), None) => header_sig(a, req.headers)?,
        (None, Some(q)) => {
            presigned_shape(req)?;
            let alg = query_param(q, "X-Amz-Algorithm").unwrap_or_default();
            if alg != ALGORITHM {
                return Err(AuthError::Incomplete(format!(
                    "Unsupported algorithm: {alg}"
                )));
            }
            cred_holder = query_param(q, "X-Amz-Credential")
                .ok_or_else(|| AuthError::Incomplete("Missing X-Amz-Credential".into()))?;
            signed_holder = query_param(q, "X-Amz-SignedHeaders")
                .ok_or_else(|| AuthError::Incomplete("Missing X-Amz-SignedHeaders".into()))?;
            let (access_key_id, date, region, service) = parse_credential(&cred_holder)?;
            Sig {
                access_key_id,
                date,
                region,
                service,
                signed_headers: signed_holder.split(';').collect(),
                signature: query_param(q, "X-Amz-Signature").unwrap_or_default(),
                amz_date: query_param(q, "X-Amz-Date")
                    .ok_or_else(|| AuthError::Incomplete("Missing X-Amz-Date".into()))?,
                presigned: true,
                expires: presign_expires(q)?,
            }
        }
        (None, None) => return Err(AuthError::MissingToken),
    };

    if !sig.signed_headers.contains(&"host") {
        return Err(AuthError::Incomplete(
            "'Host' must be a 'SignedHeader' in the AWS Authorization.".into(),
        ));
    }
    let signed_at = parse_amz_date(&sig.amz_date)
        .ok_or_else(|| AuthError::Incomplete(format!("Invalid X-Amz-Date: {}", sig.amz_date)))?;
    if !sig.amz_date.starts_with(sig.date) {
        return Err(AuthError::Expired(format!(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '{}' != '{}', from '{}'.",
            sig.date,
            &sig.amz_date[..8.min(sig.amz_date.len())],
            sig.amz_date
        )));
    }
    let fmt_now = format_amz_date(now);
    // A signing time near the ends of the calendar (year 9999) has no time after it: checked
    // arithmetic, where a time past the end is later than any `now` and one before the start
    // earlier.
    let later_than_now = |d: time::Duration| signed_at.checked_sub(d).is_some_and(|t| t > now);
    let earlier_than_now = |d: time::Duration| signed_at.checked_add(d).is_some_and(|t| t < now);
    if sig.presigned {
        let exp = sig.expires;
        if earlier_than_now(time::Duration::seconds(exp)) || later_than_now(max_skew) {
            return Err(AuthError::Expired(format!(
                "Signature expired: {} is now earlier than {} ({} - {} sec.)",
                sig.amz_date, fmt_now, fmt_now, exp
            )));
        }
    } else if earlier_than_now(max_skew) {
        return Err(AuthError::Expired(format!(
            "Signature expired: {} is now earlier than {} ({} - {} min.)",
            sig.amz_date,
            format_amz_date(now - max_skew),
            fmt_now,
            max_skew.whole_minutes()
        )));
    } else if later_than_now(max_skew) {
        return Err(AuthError::Expired(format!(
            "Signature not yet current: {} is still later than {} ({} + {} min.)",
            sig.amz_date,
            format_amz_date(now + max_skew),
            fmt_now,
            max_skew.whole_minutes()
        )));
    }

    // The JSON protocols name the operation in this header: unsigned, it could be swapped.
    if req.headers.contains_key("x-amz-target") && !sig.signed_headers.contains(&"x-amz-target") {
        return Err(AuthError::Incomplete(
            "'X-Amz-Target' must be a 'SignedHeader' in the AWS Authorization.".into(),
        ));
    }

    let secret = secrets
        .secret_for(sig.access_key_id)
        .ok_or(AuthError::UnrecognizedClient)?;

    // The real body is always hashed. A claimed hash (signed or not) that is not the body's —
    // `UNSIGNED-PAYLOAD` included — can never verify.
    let body_hash = sha256_hex(req.body);
    if let Some(claimed) = req.headers.get("x-amz-content-sha256")
        && claimed.as_bytes() != body_hash.as_bytes()
    {
        return Err(AuthError::SignatureMismatch);
    }
    // A presigned request's body is empty (checked above), so either payload hash a presigner
    // may have signed commits to the same thing: botocore and the Go SDK sign the empty body's
    // hash, S3-style presigners `UNSIGNED-PAYLOAD`.
    let payload_hashes: &[&str] = if sig.presigned {
        &[&body_hash, UNSIGNED]
    } else {
        &[&body_hash]
    };
    let head = format!(
        "{}\n{}\n{}\n{}\n{}\n",
        req.method,
        canonical_uri(req.path),
        canonical_query(req.query, sig.presigned),
        canonical_headers(req.headers, &sig.signed_headers)?,
        sig.signed_headers.join(";"),
    );
    let scope = format!("{}/{}/{}/aws4_request", sig.date, sig.region, sig.service);
    let key = signing_key(&secret, sig.date, sig.region, sig.service);
    let matches = |payload_hash: &str| {
        let canonical = format!("{head}{payload_hash}");
        let string_to_sign = format!(
            "{ALGORITHM}\n{}\n{scope}\n{}",
            sig.amz_date,
            sha256_hex(canonical.as_bytes())
        );
        let expected = hex::encode(hmac_sha256(&key, string_to_sign.as_bytes()));
        bool::from(expected.as_bytes().ct_eq(sig.signature.as_bytes()))
    };
    if !payload_hashes.iter().any(|h| matches(h)) {
        return Err(AuthError::SignatureMismatch);
    }
    Ok(Verified {
        access_key_id: sig.access_key_id.to_string(),
        region: sig.region.to_string(),
        service: sig.service.to_string(),
        signed_at,
    })
}

/// Sign a request in place (header form), as botocore does for non-S3 services: adds
/// `x-amz-date`, `x-amz-security-token` (with a session token) and `authorization`. `host` must already be
/// set in `headers`.
#[allow(clippy::too_many_arguments)]
pub fn sign(
    method: &str,
    path: &str,
    query: Option<&str>,
    headers: &mut http::HeaderMap,
    body: &[u8],
    creds: &Credentials,
    region: &str,
    service: &str,
    now: OffsetDateTime,
) {
    let amz_date = format_amz_date(now);
    let date = &amz_date[..8];
    let payload = sha256_hex(body);
    let hv = |s: &str| http::HeaderValue::from_str(s).unwrap_or(http::HeaderValue::from_static(""));
    headers.insert("x-amz-date", hv(&amz_date));
    if let Some(t) = &creds.session_token {
        headers.insert("x-amz-security-token", hv(t));
    }
    let mut names: Vec<String> = headers
        .keys()
        .map(|k| k.as_str().to_string())
        .filter(|k| k == "host" || k.starts_with("x-amz-") || k == "content-type")
        .collect();
    names.sort();
    names.dedup();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let ch = canonical_headers(headers, &refs).unwrap_or_default();
    let signed = refs.join(";");
    let canonical = format!(
        "{method}\n{}\n{}\n{ch}\n{signed}\n{payload}",
        canonical_uri(path),
        canonical_query(query, false)
    );
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let sts = format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        sha256_hex(canonical.as_bytes())
    );
    let key = signing_key(&creds.secret_access_key, date, region, service);
    let signature = hex::encode(hmac_sha256(&key, sts.as_bytes()));
    headers.insert(
        http::header::AUTHORIZATION,
        hv(&format!(
            "{ALGORITHM} Credential={}/{scope}, SignedHeaders={signed}, Signature={signature}",
            creds.access_key_id
        )),
    );
}

/// A new access key: an `AKIA`-style 20-character id and a 40-character secret, from the
/// operating system's CSPRNG.
pub fn new_access_key() -> Credentials {
    use rand::Rng;
    const ID: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    const SECRET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut rng = rand::rng();
    let mut id = String::from("AKIA");
    for _ in 0..16 {
        id.push(ID[rng.random_range(0..ID.len())] as char);
    }
    let secret: String = (0..40)
        .map(|_| SECRET[rng.random_range(0..SECRET.len())] as char)
        .collect();
    Credentials {
        access_key_id: id,
        secret_access_key: secret,
        session_token: None,
    }
}

#[cfg(test)]
mod tests;
