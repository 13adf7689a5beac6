//! The `berth` binary: argument parsing and wiring only. Each subcommand builds the parts it
//! needs from the library crates and runs them.

mod config;
mod images;
mod node;
mod ps;
mod services;
mod table;
mod tls;
mod token;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use config::{Config, ServeArgs};

#[derive(Parser, Debug)]
#[command(
    name = "berth",
    version,
    about = "A self-hosted container platform that speaks the AWS ECS/ECR APIs"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run every role on this machine in one process (front door, control plane, registry).
    Up(ServeArgs),
    /// Run the control plane and front door only (no local node).
    Server(ServeArgs),
    /// Print `export` lines that point the aws CLI and SDKs at a running berth.
    Env(ServeArgs),
    /// Push a directory, rootfs tarball, `docker save` archive or OCI layout as an image.
    Push(images::PushArgs),
    /// Pull an image into an OCI image layout directory.
    Pull(images::PullArgs),
    /// Run a node that joins a berth control plane across the network (needs root).
    Agent(AgentCmd),
    /// List tasks and their containers: status, ports, uptime.
    Ps(ps::PsArgs),
    /// Print (and follow) the output of a task's container on this machine's node.
    Logs(ps::LogsArgs),
    /// List services: status, desired/running/pending counts, definition, rollout.
    Services(services::ServicesArgs),
    /// One service: `berth service events NAME [-f]`.
    Service(services::ServiceArgs),
    /// Join tokens for nodes: create, list, revoke.
    Token(token::TokenArgs),
    /// Print the version.
    Version,
    /// Internal: run a command inside a running container (health checks).
    #[command(hide = true)]
    Nsexec(NsexecCmd),
    /// Internal: the per-container helper process of the native runtime.
    #[command(hide = true)]
    Shim(ShimCmd),
    /// Internal: a host-port forwarder of a bridge-mode container (bound socket on fd 3).
    #[command(hide = true, name = "port-forward")]
    PortForward(PortForwardCmd),
}

#[derive(clap::Args, Debug)]
struct PortForwardCmd {
    /// tcp or udp.
    #[arg(long)]
    proto: String,
    /// The host port (what the socket on fd 3 is bound to; for the command line's reader).
    #[arg(long)]
    host_port: u16,
    #[arg(long)]
    target: std::net::SocketAddr,
    /// Forward for as long as this process (the container's init) lives.
    #[arg(long)]
    watch_pid: i32,
}

#[derive(clap::Args, Debug)]
struct ShimCmd {
    #[arg(long)]
    id: String,
    #[arg(long)]
    bundle: PathBuf,
    #[arg(long)]
    state_root: PathBuf,
    #[arg(long)]
    log: PathBuf,
}

