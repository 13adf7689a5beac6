//! Manifests: the media types berth accepts, and what a manifest refers to (config, layers,
//! child manifests, subject). Parsing is strict about structure and lenient about unknown
//! members, as the OCI image spec asks.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::digest::Digest;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const MEDIA_TYPES: [&str; 4] = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST];
/// Largest manifest accepted (the OCI spec's recommended minimum for registries).
pub const MAX_MANIFEST: usize = 4 * 1024 * 1024;

/// A content descriptor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<serde_json::Map<String, Value>>,
}

/// What a manifest says about itself and refers to.
#[derive(Debug, Clone, Default)]
pub struct Parsed {
    pub media_type: String,
    pub config: Option<Descriptor>,
    pub layers: Vec<Descriptor>,
    /// Child manifests (indexes only).
    pub manifests: Vec<Descriptor>,
    pub subject: Option<Descriptor>,
    pub artifact_type: Option<String>,
    pub annotations: Option<serde_json::Map<String, Value>>,
}

impl Parsed {
    pub fn is_index(&self) -> bool {
        self.media_type == OCI_INDEX || self.media_type == DOCKER_LIST
    }
    /// Size of the image: config + layers (what ECR reports as imageSizeInBytes). Sizes are
    /// the pusher's claims, so the sum saturates instead of overflowing.
    pub fn image_size(&self) -> i64 {
        self.layers
            .iter()
            .fold(self.config.as_ref().map_or(0, |c| c.size), |sum, l| {
                sum.saturating_add(l.size)
            })
    }
}

fn descriptor(v: &Value, what: &str) -> Result<Descriptor, String> {
    let d: Descriptor =
        serde_json::from_value(v.clone()).map_err(|e| format!("invalid {what} descriptor: {e}"))?;
    Digest::parse(&d.digest).map_err(|e| format!("invalid {what} digest {}: {e}", d.digest))?;
    if d.size < 0 {
        return Err(format!("negative size in {what} descriptor"));
    }
    Ok(d)
}

/// Parse a manifest body. `content_type` is the Content-Type it was pushed with (if any).
pub fn parse(body: &[u8], content_type: Option<&str>) -> Result<Parsed, String> {
    if body.len() > MAX_MANIFEST {
        return Err(format!("manifest larger than {MAX_MANIFEST} bytes"));
    }
    let v: Value =
        serde_json::from_slice(body).map_err(|e| format!("manifest is not JSON: {e}"))?;
    let obj = v.as_object().ok_or("manifest is not a JSON object")?;
    if obj.get("schemaVersion").and_then(Value::as_i64) != Some(2) {
        return Err("schemaVersion must be 2".into());
    }
    let body_mt = obj.get("mediaType").and_then(Value::as_str);
    let ct = content_type
        .map(|c| c.split(';').next().unwrap_or("").trim())
        .filter(|c| !c.is_empty() && *c != "application/json" && *c != "application/octet-stream");
    let media_type = match (ct, body_mt) {
        (Some(c), Some(b)) if c != b => {
            return Err(format!(
                "Content-Type {c} does not match the manifest's mediaType {b}"
            ));
        }
        (Some(c), _) => c.to_string(),
        (None, Some(b)) => b.to_string(),
        // An OCI manifest without mediaType: infer from its shape.
        (None, None) if obj.contains_key("manifests") => OCI_INDEX.to_string(),
        (None, None) => OCI_MANIFEST.to_string(),
    };
    if !MEDIA_TYPES.contains(&media_type.as_str()) {
        return Err(format!("unsupported manifest media type {media_type}"));
    }
    let mut p = Parsed {
        media_type,
        artifact_type: obj
            .get("artifactType")
            .and_then(Value::as_str)
            .map(str::to_string),
        annotations: obj.get("annotations").and_then(Value::as_object).cloned(),
        ..Default::default()
    };
    if p.is_index() {
        let ms = obj
            .get("manifests")
            .and_then(Value::as_array)
            .ok_or("an index needs a manifests array")?;
        for m in ms {
            p.manifests.push(descriptor(m, "manifest")?);
        }
    } else {
        let c = obj
            .get("config")
            .ok_or("an image manifest needs a config")?;
        p.config = Some(descriptor(c, "config")?);
        let ls = obj
            .get("layers")
            .and_then(Value::as_array)
            .ok_or("an image manifest needs a layers array")?;
        for l in ls {
            p.layers.push(descriptor(l, "layer")?);
        }
    }
    if let Some(s) = obj.get("subject") {
        p.subject = Some(descriptor(s, "subject")?);
    }
    if p.artifact_type.is_none()
        && p.media_type == OCI_MANIFEST
        && let Some(c) = &p.config
        && c.media_type != "application/vnd.oci.image.config.v1+json"
    {
        // The referrers API reports the config's media type as the artifact type then.
        p.artifact_type = Some(c.media_type.clone());
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";

    #[test]
    fn image_and_index() {
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{D}","size":5}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{D}","size":10}}]}}"#
        );
        let p = parse(m.as_bytes(), Some(OCI_MANIFEST)).unwrap();
        assert_eq!(p.image_size(), 15);
        assert!(
            parse(m.as_bytes(), Some(DOCKER_MANIFEST)).is_err(),
            "type mismatch"
        );
        let i = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{D}","size":3}}]}}"#
        );
        let p = parse(i.as_bytes(), None).unwrap();
        assert!(p.is_index());
        assert_eq!(p.manifests.len(), 1);
    }

    #[test]
    fn refusals() {
        assert!(parse(b"nope", None).is_err());
        assert!(parse(b"[]", None).is_err());
        assert!(parse(br#"{"schemaVersion":1}"#, None).is_err());
        assert!(parse(br#"{"schemaVersion":2,"mediaType":"text/plain"}"#, None).is_err());
        let bad_digest = r#"{"schemaVersion":2,"config":{"mediaType":"x","digest":"sha256:12","size":1},"layers":[]}"#;
        assert!(parse(bad_digest.as_bytes(), None).is_err());
        assert!(parse(&vec![b' '; MAX_MANIFEST + 1], None).is_err());
    }

    /// Found while writing the fuzz targets (a file in fuzz/crashes/ replays it): descriptor sizes
    /// near i64::MAX overflowed the image size (a panic in debug builds, a negative
    /// imageSizeInBytes in release ones).
    #[test]
    fn image_size_saturates() {
        let m = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"x","digest":"{D}","size":{max}}},"layers":[{{"mediaType":"l","digest":"{D}","size":{max}}},{{"mediaType":"l","digest":"{D}","size":1}}]}}"#,
            max = i64::MAX
        );
        assert_eq!(parse(m.as_bytes(), None).unwrap().image_size(), i64::MAX);
    }
}
