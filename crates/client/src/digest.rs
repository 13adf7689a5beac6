//! Digests and descriptors from untrusted documents (registry manifests and indexes, OCI
//! layouts), parsed strictly before they name a file or a URL.
//!
//! A [`Digest`] is always `sha256:` and 64 lowercase hex digits, so its [`Digest::hex`] is a
//! safe file name; nothing else (a path, `..`, upper case, another algorithm) gets through.
//! `sha512:` digests are recognised only to be refused with a clear message: nothing in berth
//! hashes with sha512. A [`Descriptor`] carries its digest and its exact size, and
//! [`Document`] is a manifest or an index with every descriptor in it parsed.
//!
//! Must not: read files or talk to a registry; callers bound what they read by the sizes here.

use std::fmt;

use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::ClientError;

/// Largest manifest, index or image config berth reads (as registries bound manifests).
pub const MAX_DOCUMENT: u64 = 4 << 20;

/// A `sha256:<64 lowercase hex>` content digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

/// At most this much of a refused value is quoted back in an error.
const QUOTE: usize = 80;

fn quote(s: &str) -> String {
    let cut: String = s.chars().take(QUOTE).collect();
    if cut.len() < s.len() {
        format!("{cut:?}…")
    } else {
        format!("{cut:?}")
    }
}

fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl Digest {
    /// Parse a digest as the OCI spec writes it; only sha256 is accepted.
    pub fn parse(s: &str) -> Result<Digest, ClientError> {
        match s.split_once(':') {
            Some(("sha256", hex)) if is_lower_hex(hex, 64) => Ok(Digest(s.to_string())),
            Some(("sha512", hex)) if is_lower_hex(hex, 128) => Err(ClientError::Invalid(format!(
                "digest {}: sha512 digests are not supported (only sha256)",
                quote(s)
            ))),
            _ => Err(ClientError::Invalid(format!(
                "digest {} is not sha256:<64 lowercase hex digits>",
                quote(s)
            ))),
        }
    }

    /// The digest of `data`.
    pub fn of(data: &[u8]) -> Digest {
        Digest(format!("sha256:{}", hex::encode(Sha256::digest(data))))
    }

    /// The digest a finished hasher computed.
    pub fn from_hasher(h: Sha256) -> Digest {
        Digest(format!("sha256:{}", hex::encode(h.finalize())))
    }

    /// The 64 hex digits: a file name that cannot leave its directory.
    pub fn hex(&self) -> &str {
        &self.0["sha256:".len()..]
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A reference to content: its digest and its exact size in bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    pub media_type: Option<String>,
    pub digest: Digest,
    pub size: u64,
}

impl Descriptor {
    /// Parse the descriptor `v`; `what` names it in errors ("layer 2").
    pub fn parse(v: &Value, what: &str) -> Result<Descriptor, ClientError> {
        if !v.is_object() {
            return Err(ClientError::Invalid(format!("{what} is not a descriptor")));
        }
        let digest = v["digest"]
            .as_str()
            .ok_or_else(|| ClientError::Invalid(format!("{what} has no digest")))?;
        let digest =
            Digest::parse(digest).map_err(|e| ClientError::Invalid(format!("{what}: {e}")))?;
        let size = v["size"].as_u64().ok_or_else(|| {
            ClientError::Invalid(format!("{what} has no size (a whole number of bytes)"))
        })?;
        Ok(Descriptor {
            media_type: v["mediaType"].as_str().map(str::to_string),
            digest,
            size,
        })
    }
}

/// One entry of an index: a manifest and the platform it is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    pub manifest: Descriptor,
    pub os: Option<String>,
    pub architecture: Option<String>,
}

/// A manifest document with every descriptor parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Document {
    /// An image manifest (OCI or Docker schema 2).
    Image {
        config: Descriptor,
        layers: Vec<Descriptor>,
    },
    /// An index / manifest list.
    Index { manifests: Vec<IndexEntry> },
}

