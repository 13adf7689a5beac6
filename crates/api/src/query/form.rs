//! Query-protocol requests into typed shapes: the form's flat names (`RoleName`,
//! `Tags.member.2.Key`, `Attributes.entry.1.value`) become a tree, which a serde deserializer
//! walks into any generated request shape. Lists are `Name.member.N` (N from 1), maps
//! `Name.entry.N.key` / `.value`; an empty list is sent as `Name=` (botocore does). Leaves
//! are text and parse into the number or boolean the shape asks for.
//!
//! Owns: form decoding only. Must not: know any operation.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor};

/// A form parameter tree.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    Leaf(String),
    Branch(BTreeMap<String, Node>),
}

/// Why a form does not fit a shape.
#[derive(Debug, Clone, PartialEq)]
pub struct FormError(pub String);

impl fmt::Display for FormError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for FormError {}

impl de::Error for FormError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        FormError(msg.to_string())
    }
}

/// Longest list berth reads from a form (`member.N`); more is refused, not allocated.
const MAX_INDEX: usize = 1000;
/// Deepest name (`A.member.1.B.member.2…`) berth reads.
const MAX_DEPTH: usize = 16;

impl Node {
    /// The tree of decoded `(name, value)` pairs. A name that is both a value and a prefix of
    /// others (`A=1&A.B=2`) is malformed.
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Node, FormError> {
        let mut root = BTreeMap::new();
        for (name, value) in pairs {
            let parts: Vec<&str> = name.split('.').collect();
            if parts.len() > MAX_DEPTH || parts.iter().any(|p| p.is_empty()) {
                return Err(FormError(format!("Malformed parameter name '{name}'.")));
            }
            let mut at = &mut root;
            for (i, part) in parts.iter().enumerate() {
                let last = i + 1 == parts.len();
                if last {
                    if at.contains_key(*part) {
                        return Err(FormError(format!("Parameter '{name}' is given twice.")));
                    }
                    at.insert(part.to_string(), Node::Leaf(value.to_string()));
                } else {
                    let next = at
                        .entry(part.to_string())
                        .or_insert_with(|| Node::Branch(BTreeMap::new()));
                    match next {
                        Node::Branch(m) => at = m,
                        Node::Leaf(_) => {
                            return Err(FormError(format!(
                                "Parameter '{name}' conflicts with a value given for its prefix."
                            )));
                        }
                    }
                }
            }
        }
        Ok(Node::Branch(root))
    }

    /// Numbered children `1..=N` of a list or map wrapper, in order. Gaps are refused.
    fn numbered(m: BTreeMap<String, Node>, what: &str) -> Result<Vec<Node>, FormError> {
        let mut items: Vec<(usize, Node)> = Vec::with_capacity(m.len());
        for (k, v) in m {
            let n: usize = k
                .parse()
                .ok()
                .filter(|n| (1..=MAX_INDEX).contains(n))
                .ok_or_else(|| FormError(format!("Malformed {what} index '{k}'.")))?;
            items.push((n, v));
        }
        items.sort_by_key(|(n, _)| *n);
        for (i, (n, _)) in items.iter().enumerate() {
            if *n != i + 1 {
                return Err(FormError(format!(
                    "{what} indices must count from 1 without gaps."
                )));
            }
        }
        Ok(items.into_iter().map(|(_, v)| v).collect())
    }

    fn leaf(self) -> Result<String, FormError> {
        match self {
            Node::Leaf(s) => Ok(s),
            Node::Branch(_) => Err(FormError("expected a value, found a structure".into())),
        }
    }
}

/// Deserialize a shape from a parameter tree.
pub fn from_node<T: de::DeserializeOwned>(n: Node) -> Result<T, FormError> {
    T::deserialize(n)
}

