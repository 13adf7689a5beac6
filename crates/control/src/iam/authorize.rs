//! Who a caller is and what it may do: the principal behind an access key or session token,
//! its identity, and the glue between a request and [`berth_auth::policy`] — role policies
//! (parsed once per version of the role), resource policies and the condition context.
//! Must not: grant what no policy allows.

use std::collections::HashMap;

use berth_auth::policy::{AccessRequest, Caller, Decision, Policy, PolicyKind};
use berth_auth::session::{self, Claims};

use super::{Identity, Principal, iam, iso8601};
use crate::command;
use crate::records::RoleRecord;
use crate::{Control, ControlError, Result};

/// Roles' inline policies, parsed once per version of the role (every request of a role
/// session is checked against them).
#[derive(Default)]
pub(crate) struct PolicyCache {
    by_role: parking_lot::Mutex<HashMap<String, CachedPolicies>>,
}

struct CachedPolicies {
    docs: Vec<String>,
    parsed: std::sync::Arc<Vec<Option<Policy>>>,
}

impl PolicyCache {
    /// The parsed form of a role's policy documents (inline, then attached).
    fn get(&self, role: &RoleRecord, docs: &[&str]) -> std::sync::Arc<Vec<Option<Policy>>> {
        let mut m = self.by_role.lock();
        if let Some(c) = m.get(&role.role_id)
            && c.docs.len() == docs.len()
            && c.docs.iter().zip(docs).all(|(a, b)| a == b)
        {
            return c.parsed.clone();
        }
        let parsed: std::sync::Arc<Vec<Option<Policy>>> = std::sync::Arc::new(
            docs.iter()
                .map(|d| Policy::parse(d, PolicyKind::Identity).ok())
                .collect(),
        );
        // Roles come and go rarely; forget them all when the cache grows past any real use.
        if m.len() > 10_000 {
            m.clear();
        }
        m.insert(
            role.role_id.clone(),
            CachedPolicies {
                docs: docs.iter().map(|d| d.to_string()).collect(),
                parsed: parsed.clone(),
            },
        );
        parsed
    }
}

impl Control {
    /// Who signed a request, from its access key id and (for temporary credentials) the
    /// session token that came with it. Call after the signature checked out.
    pub fn principal(&self, access_key_id: &str, token: Option<&str>) -> Result<Principal> {
        if !session::is_session_key(access_key_id) {
            return Ok(Principal::Key(access_key_id.to_string()));
        }
        let bad = |e: session::SessionError| {
            iam(
                e.code(),
                if e == session::SessionError::Expired {
                    400
                } else {
                    403
                },
                e.to_string(),
            )
        };
        let token = token.ok_or_else(|| bad(session::SessionError::Invalid))?;
        let claims = session::open(
            &self.session_key,
            access_key_id,
            token,
            self.now().as_secs(),
        )
        .map_err(bad)?;
        // The role must still be the one the session was made for.
        match self.role_entry(&claims.role_name) {
            Some(r) if r.role_id == claims.role_id => Ok(Principal::Session(claims)),
            _ => Err(bad(session::SessionError::Invalid)),
        }
    }

    /// The secret of a session's access key id (the session token is checked afterwards, by
    /// [`Control::principal`]).
    pub(crate) fn session_secret(&self, access_key_id: &str) -> String {
        session::secret_of(&self.session_key, access_key_id)
    }

    pub(super) fn session_arn(&self, c: &Claims) -> String {
        format!(
            "arn:aws:sts::{}:assumed-role/{}/{}",
            self.part.account_id, c.role_name, c.session_name
        )
    }

    /// The ARN requests of `p` are made as (for messages and `GetCallerIdentity`).
    pub fn principal_arn_of(&self, p: &Principal) -> String {
        match p {
            Principal::Key(k) => self.principal_arn(k).unwrap_or_default(),
            Principal::Session(c) => self.session_arn(c),
        }
    }

