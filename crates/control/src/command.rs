//! The command boundary. Every operation a service answers is a typed [`Command`]: its request
//! shape, the IAM action it needs (`SERVICE:NAME`), the resources and condition keys AWS's
//! service authorization reference names for it ([`Access`]), and its handler.
//! [`Control::execute`] is the one way in: it authorizes the caller against the command's
//! access (identity policies, join-token scope, `iam:PassRole`, node scope), then runs it. An
//! operation table per service ([`crate::ecs_ops`], …) lists the commands by wire name and
//! dispatches through a [`Codec`], so every protocol (awsJson, query/XML, CBOR) decodes into the
//! same table.
//!
//! Must not: speak any protocol (codecs are the api crate's), or let a handler run before its
//! access was checked.

use std::future::Future;
use std::net::IpAddr;

use berth_auth::policy::{Policy, PolicyKind};

use crate::{Control, ControlError, Result};

/// Who sent a request and how it arrived: what authorization and handlers know of the caller.
/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A stored access key: the root key, a user's key or a join token.
    Key(String),
    /// A role session (temporary credentials).
    Session(berth_auth::session::Claims),
}

impl Principal {
    /// The access key id that signed the request.
    pub fn access_key_id(&self) -> &str {
        match self {
            Principal::Key(k) => k,
            Principal::Session(c) => &c.access_key_id,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    /// How the request reached the front door (`None`: not known, so policies' conditions on
    /// `aws:SecureTransport` and `aws:SourceIp` cannot hold).
    pub transport: Option<Transport>,
    /// The front door's URL as the client addressed it (`http://host:port`), for answers that
    /// name an endpoint.
    pub endpoint: String,
    /// The session token that came with temporary credentials (registry passwords issued to
    /// a role session carry it, to be checked again on every use).
    pub session_token: Option<String>,
}

/// The connection a request came on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transport {
    /// Over TLS (`aws:SecureTransport`).
    pub secure: bool,
    /// The peer's address (`aws:SourceIp`).
    pub source_ip: IpAddr,
}

impl Caller {
    /// What a container instance registered by this caller is bound to: the access key, or
    /// a role session's role ARN (its keys change at every renewal).
    pub fn owner_id(&self, control: &Control) -> String {
        match &self.principal {
            Principal::Key(k) => k.clone(),
            Principal::Session(_) => control.role_arn_of(&self.principal),
        }
    }

    /// What a registry password issued to this caller names: the access key, or for a role
    /// session its access key id and session token.
    pub fn token_subject(&self) -> String {
        match (&self.principal, &self.session_token) {
            (Principal::Session(c), Some(t)) => format!("{}~{t}", c.access_key_id),
            _ => self.principal.access_key_id().to_string(),
        }
    }

    /// A caller inside berth itself (tests, the CLI's own set-up): `principal`, on loopback,
    /// without TLS.
    pub fn local(principal: Principal) -> Caller {
        Caller {
            principal,
            transport: Some(Transport {
                secure: false,
                source_ip: IpAddr::from([127, 0, 0, 1]),
            }),
            endpoint: String::new(),
            session_token: None,
        }
    }
}

/// What a command needs to be allowed to do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access {
    /// The resources it acts on (ARNs; `*` for operations AWS checks against every
    /// resource). Each must be allowed.
    pub resources: Vec<String>,
    /// Condition keys the operation supplies (`ecs:cluster`, `ecs:container-instances`, …).
    pub conditions: Vec<(&'static str, String)>,
    /// Roles the caller hands to the service to act as (`iam:PassRole` on each).
    pub pass_roles: Vec<String>,
    /// The ECS cluster (name) the operation works in: join tokens may act only in theirs.
    pub cluster: Option<String>,
    /// The container instances (ARNs) the caller speaks for as their node (agent sessions,
    /// state reports, re-registration, draining): a join token only for those it registered.
    pub instances: Vec<String>,
    /// The resource-based policy of the resources named (a repository's policy), if any.
    pub resource_policy: Option<std::sync::Arc<str>>,
    /// No permission is needed: any authenticated caller may (STS GetCallerIdentity).
    pub anyone: bool,
}

impl Access {
    /// An operation AWS checks against `*` (no resource-level permissions).
    pub fn any() -> Access {
        Access::on(["*".to_string()])
    }

    /// An operation on these resources.
    /// What needs no permission at all (AWS: "no permissions are required").
    pub fn anyone() -> Access {
        Access {
            anyone: true,
            ..Default::default()
        }
    }

    pub fn on(resources: impl IntoIterator<Item = String>) -> Access {
        Access {
            resources: resources.into_iter().collect(),
            ..Default::default()
        }
    }

    /// Add a condition key's value.
    pub fn with(mut self, key: &'static str, value: impl Into<String>) -> Access {
        self.conditions.push((key, value.into()));
        self
    }
}

/// One operation of one service, over the state `S` it runs on (the control plane itself for
/// ECS and IAM, the registry for ECR).
pub trait Command<S: ?Sized + Sync>: Sized + Send {
    /// The answer.
    type Output: Send;
    /// The service's error type (the control plane's errors convert into it).
    type Error: From<ControlError> + Send;
    /// The IAM service prefix (`ecs`), also the SigV4 signing name.
    const SERVICE: &'static str;
    /// The operation's wire name (`RunTask`); the IAM action is `SERVICE:NAME`.
    const NAME: &'static str;

