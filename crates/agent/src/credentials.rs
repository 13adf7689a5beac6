//! Task role credentials on the node, the way the ECS agent hands them to containers.
//!
//! - [`CredentialStore`]: credentialsId → the role's current keys, the task and the role type
//!   (`TaskApplication`, `TaskExecution`). Filled from every payload that carries a task's
//!   credentials and from `IAMRoleCredentialsMessage` refreshes; an entry goes when its task
//!   has stopped. Memory only: the keys never reach the task state files (see [`scrub`]) and
//!   never a log line (their `Debug` is redacted).
//! - The container credentials endpoint ([`respond`], [`serve`], [`CredentialsEndpoint`]):
//!   `GET /v2/credentials/{credentialsId}` answers the task role's keys in the JSON the AWS
//!   SDKs read, and errors as the ECS agent words them. Execution-role credentials are for the
//!   agent, never served. It listens on `127.0.0.1` for `host` containers, and on the bridge's
//!   gateway address for `bridge` and `awsvpc` containers, which reach it at
//!   `169.254.170.2:80` through a DNAT rule ([`berth_runtime::net::Redirect`]).
//! - What a container is told ([`Access::env`]): `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` on
//!   the bridge, `AWS_CONTAINER_CREDENTIALS_FULL_URI` (plain HTTP to loopback, which the SDKs
//!   accept) in `host` mode, nothing in `none` mode.
//!
//! Must not: write credentials anywhere, or serve anything but the task role's credentials to
//! whoever knows their id (the id is the secret, as on ECS).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use berth_model::wire::acs::{self, IAMRoleCredentials, IAMRoleCredentialsAckRequest};
use berth_model::wire::ecs::ContainerDefinition;
use berth_runtime::net::Redirect;
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

/// The path prefix of the credentials endpoint (ECS's v2 API).
pub const V2_PATH: &str = "/v2/credentials";
/// The variable a `bridge` or `awsvpc` container finds the endpoint's path in (the SDKs add
/// `http://169.254.170.2`).
pub const RELATIVE_URI_ENV: &str = "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI";
/// The variable a `host` container finds the endpoint's full URL in.
pub const FULL_URI_ENV: &str = "AWS_CONTAINER_CREDENTIALS_FULL_URI";
/// Where containers on the bridge reach the endpoint, as on ECS.
pub const LINK_LOCAL: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(169, 254, 170, 2), 80);

/// How long one request to the endpoint may take (the SDKs' own timeout is shorter).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once by one listener; more are closed at once.
const MAX_CONNECTIONS: usize = 256;

/// Which role a set of credentials is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleType {
    /// The task role (`taskRoleArn`): for the containers' own calls.
    TaskApplication,
    /// The task execution role (`executionRoleArn`): for the agent (pulls, logs, secrets).
    TaskExecution,
}

impl RoleType {
    pub fn parse(s: &str) -> Option<RoleType> {
        match s {
            "TaskApplication" => Some(RoleType::TaskApplication),
            "TaskExecution" => Some(RoleType::TaskExecution),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RoleType::TaskApplication => "TaskApplication",
            RoleType::TaskExecution => "TaskExecution",
        }
    }
}

/// A role's temporary credentials, as the endpoint serves them.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct RoleCredentials {
    #[serde(rename = "RoleArn")]
    pub role_arn: String,
    #[serde(rename = "AccessKeyId")]
    pub access_key_id: String,
    #[serde(rename = "SecretAccessKey")]
    pub secret_access_key: String,
    #[serde(rename = "Token")]
    pub session_token: String,
    /// ISO 8601, passed on as the control plane wrote it.
    #[serde(rename = "Expiration")]
    pub expiration: String,
}

impl std::fmt::Debug for RoleCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoleCredentials")
            .field("role_arn", &self.role_arn)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("session_token", &"<redacted>")
            .field("expiration", &self.expiration)
            .finish()
    }
}

/// What the store knows about one credentialsId.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub task_arn: String,
    pub role_type: RoleType,
    /// None while a restarted agent waits for the control plane to send them again.
    pub credentials: Option<RoleCredentials>,
}

