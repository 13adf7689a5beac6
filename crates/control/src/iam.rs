//! berth's IAM and STS: roles (a trust policy saying who may assume the role, inline policies
//! saying what its sessions may do), role sessions (temporary `ASIA…` credentials from
//! `AssumeRole`, and the task-role credentials the agent session hands to tasks), and the
//! decision whether a caller may do what a request asks ([`Control::authorize`]).
//!
//! Callers are [`Principal`]s: a stored access key (the root key — an administrator — or a
//! join token, limited to the agent operations of its cluster) or a role session, whose
//! every request is checked against its role's policies with [`berth_auth::policy`].
//! Sessions are not stored: their tokens carry sealed claims ([`berth_auth::session`]),
//! checked on each request against the role as it is now (deleting the role ends them).
//! Must not: let a session outlive its expiry or its role, or grant what no policy allows.

use std::collections::HashMap;

use berth_auth::policy::{AccessRequest, Caller, Decision, Policy, PolicyKind};
use berth_auth::session::{self, Claims};
use berth_store::{Compare, Op, Store, Txn};

use crate::command;
use crate::records::RoleRecord;
use crate::{Control, ControlError, Result, keys};

/// The service principal ECS assumes task roles as.
pub const ECS_TASKS_SERVICE: &str = "ecs-tasks.amazonaws.com";
/// IAM's limit on one role's inline policies, together.
pub const MAX_ROLE_POLICY_BYTES: usize = 10_240;
/// IAM's default limit on a trust policy.
pub const MAX_TRUST_POLICY_BYTES: usize = 2_048;

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

/// Who is calling (defined with the command boundary, where every caller is one).
pub use crate::command::Principal;

/// Credentials of a new role session.
#[derive(Debug, Clone)]
pub struct SessionCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
    /// Epoch seconds.
    pub expiration: i64,
    /// `arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION`
    pub assumed_role_arn: String,
    /// `ROLEID:SESSION`
    pub assumed_role_id: String,
}

/// Who a caller is, as STS `GetCallerIdentity` says.
#[derive(Debug, Clone)]
pub struct Identity {
    pub account: String,
    pub arn: String,
    pub user_id: String,
}

/// What CreateRole takes.
#[derive(Debug, Clone, Default)]
pub struct NewRole {
    pub role_name: String,
    pub path: Option<String>,
    pub assume_role_policy: String,
    pub description: Option<String>,
    pub max_session_duration: Option<i64>,
    pub tags: Vec<(String, String)>,
}

pub(crate) fn iam(code: &'static str, status: u16, msg: impl Into<String>) -> ControlError {
    ControlError::Iam {
        code,
        status,
        message: msg.into(),
    }
}

pub(crate) fn validation(msg: impl Into<String>) -> ControlError {
    iam("ValidationError", 400, msg)
}

fn no_such_role(name: &str) -> ControlError {
    iam(
        "NoSuchEntity",
        404,
        format!("The role with name {name} cannot be found."),
    )
}

pub(crate) fn malformed(msg: String) -> ControlError {
    iam("MalformedPolicyDocument", 400, msg)
}

/// IAM names: letters, digits and `_+=,.@-`, `min..=max` characters.
pub(crate) fn check_name(what: &str, v: &str, min: usize, max: usize) -> Result<()> {
    let n = v.chars().count();
    if n < min || n > max {
        return Err(validation(format!(
            "1 validation error detected: Value '{v}' at '{what}' failed to satisfy constraint: \
             Member must have length between {min} and {max}"
        )));
    }
    if !v
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"_+=,.@-".contains(&b))
    {
        return Err(validation(format!(
            "1 validation error detected: Value '{v}' at '{what}' failed to satisfy constraint: \
             Member must satisfy regular expression pattern: [\\w+=,.@-]+"
        )));
    }
    Ok(())
}

pub(crate) fn check_path(p: &str) -> Result<()> {
    let ok = p.len() <= 512
        && p.starts_with('/')
        && p.ends_with('/')
        && p.bytes().all(|b| (0x21..=0x7e).contains(&b));
    if !ok {
        return Err(validation(format!(
            "1 validation error detected: Value '{p}' at 'path' failed to satisfy constraint: \
             Member must satisfy regular expression pattern: (\\u002F)|(\\u002F[\\u0021-\\u007F]+\\u002F)"
        )));
    }
    Ok(())
}