#[derive(clap::Args, Debug)]
struct AgentCmd {
    /// The control plane: the address `berth server` (or `berth up`) serves on.
    #[arg(long, env = "BERTH_SERVER")]
    server: String,
    /// Credentials as ACCESS_KEY_ID:SECRET_ACCESS_KEY (default: AWS_ACCESS_KEY_ID and
    /// AWS_SECRET_ACCESS_KEY from the environment). On the command line the token is visible
    /// to every user of the machine (`ps`): prefer --token-file or BERTH_TOKEN.
    #[arg(
        long,
        env = "BERTH_TOKEN",
        hide_env_values = true,
        conflicts_with = "token_file"
    )]
    token: Option<String>,
    /// A file holding the token (ACCESS_KEY_ID:SECRET_ACCESS_KEY), e.g. one only root may read.
    #[arg(long, env = "BERTH_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// The cluster to join.
    #[arg(long, env = "BERTH_CLUSTER", default_value = "default")]
    cluster: String,
    /// Run this many simulated nodes instead of a real one: real agents (registration,
    /// sessions, task runners, state reports) in one process on a fake driver, containers
    /// modelled (for scale tests; no root needed).
    #[arg(long, env = "BERTH_SIMULATE")]
    simulate: Option<usize>,
    /// Simulated nodes: CPU units each.
    #[arg(long, default_value_t = 4096)]
    sim_cpu: i32,
    /// Simulated nodes: memory (MiB) each.
    #[arg(long, default_value_t = 16384)]
    sim_memory: i32,
    /// Simulated nodes: availability zones, given round-robin.
    #[arg(long, default_value = "zone-a,zone-b,zone-c", value_delimiter = ',')]
    sim_zones: Vec<String>,
    /// Simulated nodes: `ecs.instance-type` values, given round-robin.
    #[arg(long, value_delimiter = ',')]
    sim_instance_types: Vec<String>,
    /// Simulated nodes: milliseconds a modelled container takes to start.
    #[arg(long, default_value_t = 0)]
    sim_start_delay_ms: u64,
    /// Simulated nodes: ECS calls (registrations, state reports) in flight at once.
    #[arg(long, default_value_t = 64)]
    sim_report_concurrency: usize,
    /// Simulated nodes: open telemetry sessions and report metrics every
    /// `--telemetry-interval` (off by default: 10,000 nodes would double the server's sockets).
    #[arg(long)]
    sim_telemetry: bool,
    /// A CA (or self-signed) certificate, PEM, to trust for an `https://` server, besides the
    /// system's roots, SSL_CERT_FILE and AWS_CA_BUNDLE.
    #[arg(long, env = "BERTH_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// The node's settings (data dir, zone, bridge, pull behaviour, …) as for `berth up`.
    #[command(flatten)]
    node: ServeArgs,
}

#[derive(clap::Args, Debug)]
struct NsexecCmd {
    #[arg(long)]
    pid: i32,
    /// The init's start time (clock ticks after boot) the runtime noted: any other process
    /// under that pid is refused.
    #[arg(long)]
    start_time: Option<u64>,
    #[arg(last = true)]
    args: Vec<String>,
}

/// What `berth up`/`server` leave in the data dir for `berth env` and other local clients.
#[derive(serde::Serialize, serde::Deserialize)]
struct EndpointFile {
    endpoint: String,
    region: String,
    pid: u32,
    /// The certificate the front door serves (HTTPS only): clients on this machine that
    /// find it here accept exactly it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tls_cert: Option<PathBuf>,
    /// Whether that certificate is one berth made (its own CA, so `berth env` can name it
    /// as `AWS_CA_BUNDLE`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    self_signed: bool,
}

const CREDENTIALS_FILE: &str = "credentials";
const ENDPOINT_FILE: &str = "endpoint.json";
const STORE_FILE: &str = "state.redb";