/// Credentials the control plane sent that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidCredentials {
    /// No `credentialsId`.
    #[error("the credentials have no credentialsId")]
    NoId,
    /// No task to tie them to.
    #[error("credentials {0} name no task")]
    NoTask(String),
    /// A `roleType` other than `TaskApplication` and `TaskExecution`.
    #[error("credentials {0} have an unknown role type {1:?}")]
    RoleType(String, String),
    /// No access key or secret key.
    #[error("credentials {0} have no keys")]
    NoKeys(String),
    /// A refresh without a `messageId` (it could not be acknowledged).
    #[error("a credentials message without a messageId")]
    NoMessageId,
    /// A refresh for a task this agent does not run.
    #[error("credentials {0} are for task {1}, which this node does not run")]
    UnknownTask(String, String),
}

/// credentialsId → credentials, in memory only.
#[derive(Debug, Default)]
pub struct CredentialStore {
    entries: RwLock<HashMap<String, Entry>>,
}

/// What the endpoint finds for an id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Found(RoleCredentials),
    /// A task role's id known from the task's state, its keys not received yet.
    Uninitialized,
    /// No such id, or not a task role's.
    Unknown,
}

impl CredentialStore {
    pub fn new() -> CredentialStore {
        CredentialStore::default()
    }

    /// Store (or replace) the credentials `c` of `task_arn`'s role.
    pub fn set(
        &self,
        task_arn: &str,
        role_type: RoleType,
        c: &IAMRoleCredentials,
    ) -> Result<(), InvalidCredentials> {
        let id = c
            .credentials_id
            .as_deref()
            .filter(|s| !s.is_empty())
            .ok_or(InvalidCredentials::NoId)?;
        if task_arn.is_empty() {
            return Err(InvalidCredentials::NoTask(id.into()));
        }
        let (Some(key), Some(secret)) = (
            c.access_key_id.as_deref().filter(|s| !s.is_empty()),
            c.secret_access_key.as_deref().filter(|s| !s.is_empty()),
        ) else {
            return Err(InvalidCredentials::NoKeys(id.into()));
        };
        let creds = RoleCredentials {
            role_arn: c.role_arn.clone().unwrap_or_default(),
            access_key_id: key.into(),
            secret_access_key: secret.into(),
            session_token: c.session_token.clone().unwrap_or_default(),
            expiration: c.expiration.clone().unwrap_or_default(),
        };
        self.entries.write().insert(
            id.into(),
            Entry {
                task_arn: task_arn.into(),
                role_type,
                credentials: Some(creds),
            },
        );
        Ok(())
    }

    /// Remember that `task_arn` holds credentials `id` whose keys are still to come (an agent
    /// that restarted knows its tasks' ids from their state, the keys only from the control
    /// plane). Known ids are left as they are.
    pub fn expect(&self, task_arn: &str, role_type: RoleType, id: &str) {
        if id.is_empty() || task_arn.is_empty() {
            return;
        }
        self.entries
            .write()
            .entry(id.into())
            .or_insert_with(|| Entry {
                task_arn: task_arn.into(),
                role_type,
                credentials: None,
            });
    }

    /// The ids a task (from its saved payload) holds, so that they are expected.
    pub fn expect_task(&self, task_arn: &str, t: &acs::Task) {
        for (c, role) in task_credentials(t) {
            if let Some(id) = c.credentials_id.as_deref() {
                self.expect(task_arn, role, id);
            }
        }
    }

    /// Store the credentials a payload carries for task `t` (its task role's and its execution
    /// role's). Returns what to acknowledge (without a messageId: the payload's goes there).
    pub fn take_from_task(&self, t: &acs::Task) -> Vec<IAMRoleCredentialsAckRequest> {
        let arn = t.arn.as_deref().unwrap_or_default();
        let mut acks = Vec::new();
        for (c, role) in task_credentials(t) {
            match self.set(arn, role, c) {
                Ok(()) => acks.push(IAMRoleCredentialsAckRequest {
                    message_id: None,
                    expiration: c.expiration.clone(),
                    credentials_id: c.credentials_id.clone(),
                }),
                Err(e) => {
                    tracing::warn!(task = %arn, "{} credentials not usable: {e}", role.as_str())
                }
            }
        }
        acks
    }

