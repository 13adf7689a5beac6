//! berth-control: the control plane. Every operation of every service enters through the
//! [`command`] boundary — a typed command, authorized by [`Control::execute`] against what AWS
//! names for it, then run — and the ECS operations are one such table ([`ecs_ops`]). Runs the
//! ECS operations over the state store and hosts the controllers (reconcile loops): node [`liveness`] and the service [`controller`] (its
//! decisions in [`rollout`]); join [`tokens`]; [`iam`]: roles, role sessions (STS and task
//! roles) and the authorization of every caller; the nodes' last [`telemetry`] readings.
//!
//! Owns: the meaning of every ECS operation (validation beyond the wire shape, defaults,
//! ARNs, state transitions), the store key layout ([`keys`]), the records kept there
//! ([`records`]) and the materialized [`view`] that serves reads.
//! Its calls take and return the ECS model's shapes (`berth_model::wire::ecs`): the ECS API is
//! the domain's vocabulary. Must not: speak HTTP or any protocol framing (the api crate
//! does), or keep state that is not in the store: every acknowledged change is committed
//! before the call returns. (What agents were last heard saying, their last metrics readings
//! and the placements in flight are kept in memory: they are not acknowledged state, and a
//! restart starts them afresh.)

pub mod admin_ops;
pub mod agent;
pub mod alloc;
pub mod clusters;
pub mod command;
pub mod controller;
pub mod ecs_ops;
pub mod error;
pub mod fargate;
pub mod housekeeping;
pub mod iam;
pub mod iam_managed;
pub mod iam_ops;
pub mod instances;
pub mod keys;
pub mod liveness;
pub mod paging;
pub mod records;
pub mod rollout;
pub mod services;
pub mod tags;
pub mod task_defs;
pub mod tasks;
pub mod telemetry;
pub mod tokens;
pub mod view;

use std::sync::Arc;

use berth_clock::{Clock, Instant, Timestamp};
use berth_model::arn::Partition;
use berth_store::{Store, Txn, TxnResponse};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

pub use error::{ControlError, Result};
use records::AccessKeyRecord;
use view::View;

/// Settings of one control plane.
#[derive(Debug, Clone)]
pub struct ControlConfig {
    pub region: String,
    pub account_id: String,
    /// Heartbeats, disconnect timeout and lost-instance grace of agent sessions.
    pub liveness: liveness::Liveness,
    /// How long a service's task without container health checks must have been RUNNING
    /// before it counts as healthy (ECS: 40 s).
    pub service_task_healthy_after: std::time::Duration,
    /// The URL `DiscoverPollEndpoint` names for agent sessions; `None`: the front door the
    /// request came to.
    pub agent_endpoint: Option<String>,
    /// How long the credentials handed to a task for its task role last; they are renewed
    /// at half their life. ECS's last about 6 hours.
    pub task_credentials_ttl: std::time::Duration,
    /// How long STOPPED tasks stay visible before housekeeping forgets them (ECS keeps them
    /// for at least an hour).
    pub stopped_task_retention: std::time::Duration,
    /// Where the control plane reads the time (its records' timestamps, ids, session and
    /// token lifetimes, and all its timers). The default is the machine's.
    pub clock: Clock,
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            region: "us-east-1".into(),
            account_id: "000000000000".into(),
            liveness: Default::default(),
            service_task_healthy_after: std::time::Duration::from_secs(40),
            agent_endpoint: None,
            task_credentials_ttl: std::time::Duration::from_secs(6 * 3600),
            stopped_task_retention: std::time::Duration::from_secs_f64(
                housekeeping::STOPPED_TASK_RETENTION_SECS,
            ),
            clock: Clock::system(),
        }
    }
}

/// An access key pair handed to a user.
#[derive(Debug, Clone)]
pub struct AccessKey {
    pub access_key_id: String,
    pub secret_access_key: String,
}