    /// STS `GetCallerIdentity`.
    pub fn caller_identity(&self, p: &Principal) -> Identity {
        let account = self.part.account_id.clone();
        match p {
            Principal::Key(k) => Identity {
                arn: self.principal_arn(k).unwrap_or_default(),
                user_id: if self.principal_arn(k).is_some_and(|a| a.ends_with(":root")) {
                    account.clone()
                } else {
                    k.clone()
                },
                account,
            },
            Principal::Session(c) => Identity {
                arn: self.session_arn(c),
                user_id: format!("{}:{}", c.role_id, c.session_name),
                account,
            },
        }
    }

    /// Condition keys berth knows about a caller and the request's connection.
    pub(super) fn caller_context(&self, caller: &command::Caller) -> HashMap<String, Vec<String>> {
        let p = &caller.principal;
        let mut ctx = HashMap::new();
        if let Some(t) = caller.transport {
            ctx.insert("aws:securetransport".into(), vec![t.secure.to_string()]);
            ctx.insert("aws:sourceip".into(), vec![t.source_ip.to_string()]);
        }
        let now = self.now().as_secs_f64();
        ctx.insert("aws:epochtime".into(), vec![(now as i64).to_string()]);
        ctx.insert("aws:currenttime".into(), vec![iso8601(now)]);
        let id = self.caller_identity(p);
        ctx.insert("aws:principalaccount".into(), vec![id.account]);
        ctx.insert(
            "aws:principalarn".into(),
            vec![match p {
                Principal::Session(c) => self.role_arn_of_session(c),
                Principal::Key(_) => id.arn.clone(),
            }],
        );
        ctx.insert("aws:userid".into(), vec![id.user_id]);
        let ty = match p {
            Principal::Session(_) => "AssumedRole",
            Principal::Key(_) if id.arn.ends_with(":root") => "Account",
            Principal::Key(_) => "User",
        };
        ctx.insert("aws:principaltype".into(), vec![ty.into()]);
        if let Principal::Key(_) = p
            && let Some(name) = id.arn.rsplit_once(":user/").map(|(_, n)| n.to_string())
        {
            ctx.insert("aws:username".into(), vec![name]);
        }
        ctx.insert("aws:requestedregion".into(), vec![self.part.region.clone()]);
        ctx
    }

    /// The role ARN of a role session (`""` for a key).
    pub fn role_arn_of(&self, p: &Principal) -> String {
        match p {
            Principal::Session(c) => self.role_arn_of_session(c),
            Principal::Key(_) => String::new(),
        }
    }

    pub(super) fn role_arn_of_session(&self, c: &Claims) -> String {
        self.role_entry(&c.role_name)
            .map(|r| r.arn.clone())
            .unwrap_or_default()
    }

    /// What a role's policies (inline and attached) say about an action on a resource.
    pub(super) fn role_decision(
        &self,
        role: &RoleRecord,
        action: &str,
        resource: Option<&str>,
        context: &HashMap<String, Vec<String>>,
    ) -> Decision {
        let req = AccessRequest {
            action,
            resource,
            caller: None,
            context,
        };
        // Inline policies, then attached managed ones (a policy deleted meanwhile grants
        // nothing).
        let attached: Vec<_> = role
            .attached
            .iter()
            .filter_map(|a| self.policy_by_arn(a))
            .collect();
        let docs: Vec<&str> = role
            .policies
            .values()
            .map(String::as_str)
            .chain(attached.iter().map(|p| p.document.as_str()))
            .collect();
        let parsed = self.policy_cache.get(role, &docs);
        berth_auth::policy::combine(parsed.iter().map(|p| match p {
            Some(p) => p.evaluate(&req),
            // Stored documents were checked when they were put; one that no longer parses
            // (a stricter berth) denies.
            None => Decision::ExplicitDeny,
        }))
    }

