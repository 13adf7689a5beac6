use super::*;

struct One(&'static str, &'static str);
impl SecretLookup for One {
    fn secret_for(&self, id: &str) -> Option<String> {
        (id == self.0).then(|| self.1.to_string())
    }
}

const AKID: &str = "AKIAIOSFODNN7EXAMPLE";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

fn creds() -> Credentials {
    Credentials {
        access_key_id: AKID.into(),
        secret_access_key: SECRET.into(),
        session_token: None,
    }
}

fn t0() -> OffsetDateTime {
    time::macros::datetime!(2026-11-23 10:00:00 UTC)
}

fn signed(path: &str, query: Option<&str>, body: &[u8]) -> http::HeaderMap {
    let mut h = http::HeaderMap::new();
    h.insert("host", "127.0.0.1:8470".parse().unwrap());
    h.insert(
        "content-type",
        "application/x-amz-json-1.1".parse().unwrap(),
    );
    sign(
        "POST",
        path,
        query,
        &mut h,
        body,
        &creds(),
        "us-east-1",
        "ecs",
        t0(),
    );
    h
}

fn check(
    path: &str,
    query: Option<&str>,
    h: &http::HeaderMap,
    body: &[u8],
    now: OffsetDateTime,
) -> Result<Verified, AuthError> {
    verify(
        &RequestParts {
            method: "POST",
            path,
            query,
            headers: h,
            body,
        },
        &One(AKID, SECRET),
        now,
        time::Duration::minutes(15),
    )
}

#[test]
fn sign_then_verify() {
    let body = br#"{"clusterName":"dev"}"#;
    let h = signed("/", None, body);
    let v = check("/", None, &h, body, t0()).unwrap();
    assert_eq!(v.access_key_id, AKID);
    assert_eq!(v.service, "ecs");
    assert_eq!(v.region, "us-east-1");
    let q = Some("b=2&a=1&a=0&x=%2F%20y");
    let h = signed("/v2/my-repo/blobs/sha256:abc", q, b"");
    check("/v2/my-repo/blobs/sha256:abc", q, &h, b"", t0()).unwrap();
}

