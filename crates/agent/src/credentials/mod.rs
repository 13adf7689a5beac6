//! Task role credentials on the node, the way the ECS agent hands them to containers.
//!
//! - [`store`]: the credential cache — credentialsId → the role's current keys, the task and
//!   the role type (`TaskApplication`, `TaskExecution`). Filled from every payload that carries
//!   a task's credentials and from `IAMRoleCredentialsMessage` refreshes; an entry goes when
//!   its task has stopped. Memory only: the keys never reach the task state files (see
//!   [`scrub`]) and never a log line (their `Debug` is redacted).
//! - [`answer`]: what the container credentials endpoint answers —
//!   `GET /v2/credentials/{credentialsId}` gives the task role's keys in the JSON the AWS SDKs
//!   read, and errors as the ECS agent words them. Execution-role credentials are for the
//!   agent, never served.
//! - [`server`]: those answers over HTTP on a listener, until shut down.
//! - [`endpoint`]: the endpoint on the node ([`CredentialsEndpoint`]): it listens on
//!   `127.0.0.1` for `host` containers, and on the bridge's gateway address for `bridge` and
//!   `awsvpc` containers, which reach it at `169.254.170.2:80` through a DNAT rule
//!   ([`berth_runtime::net::Redirect`]); its ports are kept across agent restarts.
//! - [`access`]: what a container is told ([`Access::env`]):
//!   `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` on the bridge,
//!   `AWS_CONTAINER_CREDENTIALS_FULL_URI` (plain HTTP to loopback, which the SDKs accept) in
//!   `host` mode, nothing in `none` mode.
//!
//! Must not: write credentials anywhere, or serve anything but the task role's credentials to
//! whoever knows their id (the id is the secret, as on ECS).

mod access;
mod answer;
mod endpoint;
mod server;
mod store;

pub use access::{Access, FULL_URI_ENV, RELATIVE_URI_ENV, set_env};
pub use answer::{Reply, V2_PATH, respond};
pub use endpoint::{CredentialsEndpoint, LINK_LOCAL};
pub use server::serve;
pub use store::{
    CredentialStore, Entry, InvalidCredentials, Lookup, RoleCredentials, RoleType, scrub,
    task_role_id,
};

/// What the modules' tests share: a task whose payload carries credentials of both roles, and
/// one HTTP request.
#[cfg(test)]
mod fixtures {
    use std::net::SocketAddr;

    use berth_model::wire::acs::{self, IAMRoleCredentials};

    pub(super) const TASK: &str = "arn:aws:ecs:us-east-1:000000000000:task/default/t1";

    pub(super) fn creds(id: &str, key: &str) -> IAMRoleCredentials {
        IAMRoleCredentials {
            credentials_id: Some(id.into()),
            role_arn: Some("arn:aws:iam::000000000000:role/app".into()),
            access_key_id: Some(key.into()),
            secret_access_key: Some(format!("secret-{key}")),
            session_token: Some(format!("token-{key}")),
            expiration: Some("2026-11-23T21:00:00Z".into()),
            credential_scope: None,
        }
    }

    pub(super) fn task() -> acs::Task {
        acs::Task {
            arn: Some(TASK.into()),
            role_credentials: Some(creds("app-id", "AKIAAPP")),
            execution_role_credentials: Some(creds("exec-id", "AKIAEXEC")),
            ..Default::default()
        }
    }

    /// One HTTP/1.1 request to `addr`; the status and the body.
    pub(super) async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: test\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: application/json")
                || status == 404
        );
        (status, body.to_string())
    }
}