    /// May a role session do `action` on `resource` (`None`: the request names no resource
    /// berth can check; then only statements for every resource allow it), with the
    /// operation's own condition keys `conditions`?
    pub(crate) fn session_may(
        &self,
        caller: &command::Caller,
        c: &Claims,
        action: &str,
        resource: Option<&str>,
        conditions: &[(&'static str, String)],
        resource_policy: Option<&Policy>,
    ) -> Result<()> {
        let role = self
            .role_entry(&c.role_name)
            .filter(|r| r.role_id == c.role_id)
            .ok_or_else(|| {
                iam(
                    "UnrecognizedClientException",
                    403,
                    "The security token included in the request is invalid.",
                )
            })?;
        let mut ctx = self.caller_context(caller);
        for (k, v) in conditions {
            ctx.entry(k.to_ascii_lowercase())
                .or_default()
                .push(v.clone());
        }
        let on = resource.unwrap_or("*");
        let identity = self.role_decision(&role, action, resource, &ctx);
        // Within one account, what either the identity's or the resource's policy allows is
        // allowed, unless one of them denies it explicitly.
        let by_resource =
            resource_policy.map(|p| self.resource_decision(p, caller, action, resource, &ctx));
        if by_resource == Some(Decision::ExplicitDeny) {
            return Err(self.denied_by_resource_policy(caller, action, on));
        }
        match identity {
            Decision::Allow => Ok(()),
            _ if by_resource == Some(Decision::Allow) && identity != Decision::ExplicitDeny => {
                Ok(())
            }
            Decision::ExplicitDeny => Err(ControlError::AccessDenied(format!(
                "User: {} is not authorized to perform: {action} on resource: {on} with an \
                 explicit deny in an identity-based policy",
                self.session_arn(c)
            ))),
            Decision::NotApplicable => Err(ControlError::AccessDenied(format!(
                "User: {} is not authorized to perform: {action} on resource: {on} because no \
                 identity-based policy allows the {action} action",
                self.session_arn(c)
            ))),
        }
    }

    /// What a resource-based policy (a repository's) says about `caller` doing `action` on
    /// `resource`. A session counts as its assumed-role ARN and its role's ARN.
    pub(crate) fn resource_decision(
        &self,
        policy: &Policy,
        caller: &command::Caller,
        action: &str,
        resource: Option<&str>,
        context: &HashMap<String, Vec<String>>,
    ) -> Decision {
        let mut arns = vec![self.principal_arn_of(&caller.principal)];
        if let Principal::Session(c) = &caller.principal {
            arns.push(self.role_arn_of_session(c));
        }
        policy.evaluate(&AccessRequest {
            action,
            resource,
            caller: Some(&Caller {
                account: &self.part.account_id,
                arns: &arns,
                service: None,
            }),
            context,
        })
    }

    /// Whether the resource policy `policy` explicitly denies `caller` `action` on
    /// `resource` (ECR's lock-out check when a repository policy is set).
    pub fn resource_policy_denies(
        &self,
        policy: &Policy,
        caller: &command::Caller,
        action: &str,
        resource: &str,
    ) -> bool {
        let ctx = self.caller_context(caller);
        self.resource_decision(policy, caller, action, Some(resource), &ctx)
            == Decision::ExplicitDeny
    }

    /// A key's request against a resource whose policy may deny it (keys' identities allow
    /// everything they may call, so only an explicit Deny matters).
    pub(crate) fn key_against_resource_policy(
        &self,
        caller: &command::Caller,
        policy: &Policy,
        action: &str,
        resource: Option<&str>,
        conditions: &[(&'static str, String)],
    ) -> Result<()> {
        let mut ctx = self.caller_context(caller);
        for (k, v) in conditions {
            ctx.entry(k.to_ascii_lowercase())
                .or_default()
                .push(v.clone());
        }
        if self.resource_decision(policy, caller, action, resource, &ctx) == Decision::ExplicitDeny
        {
            return Err(self.denied_by_resource_policy(caller, action, resource.unwrap_or("*")));
        }
        Ok(())
    }

    pub(super) fn denied_by_resource_policy(
        &self,
        caller: &command::Caller,
        action: &str,
        on: &str,
    ) -> ControlError {
        ControlError::AccessDenied(format!(
            "User: {} is not authorized to perform: {action} on resource: {on} with an explicit \
             deny in a resource-based policy",
            self.principal_arn_of(&caller.principal)
        ))
    }
}