/// The control plane: ECS operations over a [`Store`], reads served from its [`View`].
pub struct Control {
    store: Arc<dyn Store>,
    view: Arc<View>,
    part: Partition,
    commit_latency: Histogram,
    liveness: liveness::Liveness,
    /// What each agent session has been heard saying lately (memory only).
    presence: liveness::PresenceTable,
    /// See [`ControlConfig::clock`].
    clock: Clock,
    /// When this control plane started (liveness clocks count from here).
    epoch: Instant,
    /// What nodes last reported on their telemetry sessions (memory only).
    telemetry: telemetry::Telemetry,
    /// See [`ControlConfig::service_task_healthy_after`].
    healthy_after: std::time::Duration,
    /// See [`ControlConfig::agent_endpoint`].
    agent_endpoint: Option<String>,
    /// berth's own registry: (host images name it by, the front door's URL), once known.
    registry: std::sync::OnceLock<(String, String)>,
    /// Seals role sessions' tokens (kept in the store).
    session_key: Vec<u8>,
    /// See [`ControlConfig::task_credentials_ttl`].
    task_credentials_ttl: std::time::Duration,
    /// See [`ControlConfig::stopped_task_retention`].
    stopped_task_retention: std::time::Duration,
    /// Role policies, parsed.
    policy_cache: iam::PolicyCache,
}

impl Control {
    /// Load the view from the store and start following it.
    pub async fn open(cfg: ControlConfig, store: Arc<dyn Store>) -> Result<Arc<Control>> {
        let view = View::start(store.clone()).await?;
        let session_key = iam::load_or_create_session_key(store.as_ref()).await?;
        let c = Arc::new(Control {
            session_key,
            task_credentials_ttl: cfg.task_credentials_ttl,
            stopped_task_retention: cfg.stopped_task_retention,
            policy_cache: Default::default(),
            store,
            view,
            part: Partition::new(cfg.region, cfg.account_id),
            // 50 µs … ~1.6 s
            commit_latency: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
            liveness: cfg.liveness,
            presence: Default::default(),
            epoch: cfg.clock.instant(),
            clock: cfg.clock,
            telemetry: Default::default(),
            healthy_after: cfg.service_task_healthy_after,
            registry: Default::default(),
            agent_endpoint: cfg.agent_endpoint,
        });
        Control::spawn_housekeeping(Arc::downgrade(&c));
        Control::spawn_liveness(Arc::downgrade(&c));
        Control::spawn_services(Arc::downgrade(&c));
        Ok(c)
    }

    /// Name berth's own registry (`host` as image references name it, and the front door's
    /// URL, where `ecr:GetAuthorizationToken` is served), so that payloads tell the ECS agent
    /// how to log in to it. Set once, when the front door is bound.
    pub fn set_registry(&self, host: &str, endpoint: &str) {
        let _ = self.registry.set((host.to_string(), endpoint.to_string()));
    }

    /// The clock this control plane runs on (the front door and the registry read the same).
    pub fn clock(&self) -> Clock {
        self.clock
    }

    /// The time now, by [`Control::clock`].
    pub(crate) fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// The URL agents are sent to for their sessions, if one is configured.
    pub fn agent_endpoint(&self) -> Option<&str> {
        self.agent_endpoint.as_deref()
    }

    pub fn region(&self) -> &str {
        &self.part.region
    }

    pub fn partition(&self) -> &Partition {
        &self.part
    }

    /// Whether the store answers.
    pub async fn health(&self) -> Result<()> {
        self.store.revision().await?;
        Ok(())
    }

    /// Add the control plane's metrics (store commit latency) to a registry.
    pub fn register_metrics(&self, registry: &mut Registry) {
        registry.register(
            "store_commit_duration_seconds",
            "Latency of state-store transactions, from submit to durable",
            self.commit_latency.clone(),
        );
        self.telemetry.register(registry);
    }

    /// Stop accepting work. Everything acknowledged is already durable.
    pub async fn shutdown(&self) {}