fn main() -> anyhow::Result<()> {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // Whether `berth agent --token` came from argv (every user's `ps` shows it) or BERTH_TOKEN.
    let token_in_argv = matches
        .subcommand_matches("agent")
        .and_then(|m| m.value_source("token"))
        == Some(clap::parser::ValueSource::CommandLine);
    // The one clock of this process: every part that needs the time is handed it.
    let clock = berth_clock::Clock::system();
    match cli.cmd {
        // No tokio here: libcontainer forks, so the shim stays single-threaded.
        Cmd::Shim(a) => {
            std::process::exit(berth_runtime::shim::run(&berth_runtime::shim::ShimArgs {
                id: a.id,
                bundle: a.bundle,
                state_root: a.state_root,
                log: a.log,
            }))
        }
        Cmd::Nsexec(a) => {
            std::process::exit(berth_runtime::nsexec::run(a.pid, a.start_time, &a.args))
        }
        Cmd::PortForward(a) => {
            let proto = match a.proto.as_str() {
                "udp" => berth_runtime::net::Proto::Udp,
                _ => berth_runtime::net::Proto::Tcp,
            };
            let _ = a.host_port;
            std::process::exit(berth_runtime::forward::serve(proto, a.target, a.watch_pid))
        }
        Cmd::Agent(a) => run_agent(a, token_in_argv, clock),
        Cmd::Ps(a) => client_runtime()?.block_on(ps::ps(a, clock)),
        Cmd::Logs(a) => client_runtime()?.block_on(ps::logs(a)),
        Cmd::Services(a) => client_runtime()?.block_on(services::services(a)),
        Cmd::Service(a) => client_runtime()?.block_on(services::service(a)),
        Cmd::Token(a) => client_runtime()?.block_on(token::run(a)),
        Cmd::Version => {
            println!("berth {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Cmd::Env(args) => print_env(&args.resolve()?),
        Cmd::Push(args) => client_runtime()?.block_on(images::push(args)),
        Cmd::Pull(args) => client_runtime()?.block_on(images::pull(args)),
        Cmd::Up(args) => run_server(args, true, clock),
        Cmd::Server(args) => run_server(args, false, clock),
    }
}

/// `berth up` (with a local node unless configured off) and `berth server` (never).
fn run_server(args: ServeArgs, local_node: bool, clock: berth_clock::Clock) -> anyhow::Result<()> {
    let mut cfg = args.resolve()?;
    cfg.local_node &= local_node;
    init_tracing(&cfg.log);
    raise_open_files_limit();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("berth")
        .build()
        .context("starting the tokio runtime")?;
    rt.block_on(serve(cfg, clock))
}

/// The most of a token file that is read (a token is well under 100 bytes).
const TOKEN_FILE_MAX: u64 = 4096;

/// `KEY:SECRET` as its two parts; `from` names where it came from, for the error.
fn split_token(t: &str, from: &str) -> anyhow::Result<(String, String)> {
    t.split_once(':')
        .filter(|(k, s)| !k.is_empty() && !s.is_empty() && !s.contains(char::is_whitespace))
        .map(|(k, s)| (k.to_string(), s.to_string()))
        .with_context(|| format!("{from} must be ACCESS_KEY_ID:SECRET_ACCESS_KEY"))
}

/// The token in the file `p`: one line, surrounding whitespace ignored.
fn read_token_file(p: &Path) -> anyhow::Result<(String, String)> {
    use std::os::unix::fs::PermissionsExt;
    let what = format!("--token-file {}", p.display());
    let meta = std::fs::metadata(p).with_context(|| format!("reading {what}"))?;
    if !meta.is_file() {
        anyhow::bail!("{what} is not a regular file");
    }
    if meta.len() > TOKEN_FILE_MAX {
        anyhow::bail!("{what} is larger than {TOKEN_FILE_MAX} bytes: not a token");
    }
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(
            "{what} may be read by other users (mode {:o}): chmod 600 it",
            meta.permissions().mode() & 0o777
        );
    }
    let text = std::fs::read_to_string(p).with_context(|| format!("reading {what}"))?;
    split_token(text.trim(), &what)
}

fn run_agent(a: AgentCmd, token_in_argv: bool, clock: berth_clock::Clock) -> anyhow::Result<()> {
    let cfg = a.node.resolve()?;
    init_tracing(&cfg.log);
    let (akid, secret) = match (&a.token, &a.token_file) {
        (Some(t), _) => {
            if token_in_argv {
                tracing::warn!(
                    "--token on the command line is visible to every user of this machine \
                     (ps, /proc/<pid>/cmdline): use --token-file PATH or BERTH_TOKEN instead"
                );
            }
            split_token(
                t.trim(),
                if token_in_argv {
                    "--token"
                } else {
                    "BERTH_TOKEN"
                },
            )?
        }
        (None, Some(p)) => read_token_file(p)?,
        (None, None) => (
            std::env::var("AWS_ACCESS_KEY_ID")
                .context("no --token, --token-file or AWS_ACCESS_KEY_ID")?,
            std::env::var("AWS_SECRET_ACCESS_KEY")
                .context("no --token, --token-file or AWS_SECRET_ACCESS_KEY")?,
        ),
    };
    let creds = berth_auth::Credentials {
        access_key_id: akid,
        secret_access_key: secret,
        session_token: None,
    };
    raise_open_files_limit();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("berth-agent")
        .build()
        .context("starting the tokio runtime")?;
    let trust = berth_client::TlsTrust::load(&berth_client::TrustOptions {
        ca_files: a.ca_file.into_iter().collect(),
        pinned_certs: vec![],
    })
    .context("loading the trusted TLS certificates")?;
    if let Some(n) = a.simulate {
        let sim = berth_agent::simulate::SimConfig {
            endpoint: a.server.trim_end_matches('/').to_string(),
            region: cfg.region.clone(),
            creds,
            trust,
            cluster: a.cluster,
            count: n,
            cpu: a.sim_cpu,
            memory: a.sim_memory,
            zones: a.sim_zones,
            instance_types: a.sim_instance_types,
            start_delay: std::time::Duration::from_millis(a.sim_start_delay_ms),
            report_concurrency: a.sim_report_concurrency,
            stop_timeout: std::time::Duration::from_secs(cfg.container_stop_timeout),
            telemetry_interval: a
                .sim_telemetry
                .then(|| std::time::Duration::from_secs(cfg.telemetry_interval)),
            // This run's own: a restarted simulator registers new instances.
            root: cfg
                .data_dir
                .join("simulated")
                .join(berth_model::arn::new_uuid()),
        };
        return rt.block_on(node::run_simulated(sim, clock));
    }
    rt.block_on(node::run_agent(
        cfg, a.server, a.cluster, creds, trust, clock,
    ))
}

/// Thousands of agent sessions need as many sockets: lift the limit on open files — as root
/// up to the kernel's `nr_open`, otherwise the soft limit to the hard one (as Go does).
fn raise_open_files_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    let ceiling: u64 = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(hard)
        .min(1 << 20);
    if ceiling > hard && setrlimit(Resource::RLIMIT_NOFILE, ceiling, ceiling).is_ok() {
        return;
    }
    if soft < hard
        && let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
    {
        tracing::debug!("cannot raise the open files limit: {e}");
    }
}

