//! What the container credentials endpoint answers, apart from serving it: ECS's v2 path
//! ([`V2_PATH`]`/{credentialsId}`), the task role's keys in the JSON the AWS SDKs read, and
//! errors with the ECS agent's codes and wording (`NoIdInRequest`, `InvalidIdInRequest`,
//! `CredentialsUninitialized`).
//!
//! Must not: answer with anything but a task role's credentials (execution-role credentials
//! are the agent's).

use serde::{Deserialize, Serialize};

use super::store::{CredentialStore, Lookup};

/// The path prefix of the credentials endpoint (ECS's v2 API).
pub const V2_PATH: &str = "/v2/credentials";

/// An answer of the endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

/// The ECS agent's error body: `{"code","message","HTTPErrorCode"}`.
#[derive(Debug, Serialize, Deserialize)]
struct ErrorBody<'a> {
    code: &'a str,
    message: String,
    #[serde(rename = "HTTPErrorCode")]
    http_error_code: u16,
}

fn error(status: u16, code: &str, message: &str) -> Reply {
    let body = ErrorBody {
        code,
        message: format!("CredentialsV2Request: {message}"),
        http_error_code: status,
    };
    Reply {
        status,
        content_type: "application/json",
        body: serde_json::to_string(&body).unwrap_or_default(),
    }
}

/// Answer a request to the endpoint (method and path; the query is ignored).
pub fn respond(store: &CredentialStore, method: &str, path: &str) -> Reply {
    let not_found = || Reply {
        status: 404,
        content_type: "text/plain; charset=utf-8",
        body: "404 page not found\n".into(),
    };
    let Some(rest) = path.strip_prefix(V2_PATH) else {
        return not_found();
    };
    let id = match rest {
        "" => "",
        r => match r.strip_prefix('/') {
            Some(id) => id,
            None => return not_found(),
        },
    };
    if method != "GET" && method != "HEAD" {
        return Reply {
            status: 405,
            content_type: "text/plain; charset=utf-8",
            body: "405 method not allowed\n".into(),
        };
    }
    if id.is_empty() {
        return error(400, "NoIdInRequest", "No Credential ID in the request");
    }
    match store.task_role(id) {
        Lookup::Found(c) => Reply {
            status: 200,
            content_type: "application/json",
            body: serde_json::to_string(&c).unwrap_or_default(),
        },
        Lookup::Uninitialized => error(
            503,
            "CredentialsUninitialized",
            "Credentials uninitialized for ID",
        ),
        Lookup::Unknown => error(400, "InvalidIdInRequest", "Credentials not found"),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::super::fixtures::{TASK, task};
    use super::super::store::RoleType;
    use super::*;

    fn json(r: &Reply) -> Value {
        serde_json::from_str(&r.body).unwrap()
    }

    #[test]
    fn endpoint_answers_like_the_ecs_agent() {
        let s = CredentialStore::new();
        s.take_from_task(&task());
        let ok = respond(&s, "GET", "/v2/credentials/app-id");
        assert_eq!((ok.status, ok.content_type), (200, "application/json"));
        assert_eq!(
            ok.body,
            r#"{"RoleArn":"arn:aws:iam::000000000000:role/app","AccessKeyId":"AKIAAPP","SecretAccessKey":"secret-AKIAAPP","Token":"token-AKIAAPP","Expiration":"2026-11-23T21:00:00Z"}"#
        );
        for (path, code, message) in [
            (
                "/v2/credentials/nope",
                "InvalidIdInRequest",
                "CredentialsV2Request: Credentials not found",
            ),
            (
                "/v2/credentials/exec-id",
                "InvalidIdInRequest",
                "CredentialsV2Request: Credentials not found",
            ),
            (
                "/v2/credentials/",
                "NoIdInRequest",
                "CredentialsV2Request: No Credential ID in the request",
            ),
            (
                "/v2/credentials",
                "NoIdInRequest",
                "CredentialsV2Request: No Credential ID in the request",
            ),
        ] {
            let r = respond(&s, "GET", path);
            assert_eq!(r.status, 400, "{path}");
            assert_eq!(
                json(&r),
                serde_json::json!({"code": code, "message": message, "HTTPErrorCode": 400}),
                "{path}"
            );
        }
        s.expect(TASK, RoleType::TaskApplication, "later");
        let r = respond(&s, "GET", "/v2/credentials/later");
        assert_eq!(r.status, 503);
        assert_eq!(json(&r)["code"], "CredentialsUninitialized");
        assert_eq!(respond(&s, "POST", "/v2/credentials/app-id").status, 405);
        assert_eq!(respond(&s, "GET", "/v2/credentialsX").status, 404);
        assert_eq!(respond(&s, "GET", "/v1/metadata").status, 404);
        assert_eq!(respond(&s, "HEAD", "/v2/credentials/app-id").status, 200);
    }
}