    /// Commit a transaction and wait until the view reflects it.
    pub(crate) async fn commit(&self, txn: Txn) -> Result<TxnResponse> {
        let t = self.clock.instant();
        let resp = self.store.txn(txn).await?;
        self.commit_latency
            .observe(self.clock.elapsed(t).as_secs_f64());
        self.view.wait_for(resp.revision).await;
        Ok(resp)
    }

    /// Store a new record at `key` unless the key exists; `false` when it did (nothing
    /// changed).
    pub(crate) async fn put_new<T: serde::Serialize>(&self, key: &str, rec: &T) -> Result<bool> {
        let r = self
            .commit(Txn {
                compare: vec![berth_store::Compare::missing(key)],
                success: vec![berth_store::Op::put(key, serde_json::to_vec(rec)?)],
                failure: vec![],
            })
            .await?;
        Ok(r.succeeded)
    }

    /// Whether the scheduler's picture, kept up to date event by event, equals one computed
    /// afresh (for tests and debugging; `Err` says where they differ).
    pub fn check_scheduler_picture(&self) -> std::result::Result<(), String> {
        self.view.data.read().check_sched()
    }

    /// The root access key; created (and stored) on first start.
    pub async fn ensure_root_key(&self) -> Result<AccessKey> {
        loop {
            if let Some(k) = self.view.data.read().access_keys().values().find(|k| {
                k.value.user_name == "root" && k.value.status == "Active" && k.value.scope.is_none()
            }) {
                return Ok(AccessKey {
                    access_key_id: k.value.access_key_id.clone(),
                    secret_access_key: k.value.secret_access_key.clone(),
                });
            }
            let creds = berth_auth::new_access_key();
            let rec = AccessKeyRecord {
                access_key_id: creds.access_key_id.clone(),
                secret_access_key: creds.secret_access_key.clone(),
                user_name: "root".to_string(),
                status: "Active".to_string(),
                created_at: self.now().as_secs_f64(),
                scope: None,
            };
            self.put_new(&keys::access_key(&rec.access_key_id), &rec)
                .await?;
        }
    }
}

impl Control {
    /// The IAM principal ARN of an access key (`…:root` or `…:user/<name>`).
    pub fn principal_arn(&self, access_key_id: &str) -> Option<String> {
        let d = self.view.data.read();
        let k = d.access_keys().get(access_key_id)?;
        let acct = &self.part.account_id;
        Some(if k.value.user_name == "root" {
            format!("arn:aws:iam::{acct}:root")
        } else {
            format!("arn:aws:iam::{acct}:user/{}", k.value.user_name)
        })
    }
}

impl berth_auth::SecretLookup for Control {
    fn secret_for(&self, access_key_id: &str) -> Option<String> {
        if berth_auth::session::is_session_key(access_key_id) {
            return Some(self.session_secret(access_key_id));
        }
        let d = self.view.data.read();
        let k = d.access_keys().get(access_key_id)?;
        Control::key_usable(&k.value, self.now().as_secs_f64())
            .then(|| k.value.secret_access_key.clone())
    }
}

impl Control {
    /// Read-modify-write of one stored record with compare-and-swap on its revision, retried
    /// until it lands. `get` finds the current record in the view; `f` changes a copy (or
    /// refuses with an error, which is returned and changes nothing).
    pub(crate) async fn modify<T: serde::Serialize + Clone>(
        &self,
        key: &str,
        get: impl Fn(&view::ViewData) -> Option<view::Entry<T>>,
        missing: impl Fn() -> ControlError,
        mut f: impl FnMut(&mut T) -> Result<()>,
    ) -> Result<T> {
        loop {
            let e = get(&self.view.data.read()).ok_or_else(&missing)?;
            let mut v = (*e.value).clone();
            f(&mut v)?;
            let txn = Txn {
                compare: vec![berth_store::Compare::mod_revision_is(key, e.rev)],
                success: vec![berth_store::Op::put(key, serde_json::to_vec(&v)?)],
                failure: vec![],
            };
            if self.commit(txn).await?.succeeded {
                return Ok(v);
            }
        }
    }
}
