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
/// Default subnet of the container bridge.
pub const DEFAULT_BRIDGE_SUBNET: &str = "10.213.0.0/16";

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
    /// Seconds an upload session may stay idle (no request) before it is removed.
    #[arg(long, env = "BERTH_REGISTRY_UPLOAD_TIMEOUT")]
    pub registry_upload_timeout: Option<u64>,
    /// Upload sessions one principal may have open at once.
    #[arg(long, env = "BERTH_REGISTRY_MAX_UPLOADS_PER_PRINCIPAL")]
    pub registry_max_uploads_per_principal: Option<usize>,
    /// Upload sessions open at once, in all.
    #[arg(long, env = "BERTH_REGISTRY_MAX_UPLOADS")]
    pub registry_max_uploads: Option<usize>,
    /// Seconds between the heartbeats the server sends each agent session.
    #[arg(long, env = "BERTH_AGENT_HEARTBEAT_INTERVAL")]
    pub agent_heartbeat_interval: Option<u64>,
    /// Seconds without a word from an agent before its instance is `agentConnected: false`.
    #[arg(long, env = "BERTH_AGENT_TIMEOUT")]
    pub agent_timeout: Option<u64>,
    /// Seconds an instance may stay disconnected before its tasks are marked STOPPED.
    #[arg(long, env = "BERTH_LOST_INSTANCE_GRACE")]
    pub lost_instance_grace: Option<u64>,
    /// The URL DiscoverPollEndpoint gives agents for their sessions (default: the address
    /// the request came to), e.g. a TLS proxy on port 443 for the stock ECS agent.
    #[arg(long, env = "BERTH_AGENT_ENDPOINT")]
    pub agent_endpoint: Option<String>,
    /// Who may read `/metrics`: `auth` (default: loopback freely, others with credentials
    /// allowed `berth:GetMetrics`), `open` (anyone who reaches the port), `off`.
    #[arg(long, env = "BERTH_METRICS")]
    pub metrics: Option<String>,
    /// Seconds a client may take to send a request's headers (and a keep-alive connection may
    /// stay idle) before the front door closes the connection.
    #[arg(long, env = "BERTH_HTTP_HEADER_TIMEOUT")]
    pub http_header_timeout: Option<u64>,
    /// Seconds a service's task without container health checks must have been RUNNING
    /// before it counts as healthy in deployments (ECS: 40).
    #[arg(long, env = "BERTH_SERVICE_TASK_HEALTHY_AFTER")]
    pub service_task_healthy_after: Option<u64>,
    /// Seconds the credentials handed to tasks for their task role last (renewed at half
    /// their life; ECS's last about 6 hours).
    #[arg(long, env = "BERTH_TASK_CREDENTIALS_TTL")]
    pub task_credentials_ttl: Option<u64>,
    /// Seconds STOPPED tasks stay visible (DescribeTasks, ListTasks) before they are
    /// forgotten (ECS: at least an hour).
    #[arg(long, env = "BERTH_STOPPED_TASK_RETENTION")]
    pub stopped_task_retention: Option<u64>,
    /// `berth up`: run a local node (needs root) registered in the default cluster.
    #[arg(long, env = "BERTH_LOCAL_NODE")]
    pub local_node: Option<bool>,
    /// The local node's `ecs.availability-zone` attribute.
    #[arg(long, env = "BERTH_ZONE")]
    pub zone: Option<String>,
    /// Subnet of the container bridge (`awsvpc` tasks and `bridge` containers), a.b.c.d/n.
    #[arg(long, env = "BERTH_BRIDGE_SUBNET")]
    pub bridge_subnet: Option<String>,
    /// Name of the container bridge interface.
    #[arg(long, env = "BERTH_BRIDGE_NAME")]
    pub bridge_name: Option<String>,
    /// When the node contacts the registry: default, always, once, prefer-cached.
    #[arg(long, env = "BERTH_IMAGE_PULL_BEHAVIOR")]
    pub image_pull_behavior: Option<String>,
    /// Seconds between SIGTERM and SIGKILL when a container definition sets no stopTimeout.
    #[arg(long, env = "BERTH_CONTAINER_STOP_TIMEOUT")]
    pub container_stop_timeout: Option<u64>,
    /// Remount the cgroup v2 hierarchy with `favordynmods` (10+ ms faster container starts).
    #[arg(long, env = "BERTH_CGROUP_FAVOR_DYNMODS")]
    pub cgroup_favor_dynmods: Option<bool>,
    /// Rotate a container's log beyond this many MiB.
    #[arg(long, env = "BERTH_LOG_MAX_SIZE_MIB")]
    pub log_max_size_mib: Option<u64>,
    /// Log files kept per container, the current one included.
    #[arg(long, env = "BERTH_LOG_MAX_FILES")]
    pub log_max_files: Option<u32>,
    /// Hours the logs of an ended container are kept.
    #[arg(long, env = "BERTH_LOG_RETENTION_HOURS")]
    pub log_retention_hours: Option<u64>,
    /// Seconds between collections of unused images on the node.
    #[arg(long, env = "BERTH_IMAGE_CLEANUP_INTERVAL")]
    pub image_cleanup_interval: Option<u64>,
    /// Seconds an image must have been unused before it is collected.
    #[arg(long, env = "BERTH_IMAGE_MINIMUM_CLEANUP_AGE")]
    pub image_minimum_cleanup_age: Option<u64>,
    /// Seconds between the node's container metrics reports (telemetry session).
    #[arg(long, env = "BERTH_TELEMETRY_INTERVAL")]
    pub telemetry_interval: Option<u64>,
    /// Guard rail: the node refuses privileged containers (ECS_DISABLE_PRIVILEGED).
    #[arg(long, env = "BERTH_DISABLE_PRIVILEGED")]
    pub disable_privileged: Option<bool>,
    /// Guard rail: the node refuses tasks in `host` network mode.
    #[arg(long, env = "BERTH_DISABLE_HOST_NETWORK")]
    pub disable_host_network: Option<bool>,
    /// Guard rail: the node refuses containers that add Linux capabilities.
    #[arg(long, env = "BERTH_DISABLE_ADDED_CAPABILITIES")]
    pub disable_added_capabilities: Option<bool>,
    /// Guard rail: host-path volumes only under these directories (comma-separated; an empty
    /// value allows none). Unset: anywhere.
    #[arg(long, env = "BERTH_HOST_VOLUME_ALLOW", value_delimiter = ',')]
    pub host_volume_allow: Option<Vec<PathBuf>>,
    /// Serve HTTPS only, with this certificate chain (PEM, leaf first); needs --tls-key.
    #[arg(long, env = "BERTH_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "BERTH_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Serve HTTPS only, with a self-signed certificate for the listen address and
    /// localhost, made once and kept in <data-dir>/tls/.
    #[arg(long, env = "BERTH_TLS_SELF_SIGNED")]
    pub tls_self_signed: Option<bool>,
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
    pub registry_upload_timeout: Option<u64>,
    pub registry_max_uploads_per_principal: Option<usize>,
    pub registry_max_uploads: Option<usize>,
    pub agent_heartbeat_interval: Option<u64>,
    pub agent_timeout: Option<u64>,
    pub lost_instance_grace: Option<u64>,
    pub agent_endpoint: Option<String>,
    pub metrics: Option<String>,
    pub http_header_timeout: Option<u64>,
    pub service_task_healthy_after: Option<u64>,
    pub task_credentials_ttl: Option<u64>,
    pub stopped_task_retention: Option<u64>,
    pub local_node: Option<bool>,
    pub zone: Option<String>,
    pub bridge_subnet: Option<String>,
    pub bridge_name: Option<String>,
    pub image_pull_behavior: Option<String>,
    pub container_stop_timeout: Option<u64>,
    pub cgroup_favor_dynmods: Option<bool>,
    pub log_max_size_mib: Option<u64>,
    pub log_max_files: Option<u32>,
    pub log_retention_hours: Option<u64>,
    pub image_cleanup_interval: Option<u64>,
    pub image_minimum_cleanup_age: Option<u64>,
    pub telemetry_interval: Option<u64>,
    pub disable_privileged: Option<bool>,
    pub disable_host_network: Option<bool>,
    pub disable_added_capabilities: Option<bool>,
    pub host_volume_allow: Option<Vec<PathBuf>>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_self_signed: Option<bool>,
}

