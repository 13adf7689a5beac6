//! IAM policy documents: parsing, validation and evaluation of identity policies (a role's
//! inline policies) and trust policies (a role's assume-role policy).
//!
//! Owns: the policy grammar (which documents are malformed, with the text of IAM's
//! `MalformedPolicyDocument` message), the matching rules for actions, resources, principals
//! and conditions, and the decision of one policy for one request. [`combine`] folds the
//! decisions of several policies (explicit deny wins, then allow, else implicit deny).
//!
//! Must not: do I/O, look anything up, or know which policies apply to whom — the control
//! plane picks the policies, names the action, the resource ARN, the caller and the condition
//! keys, and calls in. It must not guess a resource berth cannot name or a key berth does not
//! supply; those cases follow the conservative rules below.
//!
//! API:
//! - [`Policy::parse`]`(text, kind) -> Result<Policy, String>`: `Err` is the message for
//!   `MalformedPolicyDocument`.
//! - [`Policy::evaluate`]`(&AccessRequest) -> Decision`: `Allow`, `ExplicitDeny` or
//!   `NotApplicable` (this policy says nothing: implicit deny unless another policy allows).
//! - [`combine`]`(decisions) -> Decision`.
//!
//! Conservative rules (where berth knows less than AWS would):
//! - A statement is judged with three-valued logic: each part (action, resource, principal,
//!   each condition) is a yes, a no or *unknown*; parts are ANDed (a single no makes the
//!   statement a no). An Allow applies only when every part is a yes; a Deny applies unless
//!   some part is a no. So what berth cannot evaluate never grants, and always denies.
//! - No resource (`AccessRequest::resource` is `None`, berth cannot name one): an Allow
//!   applies only if its `Resource` lists exactly `"*"` (a `NotResource` never applies); a
//!   Deny's resource part is a yes whatever `Resource`/`NotResource` say.
//! - A condition key is evaluable if it is in [`KNOWN_CONDITION_KEYS`] (berth supplies these
//!   whenever they apply, so their absence means absent) or the request's context carries it.
//!   Any other key (e.g. `aws:RequestTag/…`, `aws:ResourceTag/…`, `aws:PrincipalTag/…`,
//!   `aws:CurrentTime`) makes its condition unknown: such a statement never allows, and a
//!   Deny with it applies (unless another of its parts is a no).
//! - Policy variables (`${aws:username}`, `${key, 'default'}`, and the escapes `${*}`, `${?}`,
//!   `${$}`; Version 2012-10-17 only) are replaced in `Resource`/`NotResource` and condition
//!   values by the context key's value. A variable with no single value and no default makes
//!   that part unknown.
//!
//! Matching: actions are case-insensitive with `*`/`?` wildcards; resources are case-sensitive
//! wildcard matches on the whole string; `ArnLike`/`ArnEquals` match each of the six ARN
//! segments separately when both sides have six. The matcher backtracks only to the last
//! `*`, so a match costs at most pattern length × text length — it runs on every request of a
//! role session.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// Condition keys (lower-case) that berth supplies whenever they apply to a request: their
/// absence from the context means the key is absent, not unknown.
pub const KNOWN_CONDITION_KEYS: &[&str] = &[
    "aws:sourceaccount",
    "aws:sourcearn",
    "aws:principalaccount",
    "aws:principalarn",
    "aws:principaltype",
    "aws:userid",
    "aws:username",
    "aws:requestedregion",
    "aws:currenttime",
    "aws:epochtime",
    "sts:rolesessionname",
    "sts:externalid",
    "ecs:cluster",
];

const VERSION_2012: &str = "2012-10-17";
const VERSION_2008: &str = "2008-10-17";

const MSG_VENDOR: &str =
    "Actions/Conditions must be prefaced by a vendor, e.g., iam, sdb, ec2, etc.";
const MSG_NO_PRINCIPAL: &str = "Policy document should not specify a principal.";

/// Which kind of document a policy is; decides which statement fields are required.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyKind {
    /// An identity policy (a role's inline policy): `Resource` required, no `Principal`.
    Identity,
    /// A role's trust (assume-role) policy: `Principal` required, no `Resource`.
    Trust,
    /// A resource-based policy (an ECR repository's): `Principal` required; `Resource`
    /// optional (absent: the resource the policy is attached to); actions of any service.
    Resource,
}

/// What one policy, or a combination of policies, says about a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    ExplicitDeny,
    /// No statement applies: an implicit deny unless another policy allows.
    NotApplicable,
}

/// Who is asking; matched against a trust policy's `Principal`.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    /// The caller's 12-digit account id.
    pub account: &'a str,
    /// Every ARN the caller counts as: a user ARN, or for a role session both the role ARN
    /// and the `arn:aws:sts::ACCT:assumed-role/ROLE/SESSION` ARN.
    pub arns: &'a [String],
    /// A service principal (e.g. `ecs-tasks.amazonaws.com`). When set, the caller is that
    /// service: `Principal.Service` can match it, `Principal.AWS` cannot.
    pub service: Option<&'a str>,
}

/// One request to decide.
#[derive(Debug, Clone, Copy)]
pub struct AccessRequest<'a> {
    /// `vendor:Operation`, e.g. `ecs:RunTask`, `sts:AssumeRole`.
    pub action: &'a str,
    /// The ARN the operation acts on; `None` when berth cannot name one.
    pub resource: Option<&'a str>,
    /// The caller; needed for trust policies (without it a principal is unknown).
    pub caller: Option<&'a Caller<'a>>,
    /// Condition keys with lower-case names (e.g. `aws:sourceaccount`) and their values.
    pub context: &'a HashMap<String, Vec<String>>,
}