fn client_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")
}

fn init_tracing(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

async fn serve(cfg: Config, clock: berth_clock::Clock) -> anyhow::Result<()> {
    let started = clock.instant();
    create_private_dir(&cfg.data_dir)?;
    // Certificate problems stop the start before anything else happens.
    let tls = match &cfg.tls {
        None => None,
        Some(source) => Some(tls::load(source, &cfg.data_dir, cfg.listen)?),
    };
    let store: Arc<dyn berth_store::Store> = Arc::new(
        berth_store::RedbStore::open(&cfg.data_dir.join(STORE_FILE))
            .with_context(|| format!("opening the state store in {}", cfg.data_dir.display()))?,
    );
    let control = berth_control::Control::open(
        berth_control::ControlConfig {
            region: cfg.region.clone(),
            account_id: cfg.account_id.clone(),
            liveness: cfg.liveness,
            service_task_healthy_after: std::time::Duration::from_secs(
                cfg.service_task_healthy_after,
            ),
            agent_endpoint: cfg.agent_endpoint.clone(),
            task_credentials_ttl: std::time::Duration::from_secs(cfg.task_credentials_ttl),
            stopped_task_retention: std::time::Duration::from_secs(cfg.stopped_task_retention),
            clock,
        },
        store.clone(),
    )
    .await
    .context("starting the control plane")?;
    let root = control
        .ensure_root_key()
        .await
        .context("creating the root access key")?;
    write_private(
        &cfg.data_dir.join(CREDENTIALS_FILE),
        format!(
            "[default]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            root.access_key_id, root.secret_access_key
        )
        .as_bytes(),
    )?;

    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("binding {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let endpoint = format!("{scheme}://{addr}");
    write_private(
        &cfg.data_dir.join(ENDPOINT_FILE),
        &serde_json::to_vec(&EndpointFile {
            endpoint: endpoint.clone(),
            region: cfg.region.clone(),
            pid: std::process::id(),
            tls_cert: tls.as_ref().map(|t| t.cert.clone()),
            self_signed: tls.as_ref().is_some_and(|t| t.self_signed),
        })?,
    )?;
    control.set_registry(&addr.to_string(), &endpoint);
    let registry = berth_registry::Registry::open_with(
        berth_registry::RegistryConfig {
            region: cfg.region.clone(),
            account_id: cfg.account_id.clone(),
            host: addr.to_string(),
            create_on_push: cfg.registry_create_on_push,
            bearer_challenge: cfg.registry_bearer,
            tls: tls.is_some(),
        },
        cfg.registry_uploads,
        clock,
        store.clone(),
        &cfg.data_dir.join("registry"),
    )
    .await
    .context("opening the registry")?;
    berth_registry::Registry::spawn_maintenance(
        &registry,
        std::time::Duration::from_secs(cfg.registry_lifecycle_interval),
    );
    let node_password = registry.node_password(&root.access_key_id, 10 * 365 * 24 * 3600);
    let state = Arc::new(berth_api::AppState::new(
        control.clone(),
        Some(registry),
        berth_api::Metrics::new().with_access(cfg.metrics),
    ));
    tracing::info!(
        %endpoint,
        data_dir = %cfg.data_dir.display(),
        startup_ms = clock.elapsed(started).as_millis() as u64,
        "berth is serving; point the aws CLI at it with: eval \"$(berth env --data-dir {})\"",
        cfg.data_dir.display()
    );
    if let Some(t) = &tls {
        tracing::info!(
            cert = %t.cert.display(),
            "serving HTTPS only; clients must trust this certificate (or its CA)"
        );
    }
    let local_trust = tls.as_ref().map(|t| {
        // The local node pulls from this process's registry: it accepts exactly our own
        // certificate, whatever names it carries.
        berth_client::TlsTrust::load(&berth_client::TrustOptions {
            ca_files: vec![],
            pinned_certs: vec![t.cert.clone()],
        })
        .unwrap_or_else(|e| {
            tracing::warn!("the local node trusts the system's roots only: {e}");
            berth_client::TlsTrust::system()
        })
    });
    let agent = node::start(
        &cfg,
        control.clone(),
        &addr.to_string(),
        node_password,
        local_trust,
    )
    .await;
    match tls {
        Some(t) => {
            berth_api::serve_tls(listener, t.config, state, cfg.http, shutdown_signal()).await?
        }
        None => berth_api::serve(listener, state, cfg.http, shutdown_signal()).await?,
    }
    tracing::info!("shutting down");
    if let Some(a) = agent {
        // Containers keep running; the next `berth up` re-attaches to them.
        node::stop(a, &cfg).await;
    }
    control.shutdown().await;
    let _ = std::fs::remove_file(cfg.data_dir.join(ENDPOINT_FILE));
    Ok(())
}

pub(crate) async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("cannot listen for SIGTERM: {e}");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Create the data dir readable by its owner only, or take the group's and others' access
/// away from an existing one: it holds keys, task environments and credential ids.
pub(crate) fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating data dir {}", dir.display()))?;
    let mode = std::fs::metadata(dir)
        .with_context(|| format!("reading data dir {}", dir.display()))?
        .permissions()
        .mode()
        & 0o7777;
    if mode & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode & !0o077))
            .with_context(|| format!("making data dir {} private", dir.display()))?;
        tracing::warn!(
            "data dir {}: mode {mode:o} tightened to {:o} (it holds credentials)",
            dir.display(),
            mode & !0o077
        );
    }
    Ok(())
}