/// Where the front door's certificate comes from, when it serves HTTPS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsSource {
    /// Files the operator gave.
    Files { cert: PathBuf, key: PathBuf },
    /// A certificate berth makes (once) and keeps in the data dir.
    SelfSigned,
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
    pub registry_uploads: berth_registry::UploadLimits,
    pub liveness: berth_control::liveness::Liveness,
    /// See the flag `--agent-endpoint`.
    pub agent_endpoint: Option<String>,
    /// See the flag `--metrics`.
    pub metrics: berth_api::metrics::MetricsAccess,
    /// Connection limits of the front door (`--http-header-timeout`).
    pub http: berth_api::serve::Limits,
    pub service_task_healthy_after: u64,
    pub task_credentials_ttl: u64,
    pub stopped_task_retention: u64,
    pub local_node: bool,
    pub zone: Option<String>,
    pub bridge_subnet: (std::net::Ipv4Addr, u8),
    pub bridge_name: String,
    pub pull_policy: berth_runtime::PullPolicy,
    pub container_stop_timeout: u64,
    pub cgroup_favor_dynmods: bool,
    pub log_max_size_mib: u64,
    pub log_max_files: u32,
    pub log_retention_hours: u64,
    pub image_cleanup_interval: u64,
    pub image_minimum_cleanup_age: u64,
    pub telemetry_interval: u64,
    /// What the node refuses to run.
    pub guard: berth_agent::guard::Guard,
    /// HTTPS on the front door (None: plain HTTP).
    pub tls: Option<TlsSource>,
}