/// IAM's paging parameters: `MaxItems` (1–1000, default 100) and the `Marker` of the previous
/// page (opaque, as [`crate::paging`] makes them), as (limit, key to resume after).
pub(crate) fn iam_page(
    marker: Option<&str>,
    max_items: Option<i64>,
) -> Result<(usize, Option<String>)> {
    let max = max_items.unwrap_or(100);
    if !(1..=1000).contains(&max) {
        return Err(validation(
            "1 validation error detected: Value at 'maxItems' failed to satisfy constraint: \
             Member must have value between 1 and 1000",
        ));
    }
    let after = crate::paging::decode(marker).map_err(|_| validation("Invalid Marker."))?;
    Ok((max as usize, after))
}

/// A policy document within IAM's size quota `quota` (`max` characters) that parses as `kind`.
pub(crate) fn check_document(doc: &str, kind: PolicyKind, max: usize, quota: &str) -> Result<()> {
    if doc.len() > max {
        return Err(iam(
            "LimitExceeded",
            409,
            format!("Cannot exceed quota for {quota}: {max}"),
        ));
    }
    Policy::parse(doc, kind).map_err(malformed)?;
    Ok(())
}

/// An IAM unique id: `prefix` (`AROA` roles, `ANPA` policies) and 17 random characters.
pub(crate) fn unique_id(prefix: &str) -> String {
    use rand::Rng;
    const ID: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut rng = rand::rng();
    let mut id = String::from(prefix);
    for _ in 0..17 {
        id.push(ID[rng.random_range(0..ID.len())] as char);
    }
    id
}

/// The key that seals session tokens: made on first start, kept in the store.
pub(crate) async fn load_or_create_session_key(store: &dyn Store) -> Result<Vec<u8>> {
    Ok(berth_store::load_or_create(store, keys::SESSION_KEY, || {
        rand::random::<[u8; 32]>().to_vec()
    })
    .await?)
}