impl Document {
    /// Parse a manifest or index (at most [`MAX_DOCUMENT`] bytes).
    pub fn parse(bytes: &[u8]) -> Result<Document, ClientError> {
        if bytes.len() as u64 > MAX_DOCUMENT {
            return Err(ClientError::Invalid(format!(
                "manifest is {} bytes, more than the {MAX_DOCUMENT} allowed",
                bytes.len()
            )));
        }
        let v: Value = serde_json::from_slice(bytes)
            .map_err(|e| ClientError::Invalid(format!("manifest: {e}")))?;
        if let Some(list) = v["manifests"].as_array() {
            let manifests = list
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    Ok(IndexEntry {
                        manifest: Descriptor::parse(m, &format!("manifests[{i}]"))?,
                        os: m["platform"]["os"].as_str().map(str::to_string),
                        architecture: m["platform"]["architecture"].as_str().map(str::to_string),
                    })
                })
                .collect::<Result<_, ClientError>>()?;
            return Ok(Document::Index { manifests });
        }
        if v["config"].is_null() {
            return Err(ClientError::Invalid(
                "manifest is neither an image manifest (config, layers) nor an index (manifests)"
                    .into(),
            ));
        }
        let config = Descriptor::parse(&v["config"], "config")?;
        let layers = v["layers"]
            .as_array()
            .ok_or_else(|| ClientError::Invalid("manifest has no layers list".into()))?
            .iter()
            .enumerate()
            .map(|(i, l)| Descriptor::parse(l, &format!("layers[{i}]")))
            .collect::<Result<_, ClientError>>()?;
        Ok(Document::Image { config, layers })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_strict_sha256_digests_parse() {
        let d = Digest::of(b"hello");
        assert_eq!(
            d.as_str(),
            "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(Digest::parse(d.as_str()).unwrap(), d);
        assert_eq!(d.hex().len(), 64);
        let hex = d.hex().to_string();
        for bad in [
            "sha256:/etc/x".to_string(),
            "sha256:../../x".to_string(),
            format!("sha256:{}", hex.to_uppercase()),
            format!("sha256:{}", &hex[1..]),
            format!("sha256:{hex}0"),
            format!("sha256:{}/", &hex[1..]),
            format!("sha256:{hex}\n"),
            format!("SHA256:{hex}"),
            format!("md5:{hex}"),
            hex.clone(),
            String::new(),
        ] {
            assert!(Digest::parse(&bad).is_err(), "{bad:?}");
        }
        let e = Digest::parse(&format!("sha512:{}", "a".repeat(128)))
            .unwrap_err()
            .to_string();
        assert!(e.contains("sha512 digests are not supported"), "{e}");
        let long = format!("sha256:{}", "/".repeat(10_000));
        assert!(Digest::parse(&long).unwrap_err().to_string().len() < 200);
    }

    #[test]
    fn documents_parse_every_descriptor() {
        let d = Digest::of(b"x");
        let good = json!({"digest": d.as_str(), "size": 1});
        let img = json!({"config": good, "layers": [good, good]});
        let Document::Image { config, layers } =
            Document::parse(&serde_json::to_vec(&img).unwrap()).unwrap()
        else {
            panic!("an image manifest")
        };
        assert_eq!(
            (config.digest, config.size, layers.len()),
            (d.clone(), 1, 2)
        );
        let idx = json!({"manifests": [{"digest": d.as_str(), "size": 1,
            "platform": {"os": "linux", "architecture": "arm64"}}]});
        let Document::Index { manifests } =
            Document::parse(&serde_json::to_vec(&idx).unwrap()).unwrap()
        else {
            panic!("an index")
        };
        assert_eq!(manifests[0].architecture.as_deref(), Some("arm64"));
        let bad_digest = json!({"digest": "sha256:../../x", "size": 1});
        for doc in [
            json!({"config": bad_digest, "layers": []}),
            json!({"config": good, "layers": [good, bad_digest]}),
            json!({"config": good, "layers": [{"digest": d.as_str()}]}),
            json!({"config": good, "layers": [{"digest": d.as_str(), "size": -1}]}),
            json!({"config": good}),
            json!({"manifests": [good, bad_digest]}),
            json!({"schemaVersion": 1, "fsLayers": []}),
        ] {
            assert!(
                Document::parse(&serde_json::to_vec(&doc).unwrap()).is_err(),
                "{doc}"
            );
        }
        let huge = vec![b' '; MAX_DOCUMENT as usize + 1];
        assert!(Document::parse(&huge).is_err());
    }
}