/// `a.b.c.d/n`, a private IPv4 subnet with room for containers.
pub fn parse_subnet(s: &str) -> anyhow::Result<(std::net::Ipv4Addr, u8)> {
    let (a, n) = s
        .split_once('/')
        .with_context(|| format!("subnet {s:?} is not a.b.c.d/n"))?;
    let ip: std::net::Ipv4Addr = a.parse().with_context(|| format!("subnet {s:?}"))?;
    let n: u8 = n.parse().with_context(|| format!("subnet {s:?}"))?;
    if !(8..=28).contains(&n) {
        anyhow::bail!("subnet {s:?}: prefix length must be between 8 and 28");
    }
    if !ip.is_private() {
        anyhow::bail!("subnet {s:?} must be a private (RFC 1918) range");
    }
    let mask = u32::MAX << (32 - n);
    Ok((std::net::Ipv4Addr::from(u32::from(ip) & mask), n))
}

pub fn parse_pull_policy(s: &str) -> anyhow::Result<berth_runtime::PullPolicy> {
    use berth_runtime::PullPolicy as P;
    Ok(match s {
        "default" => P::Default,
        "always" => P::Always,
        "once" => P::Once,
        "prefer-cached" => P::PreferCached,
        other => anyhow::bail!(
            "image pull behavior {other:?}: expected default, always, once or prefer-cached"
        ),
    })
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
        let tls = match (
            self.tls_cert.clone().or(file.tls_cert),
            self.tls_key.clone().or(file.tls_key),
            self.tls_self_signed
                .or(file.tls_self_signed)
                .unwrap_or(false),
        ) {
            (Some(_), Some(_), true) => {
                anyhow::bail!("tls_self_signed cannot be combined with tls_cert and tls_key")
            }
            (Some(cert), Some(key), false) => Some(TlsSource::Files { cert, key }),
            (Some(_), None, _) => anyhow::bail!("--tls-cert needs --tls-key"),
            (None, Some(_), _) => anyhow::bail!("--tls-key needs --tls-cert"),
            (None, None, true) => Some(TlsSource::SelfSigned),
            (None, None, false) => None,
        };
        Ok(Config {
            tls,
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
            registry_uploads: {
                let d = berth_registry::UploadLimits::default();
                berth_registry::UploadLimits {
                    per_principal: self
                        .registry_max_uploads_per_principal
                        .or(file.registry_max_uploads_per_principal)
                        .unwrap_or(d.per_principal)
                        .max(1),
                    total: self
                        .registry_max_uploads
                        .or(file.registry_max_uploads)
                        .unwrap_or(d.total)
                        .max(1),
                    idle_timeout: self
                        .registry_upload_timeout
                        .or(file.registry_upload_timeout)
                        .map_or(d.idle_timeout, |s| std::time::Duration::from_secs(s.max(1))),
                }
            },
            liveness: {
                let d = berth_control::liveness::Liveness::default();
                let secs = |flag: Option<u64>, file: Option<u64>, def: std::time::Duration| {
                    flag.or(file)
                        .map(std::time::Duration::from_secs)
                        .unwrap_or(def)
                };
                let l = berth_control::liveness::Liveness {
                    heartbeat_interval: secs(
                        self.agent_heartbeat_interval,
                        file.agent_heartbeat_interval,
                        d.heartbeat_interval,
                    ),
                    agent_timeout: secs(self.agent_timeout, file.agent_timeout, d.agent_timeout),
                    lost_grace: secs(
                        self.lost_instance_grace,
                        file.lost_instance_grace,
                        d.lost_grace,
                    ),
                };
                if l.heartbeat_interval.is_zero() || l.agent_timeout <= l.heartbeat_interval {
                    anyhow::bail!(
                        "agent timeout ({} s) must be longer than the heartbeat interval ({} s, at least 1)",
                        l.agent_timeout.as_secs(),
                        l.heartbeat_interval.as_secs()
                    );
                }
                l
            },
            http: berth_api::serve::Limits {
                header_timeout: std::time::Duration::from_secs(
                    self.http_header_timeout
                        .or(file.http_header_timeout)
                        .unwrap_or(30)
                        .max(1),
                ),
            },
            metrics: match self.metrics.clone().or(file.metrics.clone()) {
                None => berth_api::metrics::MetricsAccess::Auth,
                Some(m) => m.parse().map_err(|e: String| anyhow::anyhow!(e))?,
            },
            agent_endpoint: match self.agent_endpoint.clone().or(file.agent_endpoint.clone()) {
                None => None,
                Some(u) => {
                    let host = u
                        .strip_prefix("https://")
                        .or_else(|| u.strip_prefix("http://"))
                        .map(|rest| rest.split('/').next().unwrap_or_default())
                        .unwrap_or_default();
                    if host.is_empty() || host.contains(char::is_whitespace) {
                        anyhow::bail!(
                            "agent endpoint {u:?}: an http:// or https:// URL with a host is needed"
                        );
                    }
                    Some(u.trim_end_matches('/').to_string())
                }
            },
            task_credentials_ttl: match self
                .task_credentials_ttl
                .or(file.task_credentials_ttl)
                .unwrap_or(6 * 3600)
            {
                t @ 20..=43_200 => t,
                t => anyhow::bail!(
                    "task credentials TTL {t} s: between 20 s and 43200 s (12 hours) is needed"
                ),
            },
            stopped_task_retention: match self
                .stopped_task_retention
                .or(file.stopped_task_retention)
                .unwrap_or(3600)
            {
                t @ 60..=604_800 => t,
                t => anyhow::bail!(
                    "stopped task retention {t} s: between 60 s and 604800 s (7 days) is needed"
                ),
            },
            service_task_healthy_after: self
                .service_task_healthy_after
                .or(file.service_task_healthy_after)
                .unwrap_or(40),
            local_node: self.local_node.or(file.local_node).unwrap_or(true),
            zone: self.zone.clone().or(file.zone),
            bridge_subnet: parse_subnet(
                self.bridge_subnet
                    .as_deref()
                    .or(file.bridge_subnet.as_deref())
                    .unwrap_or(DEFAULT_BRIDGE_SUBNET),
            )?,
            bridge_name: {
                let b = self
                    .bridge_name
                    .clone()
                    .or(file.bridge_name)
                    .unwrap_or_else(|| "berth0".into());
                if b.is_empty()
                    || b.len() > 15
                    || !b
                        .bytes()
                        .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
                {
                    anyhow::bail!("bridge name {b:?}: 1-15 letters, digits, '-' or '_'");
                }
                b
            },
            pull_policy: parse_pull_policy(
                self.image_pull_behavior
                    .as_deref()
                    .or(file.image_pull_behavior.as_deref())
                    .unwrap_or("default"),
            )?,
            container_stop_timeout: self
                .container_stop_timeout
                .or(file.container_stop_timeout)
                .unwrap_or(30),
            cgroup_favor_dynmods: self
                .cgroup_favor_dynmods
                .or(file.cgroup_favor_dynmods)
                .unwrap_or(true),
            log_max_size_mib: self
                .log_max_size_mib
                .or(file.log_max_size_mib)
                .unwrap_or(10)
                .max(1),
            log_max_files: self
                .log_max_files
                .or(file.log_max_files)
                .unwrap_or(3)
                .max(1),
            log_retention_hours: self
                .log_retention_hours
                .or(file.log_retention_hours)
                .unwrap_or(24),
            image_cleanup_interval: self
                .image_cleanup_interval
                .or(file.image_cleanup_interval)
                .unwrap_or(1800)
                .max(1),
            image_minimum_cleanup_age: self
                .image_minimum_cleanup_age
                .or(file.image_minimum_cleanup_age)
                .unwrap_or(3600),
            telemetry_interval: self
                .telemetry_interval
                .or(file.telemetry_interval)
                .unwrap_or(20)
                .max(1),
            guard: berth_agent::guard::Guard {
                disable_privileged: self
                    .disable_privileged
                    .or(file.disable_privileged)
                    .unwrap_or(false),
                disable_host_network: self
                    .disable_host_network
                    .or(file.disable_host_network)
                    .unwrap_or(false),
                disable_added_capabilities: self
                    .disable_added_capabilities
                    .or(file.disable_added_capabilities)
                    .unwrap_or(false),
                host_volume_allow: match self
                    .host_volume_allow
                    .clone()
                    .or(file.host_volume_allow.clone())
                {
                    Some(dirs) => {
                        let dirs: Vec<PathBuf> = dirs
                            .into_iter()
                            .filter(|d| !d.as_os_str().is_empty())
                            .collect();
                        if let Some(d) = dirs.iter().find(|d| !d.is_absolute()) {
                            anyhow::bail!(
                                "host-volume-allow: {} is not an absolute path",
                                d.display()
                            );
                        }
                        Some(dirs)
                    }
                    None => None,
                },
            },
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
    fn tls_options() {
        let dir = std::env::temp_dir().join(format!("berth-cfg-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let base = ServeArgs {
            data_dir: Some(dir.clone()),
            ..Default::default()
        };
        assert_eq!(base.resolve().unwrap().tls, None);
        let only_cert = ServeArgs {
            tls_cert: Some("c.pem".into()),
            ..base.clone()
        };
        assert!(only_cert.resolve().is_err(), "a certificate without a key");
        std::fs::write(dir.join("berth.toml"), "tls_key = \"k.pem\"\n").unwrap();
        assert_eq!(
            only_cert.resolve().unwrap().tls,
            Some(TlsSource::Files {
                cert: "c.pem".into(),
                key: "k.pem".into()
            }),
            "the key from the file, the certificate from the flag"
        );
        let both = ServeArgs {
            tls_self_signed: Some(true),
            ..only_cert.clone()
        };
        assert!(both.resolve().is_err());
        std::fs::remove_file(dir.join("berth.toml")).unwrap();
        let ss = ServeArgs {
            tls_self_signed: Some(true),
            ..base
        };
        assert_eq!(ss.resolve().unwrap().tls, Some(TlsSource::SelfSigned));
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