/// ISO 8601 in UTC, as IAM and STS write times.
pub fn iso8601(epoch: f64) -> String {
    let secs = epoch.floor() as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

impl Control {
    /// A role as the view holds it (shared, not copied: role sessions look their role up on
    /// every request).
    fn role_entry(&self, name: &str) -> Option<std::sync::Arc<RoleRecord>> {
        self.view
            .data
            .read()
            .roles
            .get(&name.to_ascii_lowercase())
            .map(|e| e.value.clone())
    }

    fn role_arn(&self, path: &str, name: &str) -> String {
        format!("arn:aws:iam::{}:role{path}{name}", self.part.account_id)
    }

    /// The role an ARN names (`arn:aws:iam::ACCOUNT:role/[path/]NAME`), if it exists.
    pub fn role_by_arn(&self, arn: &str) -> Option<std::sync::Arc<RoleRecord>> {
        let rest = arn.strip_prefix(&format!("arn:aws:iam::{}:role/", self.part.account_id))?;
        let name = rest.rsplit('/').next()?;
        self.role_entry(name).filter(|r| r.arn == arn)
    }

    /// Whether `arn` is shaped like a role ARN (`arn:aws:iam::ACCOUNT:role/NAME`).
    pub fn is_role_arn(arn: &str) -> bool {
        let p: Vec<&str> = arn.splitn(6, ':').collect();
        p.len() == 6
            && p[0] == "arn"
            && p[2] == "iam"
            && p[4].len() == 12
            && p[4].bytes().all(|b| b.is_ascii_digit())
            && p[5].strip_prefix("role/").is_some_and(|n| !n.is_empty())
    }

    /// `CreateRole`.
    pub async fn create_role(&self, r: NewRole) -> Result<RoleRecord> {
        check_name("roleName", &r.role_name, 1, 64)?;
        let path = r.path.unwrap_or_else(|| "/".into());
        check_path(&path)?;
        self.check_trust_policy(&r.assume_role_policy)?;
        let max = r.max_session_duration.unwrap_or(3600);
        if !(3600..=43_200).contains(&max) {
            return Err(validation(format!(
                "1 validation error detected: Value '{max}' at 'maxSessionDuration' failed to \
                 satisfy constraint: Member must have value between 3600 and 43200"
            )));
        }
        if r.description
            .as_ref()
            .is_some_and(|d| d.chars().count() > 1000)
        {
            return Err(validation(
                "1 validation error detected: Value at 'description' failed to satisfy \
                 constraint: Member must have length less than or equal to 1000",
            ));
        }
        if r.tags.len() > 50 {
            return Err(iam(
                "LimitExceeded",
                409,
                "A role can have at most 50 tags.",
            ));
        }
        for (k, v) in &r.tags {
            if k.is_empty() || k.chars().count() > 128 || v.chars().count() > 256 {
                return Err(validation(format!(
                    "Tag {k:?}: keys need 1 to 128 characters and values at most 256."
                )));
            }
        }
        let rec = RoleRecord {
            arn: self.role_arn(&path, &r.role_name),
            role_name: r.role_name,
            role_id: unique_id("AROA"),
            path,
            create_date: self.now().as_secs_f64().floor(),
            assume_role_policy: r.assume_role_policy,
            description: r.description,
            max_session_duration: max,
            tags: r.tags,
            policies: Default::default(),
            attached: vec![],
        };
        if !self.put_new(&keys::role(&rec.role_name), &rec).await? {
            return Err(iam(
                "EntityAlreadyExists",
                409,
                format!("Role with name {} already exists.", rec.role_name),
            ));
        }
        Ok(rec)
    }

    fn check_trust_policy(&self, doc: &str) -> Result<()> {
        check_document(
            doc,
            PolicyKind::Trust,
            MAX_TRUST_POLICY_BYTES,
            "ACLSizePerRole",
        )
    }

    /// `GetRole`.
    pub fn get_role(&self, name: &str) -> Result<RoleRecord> {
        check_name("roleName", name, 1, 64)?;
        self.role_entry(name)
            .map(|r| (*r).clone())
            .ok_or_else(|| no_such_role(name))
    }

    /// `ListRoles`: roles in name order under `path_prefix`, a page of `max_items` (default
    /// 100) after `marker` (the previous page's, see [`iam_page`]).
    pub fn list_roles(
        &self,
        path_prefix: Option<&str>,
        marker: Option<&str>,
        max_items: Option<i64>,
    ) -> Result<(Vec<RoleRecord>, Option<String>)> {
        let (max, after) = iam_page(marker, max_items)?;
        let prefix = path_prefix.unwrap_or("/");
        let d = self.view.data.read();
        let roles = d
            .roles
            .iter()
            .filter(|(_, e)| e.value.path.starts_with(prefix))
            .map(|(k, e)| (k.clone(), (*e.value).clone()));
        Ok(crate::paging::page(roles, after.as_deref(), max))
    }

    pub(crate) async fn modify_role(
        &self,
        name: &str,
        f: impl FnMut(&mut RoleRecord) -> Result<()>,
    ) -> Result<RoleRecord> {
        check_name("roleName", name, 1, 64)?;
        let lname = name.to_ascii_lowercase();
        self.modify(
            &keys::role(name),
            |d| d.roles.get(&lname).cloned(),
            || no_such_role(name),
            f,
        )
        .await
    }

    /// `DeleteRole`: only once its inline policies are gone, as IAM insists.
    pub async fn delete_role(&self, name: &str) -> Result<()> {
        check_name("roleName", name, 1, 64)?;
        let e = self
            .view
            .data
            .read()
            .roles
            .get(&name.to_ascii_lowercase())
            .cloned()
            .ok_or_else(|| no_such_role(name))?;
        if !e.value.policies.is_empty() {
            return Err(iam(
                "DeleteConflict",
                409,
                "Cannot delete entity, must delete policies first.",
            ));
        }
        if !e.value.attached.is_empty() {
            return Err(iam(
                "DeleteConflict",
                409,
                "Cannot delete entity, must detach all policies first.",
            ));
        }
        let key = keys::role(name);
        let r = self
            .commit(Txn {
                compare: vec![Compare::mod_revision_is(key.clone(), e.rev)],
                success: vec![Op::delete(key)],
                failure: vec![],
            })
            .await?;
        if !r.succeeded {
            return Err(iam(
                "ConcurrentModification",
                409,
                "The role changed while it was being deleted; try again.",
            ));
        }
        Ok(())
    }

    /// `UpdateAssumeRolePolicy`.
    pub async fn update_assume_role_policy(&self, name: &str, doc: &str) -> Result<()> {
        self.check_trust_policy(doc)?;
        self.modify_role(name, |r| {
            r.assume_role_policy = doc.to_string();
            Ok(())
        })
        .await?;
        Ok(())
    }

    /// `PutRolePolicy`: add or replace an inline policy.
    pub async fn put_role_policy(&self, role: &str, policy: &str, doc: &str) -> Result<()> {
        check_name("policyName", policy, 1, 128)?;
        Policy::parse(doc, PolicyKind::Identity).map_err(malformed)?;
        self.modify_role(role, |r| {
            r.policies.insert(policy.to_string(), doc.to_string());
            let total: usize = r.policies.values().map(String::len).sum();
            if total > MAX_ROLE_POLICY_BYTES {
                return Err(iam(
                    "LimitExceeded",
                    409,
                    format!(
                        "Maximum policy size of {MAX_ROLE_POLICY_BYTES} bytes exceeded for role {}",
                        r.role_name
                    ),
                ));
            }
            Ok(())
        })
        .await?;
        Ok(())
    }

    /// `GetRolePolicy`.
    pub fn get_role_policy(&self, role: &str, policy: &str) -> Result<(String, String)> {
        check_name("policyName", policy, 1, 128)?;
        let r = self.get_role(role)?;
        let doc = r.policies.get(policy).cloned().ok_or_else(|| {
            iam(
                "NoSuchEntity",
                404,
                format!("The role policy with name {policy} cannot be found."),
            )
        })?;
        Ok((r.role_name, doc))
    }

    /// `ListRolePolicies`: inline policy names in order, paged like [`Control::list_roles`].
    pub fn list_role_policies(
        &self,
        role: &str,
        marker: Option<&str>,
        max_items: Option<i64>,
    ) -> Result<(Vec<String>, Option<String>)> {
        let r = self.get_role(role)?;
        let (max, after) = iam_page(marker, max_items)?;
        let names = r.policies.keys().map(|k| (k.clone(), k.clone()));
        Ok(crate::paging::page(names, after.as_deref(), max))
    }

    /// `DeleteRolePolicy`.
    pub async fn delete_role_policy(&self, role: &str, policy: &str) -> Result<()> {
        check_name("policyName", policy, 1, 128)?;
        self.modify_role(role, |r| {
            r.policies.remove(policy).map(|_| ()).ok_or_else(|| {
                iam(
                    "NoSuchEntity",
                    404,
                    format!("The role policy with name {policy} cannot be found."),
                )
            })
        })
        .await?;
        Ok(())
    }

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

    fn session_arn(&self, c: &Claims) -> String {
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
    fn caller_context(&self, caller: &command::Caller) -> HashMap<String, Vec<String>> {
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

    fn role_arn_of_session(&self, c: &Claims) -> String {
        self.role_entry(&c.role_name)
            .map(|r| r.arn.clone())
            .unwrap_or_default()
    }

    /// What a role's policies (inline and attached) say about an action on a resource.
    fn role_decision(
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

    fn denied_by_resource_policy(
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

    /// Whether `role`'s trust policy lets `caller` assume it.
    fn trusts(
        &self,
        role: &RoleRecord,
        caller: &Caller<'_>,
        context: &HashMap<String, Vec<String>>,
    ) -> bool {
        let Ok(p) = Policy::parse(&role.assume_role_policy, PolicyKind::Trust) else {
            return false;
        };
        p.evaluate(&AccessRequest {
            action: "sts:AssumeRole",
            resource: Some(&role.arn),
            caller: Some(caller),
            context,
        }) == Decision::Allow
    }

    fn mint(&self, role: &RoleRecord, session_name: &str, seconds: i64) -> SessionCredentials {
        let issued = self.now().as_secs();
        let claims = Claims {
            access_key_id: String::new(),
            role_name: role.role_name.clone(),
            role_id: role.role_id.clone(),
            session_name: session_name.to_string(),
            issued_at: issued,
            expires_at: issued + seconds,
        };
        let creds = session::mint(&self.session_key, claims.clone());
        SessionCredentials {
            access_key_id: creds.access_key_id,
            secret_access_key: creds.secret_access_key,
            session_token: creds.session_token.unwrap_or_default(),
            expiration: issued + seconds,
            assumed_role_arn: self.session_arn(&claims),
            assumed_role_id: format!("{}:{session_name}", role.role_id),
        }
    }

    /// STS `AssumeRole` by `p`: its identity must allow `sts:AssumeRole` on the role (the
    /// root key and users' keys may do anything; a join token may not) and the role's trust
    /// policy must name it.
    pub fn assume_role(
        &self,
        requester: &command::Caller,
        role_arn: &str,
        session_name: &str,
        duration: Option<i64>,
        external_id: Option<&str>,
    ) -> Result<SessionCredentials> {
        check_name("roleSessionName", session_name, 2, 64)?;
        if role_arn.len() < 20 || role_arn.len() > 2048 {
            return Err(validation(format!(
                "1 validation error detected: Value '{role_arn}' at 'roleArn' failed to satisfy \
                 constraint: Member must have length greater than or equal to 20"
            )));
        }
        let seconds = duration.unwrap_or(3600);
        if seconds < 900 {
            return Err(validation(format!(
                "1 validation error detected: Value '{seconds}' at 'durationSeconds' failed to \
                 satisfy constraint: Member must have value greater than or equal to 900"
            )));
        }
        let p = &requester.principal;
        let me = self.principal_arn_of(p);
        let denied = || {
            ControlError::AccessDenied(format!(
                "User: {me} is not authorized to perform: sts:AssumeRole on resource: {role_arn}"
            ))
        };
        // The caller's own permission (`sts:AssumeRole` on the role) was checked by
        // `Control::execute`; here the role's trust policy decides.
        let role = self.role_by_arn(role_arn).ok_or_else(denied)?;
        let mut arns = vec![me.clone()];
        if let Principal::Session(c) = p {
            arns.push(self.role_arn_of_session(c));
        }
        let mut ctx = self.caller_context(requester);
        ctx.insert("sts:rolesessionname".into(), vec![session_name.to_string()]);
        if let Some(x) = external_id {
            ctx.insert("sts:externalid".into(), vec![x.to_string()]);
        }
        let caller = Caller {
            account: &self.part.account_id,
            arns: &arns,
            service: None,
        };
        if !self.trusts(&role, &caller, &ctx) {
            return Err(denied());
        }
        if seconds > role.max_session_duration {
            return Err(validation(
                "The requested DurationSeconds exceeds the MaxSessionDuration set for this role.",
            ));
        }
        Ok(self.mint(&role, session_name, seconds))
    }

    /// Whether ECS may assume `role_arn` for tasks (it exists and trusts
    /// `ecs-tasks.amazonaws.com`); the error is ECS's.
    pub fn check_task_role(
        &self,
        role_arn: &str,
        cluster_arn: &str,
    ) -> Result<std::sync::Arc<RoleRecord>> {
        let refuse = || {
            ControlError::Client(format!(
                "ECS was unable to assume the role '{role_arn}' that was provided for this \
                 task. Please verify that the role being passed has the proper trust \
                 relationship and permissions and that your IAM user has permissions to pass \
                 this role."
            ))
        };
        let role = self.role_by_arn(role_arn).ok_or_else(refuse)?;
        let mut ctx = HashMap::new();
        ctx.insert(
            "aws:sourceaccount".to_string(),
            vec![self.part.account_id.clone()],
        );
        let caller = Caller {
            account: &self.part.account_id,
            arns: &[],
            service: Some(ECS_TASKS_SERVICE),
        };
        // The source: the cluster the task runs in.
        ctx.insert("aws:sourcearn".to_string(), vec![cluster_arn.to_string()]);
        if !self.trusts(&role, &caller, &ctx) {
            return Err(refuse());
        }
        Ok(role)
    }

    /// Credentials of `role_arn` for one task, as ECS assumes task roles
    /// (`ecs-tasks.amazonaws.com`, the task's cluster as the source), valid for the configured
    /// task-credential lifetime; the session is named after the task id.
    pub fn task_role_session(
        &self,
        role_arn: &str,
        cluster_arn: &str,
        task_arn: &str,
    ) -> Result<SessionCredentials> {
        let role = self.check_task_role(role_arn, cluster_arn)?;
        let id = task_arn.rsplit('/').next().unwrap_or("task");
        Ok(self.mint(&role, id, self.task_credentials_ttl.as_secs() as i64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso8601_dates() {
        assert_eq!(iso8601(0.0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(951_782_400.0), "2000-02-29T00:00:00Z");
        assert_eq!(iso8601(1_795_464_000.5), "2026-11-23T20:00:00Z");
    }

    #[test]
    fn role_arns_are_recognised() {
        assert!(Control::is_role_arn("arn:aws:iam::123456789012:role/app"));
        assert!(Control::is_role_arn(
            "arn:aws:iam::123456789012:role/x/y/app"
        ));
        assert!(!Control::is_role_arn("arn:aws:iam::123456789012:user/app"));
        assert!(!Control::is_role_arn("arn:aws:iam::1234:role/app"));
        assert!(!Control::is_role_arn("app"));
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("roleName", "app-role_1+=,.@", 1, 64).is_ok());
        assert!(check_name("roleName", "", 1, 64).is_err());
        assert!(check_name("roleName", "a b", 1, 64).is_err());
        assert!(check_name("roleName", &"a".repeat(65), 1, 64).is_err());
        assert!(check_path("/").is_ok());
        assert!(check_path("/team/app/").is_ok());
        assert!(check_path("team").is_err());
        assert!(check_path("/team").is_err());
    }
}
