//! The tag rules AWS's container services share: at most [`MAX_TAGS`] tags on a resource,
//! keys of 1–128 characters that do not start with `aws:` (any case), values of at most 256
//! characters (Unicode characters, not bytes). [`check`] says which rule a list breaks; each
//! service words the error its own way (ECS's `InvalidParameterException`, ECR's
//! `InvalidTagParameterException`).

/// Tags a resource may carry.
pub const MAX_TAGS: usize = 50;
/// Longest tag key, in characters.
pub const MAX_KEY: usize = 128;
/// Longest tag value, in characters.
pub const MAX_VALUE: usize = 256;

/// The rule a list of tags breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagRule {
    /// More than [`MAX_TAGS`] tags.
    TooMany,
    /// A key that is empty or longer than [`MAX_KEY`] (the key).
    KeyLength(String),
    /// A key starting with the reserved `aws:` (the key).
    ReservedPrefix(String),
    /// A value longer than [`MAX_VALUE`] (its key).
    ValueLength(String),
}

/// Check `(key, value)` pairs against the rules; the first rule broken.
pub fn check<'a>(tags: impl ExactSizeIterator<Item = (&'a str, &'a str)>) -> Result<(), TagRule> {
    if tags.len() > MAX_TAGS {
        return Err(TagRule::TooMany);
    }
    for (k, v) in tags {
        if k.is_empty() || k.chars().count() > MAX_KEY {
            return Err(TagRule::KeyLength(k.to_string()));
        }
        if k.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("aws:")) {
            return Err(TagRule::ReservedPrefix(k.to_string()));
        }
        if v.chars().count() > MAX_VALUE {
            return Err(TagRule::ValueLength(k.to_string()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(v: &[(String, String)]) -> Result<(), TagRule> {
        check(v.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }

    #[test]
    fn the_rules() {
        let t = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
        assert_eq!(pairs(&t("team", "")), Ok(()));
        assert_eq!(pairs(&t(&"k".repeat(128), &"v".repeat(256))), Ok(()));
        // Characters, not bytes.
        assert_eq!(pairs(&t(&"é".repeat(128), &"é".repeat(256))), Ok(()));
        assert_eq!(pairs(&t("", "v")), Err(TagRule::KeyLength(String::new())));
        assert!(matches!(
            pairs(&t(&"k".repeat(129), "v")),
            Err(TagRule::KeyLength(_))
        ));
        assert!(matches!(
            pairs(&t("k", &"v".repeat(257))),
            Err(TagRule::ValueLength(_))
        ));
        for k in ["aws:x", "AWS:x", "Aws:"] {
            assert_eq!(pairs(&t(k, "v")), Err(TagRule::ReservedPrefix(k.into())));
        }
        assert_eq!(pairs(&t("awsx", "v")), Ok(()));
        // A key starting with a multi-byte character is not sliced inside it.
        assert_eq!(pairs(&t("éaws:", "v")), Ok(()));
        let many: Vec<_> = (0..51).map(|n| (n.to_string(), String::new())).collect();
        assert_eq!(pairs(&many), Err(TagRule::TooMany));
        assert_eq!(pairs(&many[..50]), Ok(()));
    }
}