    /// Take a refresh (`IAMRoleCredentialsMessage`) for a task of this node (`runs` says
    /// whether it runs `taskArn`); the ack to send back.
    pub fn refresh(
        &self,
        m: &acs::IAMRoleCredentialsMessage,
        runs: impl FnOnce(&str) -> bool,
    ) -> Result<IAMRoleCredentialsAckRequest, InvalidCredentials> {
        let c = m.role_credentials.clone().unwrap_or_default();
        let id = c
            .credentials_id
            .clone()
            .filter(|s| !s.is_empty())
            .ok_or(InvalidCredentials::NoId)?;
        let message_id = m
            .message_id
            .clone()
            .filter(|s| !s.is_empty())
            .ok_or(InvalidCredentials::NoMessageId)?;
        let task = m.task_arn.clone().unwrap_or_default();
        if task.is_empty() {
            return Err(InvalidCredentials::NoTask(id));
        }
        let role_type = m.role_type.clone().unwrap_or_default();
        let role = RoleType::parse(&role_type)
            .ok_or_else(|| InvalidCredentials::RoleType(id.clone(), role_type))?;
        if !runs(&task) {
            return Err(InvalidCredentials::UnknownTask(id, task));
        }
        self.set(&task, role, &c)?;
        Ok(IAMRoleCredentialsAckRequest {
            message_id: Some(message_id),
            expiration: c.expiration.clone(),
            credentials_id: Some(id),
        })
    }

    pub fn get(&self, id: &str) -> Option<Entry> {
        self.entries.read().get(id).cloned()
    }

    /// What the endpoint may serve for `id`: only task role credentials.
    pub fn task_role(&self, id: &str) -> Lookup {
        match self.entries.read().get(id) {
            Some(e) if e.role_type == RoleType::TaskApplication => match &e.credentials {
                Some(c) => Lookup::Found(c.clone()),
                None => Lookup::Uninitialized,
            },
            _ => Lookup::Unknown,
        }
    }

    /// Forget every credential of a task (it has stopped); how many there were.
    pub fn remove_task(&self, task_arn: &str) -> usize {
        let mut m = self.entries.write();
        let before = m.len();
        m.retain(|_, e| e.task_arn != task_arn);
        before - m.len()
    }

    pub fn len(&self) -> usize {
        self.entries.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A task's credentials in a payload, with their role.
fn task_credentials(t: &acs::Task) -> impl Iterator<Item = (&IAMRoleCredentials, RoleType)> {
    t.role_credentials
        .iter()
        .map(|c| (c, RoleType::TaskApplication))
        .chain(
            t.execution_role_credentials
                .iter()
                .map(|c| (c, RoleType::TaskExecution)),
        )
}

/// Strip the keys from a task's payload before it is saved: only the ids and role ARNs stay
/// (what a restarted agent needs to set the containers' environment and expect the keys).
pub fn scrub(t: &mut acs::Task) {
    for c in [&mut t.role_credentials, &mut t.execution_role_credentials]
        .into_iter()
        .flatten()
    {
        *c = IAMRoleCredentials {
            credentials_id: c.credentials_id.take(),
            role_arn: c.role_arn.take(),
            ..Default::default()
        };
    }
}

/// The task role's credentialsId of a task, if it has a task role.
pub fn task_role_id(t: &acs::Task) -> Option<&str> {
    t.role_credentials
        .as_ref()?
        .credentials_id
        .as_deref()
        .filter(|s| !s.is_empty())
}

// ---- the endpoint's answers --------------------------------------------------------------------

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

/// Serve the endpoint on `listener` until `shutdown` resolves: one request per connection
/// (the SDKs open one per fetch), each given [`REQUEST_TIMEOUT`].
pub async fn serve(
    listener: tokio::net::TcpListener,
    store: Arc<CredentialStore>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    use hyper::service::service_fn;
    use hyper_util::rt::{TokioIo, TokioTimer};

    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let (stream, _peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of descriptors and the like: wait, do not spin.
                    tracing::warn!("credentials endpoint: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => return,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let store = store.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let r = respond(&store, req.method().as_str(), req.uri().path());
                if r.status != 200 {
                    tracing::debug!(status = r.status, "credentials request refused");
                }
                let resp = hyper::Response::builder()
                    .status(r.status)
                    .header(hyper::header::CONTENT_TYPE, r.content_type)
                    .body(http_body_util::Full::new(bytes::Bytes::from(r.body)));
                async move { Ok::<_, Infallible>(resp.unwrap_or_default()) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .keep_alive(false)
                .timer(TokioTimer::new())
                .header_read_timeout(REQUEST_TIMEOUT)
                .serve_connection(TokioIo::new(stream), svc);
            let _ = tokio::time::timeout(REQUEST_TIMEOUT * 2, conn).await;
        });
    }
}

// ---- the endpoint on the node ------------------------------------------------------------------

/// Where containers can reach the endpoint on this node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Access {
    /// The loopback listener (for `host` containers).
    pub loopback: Option<SocketAddrV4>,
    /// The gateway listener, when `169.254.170.2:80` leads to it (for `bridge` and `awsvpc`).
    pub bridge: Option<SocketAddrV4>,
}

impl Access {
    /// The variable that points a container at its task role's credentials `id`, for the
    /// task's network mode; None where the container cannot reach the endpoint.
    pub fn env(
        &self,
        network_mode: &str,
        networking_disabled: bool,
        id: &str,
    ) -> Option<(&'static str, String)> {
        if networking_disabled || id.is_empty() {
            return None;
        }
        match network_mode {
            "host" => self
                .loopback
                .map(|a| (FULL_URI_ENV, format!("http://{a}{V2_PATH}/{id}"))),
            "bridge" | "awsvpc" => self
                .bridge
                .map(|_| (RELATIVE_URI_ENV, format!("{V2_PATH}/{id}"))),
            _ => None,
        }
    }