macro_rules! parse_leaf {
    ($($f:ident => $v:ident : $t:ty),* $(,)?) => {
        $(fn $f<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, FormError> {
            let s = self.leaf()?;
            let v: $t = s
                .trim()
                .parse()
                .map_err(|_| FormError(format!("'{s}' is not a valid {}", stringify!($t))))?;
            visitor.$v(v)
        })*
    };
}

impl<'de> de::Deserializer<'de> for Node {
    type Error = FormError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, FormError> {
        match self {
            Node::Leaf(s) => visitor.visit_string(s),
            Node::Branch(m) => visitor.visit_map(Entries::new(m)),
        }
    }

    parse_leaf! {
        deserialize_i8 => visit_i8: i8,
        deserialize_i16 => visit_i16: i16,
        deserialize_i32 => visit_i32: i32,
        deserialize_i64 => visit_i64: i64,
        deserialize_u8 => visit_u8: u8,
        deserialize_u16 => visit_u16: u16,
        deserialize_u32 => visit_u32: u32,
        deserialize_u64 => visit_u64: u64,
        deserialize_f32 => visit_f32: f32,
        deserialize_f64 => visit_f64: f64,
        deserialize_char => visit_char: char,
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, FormError> {
        let s = self.leaf()?;
        match s.as_str() {
            "true" => visitor.visit_bool(true),
            "false" => visitor.visit_bool(false),
            _ => Err(FormError(format!("'{s}' is not a valid boolean"))),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, FormError> {
        visitor.visit_some(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, FormError> {
        match self {
            // `Name=`: the empty list.
            Node::Leaf(s) if s.is_empty() => visitor.visit_seq(Items(Vec::new().into_iter())),
            Node::Leaf(_) => Err(FormError("expected a list (Name.member.N)".into())),
            Node::Branch(mut m) => {
                let members = match m.remove("member") {
                    Some(Node::Branch(members)) if m.is_empty() => members,
                    _ => return Err(FormError("expected a list (Name.member.N)".into())),
                };
                let items = Node::numbered(members, "list")?;
                visitor.visit_seq(Items(items.into_iter()))
            }
        }
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, FormError> {
        match self {
            Node::Leaf(s) if s.is_empty() => visitor.visit_map(Entries::new(BTreeMap::new())),
            Node::Leaf(_) => Err(FormError("expected a map (Name.entry.N.key)".into())),
            Node::Branch(mut m) => {
                let entries = match m.remove("entry") {
                    Some(Node::Branch(e)) if m.is_empty() => e,
                    None if m.is_empty() => BTreeMap::new(),
                    _ => return Err(FormError("expected a map (Name.entry.N.key)".into())),
                };
                let mut out = BTreeMap::new();
                for e in Node::numbered(entries, "map")? {
                    let Node::Branch(mut kv) = e else {
                        return Err(FormError("a map entry needs key and value".into()));
                    };
                    let k = kv
                        .remove("key")
                        .ok_or_else(|| FormError("a map entry needs a key".into()))?
                        .leaf()?;
                    let v = kv
                        .remove("value")
                        .ok_or_else(|| FormError("a map entry needs a value".into()))?;
                    if out.insert(k.clone(), v).is_some() {
                        return Err(FormError(format!("map key '{k}' is given twice")));
                    }
                }
                visitor.visit_map(Entries::new(out))
            }
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, FormError> {
        match self {
            Node::Branch(m) => visitor.visit_map(Entries::new(m)),
            // A structure with no members set (botocore sends nothing, or `Name=`).
            Node::Leaf(s) if s.is_empty() => visitor.visit_map(Entries::new(BTreeMap::new())),
            Node::Leaf(_) => Err(FormError("expected a structure".into())),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, FormError> {
        visitor.visit_unit()
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, FormError> {
        visitor.visit_unit()
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, FormError> {
        visitor.visit_enum(self.leaf()?.into_deserializer())
    }

    serde::forward_to_deserialize_any! {
        str string bytes byte_buf unit_struct newtype_struct tuple tuple_struct identifier
    }
}

struct Items(std::vec::IntoIter<Node>);

impl<'de> SeqAccess<'de> for Items {
    type Error = FormError;
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, FormError> {
        self.0.next().map(|n| seed.deserialize(n)).transpose()
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

struct Entries {
    it: std::collections::btree_map::IntoIter<String, Node>,
    value: Option<Node>,
}

impl Entries {
    fn new(m: BTreeMap<String, Node>) -> Entries {
        Entries {
            it: m.into_iter(),
            value: None,
        }
    }
}

impl<'de> MapAccess<'de> for Entries {
    type Error = FormError;
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, FormError> {
        match self.it.next() {
            Some((k, v)) => {
                self.value = Some(v);
                seed.deserialize(Node::Leaf(k)).map(Some)
            }
            None => Ok(None),
        }
    }
    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, FormError> {
        let v = self
            .value
            .take()
            .ok_or_else(|| FormError("a value without a name".into()))?;
        seed.deserialize(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq, Default)]
    struct Tag {
        #[serde(rename = "Key", default)]
        key: Option<String>,
        #[serde(rename = "Value", default)]
        value: Option<String>,
    }

    #[derive(Debug, Deserialize, PartialEq, Default)]
    struct Req {
        #[serde(rename = "RoleName", default)]
        role_name: Option<String>,
        #[serde(rename = "MaxItems", default)]
        max_items: Option<i32>,
        #[serde(rename = "OnlyAttached", default)]
        only_attached: Option<bool>,
        #[serde(rename = "Tags", default)]
        tags: Option<Vec<Tag>>,
        #[serde(rename = "Attrs", default)]
        attrs: Option<BTreeMap<String, String>>,
    }

    fn parse(pairs: &[(&str, &str)]) -> Result<Req, FormError> {
        from_node(Node::from_pairs(pairs.iter().copied())?)
    }

    #[test]
    fn shapes_from_forms() {
        let r = parse(&[
            ("Action", "CreateRole"),
            ("RoleName", "app"),
            ("MaxItems", "20"),
            ("OnlyAttached", "true"),
            ("Tags.member.2.Key", "b"),
            ("Tags.member.1.Key", "a"),
            ("Tags.member.1.Value", "x y"),
            ("Attrs.entry.1.key", "k"),
            ("Attrs.entry.1.value", "v"),
        ])
        .unwrap();
        assert_eq!(r.role_name.as_deref(), Some("app"));
        assert_eq!(r.max_items, Some(20));
        assert_eq!(r.only_attached, Some(true));
        let tags = r.tags.unwrap();
        assert_eq!(tags.len(), 2);
        assert_eq!(tags[0].key.as_deref(), Some("a"));
        assert_eq!(tags[0].value.as_deref(), Some("x y"));
        assert_eq!(tags[1].key.as_deref(), Some("b"));
        assert_eq!(r.attrs.unwrap().get("k").map(String::as_str), Some("v"));
        // botocore's empty list.
        assert_eq!(parse(&[("Tags", "")]).unwrap().tags, Some(vec![]));
        assert_eq!(parse(&[]).unwrap(), Req::default());
    }

    #[test]
    fn malformed_forms_are_refused() {
        for bad in [
            vec![("MaxItems", "ten")],
            vec![("OnlyAttached", "yes")],
            vec![("Tags.member.2.Key", "gap")],
            vec![("Tags.member.0.Key", "zero")],
            vec![("Tags.member.99999999999999999999.Key", "huge")],
            vec![("Tags.member.1001.Key", "too many")],
            vec![("Tags", "x")],
            vec![("Tags.other.1", "x")],
            vec![("RoleName", "a"), ("RoleName.x", "b")],
            vec![("RoleName.x", "b"), ("RoleName", "a")],
            vec![("RoleName..x", "b")],
            vec![("RoleName", "a"), ("RoleName", "b")],
            vec![("Attrs.entry.1.key", "k")],
        ] {
            assert!(parse(&bad).is_err(), "{bad:?} was accepted");
        }
    }
}
