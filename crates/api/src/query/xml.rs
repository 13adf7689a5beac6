//! Query-protocol answers from typed shapes: a serde serializer that writes a shape's members
//! as XML elements named by their wire names, lists as `<member>` elements, maps as
//! `<entry><key/><value/></entry>`, absent members not at all, text escaped.
//!
//! Owns: XML encoding only (the envelope, `<OpResponse><OpResult>`, is [`super`]'s).

use std::fmt::{self, Write as _};

use serde::ser::{self, Serialize};

#[derive(Debug)]
pub struct XmlError(pub String);

impl fmt::Display for XmlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for XmlError {}

impl ser::Error for XmlError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        XmlError(msg.to_string())
    }
}

/// The members of `v` as XML elements (what goes inside `<OpResult>`); `None` when `v` is
/// the unit (an operation that answers nothing but its request id).
pub fn to_xml<T: Serialize + ?Sized>(v: &T) -> Result<Option<String>, XmlError> {
    let mut out = String::new();
    let unit = v.serialize(Content { out: &mut out })?;
    Ok((!unit).then_some(out))
}

/// XML text with the five escapes.
pub fn escape(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
}

/// Writes one value's content (text, or child elements). `Ok(true)`: it was the unit.
struct Content<'a> {
    out: &'a mut String,
}

impl Content<'_> {
    fn text(self, s: &str) -> Result<bool, XmlError> {
        escape(s, self.out);
        Ok(false)
    }
}

/// `<tag>content</tag>`.
fn element<T: Serialize + ?Sized>(out: &mut String, tag: &str, v: &T) -> Result<(), XmlError> {
    let _ = write!(out, "<{tag}>");
    v.serialize(Content { out: &mut *out })?;
    let _ = write!(out, "</{tag}>");
    Ok(())
}

macro_rules! text_of {
    ($($f:ident: $t:ty),* $(,)?) => {
        $(fn $f(self, v: $t) -> Result<bool, XmlError> {
            self.text(&v.to_string())
        })*
    };
}

impl<'a> ser::Serializer for Content<'a> {
    type Ok = bool;
    type Error = XmlError;
    type SerializeSeq = Members<'a>;
    type SerializeTuple = Members<'a>;
    type SerializeTupleStruct = Members<'a>;
    type SerializeTupleVariant = ser::Impossible<bool, XmlError>;
    type SerializeMap = Entries<'a>;
    type SerializeStruct = Fields<'a>;
    type SerializeStructVariant = ser::Impossible<bool, XmlError>;

    text_of! {
        serialize_bool: bool, serialize_i8: i8, serialize_i16: i16, serialize_i32: i32,
        serialize_i64: i64, serialize_u8: u8, serialize_u16: u16, serialize_u32: u32,
        serialize_u64: u64, serialize_char: char,
    }

    fn serialize_f32(self, v: f32) -> Result<bool, XmlError> {
        self.serialize_f64(v as f64)
    }
    fn serialize_f64(self, v: f64) -> Result<bool, XmlError> {
        if !v.is_finite() {
            return Err(XmlError("a number that is not finite".into()));
        }
        self.text(&v.to_string())
    }
    fn serialize_str(self, v: &str) -> Result<bool, XmlError> {
        self.text(v)
    }
    fn serialize_bytes(self, _v: &[u8]) -> Result<bool, XmlError> {
        Err(XmlError(
            "bytes have no XML form here (blobs are base64 text)".into(),
        ))
    }
    fn serialize_none(self) -> Result<bool, XmlError> {
        Ok(false)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, v: &T) -> Result<bool, XmlError> {
        v.serialize(self)
    }
    fn serialize_unit(self) -> Result<bool, XmlError> {
        Ok(true)
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<bool, XmlError> {
        Ok(false)
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<bool, XmlError> {
        self.text(variant)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        v: &T,
    ) -> Result<bool, XmlError> {
        v.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        v: &T,
    ) -> Result<bool, XmlError> {
        element(self.out, variant, v)?;
        Ok(false)
    }
    fn serialize_seq(self, _len: Option<usize>) -> Result<Members<'a>, XmlError> {
        Ok(Members { out: self.out })
    }
    fn serialize_tuple(self, _len: usize) -> Result<Members<'a>, XmlError> {
        Ok(Members { out: self.out })
    }
    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Members<'a>, XmlError> {
        Ok(Members { out: self.out })
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleVariant, XmlError> {
        Err(XmlError("tuple variants have no XML form".into()))
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<Entries<'a>, XmlError> {
        Ok(Entries { out: self.out })
    }
    fn serialize_struct(self, _name: &'static str, _len: usize) -> Result<Fields<'a>, XmlError> {
        Ok(Fields { out: self.out })
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStructVariant, XmlError> {
        Err(XmlError("struct variants have no XML form".into()))
    }
}

struct Members<'a> {
    out: &'a mut String,
}

impl ser::SerializeSeq for Members<'_> {
    type Ok = bool;
    type Error = XmlError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), XmlError> {
        element(self.out, "member", v)
    }
    fn end(self) -> Result<bool, XmlError> {
        Ok(false)
    }
}

impl ser::SerializeTuple for Members<'_> {
    type Ok = bool;
    type Error = XmlError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), XmlError> {
        element(self.out, "member", v)
    }
    fn end(self) -> Result<bool, XmlError> {
        Ok(false)
    }
}

impl ser::SerializeTupleStruct for Members<'_> {
    type Ok = bool;
    type Error = XmlError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), XmlError> {
        element(self.out, "member", v)
    }
    fn end(self) -> Result<bool, XmlError> {
        Ok(false)
    }
}

struct Entries<'a> {
    out: &'a mut String,
}

impl ser::SerializeMap for Entries<'_> {
    type Ok = bool;
    type Error = XmlError;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, k: &T) -> Result<(), XmlError> {
        self.out.push_str("<entry>");
        element(self.out, "key", k)
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), XmlError> {
        element(self.out, "value", v)?;
        self.out.push_str("</entry>");
        Ok(())
    }
    fn end(self) -> Result<bool, XmlError> {
        Ok(false)
    }
}

struct Fields<'a> {
    out: &'a mut String,
}

impl ser::SerializeStruct for Fields<'_> {
    type Ok = bool;
    type Error = XmlError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        v: &T,
    ) -> Result<(), XmlError> {
        element(self.out, key, v)
    }
    fn skip_field(&mut self, _key: &'static str) -> Result<(), XmlError> {
        Ok(())
    }
    fn end(self) -> Result<bool, XmlError> {
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_model::wire::iam::{ListRolePoliciesResponse, Role, Tag};

    #[test]
    fn shapes_to_xml() {
        let r = Role {
            role_name: Some("a<b".into()),
            tags: Some(vec![Tag {
                key: Some("k".into()),
                value: Some("v".into()),
            }]),
            ..Default::default()
        };
        assert_eq!(
            to_xml(&r).unwrap().unwrap(),
            "<RoleName>a&lt;b</RoleName><Tags><member><Key>k</Key><Value>v</Value></member></Tags>"
        );
        let l = ListRolePoliciesResponse {
            policy_names: Some(vec![]),
            is_truncated: Some(false),
            ..Default::default()
        };
        assert_eq!(
            to_xml(&l).unwrap().unwrap(),
            "<PolicyNames></PolicyNames><IsTruncated>false</IsTruncated>"
        );
        assert_eq!(to_xml(&()).unwrap(), None);
    }
}