    /// The host ports the endpoint holds (kept from tasks' port mappings).
    pub fn ports(&self) -> Vec<u16> {
        self.loopback
            .iter()
            .chain(self.bridge.iter())
            .map(|a| a.port())
            .collect()
    }
}

/// Put `name=value` in a container's environment, unless the container definition sets
/// `name` itself (the user's value wins; one from the image does not).
pub fn set_env(env: &mut Vec<String>, def: &ContainerDefinition, name: &str, value: &str) {
    let user_set = def
        .environment
        .as_deref()
        .unwrap_or_default()
        .iter()
        .any(|kv| kv.name.as_deref() == Some(name));
    if user_set {
        return;
    }
    env.retain(|e| e.split_once('=').map_or(e.as_str(), |(n, _)| n) != name);
    env.push(format!("{name}={value}"));
}

/// The ports of the previous run, kept so that `host` containers that outlive an agent
/// restart find the endpoint where their environment says it is.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Ports {
    loopback: Option<u16>,
    bridge: Option<u16>,
}

/// Bind `ip:port`, or any free port when that one is taken (or `port` is None).
fn bind(ip: Ipv4Addr, port: Option<u16>) -> std::io::Result<tokio::net::TcpListener> {
    let try_bind = |port: u16| -> std::io::Result<tokio::net::TcpListener> {
        let s = tokio::net::TcpSocket::new_v4()?;
        s.set_reuseaddr(true)?;
        s.bind(SocketAddr::from((ip, port)))?;
        s.listen(128)
    };
    match port {
        Some(p) if p != 0 => try_bind(p).or_else(|e| {
            tracing::info!("credentials endpoint: {ip}:{p} not available ({e}); another port");
            try_bind(0)
        }),
        _ => try_bind(0),
    }
}

fn v4(l: &tokio::net::TcpListener) -> Option<SocketAddrV4> {
    match l.local_addr().ok()? {
        SocketAddr::V4(a) => Some(a),
        SocketAddr::V6(_) => None,
    }
}

/// The node's running credentials endpoint: its listeners and the redirect of
/// `169.254.170.2:80`. Dropping it stops the listeners and removes the redirect.
pub struct CredentialsEndpoint {
    access: Access,
    redirect: Option<Redirect>,
    /// Dropping these ends the listeners.
    _stop: Vec<tokio::sync::oneshot::Sender<()>>,
}

