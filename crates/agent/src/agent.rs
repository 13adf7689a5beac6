//! A running agent: [`Agent::start`] opens the node's real parts, [`Agent::start_with`] takes
//! any; either registers the container instance, resumes the tasks the node was running, and
//! runs the session with the control plane (reconnecting with jitter) beside the housekeeping
//! and telemetry; [`Agent::shutdown`] leaves the containers running for the next agent.
//! [`Inner`] is what the session, the task runners and their hooks share: the configuration,
//! the node's parts, the tasks and their desired status, the credentials.
//!
//! Must not: handle what a message says (that is [`crate::payload`]'s) or run a task (that is
//! [`crate::engine`]'s).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use berth_client::RegistryAuth;
use berth_model::status::TaskStatus;
use berth_model::wire::ecs::SubmitTaskStateChangeRequest;
use berth_runtime::native::NativeRuntime;
use berth_runtime::{Driver, RuntimeError};
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::backend::{self, Backend, Inbound};
use crate::credentials::{self, CredentialStore, CredentialsEndpoint};
use crate::images::{Images, NodeImages};
use crate::net::{Network, NodeNet};
use crate::state::{StateDir, TaskState};
use crate::{AgentConfig, NodeParts, engine, maintenance, register, telemetry};

/// Why an agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("image store: {0}")]
    Images(#[from] berth_runtime::image_store::ImageError),
    #[error("registering the container instance: {0}")]
    Register(backend::BackendError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// What the session, the task runners and their hooks share (see the module header).
pub(crate) struct Inner {
    pub(crate) cfg: AgentConfig,
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) driver: Arc<dyn Driver>,
    pub(crate) images: Arc<dyn Images>,
    pub(crate) net: Option<Arc<dyn Network>>,
    pub(crate) net_error: Option<String>,
    pub(crate) states: StateDir,
    pub(crate) instance_arn: Mutex<String>,
    /// Desired status of every task this agent runs.
    pub(crate) tasks: Mutex<HashMap<String, watch::Sender<String>>>,
    /// Tasks this agent ran to the end lately (newest last), so that a stale payload never
    /// starts one again.
    pub(crate) finished: Mutex<std::collections::VecDeque<String>>,
    /// The roles' credentials of the tasks this agent runs (memory only).
    pub(crate) credentials: Arc<CredentialStore>,
    /// Where containers reach the credentials endpoint.
    pub(crate) credentials_access: credentials::Access,
}

/// A running agent.
pub struct Agent {
    pub(crate) inner: Arc<Inner>,
    session: tokio::task::JoinHandle<()>,
    /// Housekeeping and telemetry, which end with the agent.
    background: Vec<tokio::task::JoinHandle<()>>,
    /// Stops (and removes its redirect) when the agent goes.
    _credentials_endpoint: Option<CredentialsEndpoint>,
}

/// How many ended tasks the agent remembers (see `Inner::finished`).
const FINISHED_KEPT: usize = 4096;

impl Inner {
    pub(crate) fn task_dir(&self, task_id: &str) -> PathBuf {
        self.cfg.root.join("tasks").join(task_id)
    }

    pub(crate) fn volume_dir(&self, task_id: &str, volume: &str) -> PathBuf {
        self.task_dir(task_id).join("volumes").join(volume)
    }

    /// The wall time now as ECS timestamps carry it: epoch seconds, millisecond precision.
    pub(crate) fn now(&self) -> f64 {
        self.cfg.clock.now().as_secs_f64()
    }

    pub(crate) fn no_network_reason(&self) -> String {
        format!(
            "CannotStartContainerError: container networking is not available on this node ({}); use networkMode host or none",
            self.net_error.as_deref().unwrap_or("not configured")
        )
    }

    /// Report a task state change, retrying while the control plane is unavailable; returns
    /// whether it was acknowledged.
    pub(crate) async fn submit_task(&self, req: SubmitTaskStateChangeRequest) -> bool {
        let mut delay = Duration::from_millis(100);
        for _ in 0..8 {
            match self.backend.submit_task_state_change(req.clone()).await {
                Ok(()) => return true,
                Err(e) if !e.retryable() => {
                    tracing::warn!(task = ?req.task, "state change refused: {e}");
                    return true;
                }
                Err(e) => {
                    tracing::warn!(task = ?req.task, "state change not delivered, retrying: {e}");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
        false
    }

    pub(crate) fn forget(&self, arn: &str) {
        self.tasks.lock().remove(arn);
        // Again after the credentials hook: a refresh may have come in while the task ended.
        self.credentials.remove_task(arn);
        let mut f = self.finished.lock();
        f.push_back(arn.to_string());
        if f.len() > FINISHED_KEPT {
            f.pop_front();
        }
    }

    pub(crate) fn spawn_runner(self: &Arc<Self>, st: TaskState) {
        let (tx, rx) = watch::channel(st.desired.clone());
        self.tasks.lock().insert(st.arn.clone(), tx);
        // Every log line of the runner carries its task.
        let span = tracing::info_span!("task", id = %st.id());
        let runner = engine::Runner::new(self.clone(), st, rx);
        tokio::spawn(tracing::Instrument::instrument(runner.run(), span));
    }
}

impl Agent {
    /// Open the node's native driver, image store, network and state directory, then
    /// [`Self::start_with`] them.
    pub async fn start(cfg: AgentConfig, backend: Arc<dyn Backend>) -> Result<Agent, AgentError> {
        let runtime = NativeRuntime::new(&cfg.root.join("runtime"), &cfg.shim_exe)?;
        if cfg.favor_dynamic_cgroups {
            match NativeRuntime::favor_dynamic_cgroups() {
                Ok(Some(done)) => tracing::info!("{done} (faster container starts)"),
                Ok(None) => {}
                Err(e) => tracing::warn!("cgroup tuning skipped: {e}"),
            }
        }
        let images = NodeImages::open(&cfg)?;
        let (net, net_error): (Option<Arc<dyn Network>>, _) = match &cfg.network {
            Some(nc) => match NodeNet::open(nc.clone(), &cfg.shim_exe).await {
                Ok(n) => (Some(Arc::new(n)), None),
                Err(e) => {
                    tracing::warn!("container networking unavailable: {e}");
                    (None, Some(e))
                }
            },
            None => (None, None),
        };
        let parts = NodeParts {
            driver: Arc::new(runtime),
            images: Arc::new(images),
            net,
            net_error,
            states: StateDir::open(&cfg.root.join("state"))?,
            credentials_endpoint: true,
        };
        Self::start_with(cfg, backend, parts).await
    }

    /// Register (or re-register) the container instance, pick up the tasks the node was
    /// running, and start the session, on the node `parts`.
    pub async fn start_with(
        cfg: AgentConfig,
        backend: Arc<dyn Backend>,
        parts: NodeParts,
    ) -> Result<Agent, AgentError> {
        std::fs::create_dir_all(&cfg.root)?;
        let NodeParts {
            driver,
            images,
            net,
            net_error,
            states,
            credentials_endpoint,
        } = parts;
        // Task roles' credentials: a restarted agent knows its tasks' credential ids (their
        // keys come with the session's first payload).
        let creds = Arc::new(CredentialStore::new());
        let saved = states.all();
        for st in &saved {
            if st.status != Some(TaskStatus::Stopped) {
                creds.expect_task(&st.arn, &st.payload);
            }
        }
        let endpoint = if credentials_endpoint {
            Some(
                CredentialsEndpoint::start(
                    creds.clone(),
                    net.as_ref().map(|n| n.bridge()),
                    &cfg.root.join("credentials-endpoint"),
                )
                .await,
            )
        } else {
            None
        };
        let inner = Arc::new(Inner {
            backend: backend.clone(),
            driver,
            images,
            net,
            net_error,
            states,
            instance_arn: Mutex::new(String::new()),
            tasks: Mutex::new(HashMap::new()),
            finished: Mutex::new(Default::default()),
            credentials: creds,
            credentials_access: endpoint.as_ref().map(|e| e.access()).unwrap_or_default(),
            cfg,
        });
        let arn = register::register(&inner).await?;
        *inner.instance_arn.lock() = arn.clone();
        // Tasks from before a restart: runners re-attach to their containers.
        for st in saved {
            tracing::info!(task = %st.arn, status = ?st.status, "resuming task");
            inner.spawn_runner(st);
        }
        let mut background = vec![tokio::spawn(maintenance::maintenance(inner.clone()))];
        if !inner.cfg.telemetry_interval.is_zero() {
            background.push(tokio::spawn(telemetry::report(inner.clone())));
        }
        let me = inner.clone();
        let session = tokio::spawn(async move {
            let cluster = me.cfg.cluster.clone();
            loop {
                match me.backend.messages(&cluster, &arn).await {
                    Ok(mut rx) => {
                        let mut first = true;
                        while let Some(msg) = rx.recv().await {
                            match msg {
                                Inbound::Payload(msg) => {
                                    if std::mem::take(&mut first) {
                                        me.reconcile(&msg);
                                    }
                                    me.handle_payload(*msg).await;
                                }
                                Inbound::Credentials(c) => me.handle_credentials(*c).await,
                            }
                        }
                        tracing::warn!("agent session ended; reconnecting");
                    }
                    Err(e) => tracing::warn!("agent session: {e}; retrying"),
                }
                // With jitter: the nodes of a restarted server do not all come back at once.
                let jitter = rand::random::<u64>() % 1000;
                tokio::time::sleep(Duration::from_millis(1000 + jitter)).await;
            }
        });
        Ok(Agent {
            inner,
            session,
            background,
            _credentials_endpoint: endpoint,
        })
    }

    /// Replace the credentials for the control plane's registry (a fresh ECR token).
    pub fn set_registry_auth(&self, auth: RegistryAuth) {
        self.inner.images.set_registry_auth(auth);
    }

    pub fn instance_arn(&self) -> String {
        self.inner.instance_arn.lock().clone()
    }

    /// Stop following the control plane. Containers keep running; a new agent on the same
    /// directory picks them up.
    pub fn shutdown(self) {
        self.session.abort();
        for b in &self.background {
            b.abort();
        }
        self.inner.tasks.lock().clear();
    }

    /// How many tasks the agent runs now (started and not yet ended).
    pub fn task_count(&self) -> usize {
        self.inner.tasks.lock().len()
    }

    /// Where the logs of a task's container are kept.
    pub fn log_path(root: &Path, task_id: &str, container: &str) -> PathBuf {
        root.join("runtime")
            .join("logs")
            .join(format!("{}.log", engine::runtime_id(task_id, container)))
    }
}
