//! How an agent is set up: its settings ([`AgentConfig`]: the cluster, the node's directory,
//! registries, network, limits, housekeeping, the clock) and what its node is made of
//! ([`NodeParts`]: driver, image store, container network, task records).
//!
//! Must not: open or start anything (that is [`crate::Agent::start`]'s).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use berth_client::RegistryAuth;
use berth_runtime::{Driver, PullPolicy};

use crate::guard;
use crate::images::Images;
use crate::net::Network;
use crate::state::StateDir;

/// How an agent is set up.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub cluster: String,
    /// The node's directory: task state, bundles, logs, images, network state.
    pub root: PathBuf,
    /// The `berth` binary (for `berth shim` and `berth nsexec`).
    pub shim_exe: PathBuf,
    /// `ecs.availability-zone`.
    pub zone: Option<String>,
    pub pull_policy: PullPolicy,
    /// Default SIGTERM → SIGKILL grace (`ECS_CONTAINER_STOP_TIMEOUT`; 30 s).
    pub stop_timeout: Duration,
    /// Host TCP ports not offered to tasks.
    pub reserved_ports: Vec<u16>,
    /// berth's own registry (host:port) and how to log in to it; images named with this host
    /// or an ECR registry host are pulled from it.
    pub local_registry: Option<(String, RegistryAuth)>,
    /// Whether that registry speaks HTTPS (else plain HTTP, like the front door by default).
    pub local_registry_tls: bool,
    /// The HTTPS servers the agent's registry clients trust (None: the system's roots and
    /// `AWS_CA_BUNDLE`).
    pub tls_trust: Option<berth_client::TlsTrust>,
    /// The container network (bridge name and subnet); None: only `host` and `none` tasks.
    pub network: Option<berth_runtime::net::NetConfig>,
    /// Extra attributes (`name=value`).
    pub attributes: Vec<(String, String)>,
    /// Set the cgroup v2 `favordynmods` option (faster container starts); see
    /// [`NativeRuntime::favor_dynamic_cgroups`].
    pub favor_dynamic_cgroups: bool,
    /// Container logs are rotated beyond this size (bytes) …
    pub log_max_size: u64,
    /// … keeping this many files per container (the current one included).
    pub log_max_files: u32,
    /// Logs of containers that ended are removed this long after their last write.
    pub log_retention: Duration,
    /// How often unused images are collected …
    pub image_cleanup_interval: Duration,
    /// … once unused for at least this long (ECS's `ECS_IMAGE_MINIMUM_CLEANUP_AGE`).
    pub image_minimum_age: Duration,
    /// What this node refuses to run (privileged containers, host network, …).
    pub guard: guard::Guard,
    /// How often the running containers' CPU and memory go to the telemetry session (the
    /// ECS agent's default is 20 s); zero: never.
    pub telemetry_interval: Duration,
    /// The CPU units and memory (MiB) the node registers; None: this machine's.
    pub resources: Option<(i32, i32)>,
    /// The process's one clock: every time the agent reports (pulls, starts, exits, health,
    /// metrics) and every age it measures (health start periods, CPU use, log and image ages)
    /// is this clock's.
    pub clock: berth_clock::Clock,
}

/// What a node is made of: its driver, image store, container network and task records.
/// [`Agent::start`] opens the real ones; tests and simulated nodes bring their own.
pub struct NodeParts {
    pub driver: Arc<dyn Driver>,
    pub images: Arc<dyn Images>,
    /// The container network; None with `net_error` saying why (None too: not configured).
    pub net: Option<Arc<dyn Network>>,
    pub net_error: Option<String>,
    pub states: StateDir,
    /// Serve task role credentials to containers (listeners on loopback and the bridge).
    pub credentials_endpoint: bool,
}
