//! Repository policies: IAM-style JSON documents stored with a repository and enforced on
//! pulls and pushes for the principals berth knows (its access keys: the account root and
//! named users).
//!
//! Every berth access key is an administrator of its account, so identity policies allow
//! everything; a repository policy therefore matters through its explicit `Deny` statements
//! (which win over any allow, as in IAM). `Allow` statements are accepted and kept. Statements
//! with a `Condition` cannot be evaluated here and are skipped (documented).

use serde_json::Value;

/// A parsed policy.
#[derive(Debug, Clone)]
pub struct RepoPolicy {
    statements: Vec<Statement>,
}

#[derive(Debug, Clone)]
struct Statement {
    deny: bool,
    principals: Vec<String>,
    actions: Vec<String>,
    conditional: bool,
}

fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect(),
        _ => vec![],
    }
}

/// IAM action matching: `*` wildcards, case-insensitive.
fn glob(pattern: &str, s: &str) -> bool {
    crate::lifecycle::wildcard(&pattern.to_ascii_lowercase(), &s.to_ascii_lowercase())
}

impl RepoPolicy {
    /// Parse a policy text; errors are ECR's InvalidParameterException messages.
    pub fn parse(text: &str) -> Result<RepoPolicy, String> {
        let bad = |m: &str| {
            format!("Invalid parameter at 'PolicyText' failed to satisfy constraint: '{m}'")
        };
        if text.len() > 10240 {
            return Err(bad("policy text is longer than 10240 characters"));
        }
        let v: Value =
            serde_json::from_str(text).map_err(|e| bad(&format!("invalid JSON: {e}")))?;
        let st = match v.get("Statement") {
            Some(Value::Array(a)) => a.clone(),
            Some(o @ Value::Object(_)) => vec![o.clone()],
            _ => return Err(bad("Statement is required")),
        };
        let mut statements = Vec::new();
        for s in &st {
            let deny = match s.get("Effect").and_then(Value::as_str) {
                Some("Allow") => false,
                Some("Deny") => true,
                _ => return Err(bad("each statement needs Effect Allow or Deny")),
            };
            let principals = match s.get("Principal") {
                Some(Value::String(p)) if p == "*" => vec!["*".to_string()],
                Some(Value::Object(o)) => o.get("AWS").map(strings).unwrap_or_default(),
                _ => return Err(bad("each statement needs a Principal")),
            };
            let actions = s.get("Action").map(strings).unwrap_or_default();
            if actions.is_empty() || !actions.iter().all(|a| a == "*" || a.starts_with("ecr:")) {
                return Err(bad("each statement needs ecr: actions"));
            }
            statements.push(Statement {
                deny,
                principals,
                actions,
                conditional: s.get("Condition").is_some(),
            });
        }
        Ok(RepoPolicy { statements })
    }

    fn principal_matches(p: &str, arn: &str, account: &str) -> bool {
        p == "*" || p == arn || p == account || p == format!("arn:aws:iam::{account}:root")
    }

    /// Whether the policy explicitly denies `action` (e.g. `ecr:BatchGetImage`) to `arn`.
    pub fn denies(&self, action: &str, arn: &str, account: &str) -> bool {
        self.statements.iter().any(|s| {
            s.deny
                && !s.conditional
                && s.principals
                    .iter()
                    .any(|p| Self::principal_matches(p, arn, account))
                && s.actions.iter().any(|a| glob(a, action))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deny_rules() {
        let p = RepoPolicy::parse(
            r#"{"Version":"2012-10-17","Statement":[
                {"Sid":"nopush","Effect":"Deny","Principal":{"AWS":"arn:aws:iam::000000000000:user/ci"},"Action":["ecr:Put*","ecr:UploadLayerPart"]},
                {"Effect":"Allow","Principal":"*","Action":"ecr:*"}]}"#,
        )
        .unwrap();
        let ci = "arn:aws:iam::000000000000:user/ci";
        assert!(p.denies("ecr:PutImage", ci, "000000000000"));
        assert!(!p.denies("ecr:BatchGetImage", ci, "000000000000"));
        assert!(!p.denies(
            "ecr:PutImage",
            "arn:aws:iam::000000000000:root",
            "000000000000"
        ));
        let all = RepoPolicy::parse(
            r#"{"Statement":{"Effect":"Deny","Principal":"*","Action":"ecr:*"}}"#,
        )
        .unwrap();
        assert!(all.denies("ecr:BatchGetImage", ci, "000000000000"));
        assert!(RepoPolicy::parse("{}").is_err());
        assert!(
            RepoPolicy::parse(
                r#"{"Statement":[{"Effect":"Maybe","Principal":"*","Action":"ecr:*"}]}"#
            )
            .is_err()
        );
        assert!(
            RepoPolicy::parse(
                r#"{"Statement":[{"Effect":"Deny","Principal":"*","Action":"s3:*"}]}"#
            )
            .is_err()
        );
        assert!(glob("ecr:Batch*", "ecr:BatchGetImage"));
        assert!(!glob("ecr:Batch*", "ecr:PutImage"));
    }
}
