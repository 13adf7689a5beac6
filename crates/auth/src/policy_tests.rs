use super::*;
use Decision::{Allow, ExplicitDeny, NotApplicable};

const ACCT: &str = "123456789012";
const OTHER: &str = "210987654321";
const CLUSTER: &str = "arn:aws:ecs:us-east-1:123456789012:cluster/prod-a";

type Ctx = HashMap<String, Vec<String>>;

fn ctx(pairs: &[(&str, &[&str])]) -> Ctx {
    pairs
        .iter()
        .map(|(k, vs)| (k.to_string(), vs.iter().map(|v| v.to_string()).collect()))
        .collect()
}

fn identity(doc: &str) -> Policy {
    Policy::parse(doc, PolicyKind::Identity).unwrap_or_else(|e| panic!("{e}\n{doc}"))
}

fn trust(doc: &str) -> Policy {
    Policy::parse(doc, PolicyKind::Trust).unwrap_or_else(|e| panic!("{e}\n{doc}"))
}

fn malformed(doc: &str, kind: PolicyKind) -> String {
    match Policy::parse(doc, kind) {
        Ok(p) => panic!("accepted {doc}: {p:?}"),
        Err(e) => e,
    }
}

/// An identity policy with one statement built from JSON fragments.
fn one(effect: &str, action: &str, resource: &str) -> Policy {
    identity(&format!(
        r#"{{"Version":"2012-10-17","Statement":{{"Effect":"{effect}","Action":{action},"Resource":{resource}}}}}"#
    ))
}

/// An identity policy allowing everything under the given condition block.
fn allow_if(condition: &str) -> Policy {
    identity(&format!(
        r#"{{"Version":"2012-10-17","Statement":{{"Effect":"Allow","Action":"*","Resource":"*","Condition":{condition}}}}}"#
    ))
}

fn deny_if(condition: &str) -> Policy {
    identity(&format!(
        r#"{{"Version":"2012-10-17","Statement":[
            {{"Effect":"Allow","Action":"*","Resource":"*"}},
            {{"Effect":"Deny","Action":"*","Resource":"*","Condition":{condition}}}]}}"#
    ))
}

fn ask(p: &Policy, action: &str, resource: Option<&str>) -> Decision {
    ask_with(p, action, resource, &Ctx::new())
}

fn ask_with(p: &Policy, action: &str, resource: Option<&str>, c: &Ctx) -> Decision {
    p.evaluate(&AccessRequest {
        action,
        resource,
        caller: None,
        context: c,
    })
}

/// Evaluate an allow-if policy on `ecs:RunTask` against CLUSTER with the given context.
fn when(p: &Policy, pairs: &[(&str, &[&str])]) -> Decision {
    ask_with(p, "ecs:RunTask", Some(CLUSTER), &ctx(pairs))
}

/// A caller, owned, so tests can build one inline.
struct Who {
    account: String,
    arns: Vec<String>,
    service: Option<&'static str>,
}

impl Who {
    fn caller(&self) -> Caller<'_> {
        Caller {
            account: &self.account,
            arns: &self.arns,
            service: self.service,
        }
    }
}

fn assume(p: &Policy, who: Option<&Who>) -> Decision {
    let caller = who.map(Who::caller);
    p.evaluate(&AccessRequest {
        action: "sts:AssumeRole",
        resource: None,
        caller: caller.as_ref(),
        context: &Ctx::new(),
    })
}

fn user(account: &str, arns: &[String]) -> Who {
    Who {
        account: account.to_string(),
        arns: arns.to_vec(),
        service: None,
    }
}

fn session(account: &str, role: &str, name: &str) -> Who {
    user(
        account,
        &[
            format!("arn:aws:iam::{account}:role/{role}"),
            format!("arn:aws:sts::{account}:assumed-role/{role}/{name}"),
        ],
    )
}

fn service(name: &'static str) -> Who {
    Who {
        account: String::new(),
        arns: Vec::new(),
        service: Some(name),
    }
}

fn trust_principal(principal: &str) -> Policy {
    trust(&format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Principal":{principal},"Action":"sts:AssumeRole"}}]}}"#
    ))
}

// ------------------------------------------------------------------------------------------
// Parsing

#[test]
fn json_syntax_errors() {
    for doc in ["", "not json", "{", r#"{"Statement": [}"#] {
        let e = malformed(doc, PolicyKind::Identity);
        assert!(e.starts_with("Syntax errors in policy."), "{doc}: {e}");
    }
    for doc in ["[]", "\"x\"", "null", "3"] {
        let e = malformed(doc, PolicyKind::Identity);
        assert!(e.starts_with("Syntax errors in policy."), "{doc}: {e}");
    }
}

#[test]
fn duplicate_keys_are_refused() {
    let e = malformed(
        r#"{"Statement":{"Effect":"Deny","Effect":"Allow","Action":"*","Resource":"*"}}"#,
        PolicyKind::Identity,
    );
    assert!(e.starts_with("Syntax errors in policy."), "{e}");
    assert!(e.contains("duplicate key Effect"), "{e}");
}

#[test]
fn versions() {
    for v in [
        r#""Version":"2012-10-17","#,
        r#""Version":"2008-10-17","#,
        "",
    ] {
        identity(&format!(
            r#"{{{v}"Statement":{{"Effect":"Allow","Action":"*","Resource":"*"}}}}"#
        ));
    }
    for v in [r#""2012-10-18""#, r#""""#, "20121017", "null"] {
        let e = malformed(
            &format!(
                r#"{{"Version":{v},"Statement":{{"Effect":"Allow","Action":"*","Resource":"*"}}}}"#
            ),
            PolicyKind::Identity,
        );
        assert!(e.starts_with("Invalid policy Version"), "{v}: {e}");
    }
}

