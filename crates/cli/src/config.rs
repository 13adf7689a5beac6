//! Configuration of every role: flags, then `BERTH_*` environment variables (both through
//! clap), then an optional TOML file, then built-in defaults — first one set wins.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

/// Default listen address of the front door.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8470";
/// Default AWS region reported in ARNs and required in credential scopes.
pub const DEFAULT_REGION: &str = "us-east-1";
/// Default AWS account id used in ARNs.
pub const DEFAULT_ACCOUNT: &str = "000000000000";

/// Options shared by the serving roles (`up`, `server`).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ServeArgs {
    /// Address of the front door (every API on one port).
    #[arg(long, env = "BERTH_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Directory for the state store, keys and logs.
    #[arg(long, env = "BERTH_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// TOML configuration file (default: <data-dir>/berth.toml when it exists).
    #[arg(long, env = "BERTH_CONFIG")]
    pub config: Option<PathBuf>,
    /// AWS region berth presents (ARNs, credential scope).
    #[arg(long, env = "BERTH_REGION")]
    pub region: Option<String>,
    /// AWS account id berth presents in ARNs (12 digits).
    #[arg(long, env = "BERTH_ACCOUNT_ID")]
    pub account_id: Option<String>,
    /// Log filter (tracing `EnvFilter` syntax, e.g. `info`, `berth_api=debug`).
    #[arg(long, env = "BERTH_LOG")]
    pub log: Option<String>,
    /// Create a registry repository on first push instead of refusing with NAME_UNKNOWN.
    #[arg(long, env = "BERTH_REGISTRY_CREATE_ON_PUSH")]
    pub registry_create_on_push: Option<bool>,
    /// Challenge registry clients with Bearer (token flow via /v2/token) instead of Basic.
    #[arg(long, env = "BERTH_REGISTRY_BEARER")]
    pub registry_bearer: Option<bool>,
    /// Seconds between runs of the registry's lifecycle policies.
    #[arg(long, env = "BERTH_REGISTRY_LIFECYCLE_INTERVAL")]
    pub registry_lifecycle_interval: Option<u64>,
}

/// The TOML file: the same keys as the flags, snake_case.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub region: Option<String>,
    pub account_id: Option<String>,
    pub log: Option<String>,
    pub registry_create_on_push: Option<bool>,
    pub registry_bearer: Option<bool>,
    pub registry_lifecycle_interval: Option<u64>,
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub region: String,
    pub account_id: String,
    pub log: String,
    pub registry_create_on_push: bool,
    pub registry_bearer: bool,
    pub registry_lifecycle_interval: u64,
}

/// The default data directory: `/var/lib/berth` for root, else `$XDG_DATA_HOME/berth`
/// (`~/.local/share/berth`).
pub fn default_data_dir() -> PathBuf {
    if is_root() {
        return PathBuf::from("/var/lib/berth");
    }
    if let Some(x) = std::env::var_os("XDG_DATA_HOME") {
        return PathBuf::from(x).join("berth");
    }
    if let Some(h) = std::env::var_os("HOME") {
        return PathBuf::from(h).join(".local/share/berth");
    }
    PathBuf::from(".berth")
}

fn is_root() -> bool {
    // /proc/self/status has "Uid:\t<real>\t<effective>…"; avoids an unsafe libc call.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

fn read_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing config file {}", path.display()))
}

impl ServeArgs {
    pub fn resolve(&self) -> anyhow::Result<Config> {
        // The file is found from the flag/env, or inside the (flag/env/default) data dir.
        let file = match &self.config {
            Some(p) => read_file(p)?,
            None => {
                let dir = self.data_dir.clone().unwrap_or_else(default_data_dir);
                let p = dir.join("berth.toml");
                if p.exists() {
                    read_file(&p)?
                } else {
                    FileConfig::default()
                }
            }
        };
        let listen = match self.listen.or(file.listen) {
            Some(l) => l,
            None => DEFAULT_LISTEN.parse().context("default listen address")?,
        };
        let region = self
            .region
            .clone()
            .or(file.region)
            .unwrap_or_else(|| DEFAULT_REGION.to_string());
        let account_id = self
            .account_id
            .clone()
            .or(file.account_id)
            .unwrap_or_else(|| DEFAULT_ACCOUNT.to_string());
        if account_id.len() != 12 || !account_id.bytes().all(|b| b.is_ascii_digit()) {
            anyhow::bail!("account id must be 12 digits, got {account_id:?}");
        }
        if region.is_empty()
            || !region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            anyhow::bail!("region must be lowercase letters, digits and '-', got {region:?}");
        }
        Ok(Config {
            listen,
            data_dir: self
                .data_dir
                .clone()
                .or(file.data_dir)
                .unwrap_or_else(default_data_dir),
            region,
            account_id,
            log: self
                .log
                .clone()
                .or(file.log)
                .unwrap_or_else(|| "info".to_string()),
            registry_create_on_push: self
                .registry_create_on_push
                .or(file.registry_create_on_push)
                .unwrap_or(false),
            registry_bearer: self
                .registry_bearer
                .or(file.registry_bearer)
                .unwrap_or(false),
            registry_lifecycle_interval: self
                .registry_lifecycle_interval
                .or(file.registry_lifecycle_interval)
                .unwrap_or(3600)
                .max(1),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_beat_file_beats_defaults() {
        let dir = std::env::temp_dir().join(format!("berth-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("berth.toml"),
            "listen = \"127.0.0.1:9999\"\nregion = \"eu-west-1\"\n",
        )
        .unwrap();
        let args = ServeArgs {
            data_dir: Some(dir.clone()),
            region: Some("ap-south-1".into()),
            ..Default::default()
        };
        let c = args.resolve().unwrap();
        assert_eq!(c.listen.port(), 9999);
        assert_eq!(c.region, "ap-south-1");
        assert_eq!(c.account_id, DEFAULT_ACCOUNT);
        std::fs::write(dir.join("berth.toml"), "bogus = 1\n").unwrap();
        assert!(args.resolve().is_err(), "unknown keys are refused");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_account_refused() {
        let args = ServeArgs {
            data_dir: Some(std::env::temp_dir().join("berth-cfg-none")),
            account_id: Some("12".into()),
            ..Default::default()
        };
        assert!(args.resolve().is_err());
    }
}