impl CredentialsEndpoint {
    /// Start the endpoint: on `127.0.0.1`, and on the gateway of `bridge` (its name and the
    /// gateway address) with the redirect of [`LINK_LOCAL`] to it. A part that cannot be set
    /// up is logged and left out; the node runs without it. `port_file` keeps the ports for
    /// the next run.
    pub async fn start(
        store: Arc<CredentialStore>,
        bridge: Option<(String, Ipv4Addr)>,
        port_file: &Path,
    ) -> CredentialsEndpoint {
        let before: Ports = std::fs::read(port_file)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let mut stop = Vec::new();
        let mut spawn = |l: tokio::net::TcpListener| {
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            stop.push(tx);
            tokio::spawn(serve(l, store.clone(), async move {
                let _ = rx.await;
            }));
        };
        let mut access = Access::default();
        match bind(Ipv4Addr::LOCALHOST, before.loopback) {
            Ok(l) => {
                access.loopback = v4(&l);
                spawn(l);
            }
            Err(e) => tracing::error!(
                "task role credentials unavailable to host-mode containers: cannot listen on 127.0.0.1: {e}"
            ),
        }
        let mut redirect = None;
        if let Some((name, gw)) = bridge {
            let lost = "task role credentials unavailable to bridge and awsvpc containers";
            let listener = bind(gw, before.bridge).and_then(|l| {
                let to = v4(&l).ok_or_else(|| std::io::Error::other("not an IPv4 socket"))?;
                Ok((l, to))
            });
            match listener {
                Ok((l, to)) => {
                    let r = Redirect {
                        bridge: name.clone(),
                        from: LINK_LOCAL,
                        to,
                    };
                    let rr = r.clone();
                    match tokio::task::spawn_blocking(move || rr.install()).await {
                        Ok(Ok(())) => {
                            access.bridge = Some(to);
                            redirect = Some(r);
                            spawn(l);
                        }
                        Ok(Err(e)) => {
                            tracing::error!("{lost}: cannot redirect {LINK_LOCAL} on {name}: {e}")
                        }
                        Err(e) => tracing::error!("{lost}: {e}"),
                    }
                }
                Err(e) => tracing::error!("{lost}: cannot listen on {gw}: {e}"),
            }
        }
        let now = Ports {
            loopback: access.loopback.map(|a| a.port()),
            bridge: access.bridge.map(|a| a.port()),
        };
        if let Err(e) = write_ports(port_file, &now) {
            tracing::warn!(path = %port_file.display(), "keeping the credentials endpoint's ports: {e}");
        }
        if access != Access::default() {
            tracing::info!(
                loopback = ?access.loopback, bridge = ?access.bridge,
                "task credentials endpoint listening"
            );
        }
        CredentialsEndpoint {
            access,
            redirect,
            _stop: stop,
        }
    }

    pub fn access(&self) -> Access {
        self.access
    }

    /// The redirect rule this endpoint installed.
    pub fn redirect(&self) -> Option<&Redirect> {
        self.redirect.as_ref()
    }
}

fn write_ports(path: &Path, p: &Ports) -> std::io::Result<()> {
    let tmp: PathBuf = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(p)?)?;
    std::fs::rename(&tmp, path)
}