/// Write a file readable by its owner only, atomically (temp file + rename).
fn write_private(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp: PathBuf = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// What a local `berth up`/`server` wrote about its endpoint, if it did.
fn endpoint_file(cfg: &Config) -> Option<EndpointFile> {
    std::fs::read(cfg.data_dir.join(ENDPOINT_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice::<EndpointFile>(&b).ok())
}

/// The servers berth's own clients trust: the system's roots, `AWS_CA_BUNDLE`, and the
/// certificate of the local berth of `local`'s data dir when it serves HTTPS.
pub(crate) fn client_trust(local: &ServeArgs) -> anyhow::Result<berth_client::TlsTrust> {
    let pinned = local
        .resolve()
        .ok()
        .and_then(|c| endpoint_file(&c))
        .and_then(|e| e.tls_cert)
        .filter(|p| p.exists());
    berth_client::TlsTrust::load(&berth_client::TrustOptions {
        ca_files: vec![],
        pinned_certs: pinned.into_iter().collect(),
    })
    .context("loading the trusted TLS certificates")
}

/// Endpoint, keys and region of the berth using `cfg`'s data dir.
pub(crate) fn local_env(cfg: &Config) -> anyhow::Result<(String, String, String, String)> {
    let creds_path = cfg.data_dir.join(CREDENTIALS_FILE);
    let creds = std::fs::read_to_string(&creds_path).with_context(|| {
        format!(
            "no credentials in {} — has `berth up --data-dir {}` run?",
            creds_path.display(),
            cfg.data_dir.display()
        )
    })?;
    let field = |name: &str| {
        creds.lines().find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == name).then(|| v.trim().to_string())
        })
    };
    let akid = field("aws_access_key_id").context("credentials file has no access key id")?;
    let secret = field("aws_secret_access_key").context("credentials file has no secret")?;
    let (endpoint, region) = match endpoint_file(cfg) {
        Some(e) => (e.endpoint, e.region),
        None => (format!("http://{}", cfg.listen), cfg.region.clone()),
    };
    Ok((endpoint, akid, secret, region))
}