/// A parsed, validated policy document.
#[derive(Debug, Clone)]
pub struct Policy {
    kind: PolicyKind,
    statements: Vec<Statement>,
}

/// Combine the decisions of several policies: any `ExplicitDeny` wins, else any `Allow`,
/// else `NotApplicable` (implicit deny).
pub fn combine(decisions: impl IntoIterator<Item = Decision>) -> Decision {
    let mut out = Decision::NotApplicable;
    for d in decisions {
        match d {
            Decision::ExplicitDeny => return Decision::ExplicitDeny,
            Decision::Allow => out = Decision::Allow,
            Decision::NotApplicable => {}
        }
    }
    out
}

impl Policy {
    /// Parse and validate a policy document. `Err` is the message for IAM's
    /// `MalformedPolicyDocument` error.
    pub fn parse(text: &str, kind: PolicyKind) -> Result<Policy, String> {
        let doc: Json =
            serde_json::from_str(text).map_err(|e| format!("Syntax errors in policy. ({e})"))?;
        let Json::Obj(top) = doc else {
            return Err("Syntax errors in policy. (the document must be a JSON object)".into());
        };
        let mut version = None;
        let mut statement = None;
        for (k, v) in &top {
            match k.as_str() {
                "Version" => version = Some(v),
                "Id" => {
                    if !matches!(v, Json::Str(_)) {
                        return Err(type_error("Id", "a string"));
                    }
                }
                "Statement" => statement = Some(v),
                other => return Err(format!("Unknown field {other}")),
            }
        }
        let vars = match version {
            None => false,
            Some(Json::Str(v)) if v == VERSION_2012 => true,
            Some(Json::Str(v)) if v == VERSION_2008 => false,
            Some(v) => {
                return Err(format!(
                    "Invalid policy Version {}: use \"{VERSION_2012}\"",
                    v.describe()
                ));
            }
        };
        let statements = match statement {
            None => return Err("Missing required field Statement".into()),
            Some(Json::Obj(s)) => vec![parse_statement(s, kind, vars)?],
            Some(Json::Arr(list)) => list
                .iter()
                .map(|s| match s {
                    Json::Obj(s) => parse_statement(s, kind, vars),
                    _ => Err(type_error("Statement", "an object or an array of objects")),
                })
                .collect::<Result<Vec<_>, _>>()?,
            Some(_) => return Err(type_error("Statement", "an object or an array of objects")),
        };
        let mut sids = HashSet::new();
        for sid in statements.iter().filter_map(|s| s.sid.as_deref()) {
            if !sid.is_empty() && !sids.insert(sid) {
                return Err("Statement IDs (SID) in a single policy must be unique.".into());
            }
        }
        Ok(Policy { kind, statements })
    }

    /// The kind this policy was parsed as.
    pub fn kind(&self) -> PolicyKind {
        self.kind
    }

    /// Decide one request: `ExplicitDeny` if any Deny statement applies, else `Allow` if any
    /// Allow statement applies, else `NotApplicable`.
    pub fn evaluate(&self, req: &AccessRequest<'_>) -> Decision {
        let mut allowed = false;
        for st in &self.statements {
            let t = st.judge(self.kind, req);
            match st.effect {
                Effect::Deny if t != Tri::No => return Decision::ExplicitDeny,
                Effect::Allow if t == Tri::Yes => allowed = true,
                _ => {}
            }
        }
        if allowed {
            Decision::Allow
        } else {
            Decision::NotApplicable
        }
    }
}

// ---------------------------------------------------------------------------------------
// Three-valued logic

/// Ordered No < Unknown < Yes, so AND is the minimum and OR the maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Tri {
    No,
    Unknown,
    Yes,
}