    /// What the request acts on, as AWS's service authorization reference names it. It may
    /// read state (to resolve a task definition family to its latest revision, say) but must
    /// not change any.
    fn access(&self, on: &S, control: &Control) -> impl Future<Output = Access> + Send;

    /// Run the command; only [`Control::execute`] calls this, after authorizing it.
    fn run(
        self,
        on: &S,
        control: &Control,
        caller: &Caller,
    ) -> impl Future<Output = std::result::Result<Self::Output, Self::Error>> + Send;
}

/// A protocol's decoder and encoder for one request: the operation tables decode the request
/// shape of the operation named and encode its answer through it.
pub trait Codec: Send {
    /// The encoded answer.
    type Output: Send;
    /// The protocol's error (every service's errors convert into it).
    type Error: Send;
    /// Decode the request as `T` (checked against the model's constraints).
    fn decode<T>(&mut self) -> std::result::Result<T, Self::Error>
    where
        T: serde::de::DeserializeOwned + berth_model::wire::Validate;
    /// Encode the answer.
    fn encode<T: serde::Serialize>(
        &mut self,
        v: &T,
    ) -> std::result::Result<Self::Output, Self::Error>;
}

impl Control {
    /// Authorize `cmd` for `caller`, then run it on the control plane.
    pub async fn execute<C: Command<Control>>(
        &self,
        caller: &Caller,
        cmd: C,
    ) -> std::result::Result<C::Output, C::Error> {
        self.execute_on(self, caller, cmd).await
    }

    /// Authorize `cmd` for `caller`, then run it on `on` (a service with state of its own).
    pub async fn execute_on<S: ?Sized + Sync, C: Command<S>>(
        &self,
        on: &S,
        caller: &Caller,
        cmd: C,
    ) -> std::result::Result<C::Output, C::Error> {
        let access = cmd.access(on, self).await;
        self.authorize_access(caller, C::SERVICE, C::NAME, &access)?;
        cmd.run(on, self, caller).await
    }

    /// May `caller` do `service:name` with `access`? Full keys may do anything; join tokens
    /// only the agent operations, in their cluster, for the instances they registered; role
    /// sessions what their role's policies allow on every resource named, and
    /// `iam:PassRole` on every role passed.
    pub fn authorize_access(
        &self,
        caller: &Caller,
        service: &str,
        name: &str,
        access: &Access,
    ) -> Result<()> {
        if access.anyone {
            return Ok(());
        }
        let action = format!("{service}:{name}");
        // A stored resource policy that no longer parses (a stricter berth) denies.
        let policy = match &access.resource_policy {
            Some(text) => Some(Policy::parse(text, PolicyKind::Resource).map_err(|_| {
                ControlError::AccessDenied(format!(
                    "{action} is denied: the resource's policy cannot be read"
                ))
            })?),
            None => None,
        };
        match &caller.principal {
            Principal::Key(k) => {
                self.key_may(
                    k,
                    service,
                    &action,
                    access.cluster.as_deref(),
                    &access.instances,
                )?;
                if let Some(p) = &policy {
                    for resource in &access.resources {
                        self.key_against_resource_policy(
                            caller,
                            p,
                            &action,
                            Some(resource),
                            &access.conditions,
                        )?;
                    }
                }
                Ok(())
            }
            Principal::Session(c) => {
                // A request that names none of the resources its operation acts on (an empty
                // list) is checked as naming one berth cannot tell: only statements for every
                // resource allow it.
                if access.resources.is_empty() {
                    self.session_may(caller, c, &action, None, &access.conditions, None)?;
                }
                for resource in &access.resources {
                    self.session_may(
                        caller,
                        c,
                        &action,
                        Some(resource),
                        &access.conditions,
                        policy.as_ref(),
                    )?;
                }
                for role in &access.pass_roles {
                    self.session_may(caller, c, "iam:PassRole", Some(role), &[], None)?;
                }
                Ok(())
            }
        }
    }
}

/// Build the operation table of a service: the list of wire names, and `dispatch`, which
/// decodes the request of the operation named through a codec, executes it and encodes the
/// answer (`None`: no such operation).
#[macro_export]
macro_rules! operation_table {
    ($(#[$m:meta])* $vis:vis mod $table:ident on $on:ty { $($name:ident => $req:ty),* $(,)? }) => {
        $(#[$m])*
        $vis mod $table {
            #[allow(unused_imports)]
            use super::*;
            /// The operations, by wire name.
            pub const OPERATIONS: &[&str] = &[$(stringify!($name)),*];

            /// Decode, execute and encode the operation `op` (`None`: not in this table).
            pub async fn dispatch<K>(
                on: &$on,
                control: &$crate::Control,
                caller: &$crate::command::Caller,
                op: &str,
                mut codec: K,
            ) -> Option<std::result::Result<K::Output, K::Error>>
            where
                K: $crate::command::Codec,
                $(K::Error: From<<$req as $crate::command::Command<$on>>::Error>,)*
            {
                Some(match op {
                    $(stringify!($name) => async {
                        let req: $req = codec.decode()?;
                        let out = control.execute_on(on, caller, req).await?;
                        codec.encode(&out)
                    }.await,)*
                    _ => return None,
                })
            }
        }
    };
}