/// A signed client for berth's API: the `AWS_*` variables (as `berth env` sets them), else
/// the data dir of a local `berth up`.
pub(crate) fn api_client(local: &ServeArgs) -> anyhow::Result<berth_client::AwsClient> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let (endpoint, akid, secret, region) = match (
        env("AWS_ENDPOINT_URL"),
        env("AWS_ACCESS_KEY_ID"),
        env("AWS_SECRET_ACCESS_KEY"),
    ) {
        (Some(e), Some(a), Some(s)) => (
            e,
            a,
            s,
            env("AWS_REGION")
                .or_else(|| env("AWS_DEFAULT_REGION"))
                .unwrap_or_else(|| "us-east-1".into()),
        ),
        _ => local_env(&local.resolve()?)?,
    };
    Ok(berth_client::AwsClient::with_trust(
        &endpoint,
        &region,
        berth_auth::Credentials {
            access_key_id: akid,
            secret_access_key: secret,
            session_token: None,
        },
        &client_trust(local)?,
    ))
}

fn print_env(cfg: &Config) -> anyhow::Result<()> {
    let (endpoint, akid, secret, region) = local_env(cfg)?;
    println!("export AWS_ENDPOINT_URL={endpoint}");
    println!("export AWS_ACCESS_KEY_ID={akid}");
    println!("export AWS_SECRET_ACCESS_KEY={secret}");
    println!("export AWS_REGION={region}");
    println!("export AWS_DEFAULT_REGION={region}");
    // A certificate berth made is its own CA: the aws CLI and the SDKs can trust it.
    if let Some(cert) = endpoint_file(cfg)
        .filter(|e| e.self_signed)
        .and_then(|e| e.tls_cert)
    {
        println!("export AWS_CA_BUNDLE={}", cert.display());
    }
    Ok(())
}