impl Tri {
    fn from_bool(b: bool) -> Tri {
        if b { Tri::Yes } else { Tri::No }
    }
    fn and(self, o: Tri) -> Tri {
        self.min(o)
    }
    fn or(self, o: Tri) -> Tri {
        self.max(o)
    }
    fn not(self) -> Tri {
        match self {
            Tri::No => Tri::Yes,
            Tri::Unknown => Tri::Unknown,
            Tri::Yes => Tri::No,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Statements

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effect {
    Allow,
    Deny,
}

/// `Action`/`NotAction` or `Resource`/`NotResource`: patterns, and whether the list is negated.
#[derive(Debug, Clone)]
struct PatternList {
    not: bool,
    patterns: Vec<Pattern>,
}

#[derive(Debug, Clone)]
struct Statement {
    sid: Option<String>,
    effect: Effect,
    actions: PatternList,
    /// Identity policies only.
    resources: Option<PatternList>,
    /// Trust policies only.
    principal: Option<Principal>,
    conditions: Vec<Condition>,
}

impl Statement {
    fn judge(&self, kind: PolicyKind, req: &AccessRequest<'_>) -> Tri {
        let hit = self
            .actions
            .patterns
            .iter()
            .any(|p| glob(&p.toks, req.action, true, true));
        if hit == self.actions.not {
            return Tri::No;
        }
        let mut t = Tri::Yes;
        if kind == PolicyKind::Identity || self.resources.is_some() {
            t = t.and(self.resource_part(req));
        }
        if let Some(p) = &self.principal {
            t = t.and(p.matches(req.caller));
        }
        for c in &self.conditions {
            if t == Tri::No {
                break;
            }
            t = t.and(c.eval(req.context));
        }
        t
    }

    fn resource_part(&self, req: &AccessRequest<'_>) -> Tri {
        let Some(list) = &self.resources else {
            return Tri::Yes;
        };
        let Some(resource) = req.resource else {
            // Berth cannot name the resource: only an explicit "*" grants, any Deny applies.
            return match self.effect {
                Effect::Deny => Tri::Yes,
                Effect::Allow => Tri::from_bool(!list.not && list.patterns.iter().any(|p| p.star)),
            };
        };
        let mut any = Tri::No;
        for p in &list.patterns {
            let m = match p.resolve(req.context) {
                Some(toks) => Tri::from_bool(glob(&toks, resource, true, false)),
                None => Tri::Unknown,
            };
            any = any.or(m);
            if any == Tri::Yes {
                break;
            }
        }
        if list.not { any.not() } else { any }
    }
}

fn parse_statement(
    obj: &[(String, Json)],
    kind: PolicyKind,
    vars: bool,
) -> Result<Statement, String> {
    let mut f = StatementFields::default();
    for (k, v) in obj {
        let slot = match k.as_str() {
            "Sid" => &mut f.sid,
            "Effect" => &mut f.effect,
            "Action" => &mut f.action,
            "NotAction" => &mut f.not_action,
            "Resource" => &mut f.resource,
            "NotResource" => &mut f.not_resource,
            "Principal" => &mut f.principal,
            "NotPrincipal" => &mut f.not_principal,
            "Condition" => &mut f.condition,
            other => return Err(format!("Unknown field {other}")),
        };
        *slot = Some(v);
    }
    match kind {
        PolicyKind::Identity => {
            if f.principal.is_some() || f.not_principal.is_some() {
                return Err(MSG_NO_PRINCIPAL.into());
            }
        }
        PolicyKind::Resource => {
            if f.not_principal.is_some() {
                return Err(
                    "NotPrincipal is not supported by berth in resource policies; name the principals in Principal"
                        .into(),
                );
            }
        }
        PolicyKind::Trust => {
            if f.not_principal.is_some() {
                return Err(
                    "NotPrincipal is not supported by berth in trust policies; name the principals in Principal"
                        .into(),
                );
            }
            if f.resource.is_some() {
                return Err("Has prohibited field Resource".into());
            }
            if f.not_resource.is_some() {
                return Err("Has prohibited field NotResource".into());
            }
        }
    }
    let sid = match f.sid {
        None => None,
        Some(Json::Str(s)) => {
            if !s.chars().all(|c| c.is_ascii_alphanumeric()) {
                return Err(
                    "Statement IDs (SID) must be alpha-numeric. Check that your input satisfies the regular expression [0-9A-Za-z]*"
                        .into(),
                );
            }
            Some(s.clone())
        }
        Some(_) => return Err(type_error("Sid", "a string")),
    };
    let effect = match f.effect {
        None => return Err("Missing required field Effect".into()),
        Some(Json::Str(s)) if s == "Allow" => Effect::Allow,
        Some(Json::Str(s)) if s == "Deny" => Effect::Deny,
        Some(v) => {
            return Err(format!(
                "Invalid effect: {} (Effect must be \"Allow\" or \"Deny\")",
                v.describe()
            ));
        }
    };

    let (not, raw) = match (f.action, f.not_action) {
        (Some(_), Some(_)) => {
            return Err(
                "Policy statement must contain either Action or NotAction, not both.".into(),
            );
        }
        (Some(a), None) => (false, strings(a, "Action")?),
        (None, Some(a)) => (true, strings(a, "NotAction")?),
        (None, None) => return Err("Policy statement must contain actions.".into()),
    };
    if raw.is_empty() {
        return Err("Policy statement must contain actions.".into());
    }
    let mut patterns = Vec::with_capacity(raw.len());
    for a in raw {
        check_action(a, kind)?;
        patterns.push(Pattern::parse(a, false));
    }
    let actions = PatternList { not, patterns };

    let resources = match kind {
        PolicyKind::Trust => None,
        PolicyKind::Resource if f.resource.is_none() && f.not_resource.is_none() => None,
        PolicyKind::Identity | PolicyKind::Resource => {
            let (not, raw) = match (f.resource, f.not_resource) {
                (Some(_), Some(_)) => {
                    return Err(
                        "Policy statement must contain either Resource or NotResource, not both."
                            .into(),
                    );
                }
                (Some(r), None) => (false, strings(r, "Resource")?),
                (None, Some(r)) => (true, strings(r, "NotResource")?),
                (None, None) => return Err("Policy statement must contain resources.".into()),
            };
            if raw.is_empty() {
                return Err("Policy statement must contain resources.".into());
            }
            let mut patterns = Vec::with_capacity(raw.len());
            for r in raw {
                if r != "*" && !(r.starts_with("arn:") && r.splitn(6, ':').count() == 6) {
                    return Err(format!("Resource {r} must be in ARN format or \"*\"."));
                }
                patterns.push(Pattern::parse(r, vars));
            }
            Some(PatternList { not, patterns })
        }
    };

    let principal = match kind {
        PolicyKind::Identity => None,
        PolicyKind::Trust | PolicyKind::Resource => match f.principal {
            None => return Err("Missing required field Principal".into()),
            Some(p) => Some(Principal::parse(p)?),
        },
    };

    let conditions = match f.condition {
        None => Vec::new(),
        Some(c) => parse_conditions(c, vars)?,
    };

    Ok(Statement {
        sid,
        effect,
        actions,
        resources,
        principal,
        conditions,
    })
}

#[derive(Default)]
struct StatementFields<'j> {
    sid: Option<&'j Json>,
    effect: Option<&'j Json>,
    action: Option<&'j Json>,
    not_action: Option<&'j Json>,
    resource: Option<&'j Json>,
    not_resource: Option<&'j Json>,
    principal: Option<&'j Json>,
    not_principal: Option<&'j Json>,
    condition: Option<&'j Json>,
}

fn check_action(a: &str, kind: PolicyKind) -> Result<(), String> {
    if a == "*" {
        return Ok(());
    }
    let Some((vendor, name)) = a.split_once(':') else {
        return Err(MSG_VENDOR.into());
    };
    if vendor.is_empty() {
        return Err(MSG_VENDOR.into());
    }
    if !vendor
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        return Err(format!("Vendor {vendor} is not valid"));
    }
    if name.is_empty()
        || name
            .chars()
            .any(|c| c == ':' || c.is_whitespace() || c.is_control())
    {
        return Err(format!("Action {a} is not valid"));
    }
    if kind == PolicyKind::Trust && !vendor.eq_ignore_ascii_case("sts") {
        return Err("AssumeRole policy may only specify STS AssumeRole actions.".into());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Principals (trust policies)

#[derive(Debug, Clone)]
enum Principal {
    /// `"Principal": "*"`: anyone.
    Anyone,
    Listed {
        aws: Vec<AwsPrincipal>,
        /// Lower-case service principal names.
        services: Vec<String>,
    },
}

#[derive(Debug, Clone)]
enum AwsPrincipal {
    /// `"AWS": "*"`: any AWS identity (not a service).
    Any,
    /// An account id or `arn:…:iam::ACCT:root`: any identity of that account.
    Account(String),
    /// A user, role or assumed-role session ARN, compared with the caller's ARNs.
    Arn(String),
}

impl Principal {
    fn parse(v: &Json) -> Result<Principal, String> {
        let entries = match v {
            Json::Str(s) if s == "*" => return Ok(Principal::Anyone),
            Json::Obj(entries) if !entries.is_empty() => entries,
            _ => return Err(format!("Invalid principal in policy: {}", v.describe())),
        };
        let mut aws = Vec::new();
        let mut services = Vec::new();
        for (k, v) in entries {
            let invalid = |s: &str| format!("Invalid principal in policy: \"{k}\":\"{s}\"");
            let values = strings(v, &format!("Principal {k}"))?;
            if values.is_empty() {
                return Err(format!("Invalid principal in policy: \"{k}\":[]"));
            }
            match k.as_str() {
                "AWS" => {
                    for s in values {
                        aws.push(AwsPrincipal::parse(s).ok_or_else(|| invalid(s))?);
                    }
                }
                "Service" => {
                    for s in values {
                        let ok = s.contains('.')
                            && s.chars()
                                .all(|c| c.is_ascii_alphanumeric() || ".-_".contains(c));
                        if !ok {
                            return Err(invalid(s));
                        }
                        services.push(s.to_ascii_lowercase());
                    }
                }
                "Federated" | "CanonicalUser" => {
                    return Err(format!(
                        "Invalid principal in policy: {k} principals are not supported by berth"
                    ));
                }
                other => {
                    return Err(format!(
                        "Invalid principal in policy: unknown principal type \"{other}\""
                    ));
                }
            }
        }
        Ok(Principal::Listed { aws, services })
    }

    fn matches(&self, caller: Option<&Caller<'_>>) -> Tri {
        let (aws, services) = match self {
            Principal::Anyone => return Tri::Yes,
            Principal::Listed { aws, services } => (aws, services),
        };
        let Some(caller) = caller else {
            return Tri::Unknown;
        };
        let hit = match caller.service {
            Some(svc) => services.iter().any(|s| s.eq_ignore_ascii_case(svc)),
            None => aws.iter().any(|p| match p {
                AwsPrincipal::Any => true,
                AwsPrincipal::Account(a) => a == caller.account,
                AwsPrincipal::Arn(arn) => caller.arns.iter().any(|c| c == arn),
            }),
        };
        Tri::from_bool(hit)
    }
}

impl AwsPrincipal {
    fn parse(s: &str) -> Option<AwsPrincipal> {
        if s == "*" {
            return Some(AwsPrincipal::Any);
        }
        if is_account_id(s) {
            return Some(AwsPrincipal::Account(s.to_string()));
        }
        if s.contains(['*', '?']) || s.chars().any(char::is_whitespace) {
            return None;
        }
        let parts: Vec<&str> = s.splitn(6, ':').collect();
        let [arn, partition, service, region, account, resource] = parts.as_slice() else {
            return None;
        };
        if *arn != "arn" || partition.is_empty() || !region.is_empty() || !is_account_id(account) {
            return None;
        }
        let named = |rest: Option<&str>| rest.is_some_and(|n| !n.is_empty() && !n.ends_with('/'));
        let ok = match *service {
            "iam" if *resource == "root" => {
                return Some(AwsPrincipal::Account(account.to_string()));
            }
            "iam" => named(resource.strip_prefix("user/")) || named(resource.strip_prefix("role/")),
            "sts" => resource
                .strip_prefix("assumed-role/")
                .and_then(|r| r.split_once('/'))
                .is_some_and(|(role, session)| {
                    !role.is_empty() && !session.is_empty() && !session.contains('/')
                }),
            _ => false,
        };
        ok.then(|| AwsPrincipal::Arn(s.to_string()))
    }
}

fn is_account_id(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

// ---------------------------------------------------------------------------------------
// Conditions

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    StringEquals,
    StringNotEquals,
    StringEqualsIgnoreCase,
    StringNotEqualsIgnoreCase,
    StringLike,
    StringNotLike,
    ArnEquals,
    ArnLike,
    ArnNotEquals,
    ArnNotLike,
    Bool,
    Null,
    IpAddress,
    NotIpAddress,
    DateEquals,
    DateNotEquals,
    DateLessThan,
    DateLessThanEquals,
    DateGreaterThan,
    DateGreaterThanEquals,
    NumericEquals,
    NumericNotEquals,
    NumericLessThan,
    NumericLessThanEquals,
    NumericGreaterThan,
    NumericGreaterThanEquals,
}

impl Op {
    fn from_name(s: &str) -> Option<Op> {
        Some(match s {
            "StringEquals" => Op::StringEquals,
            "StringNotEquals" => Op::StringNotEquals,
            "StringEqualsIgnoreCase" => Op::StringEqualsIgnoreCase,
            "StringNotEqualsIgnoreCase" => Op::StringNotEqualsIgnoreCase,
            "StringLike" => Op::StringLike,
            "StringNotLike" => Op::StringNotLike,
            "ArnEquals" => Op::ArnEquals,
            "ArnLike" => Op::ArnLike,
            "ArnNotEquals" => Op::ArnNotEquals,
            "ArnNotLike" => Op::ArnNotLike,
            "Bool" => Op::Bool,
            "Null" => Op::Null,
            "IpAddress" => Op::IpAddress,
            "NotIpAddress" => Op::NotIpAddress,
            "DateEquals" => Op::DateEquals,
            "DateNotEquals" => Op::DateNotEquals,
            "DateLessThan" => Op::DateLessThan,
            "DateLessThanEquals" => Op::DateLessThanEquals,
            "DateGreaterThan" => Op::DateGreaterThan,
            "DateGreaterThanEquals" => Op::DateGreaterThanEquals,
            "NumericEquals" => Op::NumericEquals,
            "NumericNotEquals" => Op::NumericNotEquals,
            "NumericLessThan" => Op::NumericLessThan,
            "NumericLessThanEquals" => Op::NumericLessThanEquals,
            "NumericGreaterThan" => Op::NumericGreaterThan,
            "NumericGreaterThanEquals" => Op::NumericGreaterThanEquals,
            _ => return None,
        })
    }

    fn negated(self) -> bool {
        matches!(
            self,
            Op::StringNotEquals
                | Op::StringNotEqualsIgnoreCase
                | Op::StringNotLike
                | Op::ArnNotEquals
                | Op::ArnNotLike
                | Op::NotIpAddress
                | Op::DateNotEquals
                | Op::NumericNotEquals
        )
    }

    /// Operators whose values are literals of a type (addresses, dates, numbers), checked
    /// when the policy is stored; no wildcards or policy variables.
    fn typed(self) -> Option<fn(&str) -> bool> {
        match self {
            Op::IpAddress | Op::NotIpAddress => Some(|v| Cidr::parse(v).is_some()),
            Op::DateEquals
            | Op::DateNotEquals
            | Op::DateLessThan
            | Op::DateLessThanEquals
            | Op::DateGreaterThan
            | Op::DateGreaterThanEquals => Some(|v| date(v).is_some()),
            Op::NumericEquals
            | Op::NumericNotEquals
            | Op::NumericLessThan
            | Op::NumericLessThanEquals
            | Op::NumericGreaterThan
            | Op::NumericGreaterThanEquals => Some(|v| v.trim().parse::<f64>().is_ok()),
            _ => None,
        }
    }

    /// The positive form's test of one context value against one (resolved) policy value.
    fn test(self, pattern: &[Tok], value: &str) -> bool {
        match self {
            Op::StringEquals | Op::StringNotEquals => glob(pattern, value, false, false),
            Op::StringEqualsIgnoreCase | Op::StringNotEqualsIgnoreCase | Op::Bool => {
                glob(pattern, value, false, true)
            }
            Op::StringLike | Op::StringNotLike => glob(pattern, value, true, false),
            Op::ArnEquals | Op::ArnLike | Op::ArnNotEquals | Op::ArnNotLike => {
                arn_glob(pattern, value)
            }
            // Null looks at presence only; see Condition::eval.
            Op::Null => false,
            Op::IpAddress | Op::NotIpAddress => {
                let (Some(net), Ok(ip)) = (Cidr::parse(&text(pattern)), value.parse()) else {
                    return false;
                };
                net.contains(ip)
            }
            Op::DateEquals
            | Op::DateNotEquals
            | Op::DateLessThan
            | Op::DateLessThanEquals
            | Op::DateGreaterThan
            | Op::DateGreaterThanEquals => match (date(value), date(&text(pattern))) {
                (Some(v), Some(p)) => self.compare(v.cmp(&p)),
                _ => false,
            },
            Op::NumericEquals
            | Op::NumericNotEquals
            | Op::NumericLessThan
            | Op::NumericLessThanEquals
            | Op::NumericGreaterThan
            | Op::NumericGreaterThanEquals => {
                match (
                    value.trim().parse::<f64>(),
                    text(pattern).trim().parse::<f64>(),
                ) {
                    (Ok(v), Ok(p)) => v.partial_cmp(&p).is_some_and(|o| self.compare(o)),
                    _ => false,
                }
            }
        }
    }

    /// An ordered operator's verdict on `value` compared with the policy's value.
    fn compare(self, o: std::cmp::Ordering) -> bool {
        use std::cmp::Ordering::*;
        match self {
            Op::DateEquals | Op::DateNotEquals | Op::NumericEquals | Op::NumericNotEquals => {
                o == Equal
            }
            Op::DateLessThan | Op::NumericLessThan => o == Less,
            Op::DateLessThanEquals | Op::NumericLessThanEquals => o != Greater,
            Op::DateGreaterThan | Op::NumericGreaterThan => o == Greater,
            Op::DateGreaterThanEquals | Op::NumericGreaterThanEquals => o != Less,
            _ => false,
        }
    }
}

/// A pattern's tokens as the literal text they were parsed from.
fn text(toks: &[Tok]) -> String {
    toks.iter()
        .map(|t| match t {
            Tok::Char(c) => c.to_string(),
            Tok::Star => "*".into(),
            Tok::One => "?".into(),
            Tok::Var { key, .. } => format!("${{{key}}}"),
        })
        .collect()
}

/// A date as IAM's date conditions take it: ISO 8601 (RFC 3339) or epoch seconds.
fn date(s: &str) -> Option<time::OffsetDateTime> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<i64>() {
        return time::OffsetDateTime::from_unix_timestamp(secs).ok();
    }
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
}

/// An address block (`IpAddress` values): `a.b.c.d/n`, `x::/n`, or one address.
#[derive(Debug, Clone, Copy)]
struct Cidr {
    net: std::net::IpAddr,
    bits: u8,
}

impl Cidr {
    fn parse(s: &str) -> Option<Cidr> {
        let s = s.trim();
        let (addr, bits) = match s.split_once('/') {
            Some((a, b)) => (a, Some(b.parse::<u8>().ok()?)),
            None => (s, None),
        };
        let net: std::net::IpAddr = addr.parse().ok()?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let bits = bits.unwrap_or(max);
        (bits <= max).then_some(Cidr { net, bits })
    }

    fn contains(&self, ip: std::net::IpAddr) -> bool {
        let ip = match ip {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
            v4 => v4,
        };
        let prefix =
            |a: u128, b: u128, len: u32, width: u32| len == 0 || (a ^ b) >> (width - len) == 0;
        match (self.net, ip) {
            (std::net::IpAddr::V4(n), std::net::IpAddr::V4(i)) => prefix(
                u32::from(n) as u128,
                u32::from(i) as u128,
                self.bits as u32,
                32,
            ),
            (std::net::IpAddr::V6(n), std::net::IpAddr::V6(i)) => {
                prefix(u128::from(n), u128::from(i), self.bits as u32, 128)
            }
            _ => false,
        }
    }
}

/// Real IAM condition types berth does not evaluate (no berth key carries binary values);
/// refused with a message that says so.
const UNSUPPORTED_OPS: &[&str] = &["BinaryEquals"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SetQualifier {
    /// No prefix.
    Single,
    /// `ForAnyValue:`
    Any,
    /// `ForAllValues:`
    All,
}

#[derive(Debug, Clone)]
struct Condition {
    op: Op,
    set: SetQualifier,
    if_exists: bool,
    /// Lower-case.
    key: String,
    /// In KNOWN_CONDITION_KEYS.
    known: bool,
    values: Vec<Pattern>,
}

fn parse_conditions(v: &Json, vars: bool) -> Result<Vec<Condition>, String> {
    let Json::Obj(ops) = v else {
        return Err(type_error("Condition", "an object"));
    };
    let mut out = Vec::new();
    for (name, block) in ops {
        let (set, rest) = if let Some(r) = name.strip_prefix("ForAnyValue:") {
            (SetQualifier::Any, r)
        } else if let Some(r) = name.strip_prefix("ForAllValues:") {
            (SetQualifier::All, r)
        } else {
            (SetQualifier::Single, name.as_str())
        };
        let (if_exists, base) = match rest.strip_suffix("IfExists") {
            Some(b) => (true, b),
            None => (false, rest),
        };
        let op = match Op::from_name(base) {
            Some(Op::Null) if if_exists => None,
            other => other,
        };
        let Some(op) = op else {
            if UNSUPPORTED_OPS.contains(&base) {
                return Err(format!("Condition type {name} is not supported by berth"));
            }
            return Err(format!("Invalid Condition type : {name}"));
        };
        let Json::Obj(keys) = block else {
            return Err(type_error(&format!("Condition {name}"), "an object"));
        };
        for (key, vals) in keys {
            match key.split_once(':') {
                Some((vendor, rest)) if !vendor.is_empty() && !rest.is_empty() => {}
                _ => return Err(MSG_VENDOR.into()),
            }
            let key = key.to_ascii_lowercase();
            let texts = scalars(vals, &key)?;
            let not_bool =
                |t: &&String| !t.eq_ignore_ascii_case("true") && !t.eq_ignore_ascii_case("false");
            if matches!(op, Op::Bool | Op::Null)
                && let Some(bad) = texts.iter().find(not_bool)
            {
                return Err(format!(
                    "Invalid value {bad} for condition {name} on {key}: use true or false"
                ));
            }
            if let Some(valid) = op.typed()
                && let Some(bad) = texts.iter().find(|t| !valid(t))
            {
                return Err(format!("Invalid value {bad} for condition {name} on {key}"));
            }
            let with_vars = vars && !matches!(op, Op::Bool | Op::Null) && op.typed().is_none();
            out.push(Condition {
                op,
                set,
                if_exists,
                known: KNOWN_CONDITION_KEYS.contains(&key.as_str()),
                key,
                values: texts.iter().map(|t| Pattern::parse(t, with_vars)).collect(),
            });
        }
    }
    Ok(out)
}

impl Condition {
    fn eval(&self, ctx: &HashMap<String, Vec<String>>) -> Tri {
        let present = ctx.get(&self.key);
        if !self.known && present.is_none() {
            return Tri::Unknown;
        }
        let vals: &[String] = present.map_or(&[], Vec::as_slice);
        if self.op == Op::Null {
            let absent = vals.is_empty();
            return Tri::from_bool(
                self.values
                    .iter()
                    .any(|p| p.is_text("true", true) == absent),
            );
        }
        if self
            .values
            .iter()
            .any(|p| p.has_vars && p.resolve(ctx).is_none())
        {
            return Tri::Unknown;
        }
        let hit = |v: &str| {
            self.values
                .iter()
                .any(|p| p.resolve(ctx).is_some_and(|toks| self.op.test(&toks, v)))
        };
        let neg = self.op.negated();
        let r = match self.set {
            SetQualifier::Single if vals.is_empty() => self.if_exists || neg,
            SetQualifier::Single => vals.iter().any(|v| hit(v)) != neg,
            SetQualifier::Any if vals.is_empty() => self.if_exists,
            SetQualifier::Any => vals.iter().any(|v| hit(v) != neg),
            SetQualifier::All => vals.iter().all(|v| hit(v) != neg),
        };
        Tri::from_bool(r)
    }
}

// ---------------------------------------------------------------------------------------
// Patterns and the wildcard matcher

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Char(char),
    /// `*`: any run of characters (a literal `*` for exact-match operators).
    Star,
    /// `?`: any one character (a literal `?` for exact-match operators).
    One,
    /// A policy variable, replaced before matching.
    Var {
        key: String,
        default: Option<String>,
    },
}

#[derive(Debug, Clone)]
struct Pattern {
    toks: Vec<Tok>,
    has_vars: bool,
    /// The text was exactly `*`.
    star: bool,
}

impl Pattern {
    fn parse(s: &str, vars: bool) -> Pattern {
        let mut toks = Vec::with_capacity(s.len());
        let mut has_vars = false;
        let mut rest = s;
        while let Some(c) = rest.chars().next() {
            if vars
                && let Some(after) = rest.strip_prefix("${")
                && let Some(end) = after.find('}')
            {
                let inner = &after[..end];
                rest = &after[end + 1..];
                match inner {
                    "*" => toks.push(Tok::Char('*')),
                    "?" => toks.push(Tok::Char('?')),
                    "$" => toks.push(Tok::Char('$')),
                    _ => {
                        let (key, default) = match inner.split_once(',') {
                            Some((k, d)) => {
                                let d = d.trim();
                                let d = d
                                    .strip_prefix('\'')
                                    .and_then(|d| d.strip_suffix('\''))
                                    .unwrap_or(d);
                                (k, Some(d.to_string()))
                            }
                            None => (inner, None),
                        };
                        has_vars = true;
                        toks.push(Tok::Var {
                            key: key.trim().to_ascii_lowercase(),
                            default,
                        });
                    }
                }
                continue;
            }
            toks.push(match c {
                '*' => Tok::Star,
                '?' => Tok::One,
                c => Tok::Char(c),
            });
            rest = &rest[c.len_utf8()..];
        }
        Pattern {
            toks,
            has_vars,
            star: s == "*",
        }
    }

    /// The tokens with variables replaced by context values (literal characters); `None` if a
    /// variable has no single value and no default.
    fn resolve(&self, ctx: &HashMap<String, Vec<String>>) -> Option<Cow<'_, [Tok]>> {
        if !self.has_vars {
            return Some(Cow::Borrowed(&self.toks));
        }
        let mut out = Vec::with_capacity(self.toks.len() + 16);
        for t in &self.toks {
            match t {
                Tok::Var { key, default } => {
                    let value = match ctx.get(key).map(Vec::as_slice) {
                        Some([one]) => one.as_str(),
                        _ => default.as_deref()?,
                    };
                    out.extend(value.chars().map(Tok::Char));
                }
                other => out.push(other.clone()),
            }
        }
        Some(Cow::Owned(out))
    }

    /// Whether this (variable-free) pattern is exactly `text`.
    fn is_text(&self, text: &str, fold: bool) -> bool {
        glob(&self.toks, text, false, fold)
    }
}

fn char_eq(a: char, b: char, fold: bool) -> bool {
    a == b
        || (fold
            && if a.is_ascii() && b.is_ascii() {
                a.eq_ignore_ascii_case(&b)
            } else {
                a.to_lowercase().eq(b.to_lowercase())
            })
}

/// Match `text` against `toks`. With `wild`, `Star` and `One` are wildcards, else the literal
/// characters `*` and `?`. Iterative; on a mismatch it backtracks only to the most recent
/// `Star`, which bounds the work by pattern length × text length.
fn glob(toks: &[Tok], text: &str, wild: bool, fold: bool) -> bool {
    let mut p = 0;
    let mut s = 0;
    // (token after the last Star, text position that Star's run currently ends at)
    let mut back: Option<(usize, usize)> = None;
    loop {
        let Some(c) = text[s..].chars().next() else {
            return toks[p..].iter().all(|t| wild && *t == Tok::Star);
        };
        let advanced = match toks.get(p) {
            Some(Tok::Star) if wild => {
                p += 1;
                back = Some((p, s));
                continue;
            }
            Some(Tok::One) if wild => true,
            Some(Tok::Char(pc)) => char_eq(*pc, c, fold),
            Some(Tok::Star) => c == '*',
            Some(Tok::One) => c == '?',
            Some(Tok::Var { .. }) | None => false,
        };
        if advanced {
            p += 1;
            s += c.len_utf8();
            continue;
        }
        let Some((bp, bs)) = back else {
            return false;
        };
        // Let the last Star swallow one more character and retry from just after it.
        let skip = text[bs..].chars().next().map_or(1, char::len_utf8);
        p = bp;
        s = bs + skip;
        back = Some((bp, s));
    }
}

/// ARN matching: when both sides have six `:`-separated segments each is matched on its own
/// (a `*` cannot span segments); otherwise the whole strings are matched.
fn arn_glob(toks: &[Tok], text: &str) -> bool {
    let mut tsegs = [""; 6];
    let mut n = 0;
    for (i, seg) in text.splitn(6, ':').enumerate() {
        tsegs[i] = seg;
        n = i + 1;
    }
    let mut psegs: [&[Tok]; 6] = [&[]; 6];
    let mut m = 0;
    let mut start = 0;
    for (i, t) in toks.iter().enumerate() {
        if m == 5 {
            break;
        }
        if *t == Tok::Char(':') {
            psegs[m] = &toks[start..i];
            m += 1;
            start = i + 1;
        }
    }
    psegs[m] = &toks[start..];
    m += 1;
    if m == 6 && n == 6 {
        psegs
            .iter()
            .zip(&tsegs)
            .all(|(p, t)| glob(p, t, true, false))
    } else {
        glob(toks, text, true, false)
    }
}

// ---------------------------------------------------------------------------------------
// JSON: our own value type so that duplicate keys are refused (serde_json's Value keeps the
// last one silently, which would let `"Effect":"Deny","Effect":"Allow"` read as Allow).

#[derive(Debug)]
enum Json {
    Null,
    Bool(bool),
    Num(String),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    /// The value as a message shows it.
    fn describe(&self) -> String {
        match self {
            Json::Null => "null".into(),
            Json::Bool(b) => b.to_string(),
            Json::Num(n) => n.clone(),
            Json::Str(s) => s.clone(),
            Json::Arr(_) => "an array".into(),
            Json::Obj(_) => "an object".into(),
        }
    }
}

fn type_error(field: &str, want: &str) -> String {
    format!("Syntax errors in policy. ({field} must be {want})")
}

/// A string or an array of strings.
fn strings<'j>(v: &'j Json, field: &str) -> Result<Vec<&'j str>, String> {
    let want = "a string or an array of strings";
    match v {
        Json::Str(s) => Ok(vec![s.as_str()]),
        Json::Arr(items) => items
            .iter()
            .map(|i| match i {
                Json::Str(s) => Ok(s.as_str()),
                _ => Err(type_error(field, want)),
            })
            .collect(),
        _ => Err(type_error(field, want)),
    }
}