#[test]
fn tampering_is_refused() {
    let body = br#"{"clusterName":"dev"}"#;
    let h = signed("/", None, body);
    assert_eq!(
        check("/", None, &h, br#"{"clusterName":"evil"}"#, t0()),
        Err(AuthError::SignatureMismatch)
    );
    assert_eq!(
        check("/other", None, &h, body, t0()),
        Err(AuthError::SignatureMismatch)
    );
    assert_eq!(
        check("/", Some("a=1"), &h, body, t0()),
        Err(AuthError::SignatureMismatch)
    );
    let mut h2 = h.clone();
    h2.insert("content-type", "text/plain".parse().unwrap());
    assert_eq!(
        check("/", None, &h2, body, t0()),
        Err(AuthError::SignatureMismatch)
    );
    // Wrong secret.
    let r = verify(
        &RequestParts {
            method: "POST",
            path: "/",
            query: None,
            headers: &h,
            body,
        },
        &One(AKID, "not-the-secret"),
        t0(),
        time::Duration::minutes(15),
    );
    assert_eq!(r, Err(AuthError::SignatureMismatch));
    // Unknown key.
    let r = verify(
        &RequestParts {
            method: "POST",
            path: "/",
            query: None,
            headers: &h,
            body,
        },
        &One("AKIAOTHER", SECRET),
        t0(),
        time::Duration::minutes(15),
    );
    assert_eq!(r, Err(AuthError::UnrecognizedClient));
}

#[test]
fn clock_skew() {
    let body = b"{}";
    let h = signed("/", None, body);
    assert!(check("/", None, &h, body, t0() + time::Duration::minutes(14)).is_ok());
    let e = check("/", None, &h, body, t0() + time::Duration::minutes(16)).unwrap_err();
    assert_eq!(e.code(), "InvalidSignatureException");
    assert!(e.to_string().starts_with("Signature expired"), "{e}");
    let e = check("/", None, &h, body, t0() - time::Duration::minutes(16)).unwrap_err();
    assert_eq!(e.code(), "InvalidSignatureException");
}

#[test]
fn malformed_and_missing() {
    let h = http::HeaderMap::new();
    let e = check("/", None, &h, b"", t0()).unwrap_err();
    assert_eq!(e, AuthError::MissingToken);
    assert_eq!(e.http_status(), 403);
    let mut h = signed("/", None, b"");
    h.insert(
        "authorization",
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20261123/us-east-1/ecs/aws4_request"
            .parse()
            .unwrap(),
    );
    assert_eq!(
        check("/", None, &h, b"", t0()).unwrap_err().code(),
        "IncompleteSignatureException"
    );
    // host not signed
    let mut h = signed("/", None, b"");
    let a = h["authorization"].to_str().unwrap().replace("host;", "");
    h.insert("authorization", a.parse().unwrap());
    assert_eq!(
        check("/", None, &h, b"", t0()).unwrap_err().code(),
        "IncompleteSignatureException"
    );
    // scope date different from x-amz-date
    let mut h = signed("/", None, b"");
    let a = h["authorization"]
        .to_str()
        .unwrap()
        .replace("/20261123/", "/20261122/");
    h.insert("authorization", a.parse().unwrap());
    assert_eq!(
        check("/", None, &h, b"", t0()).unwrap_err().code(),
        "InvalidSignatureException"
    );
}

#[test]
fn claimed_payload_hash_must_match_body() {
    let body = b"{}";
    let mut h = http::HeaderMap::new();
    h.insert("host", "127.0.0.1:8470".parse().unwrap());
    h.insert("x-amz-content-sha256", sha256_hex(body).parse().unwrap());
    sign(
        "POST",
        "/",
        None,
        &mut h,
        body,
        &creds(),
        "us-east-1",
        "ecs",
        t0(),
    );
    assert!(
        h["authorization"]
            .to_str()
            .unwrap()
            .contains("x-amz-content-sha256")
    );
    assert!(
        check("/", None, &h, body, t0()).is_ok(),
        "true claim verifies"
    );
    // The claim is signed, but the body is not what it claims.
    assert_eq!(
        check("/", None, &h, b"{ }", t0()),
        Err(AuthError::SignatureMismatch)
    );
    // UNSIGNED-PAYLOAD is only for presigned URLs.
    h.insert("x-amz-content-sha256", UNSIGNED.parse().unwrap());
    assert_eq!(
        check("/", None, &h, body, t0()),
        Err(AuthError::SignatureMismatch)
    );
}

#[test]
fn access_keys_look_like_aws() {
    let k = new_access_key();
    assert!(k.access_key_id.starts_with("AKIA"));
    assert_eq!(k.access_key_id.len(), 20);
    assert_eq!(k.secret_access_key.len(), 40);
    assert_ne!(k, new_access_key());
}

/// botocore (what the aws CLI and boto3 use) signs; we must verify, and our signer must agree
/// byte for byte.
#[test]
fn agrees_with_botocore() {
    let script = r#"
import json, sys, datetime
from unittest import mock
import botocore.auth, botocore.awsrequest, botocore.credentials
fixed = datetime.datetime(2026, 11, 23, 10, 0, 0)
class FakeDT(datetime.datetime):
    @classmethod
    def utcnow(cls): return fixed
    @classmethod
    def now(cls, tz=None): return fixed.replace(tzinfo=tz) if tz else fixed
out = []
for url, body in [("http://127.0.0.1:8470/", '{"clusterName":"dev"}'),
                  ("http://127.0.0.1:8470/v2/my-repo/blobs/sha256:abc?b=2&a=1&a=0&x=%2F%20y", "")]:
    req = botocore.awsrequest.AWSRequest(method="POST", url=url, data=body,
        headers={"Content-Type": "application/x-amz-json-1.1"})
    with mock.patch("botocore.auth.datetime.datetime", FakeDT):
        botocore.auth.SigV4Auth(botocore.credentials.Credentials(sys.argv[1], sys.argv[2]), "ecs", "us-east-1").add_auth(req)
    p = req.prepare()
    out.append({"url": p.url, "body": body, "headers": dict(p.headers)})
print(json.dumps(out))
"#;
    let out = match std::process::Command::new("python3")
        .args(["-c", script, AKID, SECRET])
        .output()
    {
        Ok(o) if o.status.success() => o.stdout,
        Ok(o) => {
            eprintln!(
                "skipping: python3/botocore unavailable: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            return;
        }
        Err(e) => {
            eprintln!("skipping: no python3: {e}");
            return;
        }
    };
    let text = String::from_utf8(out).unwrap();
    let mut checked = 0;
    // Parse the tiny JSON by hand-rolled extraction to keep this crate free of serde.
    for case in text.split("{\"url\": ").skip(1) {
        let url = case.split('"').nth(1).unwrap();
        let body = case
            .split("\"body\": \"")
            .nth(1)
            .unwrap()
            .split("\", \"headers\"")
            .next()
            .unwrap();
        let body = body.replace("\\\"", "\"");
        let headers_part = case.split("\"headers\": {").nth(1).unwrap();
        let mut h = http::HeaderMap::new();
        h.insert("host", "127.0.0.1:8470".parse().unwrap());
        for kv in headers_part.split("\", \"") {
            let kv = kv
                .trim_start_matches('"')
                .trim_end_matches(['}', ']', '"', '\n']);
            if let Some((k, v)) = kv.split_once("\": \"") {
                let k = k.to_ascii_lowercase();
                h.insert(
                    http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    v.parse().unwrap(),
                );
            }
        }
        let rest = url.strip_prefix("http://127.0.0.1:8470").unwrap();
        let (path, query) = match rest.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (rest, None),
        };
        check(path, query, &h, body.as_bytes(), t0())
            .unwrap_or_else(|e| panic!("botocore's signature for {url} refused: {e}"));
        // Our signer, given the same headers botocore signed, yields the same signature.
        let theirs = h["authorization"].to_str().unwrap().to_string();
        let mut mine = http::HeaderMap::new();
        mine.insert("host", "127.0.0.1:8470".parse().unwrap());
        mine.insert(
            "content-type",
            "application/x-amz-json-1.1".parse().unwrap(),
        );
        sign(
            "POST",
            path,
            query,
            &mut mine,
            body.as_bytes(),
            &creds(),
            "us-east-1",
            "ecs",
            t0(),
        );
        let sig = |a: &str| a.rsplit("Signature=").next().unwrap().to_string();
        // botocore does not sign x-amz-content-sha256 for ecs; compare only when the signed
        // header sets agree.
        let signed_set = |a: &str| {
            a.split("SignedHeaders=")
                .nth(1)
                .unwrap()
                .split(',')
                .next()
                .unwrap()
                .to_string()
        };
        assert_eq!(
            signed_set(&theirs),
            signed_set(mine["authorization"].to_str().unwrap())
        );
        assert_eq!(sig(&theirs), sig(mine["authorization"].to_str().unwrap()));
        checked += 1;
    }
    assert_eq!(checked, 2, "both botocore cases compared");
}