#[test]
fn document_fields() {
    identity(r#"{"Id":"x","Statement":{"Effect":"Allow","Action":"*","Resource":"*"}}"#);
    assert_eq!(
        malformed(
            r#"{"Statment":{"Effect":"Allow","Action":"*","Resource":"*"}}"#,
            PolicyKind::Identity
        ),
        "Unknown field Statment"
    );
    assert_eq!(
        malformed(r#"{"Version":"2012-10-17"}"#, PolicyKind::Identity),
        "Missing required field Statement"
    );
    for st in [r#""x""#, "3", r#"["x"]"#, "[[]]"] {
        let e = malformed(&format!(r#"{{"Statement":{st}}}"#), PolicyKind::Identity);
        assert!(e.starts_with("Syntax errors in policy."), "{st}: {e}");
    }
    let e = malformed(
        r#"{"Id":3,"Statement":{"Effect":"Allow","Action":"*","Resource":"*"}}"#,
        PolicyKind::Identity,
    );
    assert!(e.contains("Id must be a string"), "{e}");
    // An empty statement list is valid and grants nothing.
    assert_eq!(
        ask(&identity(r#"{"Statement":[]}"#), "ecs:RunTask", None),
        NotApplicable
    );
}

#[test]
fn statement_fields() {
    let id = PolicyKind::Identity;
    assert_eq!(
        malformed(
            r#"{"Statement":{"Effect":"Allow","Action":"*","Resource":"*","Resources":"*"}}"#,
            id
        ),
        "Unknown field Resources"
    );
    // Field names are case-sensitive.
    assert_eq!(
        malformed(
            r#"{"Statement":{"effect":"Allow","Action":"*","Resource":"*"}}"#,
            id
        ),
        "Unknown field effect"
    );
    assert_eq!(
        malformed(r#"{"Statement":{"Action":"*","Resource":"*"}}"#, id),
        "Missing required field Effect"
    );
    for effect in [r#""allow""#, r#""Permit""#, "true"] {
        let e = malformed(
            &format!(r#"{{"Statement":{{"Effect":{effect},"Action":"*","Resource":"*"}}}}"#),
            id,
        );
        assert!(e.starts_with("Invalid effect"), "{effect}: {e}");
    }
    assert_eq!(
        malformed(r#"{"Statement":{"Effect":"Allow","Resource":"*"}}"#, id),
        "Policy statement must contain actions."
    );
    assert_eq!(
        malformed(
            r#"{"Statement":{"Effect":"Allow","Action":[],"Resource":"*"}}"#,
            id
        ),
        "Policy statement must contain actions."
    );
    assert!(
        malformed(
            r#"{"Statement":{"Effect":"Allow","Action":"*","NotAction":"iam:*","Resource":"*"}}"#,
            id
        )
        .contains("not both")
    );
    assert!(
        malformed(
            r#"{"Statement":{"Effect":"Allow","Action":[3],"Resource":"*"}}"#,
            id
        )
        .starts_with("Syntax errors in policy.")
    );
    assert!(
        malformed(
            r#"{"Statement":{"Effect":"Allow","Action":"*","Resource":"*","Sid":7}}"#,
            id
        )
        .starts_with("Syntax errors in policy.")
    );
}

#[test]
fn identity_resources_required() {
    let id = PolicyKind::Identity;
    assert_eq!(
        malformed(r#"{"Statement":{"Effect":"Allow","Action":"*"}}"#, id),
        "Policy statement must contain resources."
    );
    assert_eq!(
        malformed(
            r#"{"Statement":{"Effect":"Allow","Action":"*","Resource":[]}}"#,
            id
        ),
        "Policy statement must contain resources."
    );
    assert!(
        malformed(
            r#"{"Statement":{"Effect":"Allow","Action":"*","Resource":"*","NotResource":"*"}}"#,
            id
        )
        .contains("not both")
    );
    for r in ["bucket", "arn:aws:ecs:us-east-1:cluster/x", "*x"] {
        assert_eq!(
            malformed(
                &format!(r#"{{"Statement":{{"Effect":"Allow","Action":"*","Resource":"{r}"}}}}"#),
                id
            ),
            format!("Resource {r} must be in ARN format or \"*\".")
        );
    }
    identity(r#"{"Statement":{"Effect":"Allow","Action":"*","Resource":"arn:aws:s3:::b/*"}}"#);
}

#[test]
fn identity_refuses_principals() {
    for field in ["Principal", "NotPrincipal"] {
        assert_eq!(
            malformed(
                &format!(
                    r#"{{"Statement":{{"Effect":"Allow","{field}":"*","Action":"*","Resource":"*"}}}}"#
                ),
                PolicyKind::Identity
            ),
            "Policy document should not specify a principal."
        );
    }
}

#[test]
fn trust_fields() {
    let t = PolicyKind::Trust;
    assert_eq!(
        malformed(
            r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"sts:AssumeRole","Resource":"*"}}"#,
            t
        ),
        "Has prohibited field Resource"
    );
    assert_eq!(
        malformed(
            r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"sts:AssumeRole","NotResource":"*"}}"#,
            t
        ),
        "Has prohibited field NotResource"
    );
    assert_eq!(
        malformed(
            r#"{"Statement":{"Effect":"Allow","Action":"sts:AssumeRole"}}"#,
            t
        ),
        "Missing required field Principal"
    );
    let e = malformed(
        r#"{"Statement":{"Effect":"Deny","NotPrincipal":{"AWS":"123456789012"},"Action":"sts:AssumeRole"}}"#,
        t,
    );
    assert!(e.contains("NotPrincipal is not supported"), "{e}");
    assert_eq!(
        malformed(
            r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"ecs:RunTask"}}"#,
            t
        ),
        "AssumeRole policy may only specify STS AssumeRole actions."
    );
    trust(
        r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":["sts:AssumeRole","sts:TagSession"]}}"#,
    );
}

#[test]
fn action_syntax() {
    let vendor = "Actions/Conditions must be prefaced by a vendor, e.g., iam, sdb, ec2, etc.";
    for a in ["RunTask", ":RunTask", "**"] {
        assert_eq!(
            malformed(
                &format!(r#"{{"Statement":{{"Effect":"Allow","Action":"{a}","Resource":"*"}}}}"#),
                PolicyKind::Identity
            ),
            vendor,
            "{a}"
        );
    }
    let e = malformed(
        r#"{"Statement":{"Effect":"Allow","Action":"e c s:RunTask","Resource":"*"}}"#,
        PolicyKind::Identity,
    );
    assert_eq!(e, "Vendor e c s is not valid");
    for a in ["ecs:", "ecs:Run Task", "ecs:a:b"] {
        let e = malformed(
            &format!(r#"{{"Statement":{{"Effect":"Allow","Action":"{a}","Resource":"*"}}}}"#),
            PolicyKind::Identity,
        );
        assert_eq!(e, format!("Action {a} is not valid"));
    }
}

#[test]
fn sids() {
    identity(
        r#"{"Statement":[{"Sid":"A1","Effect":"Allow","Action":"*","Resource":"*"},
                         {"Sid":"","Effect":"Allow","Action":"*","Resource":"*"},
                         {"Sid":"","Effect":"Allow","Action":"*","Resource":"*"}]}"#,
    );
    assert!(
        malformed(
            r#"{"Statement":{"Sid":"allow-all","Effect":"Allow","Action":"*","Resource":"*"}}"#,
            PolicyKind::Identity
        )
        .starts_with("Statement IDs (SID) must be alpha-numeric.")
    );
    assert_eq!(
        malformed(
            r#"{"Statement":[{"Sid":"A","Effect":"Allow","Action":"*","Resource":"*"},
                             {"Sid":"A","Effect":"Deny","Action":"*","Resource":"*"}]}"#,
            PolicyKind::Identity
        ),
        "Statement IDs (SID) in a single policy must be unique."
    );
}

#[test]
fn principal_syntax() {
    let t = PolicyKind::Trust;
    let doc = |p: &str| {
        format!(r#"{{"Statement":{{"Effect":"Allow","Principal":{p},"Action":"sts:AssumeRole"}}}}"#)
    };
    for bad in [
        "alice",
        "12345678901",
        "arn:aws:iam::12345:user/alice",
        "arn:aws:iam::123456789012:user/*",
        "arn:aws:iam::123456789012:user/",
        "arn:aws:iam::123456789012:group/admins",
        "arn:aws:iam:us-east-1:123456789012:role/r",
        "arn:aws:s3:::bucket",
        "arn:aws:sts::123456789012:assumed-role/r",
        "arn:aws:sts::123456789012:federated-user/bob",
        "arn:aws:iam::123456789012:role/r?",
    ] {
        assert_eq!(
            malformed(&doc(&format!(r#"{{"AWS":"{bad}"}}"#)), t),
            format!("Invalid principal in policy: \"AWS\":\"{bad}\"")
        );
    }
    // One bad value in a list is enough.
    assert_eq!(
        malformed(&doc(r#"{"AWS":["123456789012","bob"]}"#), t),
        "Invalid principal in policy: \"AWS\":\"bob\""
    );
    for bad in ["ecs", "ecs tasks.amazonaws.com", "*.amazonaws.com"] {
        assert_eq!(
            malformed(&doc(&format!(r#"{{"Service":"{bad}"}}"#)), t),
            format!("Invalid principal in policy: \"Service\":\"{bad}\"")
        );
    }
    for p in [
        r#"{"Federated":"cognito-identity.amazonaws.com"}"#,
        r#"{"CanonicalUser":"79a59df900b949e55d96a1e698fbacedfd6e09d98eacf8f8d5218e7cd47ef2be"}"#,
    ] {
        let e = malformed(&doc(p), t);
        assert!(e.contains("not supported by berth"), "{p}: {e}");
    }
    for p in [
        r#""arn:aws:iam::123456789012:root""#,
        r#"{}"#,
        r#"{"AWS":[]}"#,
        r#"{"Users":"x"}"#,
        "[]",
    ] {
        let e = malformed(&doc(p), t);
        assert!(e.starts_with("Invalid principal in policy"), "{p}: {e}");
    }
    trust_principal(
        r#"{"AWS":["*","123456789012","arn:aws:iam::123456789012:root",
                   "arn:aws:iam::123456789012:user/path/alice",
                   "arn:aws:iam::123456789012:role/r",
                   "arn:aws:sts::123456789012:assumed-role/r/s1"],
            "Service":["ecs-tasks.amazonaws.com"]}"#,
    );
}

#[test]
fn condition_syntax() {
    let id = PolicyKind::Identity;
    let doc = |c: &str| {
        format!(
            r#"{{"Statement":{{"Effect":"Allow","Action":"*","Resource":"*","Condition":{c}}}}}"#
        )
    };
    assert_eq!(
        malformed(&doc(r#"{"StringEqualz":{"aws:username":"a"}}"#), id),
        "Invalid Condition type : StringEqualz"
    );
    assert_eq!(
        malformed(&doc(r#"{"NullIfExists":{"aws:username":"true"}}"#), id),
        "Invalid Condition type : NullIfExists"
    );
    assert_eq!(
        malformed(
            &doc(r#"{"ForSomeValues:StringLike":{"aws:username":"a"}}"#),
            id
        ),
        "Invalid Condition type : ForSomeValues:StringLike"
    );
    assert_eq!(
        malformed(
            &doc(r#"{"BinaryEquals":{"aws:multifactorauthage":"AA=="}}"#),
            id
        ),
        "Condition type BinaryEquals is not supported by berth"
    );
    // Typed operators' values are checked when the policy is stored.
    for (op, bad) in [
        ("IpAddress", "10.0.0.0/33"),
        ("NotIpAddress", "not-an-address"),
        ("DateLessThan", "next tuesday"),
        ("NumericEquals", "ten"),
    ] {
        let e = malformed(
            &doc(&format!(r#"{{"{op}":{{"aws:sourceip":"{bad}"}}}}"#)),
            id,
        );
        assert!(e.starts_with(&format!("Invalid value {bad}")), "{op}: {e}");
    }
    assert_eq!(
        malformed(&doc(r#"{"StringEquals":{"username":"a"}}"#), id),
        "Actions/Conditions must be prefaced by a vendor, e.g., iam, sdb, ec2, etc."
    );
    let e = malformed(&doc(r#"{"Bool":{"aws:securetransport":"yes"}}"#), id);
    assert!(e.contains("use true or false"), "{e}");
    for c in [
        r#""x""#,
        r#"{"StringEquals":"x"}"#,
        r#"{"StringEquals":{"aws:username":null}}"#,
        r#"{"StringEquals":{"aws:username":{"a":"b"}}}"#,
        r#"{"StringEquals":{"aws:username":[["a"]]}}"#,
    ] {
        let e = malformed(&doc(c), id);
        assert!(e.starts_with("Syntax errors in policy."), "{c}: {e}");
    }
    // Every supported operator, with each qualifier, parses.
    for op in [
        "StringEquals",
        "StringNotEquals",
        "StringEqualsIgnoreCase",
        "StringNotEqualsIgnoreCase",
        "StringLike",
        "StringNotLike",
        "ArnEquals",
        "ArnLike",
        "ArnNotEquals",
        "ArnNotLike",
        "Bool",
    ] {
        for name in [
            op.to_string(),
            format!("{op}IfExists"),
            format!("ForAnyValue:{op}"),
            format!("ForAllValues:{op}IfExists"),
        ] {
            identity(&doc(&format!(r#"{{"{name}":{{"aws:x":"true"}}}}"#)));
        }
    }
    identity(&doc(r#"{"Null":{"aws:x":"false"}}"#));
}

// ------------------------------------------------------------------------------------------
// Actions and resources

#[test]
fn action_wildcards_and_case() {
    let p = one("Allow", r#"["ecs:Describe*","ecs:?unTask"]"#, r#""*""#);
    assert_eq!(ask(&p, "ecs:DescribeClusters", None), Allow);
    assert_eq!(ask(&p, "ECS:describeclusters", None), Allow);
    assert_eq!(ask(&p, "ecs:Describe", None), Allow);
    assert_eq!(ask(&p, "ecs:RunTask", None), Allow);
    assert_eq!(ask(&p, "ecs:runtask", None), Allow);
    assert_eq!(ask(&p, "ecs:ReRunTask", None), NotApplicable);
    assert_eq!(ask(&p, "ecs:ListClusters", None), NotApplicable);
    assert_eq!(ask(&p, "ecr:DescribeImages", None), NotApplicable);

    let all = one("Allow", r#""*""#, r#""*""#);
    assert_eq!(ask(&all, "iam:CreateRole", None), Allow);
    let vendor = one("Allow", r#""ecs:*""#, r#""*""#);
    assert_eq!(ask(&vendor, "ecs:RunTask", None), Allow);
    assert_eq!(
        ask(&vendor, "ecr:GetAuthorizationToken", None),
        NotApplicable
    );
    // `ecs:*` is not a prefix match on the vendor.
    assert_eq!(ask(&vendor, "ecs-x:RunTask", None), NotApplicable);
}

#[test]
fn resource_wildcards_are_case_sensitive() {
    let p = one(
        "Allow",
        r#""ecs:*""#,
        r#"["arn:aws:ecs:us-east-1:123456789012:cluster/prod-*","arn:aws:ecs:*:123456789012:task/t?"]"#,
    );
    assert_eq!(ask(&p, "ecs:RunTask", Some(CLUSTER)), Allow);
    assert_eq!(
        ask(
            &p,
            "ecs:RunTask",
            Some("arn:aws:ecs:us-east-1:123456789012:cluster/Prod-a")
        ),
        NotApplicable
    );
    assert_eq!(
        ask(
            &p,
            "ecs:RunTask",
            Some("arn:aws:ecs:us-east-1:123456789012:cluster/dev")
        ),
        NotApplicable
    );
    assert_eq!(
        ask(
            &p,
            "ecs:StopTask",
            Some("arn:aws:ecs:eu-west-1:123456789012:task/t1")
        ),
        Allow
    );
    assert_eq!(
        ask(
            &p,
            "ecs:StopTask",
            Some("arn:aws:ecs:eu-west-1:123456789012:task/t12")
        ),
        NotApplicable
    );
    assert_eq!(
        ask(
            &p,
            "ecs:StopTask",
            Some("arn:aws:ecs:eu-west-1:123456789012:task/t")
        ),
        NotApplicable
    );
    // The action must match too.
    assert_eq!(ask(&p, "ecr:ListImages", Some(CLUSTER)), NotApplicable);
}

#[test]
fn not_action_and_not_resource() {
    let p = identity(
        r#"{"Statement":{"Effect":"Allow","NotAction":["iam:*","sts:*"],"Resource":"*"}}"#,
    );
    assert_eq!(ask(&p, "ecs:RunTask", Some(CLUSTER)), Allow);
    assert_eq!(ask(&p, "iam:CreateRole", Some(CLUSTER)), NotApplicable);
    assert_eq!(ask(&p, "STS:AssumeRole", Some(CLUSTER)), NotApplicable);

    let p = identity(
        r#"{"Statement":[{"Effect":"Allow","Action":"ecs:*","Resource":"*"},
            {"Effect":"Deny","Action":"ecs:*","NotResource":"arn:aws:ecs:*:123456789012:cluster/prod-*"}]}"#,
    );
    assert_eq!(ask(&p, "ecs:RunTask", Some(CLUSTER)), Allow);
    assert_eq!(
        ask(
            &p,
            "ecs:RunTask",
            Some("arn:aws:ecs:us-east-1:123456789012:cluster/dev")
        ),
        ExplicitDeny
    );

    let p = identity(
        r#"{"Statement":{"Effect":"Allow","Action":"ecs:*","NotResource":"arn:aws:ecs:*:*:cluster/prod-*"}}"#,
    );
    assert_eq!(
        ask(
            &p,
            "ecs:RunTask",
            Some("arn:aws:ecs:us-east-1:123456789012:cluster/dev")
        ),
        Allow
    );
    assert_eq!(ask(&p, "ecs:RunTask", Some(CLUSTER)), NotApplicable);
}

#[test]
fn deny_beats_allow_in_one_policy() {
    let p = identity(
        r#"{"Statement":[{"Effect":"Allow","Action":"*","Resource":"*"},
                         {"Effect":"Deny","Action":"ecs:DeleteCluster","Resource":"*"}]}"#,
    );
    assert_eq!(ask(&p, "ecs:DeleteCluster", Some(CLUSTER)), ExplicitDeny);
    assert_eq!(ask(&p, "ecs:CreateCluster", Some(CLUSTER)), Allow);
    let deny_only = one("Deny", r#""ecs:*""#, r#""*""#);
    assert_eq!(ask(&deny_only, "ecs:RunTask", Some(CLUSTER)), ExplicitDeny);
    assert_eq!(
        ask(&deny_only, "ecr:ListImages", Some(CLUSTER)),
        NotApplicable
    );
}

#[test]
fn unnamed_resource_allow_needs_star() {
    assert_eq!(
        ask(
            &one("Allow", r#""ecs:*""#, r#""*""#),
            "ecs:ListClusters",
            None
        ),
        Allow
    );
    assert_eq!(
        ask(
            &one("Allow", r#""ecs:*""#, &format!(r#""{CLUSTER}""#)),
            "ecs:ListClusters",
            None
        ),
        NotApplicable
    );
    // A wildcard that happens to cover everything is not "*".
    assert_eq!(
        ask(
            &one("Allow", r#""ecs:*""#, r#""arn:*:*:*:*:*""#),
            "ecs:ListClusters",
            None
        ),
        NotApplicable
    );
    assert_eq!(
        ask(
            &one("Allow", r#""ecs:*""#, &format!(r#"["{CLUSTER}","*"]"#)),
            "ecs:ListClusters",
            None
        ),
        Allow
    );
    let not_res = identity(
        r#"{"Statement":{"Effect":"Allow","Action":"ecs:*","NotResource":"arn:aws:ecs:*:*:cluster/x"}}"#,
    );
    assert_eq!(ask(&not_res, "ecs:ListClusters", None), NotApplicable);
}

#[test]
fn unnamed_resource_deny_always_applies() {
    let with = |deny: &str| {
        identity(&format!(
            r#"{{"Statement":[{{"Effect":"Allow","Action":"*","Resource":"*"}},
                {{"Effect":"Deny","Action":"ecs:*",{deny}}}]}}"#
        ))
    };
    let specific = with(&format!(r#""Resource":"{CLUSTER}""#));
    assert_eq!(ask(&specific, "ecs:ListClusters", None), ExplicitDeny);
    // With a named resource the same Deny is precise.
    assert_eq!(
        ask(
            &specific,
            "ecs:RunTask",
            Some("arn:aws:ecs:us-east-1:123456789012:cluster/dev")
        ),
        Allow
    );
    let not_star = with(r#""NotResource":"*""#);
    assert_eq!(ask(&not_star, "ecs:ListClusters", None), ExplicitDeny);
    assert_eq!(ask(&not_star, "ecs:RunTask", Some(CLUSTER)), Allow);
    // The action must still match.
    assert_eq!(ask(&specific, "ecr:ListImages", None), Allow);
}

// ------------------------------------------------------------------------------------------
// Principals

#[test]
fn principal_star_matches_anyone() {
    let p = trust_principal(r#""*""#);
    assert_eq!(assume(&p, Some(&user(OTHER, &[]))), Allow);
    assert_eq!(assume(&p, Some(&service("ecs-tasks.amazonaws.com"))), Allow);
    assert_eq!(assume(&p, None), Allow);
    // Only the actions listed.
    let other_action = p.evaluate(&AccessRequest {
        action: "sts:TagSession",
        resource: None,
        caller: None,
        context: &Ctx::new(),
    });
    assert_eq!(other_action, NotApplicable);
}

#[test]
fn principal_aws_star_is_any_identity_not_a_service() {
    let p = trust_principal(r#"{"AWS":"*"}"#);
    let alice = [format!("arn:aws:iam::{OTHER}:user/alice")];
    assert_eq!(assume(&p, Some(&user(OTHER, &alice))), Allow);
    assert_eq!(
        assume(&p, Some(&service("ecs-tasks.amazonaws.com"))),
        NotApplicable
    );
}

#[test]
fn principal_account() {
    for p in [
        trust_principal(r#"{"AWS":"123456789012"}"#),
        trust_principal(r#"{"AWS":["arn:aws:iam::123456789012:root"]}"#),
    ] {
        let alice = [format!("arn:aws:iam::{ACCT}:user/alice")];
        assert_eq!(assume(&p, Some(&user(ACCT, &alice))), Allow);
        assert_eq!(assume(&p, Some(&session(ACCT, "r", "s"))), Allow);
        let mallory = [format!("arn:aws:iam::{OTHER}:user/alice")];
        assert_eq!(assume(&p, Some(&user(OTHER, &mallory))), NotApplicable);
    }
}

#[test]
fn principal_role_matches_its_sessions() {
    let p = trust_principal(r#"{"AWS":"arn:aws:iam::123456789012:role/deployer"}"#);
    assert_eq!(assume(&p, Some(&session(ACCT, "deployer", "ci-42"))), Allow);
    assert_eq!(
        assume(&p, Some(&session(ACCT, "deployer2", "ci-42"))),
        NotApplicable
    );
    assert_eq!(
        assume(&p, Some(&session(OTHER, "deployer", "ci-42"))),
        NotApplicable
    );
    let alice = [format!("arn:aws:iam::{ACCT}:user/alice")];
    assert_eq!(assume(&p, Some(&user(ACCT, &alice))), NotApplicable);
}

#[test]
fn principal_session_and_user_are_exact() {
    let p = trust_principal(
        r#"{"AWS":["arn:aws:sts::123456789012:assumed-role/deployer/ci-42",
                  "arn:aws:iam::123456789012:user/alice"]}"#,
    );
    assert_eq!(assume(&p, Some(&session(ACCT, "deployer", "ci-42"))), Allow);
    assert_eq!(
        assume(&p, Some(&session(ACCT, "deployer", "ci-43"))),
        NotApplicable
    );
    let alice = [format!("arn:aws:iam::{ACCT}:user/alice")];
    let bob = [format!("arn:aws:iam::{ACCT}:user/bob")];
    assert_eq!(assume(&p, Some(&user(ACCT, &alice))), Allow);
    assert_eq!(assume(&p, Some(&user(ACCT, &bob))), NotApplicable);
}

#[test]
fn principal_service() {
    let p = trust_principal(r#"{"Service":["ecs-tasks.amazonaws.com","Lambda.amazonaws.com"]}"#);
    assert_eq!(assume(&p, Some(&service("ecs-tasks.amazonaws.com"))), Allow);
    assert_eq!(assume(&p, Some(&service("ECS-Tasks.amazonaws.com"))), Allow);
    assert_eq!(assume(&p, Some(&service("lambda.amazonaws.com"))), Allow);
    assert_eq!(
        assume(&p, Some(&service("ec2.amazonaws.com"))),
        NotApplicable
    );
    // An identity of any account is not the service.
    assert_eq!(assume(&p, Some(&session(ACCT, "r", "s"))), NotApplicable);
    // And an account principal does not match a service caller.
    let acct = trust_principal(r#"{"AWS":"123456789012"}"#);
    let mut svc = service("ecs-tasks.amazonaws.com");
    svc.account = ACCT.to_string();
    assert_eq!(assume(&acct, Some(&svc)), NotApplicable);
}

#[test]
fn principal_without_caller_never_allows_always_denies() {
    let p = trust_principal(r#"{"AWS":"123456789012"}"#);
    assert_eq!(assume(&p, None), NotApplicable);
    let d = trust(
        r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"sts:AssumeRole"},
            {"Effect":"Deny","Principal":{"AWS":"210987654321"},"Action":"sts:AssumeRole"}]}"#,
    );
    assert_eq!(assume(&d, None), ExplicitDeny);
    assert_eq!(assume(&d, Some(&session(ACCT, "r", "s"))), Allow);
    assert_eq!(assume(&d, Some(&session(OTHER, "r", "s"))), ExplicitDeny);
}

#[test]
fn trust_policy_with_conditions() {
    let p = trust(
        r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow",
            "Principal":{"Service":"ecs-tasks.amazonaws.com"},"Action":"sts:AssumeRole",
            "Condition":{"StringEquals":{"aws:SourceAccount":"123456789012"},
                         "ArnLike":{"aws:SourceArn":"arn:aws:ecs:us-east-1:123456789012:*"}}}}"#,
    );
    let svc = service("ecs-tasks.amazonaws.com");
    let svc = svc.caller();
    let req = |c: &Ctx| {
        p.evaluate(&AccessRequest {
            action: "sts:AssumeRole",
            resource: None,
            caller: Some(&svc),
            context: c,
        })
    };
    let good = ctx(&[
        ("aws:sourceaccount", &[ACCT]),
        (
            "aws:sourcearn",
            &["arn:aws:ecs:us-east-1:123456789012:task/c/abc"],
        ),
    ]);
    assert_eq!(req(&good), Allow);
    let wrong_acct = ctx(&[
        ("aws:sourceaccount", &[OTHER]),
        (
            "aws:sourcearn",
            &["arn:aws:ecs:us-east-1:123456789012:task/c/abc"],
        ),
    ]);
    assert_eq!(req(&wrong_acct), NotApplicable);
    assert_eq!(req(&Ctx::new()), NotApplicable);
}

// ------------------------------------------------------------------------------------------
// Conditions

#[test]
fn string_equals() {
    let p = allow_if(r#"{"StringEquals":{"aws:username":["alice","bob"]}}"#);
    assert_eq!(when(&p, &[("aws:username", &["alice"])]), Allow);
    assert_eq!(when(&p, &[("aws:username", &["bob"])]), Allow);
    assert_eq!(when(&p, &[("aws:username", &["Alice"])]), NotApplicable);
    assert_eq!(when(&p, &[("aws:username", &["carol"])]), NotApplicable);
    // Missing (known) key: false.
    assert_eq!(when(&p, &[]), NotApplicable);
    // Not a wildcard.
    let star = allow_if(r#"{"StringEquals":{"aws:username":"a*"}}"#);
    assert_eq!(when(&star, &[("aws:username", &["abc"])]), NotApplicable);
    assert_eq!(when(&star, &[("aws:username", &["a*"])]), Allow);
}

#[test]
fn string_not_equals() {
    let p = allow_if(r#"{"StringNotEquals":{"aws:username":["alice","bob"]}}"#);
    assert_eq!(when(&p, &[("aws:username", &["carol"])]), Allow);
    assert_eq!(when(&p, &[("aws:username", &["alice"])]), NotApplicable);
    assert_eq!(when(&p, &[("aws:username", &["bob"])]), NotApplicable);
    assert_eq!(when(&p, &[("aws:username", &["ALICE"])]), Allow);
    // Missing key: a negated operator holds.
    assert_eq!(when(&p, &[]), Allow);
}

#[test]
fn string_ignore_case() {
    let p = allow_if(r#"{"StringEqualsIgnoreCase":{"aws:username":"Alice"}}"#);
    assert_eq!(when(&p, &[("aws:username", &["aLICE"])]), Allow);
    assert_eq!(when(&p, &[("aws:username", &["alicia"])]), NotApplicable);
    assert_eq!(when(&p, &[]), NotApplicable);
    let n = allow_if(r#"{"StringNotEqualsIgnoreCase":{"aws:username":"Alice"}}"#);
    assert_eq!(when(&n, &[("aws:username", &["ALICE"])]), NotApplicable);
    assert_eq!(when(&n, &[("aws:username", &["bob"])]), Allow);
    assert_eq!(when(&n, &[]), Allow);
}

#[test]
fn string_like() {
    let p = allow_if(r#"{"StringLike":{"sts:rolesessionname":["ci-*","job-??"]}}"#);
    assert_eq!(when(&p, &[("sts:rolesessionname", &["ci-42"])]), Allow);
    assert_eq!(when(&p, &[("sts:rolesessionname", &["ci-"])]), Allow);
    assert_eq!(when(&p, &[("sts:rolesessionname", &["job-12"])]), Allow);
    assert_eq!(
        when(&p, &[("sts:rolesessionname", &["job-123"])]),
        NotApplicable
    );
    assert_eq!(
        when(&p, &[("sts:rolesessionname", &["CI-42"])]),
        NotApplicable
    );
    assert_eq!(when(&p, &[]), NotApplicable);
    let n = allow_if(r#"{"StringNotLike":{"sts:rolesessionname":["ci-*","job-??"]}}"#);
    assert_eq!(
        when(&n, &[("sts:rolesessionname", &["ci-42"])]),
        NotApplicable
    );
    assert_eq!(when(&n, &[("sts:rolesessionname", &["job-1"])]), Allow);
    assert_eq!(when(&n, &[]), Allow);
}

#[test]
fn arn_operators() {
    let like = allow_if(r#"{"ArnLike":{"aws:sourcearn":"arn:aws:ecs:us-*:123456789012:*"}}"#);
    let ok = "arn:aws:ecs:us-east-1:123456789012:task/c/1";
    assert_eq!(when(&like, &[("aws:sourcearn", &[ok])]), Allow);
    assert_eq!(
        when(
            &like,
            &[(
                "aws:sourcearn",
                &["arn:aws:ecs:eu-west-1:123456789012:task/c/1"]
            )]
        ),
        NotApplicable
    );
    assert_eq!(
        when(
            &like,
            &[(
                "aws:sourcearn",
                &["arn:aws:ecs:us-east-1:210987654321:task/c/1"]
            )]
        ),
        NotApplicable
    );
    assert_eq!(when(&like, &[]), NotApplicable);

    // Segment by segment: `*` in the account segment cannot swallow a colon.
    let seg = allow_if(r#"{"ArnLike":{"aws:sourcearn":"arn:aws:ecs:*:*:cluster/a"}}"#);
    assert_eq!(
        when(
            &seg,
            &[(
                "aws:sourcearn",
                &["arn:aws:ecs:us-east-1:123456789012:cluster/a"]
            )]
        ),
        Allow
    );
    assert_eq!(
        when(
            &seg,
            &[("aws:sourcearn", &["arn:aws:ecs:us-east-1:1:2:cluster/a"])]
        ),
        NotApplicable
    );

    // ArnEquals takes wildcards like ArnLike (as IAM's does), and is case-sensitive.
    let eq = allow_if(r#"{"ArnEquals":{"aws:principalarn":"arn:aws:iam::123456789012:role/r*"}}"#);
    assert_eq!(
        when(
            &eq,
            &[(
                "aws:principalarn",
                &["arn:aws:iam::123456789012:role/runner"]
            )]
        ),
        Allow
    );
    assert_eq!(
        when(
            &eq,
            &[(
                "aws:principalarn",
                &["arn:aws:iam::123456789012:role/Runner"]
            )]
        ),
        NotApplicable
    );

    for op in ["ArnNotEquals", "ArnNotLike"] {
        let n = allow_if(&format!(
            r#"{{"{op}":{{"aws:sourcearn":"arn:aws:ecs:*:123456789012:*"}}}}"#
        ));
        assert_eq!(when(&n, &[("aws:sourcearn", &[ok])]), NotApplicable, "{op}");
        assert_eq!(
            when(
                &n,
                &[(
                    "aws:sourcearn",
                    &["arn:aws:ecs:us-east-1:210987654321:task/x"]
                )]
            ),
            Allow,
            "{op}"
        );
        assert_eq!(when(&n, &[]), Allow, "{op}");
    }
}

#[test]
fn bool_operator() {
    for v in [r#"true"#, r#""true""#, r#""True""#] {
        let p = allow_if(&format!(r#"{{"Bool":{{"aws:SecureTransport":{v}}}}}"#));
        assert_eq!(
            when(&p, &[("aws:securetransport", &["true"])]),
            Allow,
            "{v}"
        );
        assert_eq!(
            when(&p, &[("aws:securetransport", &["false"])]),
            NotApplicable,
            "{v}"
        );
        assert_eq!(when(&p, &[]), NotApplicable, "{v}");
    }
    let d = deny_if(r#"{"Bool":{"aws:securetransport":"false"}}"#);
    assert_eq!(
        when(&d, &[("aws:securetransport", &["false"])]),
        ExplicitDeny
    );
    assert_eq!(when(&d, &[("aws:securetransport", &["true"])]), Allow);
    // Where the transport is not known, the key is missing: the Deny applies, an Allow
    // does not (berth supplies it on every request it knows the connection of).
    assert_eq!(when(&d, &[]), ExplicitDeny);
    let e = allow_if(r#"{"BoolIfExists":{"aws:securetransport":"true"}}"#);
    assert_eq!(when(&e, &[]), NotApplicable);
    assert_eq!(when(&e, &[("aws:securetransport", &["true"])]), Allow);
    assert_eq!(
        when(&e, &[("aws:securetransport", &["false"])]),
        NotApplicable
    );
}

#[test]
fn null_operator() {
    let absent = allow_if(r#"{"Null":{"aws:sourcearn":"true"}}"#);
    assert_eq!(when(&absent, &[]), Allow);
    assert_eq!(when(&absent, &[("aws:sourcearn", &[])]), Allow);
    assert_eq!(
        when(&absent, &[("aws:sourcearn", &["arn:aws:ecs:::x"])]),
        NotApplicable
    );
    let present = allow_if(r#"{"Null":{"aws:sourcearn":false}}"#);
    assert_eq!(when(&present, &[]), NotApplicable);
    assert_eq!(
        when(&present, &[("aws:sourcearn", &["arn:aws:ecs:::x"])]),
        Allow
    );
}

#[test]
fn if_exists() {
    let p = allow_if(r#"{"StringEqualsIfExists":{"aws:sourceaccount":"123456789012"}}"#);
    assert_eq!(when(&p, &[]), Allow);
    assert_eq!(when(&p, &[("aws:sourceaccount", &[ACCT])]), Allow);
    assert_eq!(when(&p, &[("aws:sourceaccount", &[OTHER])]), NotApplicable);
    let n = allow_if(r#"{"StringNotLikeIfExists":{"aws:sourceaccount":"1234*"}}"#);
    assert_eq!(when(&n, &[]), Allow);
    assert_eq!(when(&n, &[("aws:sourceaccount", &[ACCT])]), NotApplicable);
    assert_eq!(when(&n, &[("aws:sourceaccount", &[OTHER])]), Allow);
    let a = allow_if(r#"{"ArnLikeIfExists":{"aws:sourcearn":"arn:aws:ecs:*:123456789012:*"}}"#);
    assert_eq!(when(&a, &[]), Allow);
    assert_eq!(
        when(
            &a,
            &[(
                "aws:sourcearn",
                &["arn:aws:ecs:us-east-1:210987654321:task/x"]
            )]
        ),
        NotApplicable
    );
}

#[test]
fn set_qualifiers() {
    let key = "ecs:cluster";
    let any = allow_if(r#"{"ForAnyValue:StringEquals":{"ecs:cluster":["a","b"]}}"#);
    assert_eq!(when(&any, &[(key, &["x", "b"])]), Allow);
    assert_eq!(when(&any, &[(key, &["x", "y"])]), NotApplicable);
    assert_eq!(when(&any, &[]), NotApplicable);

    let all = allow_if(r#"{"ForAllValues:StringEquals":{"ecs:cluster":["a","b"]}}"#);
    assert_eq!(when(&all, &[(key, &["a", "b"])]), Allow);
    assert_eq!(when(&all, &[(key, &["a", "x"])]), NotApplicable);
    // ForAllValues holds vacuously for an absent key.
    assert_eq!(when(&all, &[]), Allow);

    let any_not = allow_if(r#"{"ForAnyValue:StringNotEquals":{"ecs:cluster":["a","b"]}}"#);
    assert_eq!(when(&any_not, &[(key, &["a", "x"])]), Allow);
    assert_eq!(when(&any_not, &[(key, &["a", "b"])]), NotApplicable);
    assert_eq!(when(&any_not, &[]), NotApplicable);

    let all_not = allow_if(r#"{"ForAllValues:StringNotLike":{"ecs:cluster":["prod-*"]}}"#);
    assert_eq!(when(&all_not, &[(key, &["dev", "test"])]), Allow);
    assert_eq!(when(&all_not, &[(key, &["dev", "prod-1"])]), NotApplicable);
    assert_eq!(when(&all_not, &[]), Allow);

    let any_if = allow_if(r#"{"ForAnyValue:StringEqualsIfExists":{"ecs:cluster":"a"}}"#);
    assert_eq!(when(&any_if, &[]), Allow);
    assert_eq!(when(&any_if, &[(key, &["b"])]), NotApplicable);

    // No qualifier with several context values: any pair matches (negated: none does).
    let single = allow_if(r#"{"StringEquals":{"ecs:cluster":"a"}}"#);
    assert_eq!(when(&single, &[(key, &["b", "a"])]), Allow);
    let single_not = allow_if(r#"{"StringNotEquals":{"ecs:cluster":"a"}}"#);
    assert_eq!(when(&single_not, &[(key, &["b", "a"])]), NotApplicable);
    assert_eq!(when(&single_not, &[(key, &["b", "c"])]), Allow);
}

#[test]
fn conditions_are_anded_values_ored() {
    let p = allow_if(
        r#"{"StringEquals":{"aws:sourceaccount":["123456789012","210987654321"],
                            "aws:requestedregion":"us-east-1"},
            "StringLike":{"sts:rolesessionname":"ci-*"}}"#,
    );
    let full = [
        ("aws:sourceaccount", &[OTHER][..]),
        ("aws:requestedregion", &["us-east-1"][..]),
        ("sts:rolesessionname", &["ci-1"][..]),
    ];
    assert_eq!(when(&p, &full), Allow);
    for drop in 0..full.len() {
        let partial: Vec<_> = full
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != drop)
            .map(|(_, kv)| *kv)
            .collect();
        assert_eq!(
            when(&p, &partial),
            NotApplicable,
            "without {}",
            full[drop].0
        );
    }
    let mut wrong = full;
    wrong[1] = ("aws:requestedregion", &["eu-west-1"]);
    assert_eq!(when(&p, &wrong), NotApplicable);
}

#[test]
fn condition_values_and_keys() {
    // Numbers and booleans compare as their text; key names are case-insensitive.
    let p = allow_if(r#"{"StringEquals":{"AWS:SourceAccount":123456789012}}"#);
    assert_eq!(when(&p, &[("aws:sourceaccount", &[ACCT])]), Allow);
    assert_eq!(when(&p, &[("aws:sourceaccount", &[OTHER])]), NotApplicable);
    let b = allow_if(r#"{"StringEquals":{"aws:username":false}}"#);
    assert_eq!(when(&b, &[("aws:username", &["false"])]), Allow);
    // An empty value list never matches, and its negation always holds.
    let none = allow_if(r#"{"StringEquals":{"aws:username":[]}}"#);
    assert_eq!(when(&none, &[("aws:username", &["a"])]), NotApplicable);
    let not_none = allow_if(r#"{"StringNotEquals":{"aws:username":[]}}"#);
    assert_eq!(when(&not_none, &[("aws:username", &["a"])]), Allow);
}

#[test]
fn unknown_keys_never_allow() {
    for c in [
        r#"{"StringEquals":{"aws:RequestTag/env":"prod"}}"#,
        r#"{"StringNotEquals":{"aws:ResourceTag/env":"prod"}}"#,
        r#"{"StringNotEqualsIfExists":{"aws:PrincipalTag/team":"x"}}"#,
        r#"{"Null":{"aws:ResourceTag/env":"true"}}"#,
        r#"{"ForAllValues:StringEquals":{"aws:TagKeys":["env"]}}"#,
        r#"{"Bool":{"aws:MultiFactorAuthPresent":"true"}}"#,
    ] {
        assert_eq!(when(&allow_if(c), &[]), NotApplicable, "{c}");
    }
}

#[test]
fn unknown_keys_always_deny() {
    for c in [
        r#"{"StringEquals":{"aws:RequestTag/env":"prod"}}"#,
        r#"{"StringNotEquals":{"aws:ResourceTag/env":"prod"}}"#,
        r#"{"Null":{"aws:ResourceTag/env":"false"}}"#,
        r#"{"ForAnyValue:StringLike":{"aws:TagKeys":"x*"}}"#,
        r#"{"BoolIfExists":{"aws:MultiFactorAuthPresent":"false"}}"#,
    ] {
        assert_eq!(when(&deny_if(c), &[]), ExplicitDeny, "{c}");
    }
}

#[test]
fn unknown_key_with_a_false_known_condition_is_false() {
    // AND with a definite no is a no: this Deny cannot apply whatever the tag is.
    let d = deny_if(
        r#"{"StringEquals":{"aws:RequestTag/env":"prod","aws:sourceaccount":"210987654321"}}"#,
    );
    assert_eq!(when(&d, &[("aws:sourceaccount", &[ACCT])]), Allow);
    assert_eq!(when(&d, &[("aws:sourceaccount", &[OTHER])]), ExplicitDeny);
    // And a known true condition does not rescue an Allow.
    let a = allow_if(
        r#"{"StringEquals":{"aws:RequestTag/env":"prod","aws:sourceaccount":"123456789012"}}"#,
    );
    assert_eq!(when(&a, &[("aws:sourceaccount", &[ACCT])]), NotApplicable);
}

#[test]
fn unknown_key_supplied_in_context_is_evaluated() {
    let a = allow_if(r#"{"StringEquals":{"aws:RequestTag/env":"prod"}}"#);
    assert_eq!(when(&a, &[("aws:requesttag/env", &["prod"])]), Allow);
    assert_eq!(when(&a, &[("aws:requesttag/env", &["dev"])]), NotApplicable);
    let d = deny_if(r#"{"StringEquals":{"aws:RequestTag/env":"prod"}}"#);
    assert_eq!(when(&d, &[("aws:requesttag/env", &["dev"])]), Allow);
}

#[test]
fn known_keys_constant_is_lower_case() {
    for k in KNOWN_CONDITION_KEYS {
        assert_eq!(*k, k.to_ascii_lowercase());
        assert!(k.contains(':'));
    }
}

// ------------------------------------------------------------------------------------------
// Policy variables

#[test]
fn variables_in_resources() {
    let p = identity(
        r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"iam:*",
            "Resource":"arn:aws:iam::123456789012:user/${aws:username}"}}"#,
    );
    let alice = ctx(&[("aws:username", &["alice"])]);
    let arn = |n: &str| format!("arn:aws:iam::{ACCT}:user/{n}");
    assert_eq!(
        ask_with(&p, "iam:GetUser", Some(&arn("alice")), &alice),
        Allow
    );
    assert_eq!(
        ask_with(&p, "iam:GetUser", Some(&arn("bob")), &alice),
        NotApplicable
    );
    // A value with wildcard characters is literal.
    let star = ctx(&[("aws:username", &["*"])]);
    assert_eq!(
        ask_with(&p, "iam:GetUser", Some(&arn("bob")), &star),
        NotApplicable
    );
    assert_eq!(ask_with(&p, "iam:GetUser", Some(&arn("*")), &star), Allow);
    // Unresolvable: never allows...
    assert_eq!(
        ask_with(&p, "iam:GetUser", Some(&arn("alice")), &Ctx::new()),
        NotApplicable
    );
    let two = ctx(&[("aws:username", &["alice", "bob"])]);
    assert_eq!(
        ask_with(&p, "iam:GetUser", Some(&arn("alice")), &two),
        NotApplicable
    );
    // ...and always denies.
    let d = identity(
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"},
            {"Effect":"Deny","Action":"iam:*","Resource":"arn:aws:iam::123456789012:user/${aws:username}"}]}"#,
    );
    assert_eq!(
        ask_with(&d, "iam:GetUser", Some(&arn("bob")), &Ctx::new()),
        ExplicitDeny
    );
    assert_eq!(
        ask_with(&d, "iam:GetUser", Some(&arn("bob")), &alice),
        Allow
    );
    assert_eq!(
        ask_with(&d, "iam:GetUser", Some(&arn("alice")), &alice),
        ExplicitDeny
    );
}

#[test]
fn variable_defaults_and_escapes() {
    let p = identity(
        r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"s3:*",
            "Resource":"arn:aws:s3:::b/${aws:username, 'guest'}/${*}${?}${$}"}}"#,
    );
    let r = |who: &str| format!("arn:aws:s3:::b/{who}/*?$");
    assert_eq!(
        ask_with(&p, "s3:GetObject", Some(&r("guest")), &Ctx::new()),
        Allow
    );
    let alice = ctx(&[("aws:username", &["alice"])]);
    assert_eq!(
        ask_with(&p, "s3:GetObject", Some(&r("alice")), &alice),
        Allow
    );
    assert_eq!(
        ask_with(&p, "s3:GetObject", Some(&r("guest")), &alice),
        NotApplicable
    );
    // The escapes are literal characters, not wildcards.
    assert_eq!(
        ask_with(&p, "s3:GetObject", Some("arn:aws:s3:::b/alice/xx$"), &alice),
        NotApplicable
    );
}

#[test]
fn variables_only_in_2012_version() {
    let p = identity(
        r#"{"Version":"2008-10-17","Statement":{"Effect":"Allow","Action":"iam:*",
            "Resource":"arn:aws:iam::123456789012:user/${aws:username}"}}"#,
    );
    let alice = ctx(&[("aws:username", &["alice"])]);
    assert_eq!(
        ask_with(
            &p,
            "iam:GetUser",
            Some("arn:aws:iam::123456789012:user/alice"),
            &alice
        ),
        NotApplicable
    );
    assert_eq!(
        ask_with(
            &p,
            "iam:GetUser",
            Some("arn:aws:iam::123456789012:user/${aws:username}"),
            &alice
        ),
        Allow
    );
}

#[test]
fn variables_in_condition_values() {
    let p = allow_if(r#"{"StringLike":{"sts:rolesessionname":"${aws:username}-*"}}"#);
    assert_eq!(
        when(
            &p,
            &[
                ("aws:username", &["alice"]),
                ("sts:rolesessionname", &["alice-1"])
            ]
        ),
        Allow
    );
    assert_eq!(
        when(
            &p,
            &[
                ("aws:username", &["alice"]),
                ("sts:rolesessionname", &["bob-1"])
            ]
        ),
        NotApplicable
    );
    assert_eq!(
        when(&p, &[("sts:rolesessionname", &["alice-1"])]),
        NotApplicable
    );
    let d = deny_if(r#"{"StringNotEquals":{"sts:rolesessionname":"${aws:username}"}}"#);
    assert_eq!(
        when(&d, &[("sts:rolesessionname", &["alice"])]),
        ExplicitDeny
    );
    assert_eq!(
        when(
            &d,
            &[
                ("aws:username", &["alice"]),
                ("sts:rolesessionname", &["alice"])
            ]
        ),
        Allow
    );
}

// ------------------------------------------------------------------------------------------
// Matcher and combine

fn g(p: &str, t: &str) -> bool {
    glob(&Pattern::parse(p, false).toks, t, true, false)
}

#[test]
fn glob_basics() {
    assert!(g("", ""));
    assert!(!g("", "a"));
    assert!(g("*", ""));
    assert!(g("**", "abc"));
    assert!(g("a*c", "abbbc"));
    assert!(g("a*c", "ac"));
    assert!(!g("a*c", "acb"));
    assert!(g("a*b*c", "aXbYbZc"));
    assert!(!g("a?c", "ac"));
    assert!(g("?é?", "xéy"));
    assert!(g("é*", "éa"));
    assert!(!g("abc", "ab"));
    assert!(g("*ab", "aab"));
    assert!(g("*a*b", "xaxxb"));
    // Exact mode: wildcards are literal.
    assert!(glob(&Pattern::parse("a*", false).toks, "a*", false, false));
    assert!(!glob(&Pattern::parse("a*", false).toks, "ab", false, false));
    // Folding is Unicode-aware.
    assert!(glob(&Pattern::parse("ÄB", false).toks, "äb", false, true));
}

#[test]
#[allow(
    clippy::disallowed_methods,
    reason = "measures how long real matching takes"
)]
fn glob_has_no_exponential_blowup() {
    let text = "a".repeat(20_000);
    let pattern = format!("{}b", "a*".repeat(40));
    let started = std::time::Instant::now();
    assert!(!g(&pattern, &text));
    assert!(g(&format!("{}a", "a*".repeat(40)), &text));
    // Quadratic at worst: well under a second even unoptimised.
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

#[test]
fn combine_rules() {
    assert_eq!(combine([]), NotApplicable);
    assert_eq!(combine([NotApplicable, NotApplicable]), NotApplicable);
    assert_eq!(combine([NotApplicable, Allow]), Allow);
    assert_eq!(combine([Allow, ExplicitDeny, Allow]), ExplicitDeny);
    assert_eq!(combine([ExplicitDeny, NotApplicable]), ExplicitDeny);
    // Across policies: a role's inline allow and another policy's deny.
    let allow = one("Allow", r#""ecs:*""#, r#""*""#);
    let deny = one("Deny", r#""ecs:DeleteCluster""#, r#""*""#);
    let decide = |a: &str| combine([&allow, &deny].map(|p| ask(p, a, Some(CLUSTER))));
    assert_eq!(decide("ecs:DeleteCluster"), ExplicitDeny);
    assert_eq!(decide("ecs:RunTask"), Allow);
    assert_eq!(decide("iam:CreateRole"), NotApplicable);
}

#[test]
fn resource_policies_need_a_principal_and_may_omit_the_resource() {
    let repo = "arn:aws:ecr:us-east-1:000000000000:repository/app";
    assert!(
        malformed(
            r#"{"Statement":[{"Effect":"Deny","Action":"ecr:*"}]}"#,
            PolicyKind::Resource
        )
        .contains("Principal")
    );
    let p = Policy::parse(
        r#"{"Statement":[{"Effect":"Deny","Principal":{"AWS":"arn:aws:iam::000000000000:role/ci"},"Action":"ecr:BatchGetImage"},
            {"Effect":"Allow","Principal":"*","Action":"ecr:ListImages","Resource":"arn:aws:ecr:*:*:repository/other"}]}"#,
        PolicyKind::Resource,
    )
    .unwrap();
    let decide = |who: &Who, action: &str| {
        let caller = who.caller();
        p.evaluate(&AccessRequest {
            action,
            resource: Some(repo),
            caller: Some(&caller),
            context: &Ctx::new(),
        })
    };
    // A Deny naming the role hits its sessions (they count as the role's ARN too).
    let ci = session("000000000000", "ci", "run-1");
    assert_eq!(decide(&ci, "ecr:BatchGetImage"), ExplicitDeny);
    let other = session("000000000000", "other", "run-1");
    assert_eq!(decide(&other, "ecr:BatchGetImage"), NotApplicable);
    // A statement with a Resource applies only there.
    assert_eq!(decide(&other, "ecr:ListImages"), NotApplicable);
}

#[test]
fn address_date_and_number_conditions() {
    let office = deny_if(r#"{"NotIpAddress":{"aws:SourceIp":["10.1.0.0/16","2001:db8::/32"]}}"#);
    assert_eq!(when(&office, &[("aws:sourceip", &["10.1.2.3"])]), Allow);
    assert_eq!(
        when(&office, &[("aws:sourceip", &["10.2.0.1"])]),
        ExplicitDeny
    );
    assert_eq!(when(&office, &[("aws:sourceip", &["2001:db8::7"])]), Allow);
    assert_eq!(
        when(&office, &[("aws:sourceip", &["::ffff:10.1.0.9"])]),
        Allow
    );
    // Not supplied (a path that does not know the peer): the Deny applies.
    assert_eq!(when(&office, &[]), ExplicitDeny);
    let one = allow_if(r#"{"IpAddress":{"aws:SourceIp":"127.0.0.1"}}"#);
    assert_eq!(when(&one, &[("aws:sourceip", &["127.0.0.1"])]), Allow);
    assert_eq!(
        when(&one, &[("aws:sourceip", &["127.0.0.2"])]),
        NotApplicable
    );
    let all = allow_if(r#"{"IpAddress":{"aws:SourceIp":"0.0.0.0/0"}}"#);
    assert_eq!(when(&all, &[("aws:sourceip", &["192.0.2.1"])]), Allow);

    let until = allow_if(r#"{"DateLessThan":{"aws:CurrentTime":"2030-01-01T00:00:00Z"}}"#);
    assert_eq!(
        when(&until, &[("aws:currenttime", &["2026-12-03T09:00:00Z"])]),
        Allow
    );
    assert_eq!(
        when(&until, &[("aws:currenttime", &["2030-01-01T00:00:00Z"])]),
        NotApplicable
    );
    let after = allow_if(r#"{"DateGreaterThanEquals":{"aws:CurrentTime":"1767225600"}}"#);
    assert_eq!(
        when(&after, &[("aws:currenttime", &["2026-01-01T00:00:00Z"])]),
        Allow
    );
    assert_eq!(
        when(&after, &[("aws:currenttime", &["2025-12-31T23:59:59Z"])]),
        NotApplicable
    );
    let n = allow_if(r#"{"NumericLessThanEquals":{"aws:EpochTime":"100"}}"#);
    assert_eq!(when(&n, &[("aws:epochtime", &["100"])]), Allow);
    assert_eq!(when(&n, &[("aws:epochtime", &["101"])]), NotApplicable);
    let ne = deny_if(r#"{"NumericNotEquals":{"aws:EpochTime":"5"}}"#);
    assert_eq!(when(&ne, &[("aws:epochtime", &["5"])]), Allow);
    assert_eq!(when(&ne, &[("aws:epochtime", &["6"])]), ExplicitDeny);
}
