//! `nextToken` / `maxResults` pagination as ECS does it: an opaque token that resumes after
//! the last item returned. Our token is the URL-safe base64 of the last item's sort key, so
//! a page boundary stays right while items are added or removed.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::error::{ControlError, Result};

/// Whether a Describe call's `include` asks for `what` (e.g. `TAGS`).
pub fn includes(include: Option<&[String]>, what: &str) -> bool {
    include.unwrap_or_default().iter().any(|i| i == what)
}

/// The names or ARNs a Describe call lists: 1 to `max` of them.
pub fn batch(list: Option<&Vec<String>>, max: usize, member: &str) -> Result<Vec<String>> {
    let list = list.cloned().unwrap_or_default();
    if list.is_empty() || list.len() > max {
        return Err(ControlError::invalid(format!(
            "{member} must contain between 1 and {max} elements."
        )));
    }
    Ok(list)
}

/// Check `maxResults` against the operation's allowed range (1..=max) and default.
pub fn max_results(value: Option<i32>, default: usize, max: usize) -> Result<usize> {
    match value {
        None => Ok(default),
        Some(v) if v >= 1 && (v as usize) <= max => Ok(v as usize),
        Some(v) => Err(ControlError::invalid(format!(
            "maxResults must be between 1 and {max}, got {v}."
        ))),
    }
}

/// Decode a `nextToken` into the sort key to resume after.
pub fn decode(token: Option<&str>) -> Result<Option<String>> {
    let Some(t) = token else { return Ok(None) };
    if t.is_empty() {
        return Ok(None);
    }
    URL_SAFE_NO_PAD
        .decode(t)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .map(Some)
        .ok_or_else(|| ControlError::invalid("Invalid nextToken."))
}

pub fn encode(key: &str) -> String {
    URL_SAFE_NO_PAD.encode(key)
}

/// One page of `items` (already in sort-key order): those after `after`, at most `limit`,
/// and the token for the next page if any remain.
pub fn page<T>(
    items: impl Iterator<Item = (String, T)>,
    after: Option<&str>,
    limit: usize,
) -> (Vec<T>, Option<String>) {
    page_ordered(items, after, limit, false)
}

/// [`page`] for items in ascending (`desc == false`) or descending sort-key order.
pub fn page_ordered<T>(
    items: impl Iterator<Item = (String, T)>,
    after: Option<&str>,
    limit: usize,
    desc: bool,
) -> (Vec<T>, Option<String>) {
    let mut out = Vec::new();
    let mut last: Option<String> = None;
    for (k, v) in items {
        if after.is_some_and(|a| {
            if desc {
                k.as_str() >= a
            } else {
                k.as_str() <= a
            }
        }) {
            continue;
        }
        if out.len() == limit {
            return (out, last.map(|l| encode(&l)));
        }
        last = Some(k);
        out.push(v);
    }
    (out, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_walk_everything_once() {
        let items: Vec<String> = (0..25).map(|i| format!("k{i:03}")).collect();
        let mut seen = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let after = decode(token.as_deref()).unwrap();
            let (page, next) = page(
                items.iter().map(|k| (k.clone(), k.clone())),
                after.as_deref(),
                10,
            );
            seen.extend(page);
            match next {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        assert_eq!(seen, items);
    }

    #[test]
    fn exact_multiple_has_no_trailing_token() {
        let items: Vec<String> = (0..10).map(|i| format!("k{i}")).collect();
        let (p, next) = page(items.iter().map(|k| (k.clone(), ())), None, 10);
        assert_eq!(p.len(), 10);
        assert!(next.is_none());
    }

    #[test]
    fn bad_values() {
        assert!(max_results(Some(0), 100, 100).is_err());
        assert!(max_results(Some(101), 100, 100).is_err());
        assert_eq!(max_results(None, 100, 100).unwrap(), 100);
        assert!(decode(Some("!!!")).is_err());
    }
}