impl Drop for CredentialsEndpoint {
    fn drop(&mut self) {
        // A stopping agent takes its rule along; a new agent replaces it anyway (with its own
        // port), and a killed one leaves it to that.
        if let Some(r) = self.redirect.take()
            && let Err(e) = r.remove()
        {
            tracing::warn!("removing the redirect of {LINK_LOCAL} on {}: {e}", r.bridge);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_model::wire::ecs::KeyValuePair;
    use serde_json::Value;

    const TASK: &str = "arn:aws:ecs:us-east-1:000000000000:task/default/t1";

    fn creds(id: &str, key: &str) -> IAMRoleCredentials {
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

    fn task() -> acs::Task {
        acs::Task {
            arn: Some(TASK.into()),
            role_credentials: Some(creds("app-id", "AKIAAPP")),
            execution_role_credentials: Some(creds("exec-id", "AKIAEXEC")),
            ..Default::default()
        }
    }

    fn json(r: &Reply) -> Value {
        serde_json::from_str(&r.body).unwrap()
    }

    #[test]
    fn the_store_takes_payloads_and_refreshes_and_forgets_stopped_tasks() {
        let s = CredentialStore::new();
        let acks = s.take_from_task(&task());
        assert_eq!(acks.len(), 2);
        assert_eq!(acks[0].credentials_id.as_deref(), Some("app-id"));
        assert_eq!(acks[0].expiration.as_deref(), Some("2026-11-23T21:00:00Z"));
        assert_eq!(acks[0].message_id, None);
        let e = s.get("app-id").unwrap();
        assert_eq!(e.task_arn, TASK);
        assert_eq!(e.role_type, RoleType::TaskApplication);
        assert_eq!(s.get("exec-id").unwrap().role_type, RoleType::TaskExecution);

        // A refresh replaces the keys under the same id.
        let mut m = acs::IAMRoleCredentialsMessage {
            message_id: Some("m1".into()),
            task_arn: Some(TASK.into()),
            task_cluster_arn: None,
            role_type: Some("TaskApplication".into()),
            role_credentials: Some(IAMRoleCredentials {
                expiration: Some("2026-11-24T03:00:00Z".into()),
                ..creds("app-id", "AKIANEW")
            }),
        };
        let ack = s.refresh(&m, |t| t == TASK).unwrap();
        assert_eq!(ack.message_id.as_deref(), Some("m1"));
        assert_eq!(ack.credentials_id.as_deref(), Some("app-id"));
        assert_eq!(ack.expiration.as_deref(), Some("2026-11-24T03:00:00Z"));
        let Lookup::Found(c) = s.task_role("app-id") else {
            panic!("found")
        };
        assert_eq!(c.access_key_id, "AKIANEW");

        // Refreshes that cannot be taken: not acknowledged.
        assert!(matches!(
            s.refresh(&m, |_| false),
            Err(InvalidCredentials::UnknownTask(..))
        ));
        m.role_type = Some("Other".into());
        assert!(matches!(
            s.refresh(&m, |_| true),
            Err(InvalidCredentials::RoleType(..))
        ));
        m.role_type = Some("TaskApplication".into());
        m.message_id = None;
        assert_eq!(
            s.refresh(&m, |_| true),
            Err(InvalidCredentials::NoMessageId)
        );
        m.message_id = Some("m2".into());
        m.role_credentials.as_mut().unwrap().secret_access_key = None;
        assert!(matches!(
            s.refresh(&m, |_| true),
            Err(InvalidCredentials::NoKeys(_))
        ));

        // Execution-role credentials are never served.
        assert_eq!(s.task_role("exec-id"), Lookup::Unknown);
        assert_eq!(s.remove_task(TASK), 2);
        assert!(s.is_empty());
        assert_eq!(s.task_role("app-id"), Lookup::Unknown);
    }

    #[test]
    fn ids_from_saved_tasks_wait_for_their_keys() {
        let s = CredentialStore::new();
        let mut t = task();
        scrub(&mut t);
        s.expect_task(TASK, &t);
        assert_eq!(s.task_role("app-id"), Lookup::Uninitialized);
        assert_eq!(s.task_role("exec-id"), Lookup::Unknown);
        // The keys arrive; expecting again changes nothing.
        s.take_from_task(&task());
        s.expect_task(TASK, &t);
        assert!(matches!(s.task_role("app-id"), Lookup::Found(_)));
    }

    #[test]
    fn saved_payloads_keep_ids_not_keys() {
        let mut t = task();
        scrub(&mut t);
        let text = serde_json::to_string(&t).unwrap();
        for secret in ["AKIAAPP", "secret-", "token-", "AKIAEXEC"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert_eq!(task_role_id(&t), Some("app-id"));
        assert_eq!(
            t.execution_role_credentials
                .unwrap()
                .credentials_id
                .as_deref(),
            Some("exec-id")
        );
        let shown = format!("{:?}", CredentialStore::new().get("x"));
        assert_eq!(shown, "None");
        let s = CredentialStore::new();
        s.take_from_task(&task());
        let shown = format!("{s:?}");
        assert!(
            !shown.contains("secret-") && !shown.contains("token-"),
            "{shown}"
        );
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

    #[test]
    fn the_environment_follows_the_network_mode() {
        let both = Access {
            loopback: Some("127.0.0.1:40001".parse().unwrap()),
            bridge: Some("10.213.0.1:40002".parse().unwrap()),
        };
        assert_eq!(
            both.env("host", false, "abc"),
            Some((
                FULL_URI_ENV,
                "http://127.0.0.1:40001/v2/credentials/abc".into()
            ))
        );
        for mode in ["bridge", "awsvpc"] {
            assert_eq!(
                both.env(mode, false, "abc"),
                Some((RELATIVE_URI_ENV, "/v2/credentials/abc".into()))
            );
            assert_eq!(both.env(mode, true, "abc"), None, "networking disabled");
        }
        assert_eq!(both.env("none", false, "abc"), None);
        assert_eq!(both.env("bridge", false, ""), None);
        // A part of the endpoint that is not up gives no variable.
        let loopback_only = Access {
            bridge: None,
            ..both
        };
        assert_eq!(loopback_only.env("bridge", false, "abc"), None);
        assert!(loopback_only.env("host", false, "abc").is_some());
        assert_eq!(Access::default().env("host", false, "abc"), None);
        assert_eq!(both.ports(), vec![40001, 40002]);
    }

    #[test]
    fn the_users_variable_wins() {
        let mut def = ContainerDefinition::default();
        let mut env = vec![format!("{RELATIVE_URI_ENV}=/from-image"), "A=1".into()];
        set_env(&mut env, &def, RELATIVE_URI_ENV, "/v2/credentials/x");
        assert_eq!(
            env,
            vec![
                "A=1".to_string(),
                format!("{RELATIVE_URI_ENV}=/v2/credentials/x")
            ]
        );
        def.environment = Some(vec![KeyValuePair {
            name: Some(RELATIVE_URI_ENV.into()),
            value: Some("/mine".into()),
        }]);
        let mut env = vec![format!("{RELATIVE_URI_ENV}=/mine")];
        set_env(&mut env, &def, RELATIVE_URI_ENV, "/v2/credentials/x");
        assert_eq!(env, vec![format!("{RELATIVE_URI_ENV}=/mine")]);
    }

    /// One HTTP/1.1 request to `addr`; the status and the body.
    async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
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

    #[tokio::test]
    async fn served_over_http() {
        let store = Arc::new(CredentialStore::new());
        store.take_from_task(&task());
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(l, store.clone(), async move {
            let _ = rx.await;
        }));
        let (status, body) = get(addr, "/v2/credentials/app-id").await;
        assert_eq!(status, 200);
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["AccessKeyId"], "AKIAAPP");
        assert_eq!(v["Token"], "token-AKIAAPP");
        assert_eq!(v["Expiration"], "2026-11-23T21:00:00Z");
        let (status, body) = get(addr, "/v2/credentials/nope").await;
        assert_eq!(status, 400);
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap()["code"],
            "InvalidIdInRequest"
        );
        // The task stops: its credentials are gone.
        store.remove_task(TASK);
        assert_eq!(get(addr, "/v2/credentials/app-id").await.0, 400);
        drop(tx);
        server.await.unwrap();
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }

    #[tokio::test]
    async fn a_restarted_endpoint_keeps_its_port() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("credentials-endpoint");
        let store = Arc::new(CredentialStore::new());
        store.take_from_task(&task());
        let first = CredentialsEndpoint::start(store.clone(), None, &file).await;
        let a = first.access();
        let lo = a.loopback.expect("listening on loopback");
        assert_eq!(a.bridge, None);
        assert_eq!(get(lo.into(), "/v2/credentials/app-id").await.0, 200);
        drop(first);
        // The listener closes once its task sees the endpoint gone.
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(lo).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let again = CredentialsEndpoint::start(store.clone(), None, &file).await;
        assert_eq!(
            again.access().loopback,
            Some(lo),
            "same port after a restart"
        );
        // While it holds the port, another one gets a port of its own.
        let other = CredentialsEndpoint::start(store, None, &file).await;
        assert_ne!(other.access().loopback, Some(lo));
        assert_eq!(get(lo.into(), "/v2/credentials/app-id").await.0, 200);
    }
}
