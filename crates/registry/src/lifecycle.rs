//! ECR lifecycle policies: the policy grammar, its validation (with ECR's error wording), and
//! evaluation — which images a policy expires, by which rule. Evaluation is pure: images and
//! the current time in, decisions out; the registry applies them (periodically, on demand and
//! for previews).
//!
//! Semantics, as ECR documents them: rules are applied in ascending `rulePriority`; an image
//! selected by a rule (it matches the rule's tag selection) cannot be expired by a rule of
//! lower priority; `imageCountMoreThan N` keeps the newest N selected images and expires the
//! rest; `sinceImagePushed N days` expires selected images pushed more than N days ago. With
//! several prefixes or patterns an image must match all of them.

use serde::Deserialize;

/// One image as evaluation sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageInfo {
    pub digest: String,
    pub tags: Vec<String>,
    /// Epoch seconds.
    pub pushed_at: f64,
}

/// An image a policy expires and the rule that does it.
#[derive(Debug, Clone, PartialEq)]
pub struct Expiry {
    pub image: ImageInfo,
    pub rule_priority: i32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PolicyDoc {
    rules: Vec<RuleDoc>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RuleDoc {
    rule_priority: i64,
    #[serde(default)]
    #[allow(dead_code)]
    description: Option<String>,
    selection: SelectionDoc,
    action: ActionDoc,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SelectionDoc {
    tag_status: String,
    #[serde(default)]
    tag_prefix_list: Option<Vec<String>>,
    #[serde(default)]
    tag_pattern_list: Option<Vec<String>>,
    count_type: String,
    #[serde(default)]
    count_unit: Option<String>,
    count_number: i64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ActionDoc {
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Debug, Clone, PartialEq)]
enum TagStatus {
    Tagged,
    Untagged,
    Any,
}

#[derive(Debug, Clone, PartialEq)]
enum Count {
    MoreThan(usize),
    SincePushedDays(i64),
}

#[derive(Debug, Clone)]
struct Rule {
    priority: i32,
    status: TagStatus,
    prefixes: Vec<String>,
    patterns: Vec<String>,
    count: Count,
}

/// A validated lifecycle policy.
#[derive(Debug, Clone)]
pub struct Policy {
    rules: Vec<Rule>,
}

fn invalid(msg: impl std::fmt::Display) -> String {
    format!("Invalid parameter at 'LifecyclePolicyText' failed to satisfy constraint: '{msg}'")
}

/// `*` matches any run of characters; everything else literally.
pub(crate) fn wildcard(pattern: &str, s: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == s;
    }
    let mut rest = s;
    for (i, p) in parts.iter().enumerate() {
        if i == 0 {
            match rest.strip_prefix(p) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 {
            return rest.ends_with(p);
        } else {
            match rest.find(p) {
                Some(idx) => rest = &rest[idx + p.len()..],
                None => return false,
            }
        }
    }
    true
}

impl Policy {
    /// Parse and validate a policy text; errors carry ECR's InvalidParameterException wording.
    pub fn parse(text: &str) -> Result<Policy, String> {
        if text.len() < 100 && text.trim().is_empty() {
            return Err(invalid("policy text is empty"));
        }
        if text.len() > 30720 {
            return Err(invalid("policy text is longer than 30720 characters"));
        }
        let doc: PolicyDoc =
            serde_json::from_str(text).map_err(|e| invalid(format!("invalid JSON: {e}")))?;
        if doc.rules.is_empty() {
            return Err(invalid("rules must not be empty"));
        }
        let mut rules = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        let mut untagged_rules = 0;
        for r in &doc.rules {
            if r.rule_priority < 1 || r.rule_priority > i32::MAX as i64 {
                return Err(invalid("rulePriority must be a positive integer"));
            }
            if !seen.insert(r.rule_priority) {
                return Err(invalid(format!(
                    "rulePriority {} is used more than once",
                    r.rule_priority
                )));
            }
            if r.action.kind != "expire" {
                return Err(invalid(format!(
                    "action type '{}' is not supported; use 'expire'",
                    r.action.kind
                )));
            }
            let s = &r.selection;
            let status = match s.tag_status.as_str() {
                "tagged" => TagStatus::Tagged,
                "untagged" => TagStatus::Untagged,
                "any" => TagStatus::Any,
                o => {
                    return Err(invalid(format!(
                        "tagStatus '{o}' must be one of tagged, untagged, any"
                    )));
                }
            };
            let prefixes = s.tag_prefix_list.clone().unwrap_or_default();
            let patterns = s.tag_pattern_list.clone().unwrap_or_default();
            match status {
                TagStatus::Tagged if prefixes.is_empty() && patterns.is_empty() => {
                    return Err(invalid(
                        "tagPrefixList or tagPatternList is required when tagStatus is tagged",
                    ));
                }
                TagStatus::Untagged | TagStatus::Any
                    if !prefixes.is_empty() || !patterns.is_empty() =>
                {
                    return Err(invalid(
                        "tagPrefixList and tagPatternList can only be used when tagStatus is tagged",
                    ));
                }
                _ => {}
            }
            if !prefixes.is_empty() && !patterns.is_empty() {
                return Err(invalid(
                    "tagPrefixList and tagPatternList cannot be used in the same rule",
                ));
            }
            if patterns.iter().any(|p| p.matches('*').count() > 4) {
                return Err(invalid("a tag pattern can have at most 4 wildcards"));
            }
            if status == TagStatus::Untagged {
                untagged_rules += 1;
            }
            if s.count_number < 1 {
                return Err(invalid("countNumber must be at least 1"));
            }
            let count = match (s.count_type.as_str(), s.count_unit.as_deref()) {
                ("imageCountMoreThan", None) => Count::MoreThan(s.count_number as usize),
                ("imageCountMoreThan", Some(_)) => {
                    return Err(invalid("countUnit can only be used with sinceImagePushed"));
                }
                ("sinceImagePushed", Some("days")) => Count::SincePushedDays(s.count_number),
                ("sinceImagePushed", _) => {
                    return Err(invalid("sinceImagePushed requires countUnit 'days'"));
                }
                (o, _) => {
                    return Err(invalid(format!(
                        "countType '{o}' must be imageCountMoreThan or sinceImagePushed"
                    )));
                }
            };
            rules.push(Rule {
                priority: r.rule_priority as i32,
                status,
                prefixes,
                patterns,
                count,
            });
        }
        if untagged_rules > 1 {
            return Err(invalid("only one rule may select untagged images"));
        }
        rules.sort_by_key(|r| r.priority);
        if let Some(pos) = rules.iter().position(|r| r.status == TagStatus::Any)
            && pos != rules.len() - 1
        {
            return Err(invalid(
                "a rule with tagStatus 'any' must have the highest rulePriority",
            ));
        }
        Ok(Policy { rules })
    }

    fn selects(r: &Rule, img: &ImageInfo) -> bool {
        match r.status {
            TagStatus::Any => true,
            TagStatus::Untagged => img.tags.is_empty(),
            TagStatus::Tagged => {
                !img.tags.is_empty()
                    && r.prefixes
                        .iter()
                        .all(|p| img.tags.iter().any(|t| t.starts_with(p.as_str())))
                    && r.patterns
                        .iter()
                        .all(|p| img.tags.iter().any(|t| wildcard(p, t)))
            }
        }
    }

    /// What the policy expires among `images` at time `now` (epoch seconds).
    pub fn evaluate(&self, images: &[ImageInfo], now: f64) -> Vec<Expiry> {
        let mut claimed = vec![false; images.len()];
        let mut out = Vec::new();
        for r in &self.rules {
            // Newest first.
            let mut selected: Vec<usize> = (0..images.len())
                .filter(|&i| !claimed[i] && Self::selects(r, &images[i]))
                .collect();
            selected.sort_by(|&a, &b| {
                images[b]
                    .pushed_at
                    .partial_cmp(&images[a].pushed_at)
                    .unwrap_or(std::cmp::Ordering::Equal)
            });
            for &i in &selected {
                claimed[i] = true;
            }
            let expire: Vec<usize> = match r.count {
                Count::MoreThan(n) => selected.into_iter().skip(n).collect(),
                Count::SincePushedDays(d) => selected
                    .into_iter()
                    .filter(|&i| images[i].pushed_at < now - (d as f64) * 86_400.0)
                    .collect(),
            };
            for i in expire {
                out.push(Expiry {
                    image: images[i].clone(),
                    rule_priority: r.priority,
                });
            }
        }
        // Oldest first, as ECR expires.
        out.sort_by(|a, b| {
            a.image
                .pushed_at
                .partial_cmp(&b.image.pushed_at)
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn img(d: &str, tags: &[&str], age_days: f64) -> ImageInfo {
        ImageInfo {
            digest: d.into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            pushed_at: 1_000_000.0 - age_days * 86_400.0,
        }
    }

    const NOW: f64 = 1_000_000.0;

    #[test]
    fn count_more_than_keeps_newest() {
        let p = Policy::parse(
            r#"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"tagged","tagPrefixList":["prod"],"countType":"imageCountMoreThan","countNumber":2},"action":{"type":"expire"}}]}"#,
        )
        .unwrap();
        let images = vec![
            img("a", &["prod-1"], 4.0),
            img("b", &["prod-2"], 3.0),
            img("c", &["prod-3"], 2.0),
            img("d", &["dev-1"], 10.0),
        ];
        let e = p.evaluate(&images, NOW);
        assert_eq!(
            e.iter()
                .map(|x| x.image.digest.as_str())
                .collect::<Vec<_>>(),
            vec!["a"]
        );
        assert_eq!(e[0].rule_priority, 1);
    }

    #[test]
    fn since_pushed_and_priority_claims() {
        let p = Policy::parse(
            r#"{"rules":[
              {"rulePriority":1,"selection":{"tagStatus":"tagged","tagPatternList":["keep*"],"countType":"imageCountMoreThan","countNumber":100},"action":{"type":"expire"}},
              {"rulePriority":2,"selection":{"tagStatus":"untagged","countType":"sinceImagePushed","countUnit":"days","countNumber":7},"action":{"type":"expire"}},
              {"rulePriority":3,"selection":{"tagStatus":"any","countType":"sinceImagePushed","countUnit":"days","countNumber":30},"action":{"type":"expire"}}]}"#,
        )
        .unwrap();
        let images = vec![
            img("old-keep", &["keep-me"], 365.0),
            img("old-untagged", &[], 8.0),
            img("new-untagged", &[], 1.0),
            img("old-other", &["x"], 31.0),
            img("new-other", &["y"], 29.0),
        ];
        let e = p.evaluate(&images, NOW);
        let got: Vec<(&str, i32)> = e
            .iter()
            .map(|x| (x.image.digest.as_str(), x.rule_priority))
            .collect();
        assert_eq!(got, vec![("old-other", 3), ("old-untagged", 2)]);
    }

    #[test]
    fn all_prefixes_must_match() {
        let p = Policy::parse(
            r#"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"tagged","tagPrefixList":["a","b"],"countType":"imageCountMoreThan","countNumber":1},"action":{"type":"expire"}}]}"#,
        )
        .unwrap();
        let images = vec![
            img("both-old", &["a1", "b1"], 2.0),
            img("both-new", &["a2", "b2"], 1.0),
            img("only-a", &["a3"], 5.0),
        ];
        let e = p.evaluate(&images, NOW);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].image.digest, "both-old");
        assert!(wildcard("prod*", "prod-1"));
        assert!(wildcard("*-rc*", "v1-rc2"));
        assert!(!wildcard("prod", "prod-1"));
    }

    #[test]
    fn invalid_policies() {
        let rule = |sel: &str| {
            format!(
                r#"{{"rules":[{{"rulePriority":1,"selection":{sel},"action":{{"type":"expire"}}}}]}}"#
            )
        };
        for bad in [
            "nope".to_string(),
            r#"{"rules":[]}"#.to_string(),
            rule(r#"{"tagStatus":"tagged","countType":"imageCountMoreThan","countNumber":1}"#),
            rule(r#"{"tagStatus":"untagged","tagPrefixList":["a"],"countType":"imageCountMoreThan","countNumber":1}"#),
            rule(r#"{"tagStatus":"any","countType":"imageCountMoreThan","countUnit":"days","countNumber":1}"#),
            rule(r#"{"tagStatus":"any","countType":"sinceImagePushed","countNumber":1}"#),
            rule(r#"{"tagStatus":"any","countType":"imageCountMoreThan","countNumber":0}"#),
            rule(r#"{"tagStatus":"weird","countType":"imageCountMoreThan","countNumber":1}"#),
            r#"{"rules":[
              {"rulePriority":1,"selection":{"tagStatus":"any","countType":"imageCountMoreThan","countNumber":1},"action":{"type":"expire"}},
              {"rulePriority":2,"selection":{"tagStatus":"untagged","countType":"imageCountMoreThan","countNumber":1},"action":{"type":"expire"}}]}"#.to_string(),
            r#"{"rules":[
              {"rulePriority":1,"selection":{"tagStatus":"untagged","countType":"imageCountMoreThan","countNumber":1},"action":{"type":"expire"}},
              {"rulePriority":1,"selection":{"tagStatus":"untagged","countType":"imageCountMoreThan","countNumber":2},"action":{"type":"expire"}}]}"#.to_string(),
        ] {
            let e = Policy::parse(&bad).unwrap_err();
            assert!(e.starts_with("Invalid parameter at 'LifecyclePolicyText'"), "{e}");
        }
    }
}