/// A condition value: a string, number or boolean, or an array of them; as text.
fn scalars(v: &Json, key: &str) -> Result<Vec<String>, String> {
    fn one(v: &Json) -> Option<String> {
        match v {
            Json::Str(s) | Json::Num(s) => Some(s.clone()),
            Json::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }
    let bad = || {
        type_error(
            &format!("Condition values for {key}"),
            "strings, numbers or booleans",
        )
    };
    match v {
        Json::Arr(items) => items.iter().map(|i| one(i).ok_or_else(bad)).collect(),
        v => one(v).map(|s| vec![s]).ok_or_else(bad),
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Json, D::Error> {
        d.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }
    fn visit_bool<E>(self, b: bool) -> Result<Json, E> {
        Ok(Json::Bool(b))
    }
    fn visit_i64<E>(self, n: i64) -> Result<Json, E> {
        Ok(Json::Num(n.to_string()))
    }
    fn visit_u64<E>(self, n: u64) -> Result<Json, E> {
        Ok(Json::Num(n.to_string()))
    }
    fn visit_f64<E>(self, n: f64) -> Result<Json, E> {
        Ok(Json::Num(n.to_string()))
    }
    fn visit_str<E>(self, s: &str) -> Result<Json, E> {
        Ok(Json::Str(s.to_string()))
    }
    fn visit_string<E>(self, s: String) -> Result<Json, E> {
        Ok(Json::Str(s))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element()? {
            out.push(v);
        }
        Ok(Json::Arr(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut out: Vec<(String, Json)> = Vec::new();
        let mut seen = HashSet::new();
        while let Some(k) = map.next_key::<String>()? {
            if !seen.insert(k.clone()) {
                return Err(de::Error::custom(format!("duplicate key {k}")));
            }
            out.push((k, map.next_value()?));
        }
        Ok(Json::Obj(out))
    }
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
