//! The task runner's state machine on the fake driver, image store and network, with a
//! control plane that records what the agent reports. Every test is a real agent (session,
//! payload handling, runner, hooks, state records) on a paused clock: timeouts of minutes
//! take no time, and the times asserted are exact.

use std::sync::atomic::{AtomicUsize, Ordering};

use berth_clock::{Clock, Timestamp};
use berth_model::payload::container_to_acs;
use berth_model::wire::acs::{self, AckRequest, IAMRoleCredentialsAckRequest};
use berth_model::wire::ecs::{
    ContainerDependency, ContainerInstance, HealthCheck, MountPoint, PortMapping,
    RegisterContainerInstanceRequest,
};
use berth_model::wire::tcs::PublishMetricsRequest;
use berth_runtime::fake::{Behaviour, Call, FakeDriver, Match};
use berth_runtime::spec::{ContainerSpec, NetworkNs};
use parking_lot::Mutex;

use super::*;
use crate::backend::{Backend, BackendError, Inbound, TaskNetworkReport};
use crate::fake::{FakeImages, FakeNetwork};
use crate::state::StateDir;
use crate::{Agent, AgentConfig, NodeParts};

// ---- a control plane that records --------------------------------------------------------------

#[derive(Default)]
struct Recorder {
    feed: Mutex<Option<mpsc::Sender<Inbound>>>,
    tasks: Mutex<Vec<SubmitTaskStateChangeRequest>>,
    containers: Mutex<Vec<SubmitContainerStateChangeRequest>>,
    health: Mutex<Vec<PublishHealthRequest>>,
    networks: Mutex<Vec<TaskNetworkReport>>,
    /// Task state changes fail (as if the server were away) this many more times.
    unavailable: AtomicUsize,
}

#[async_trait::async_trait]
impl Backend for Recorder {
    async fn register(
        &self,
        _req: RegisterContainerInstanceRequest,
    ) -> Result<ContainerInstance, BackendError> {
        Ok(ContainerInstance {
            container_instance_arn: Some(
                "arn:aws:ecs:us-east-1:000000000000:container-instance/test/1".into(),
            ),
            ..Default::default()
        })
    }

    async fn messages(
        &self,
        _cluster: &str,
        _instance_arn: &str,
    ) -> Result<mpsc::Receiver<Inbound>, BackendError> {
        let (tx, rx) = mpsc::channel(16);
        *self.feed.lock() = Some(tx);
        Ok(rx)
    }

    async fn ack(&self, _ack: AckRequest) {}

    async fn ack_credentials(&self, _ack: IAMRoleCredentialsAckRequest) {}

    async fn submit_task_state_change(
        &self,
        req: SubmitTaskStateChangeRequest,
    ) -> Result<(), BackendError> {
        if self
            .unavailable
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(BackendError {
                code: "ServerException".into(),
                message: "connection refused".into(),
            });
        }
        self.tasks.lock().push(req);
        Ok(())
    }

    async fn submit_container_state_change(
        &self,
        req: SubmitContainerStateChangeRequest,
    ) -> Result<(), BackendError> {
        self.containers.lock().push(req);
        Ok(())
    }

    async fn publish_health(&self, req: PublishHealthRequest) -> Result<(), BackendError> {
        self.health.lock().push(req);
        Ok(())
    }

    async fn publish_metrics(&self, _req: PublishMetricsRequest) -> Result<(), BackendError> {
        Ok(())
    }

    async fn report_task_network(&self, report: TaskNetworkReport) -> Result<(), BackendError> {
        self.networks.lock().push(report);
        Ok(())
    }
}

// ---- a node on fakes ---------------------------------------------------------------------------

fn arn(id: &str) -> String {
    format!("arn:aws:ecs:us-east-1:000000000000:task/test/{id}")
}

fn def(name: &str) -> ContainerDefinition {
    ContainerDefinition {
        name: Some(name.into()),
        image: Some(format!("img/{name}")),
        essential: Some(true),
        ..Default::default()
    }
}

fn depends(mut d: ContainerDefinition, on: &str, cond: &str) -> ContainerDefinition {
    d.depends_on
        .get_or_insert_with(Vec::new)
        .push(ContainerDependency {
            container_name: Some(on.into()),
            condition: Some(cond.into()),
        });
    d
}

fn checked(
    mut d: ContainerDefinition,
    interval: i32,
    retries: i32,
    start: i32,
) -> ContainerDefinition {
    d.health_check = Some(HealthCheck {
        command: Some(vec!["CMD-SHELL".into(), "check".into()]),
        interval: Some(interval),
        timeout: Some(1),
        retries: Some(retries),
        start_period: Some(start),
    });
    d
}

fn task(id: &str, mode: &str, defs: &[ContainerDefinition]) -> acs::Task {
    acs::Task {
        arn: Some(arn(id)),
        desired_status: Some("RUNNING".into()),
        containers: Some(
            defs.iter()
                .map(|d| container_to_acs(d, None, None))
                .collect(),
        ),
        network_mode: Some(mode.into()),
        family: Some("fam".into()),
        version: Some("1".into()),
        ..Default::default()
    }
}

fn stopped(mut t: acs::Task) -> acs::Task {
    t.desired_status = Some("STOPPED".into());
    t
}

/// The wall time a test node's clock starts at (2001-09-09T01:46:40Z: far from today, so a
/// time read from the machine's clock would show).
const START: Timestamp = Timestamp::from_secs(1_000_000_000);

fn config(root: &std::path::Path, clock: Clock) -> AgentConfig {
    AgentConfig {
        cluster: "test".into(),
        root: root.to_path_buf(),
        shim_exe: "berth".into(),
        zone: None,
        pull_policy: berth_runtime::PullPolicy::Default,
        stop_timeout: Duration::from_secs(30),
        reserved_ports: vec![],
        local_registry: None,
        local_registry_tls: false,
        tls_trust: None,
        network: None,
        attributes: vec![],
        favor_dynamic_cgroups: false,
        log_max_size: 1 << 20,
        log_max_files: 2,
        log_retention: Duration::from_secs(3600),
        image_cleanup_interval: Duration::from_secs(3600),
        image_minimum_age: Duration::from_secs(3600),
        guard: Default::default(),
        telemetry_interval: Duration::from_secs(20),
        resources: Some((4096, 8192)),
        clock,
    }
}

struct Node {
    agent: Option<Agent>,
    cp: Arc<Recorder>,
    driver: FakeDriver,
    images: FakeImages,
    net: Option<FakeNetwork>,
    states: StateDir,
    cfg: AgentConfig,
    clock: Clock,
    t0: Instant,
    _dir: tempfile::TempDir,
}

impl Node {
    async fn new() -> Node {
        Node::with(|_, _| {}).await
    }

    /// A node whose configuration (and network) `f` may change first.
    async fn with(f: impl FnOnce(&mut AgentConfig, &mut Option<FakeNetwork>)) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let clock = Clock::starting_at(START);
        let mut cfg = config(dir.path(), clock);
        let mut net = Some(FakeNetwork::default());
        f(&mut cfg, &mut net);
        let mut n = Node {
            agent: None,
            cp: Arc::new(Recorder::default()),
            driver: FakeDriver::new(clock, Behaviour::default()).recording(),
            images: FakeImages::default().recording(),
            net,
            states: StateDir::memory(),
            cfg,
            clock,
            t0: clock.instant(),
            _dir: dir,
        };
        n.start().await;
        n
    }

    async fn start(&mut self) {
        let parts = NodeParts {
            driver: Arc::new(self.driver.clone()),
            images: Arc::new(self.images.clone()),
            net: self
                .net
                .clone()
                .map(|n| Arc::new(n) as Arc<dyn crate::net::Network>),
            net_error: self.net.is_none().then(|| "no bridge here".to_string()),
            states: self.states.clone(),
            credentials_endpoint: false,
        };
        let agent = Agent::start_with(self.cfg.clone(), self.cp.clone(), parts)
            .await
            .unwrap();
        self.agent = Some(agent);
    }

    /// The agent goes away (its containers keep running) and a new one starts on the same
    /// node.
    async fn restart(&mut self) {
        self.agent.take().unwrap().shutdown();
        *self.cp.feed.lock() = None;
        self.start().await;
    }

    /// A payload with these tasks.
    async fn send(&self, tasks: Vec<acs::Task>) {
        let msg = acs::PayloadMessage {
            cluster_arn: Some("arn:aws:ecs:us-east-1:000000000000:cluster/test".into()),
            tasks: Some(tasks),
            ..Default::default()
        };
        loop {
            let feed = self.cp.feed.lock().clone();
            if let Some(f) = feed
                && f.send(Inbound::Payload(Box::new(msg.clone())))
                    .await
                    .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The task statuses reported for task `id`, in order.
    fn statuses(&self, id: &str) -> Vec<String> {
        let arn = arn(id);
        self.cp
            .tasks
            .lock()
            .iter()
            .filter(|r| r.task.as_deref() == Some(arn.as_str()))
            .map(|r| r.status.clone().unwrap_or_default())
            .collect()
    }

    /// Wait (an hour at most, on the paused clock) for task `id` to be reported `status`.
    async fn until(&self, id: &str, status: &str) -> SubmitTaskStateChangeRequest {
        let arn = arn(id);
        let deadline = self.clock.instant() + Duration::from_secs(3600);
        loop {
            let found = self
                .cp
                .tasks
                .lock()
                .iter()
                .find(|r| {
                    r.task.as_deref() == Some(arn.as_str()) && r.status.as_deref() == Some(status)
                })
                .cloned();
            if let Some(r) = found {
                return r;
            }
            assert!(
                self.clock.instant() < deadline,
                "task {id} was never reported {status}: {:?}",
                self.statuses(id)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Let the node work for `d`.
    async fn idle(&self, d: Duration) {
        tokio::time::sleep(d).await;
    }

    /// When (since the node started) each call matching `f` happened.
    fn when(&self, f: impl Fn(&Call) -> bool) -> Vec<Duration> {
        self.driver
            .calls()
            .into_iter()
            .filter(|(_, c)| f(c))
            .map(|(t, _)| t - self.t0)
            .collect()
    }

    fn started(&self) -> Vec<String> {
        self.driver
            .calls()
            .into_iter()
            .filter_map(|(_, c)| match c {
                Call::Start { id, .. } => Some(id),
                _ => None,
            })
            .collect()
    }

    fn spec_of(&self, id: &str) -> ContainerSpec {
        self.driver
            .calls()
            .into_iter()
            .find_map(|(_, c)| match c {
                Call::Start { id: i, spec } if i == id => Some(*spec),
                _ => None,
            })
            .unwrap_or_else(|| panic!("{id} was not started"))
    }

    /// When container `id` started (since the node started).
    fn start_of(&self, id: &str) -> Duration {
        self.when(|c| matches!(c, Call::Start { id: i, .. } if i == id))[0]
    }

    fn signalled(&self, id: &str, s: Signal) -> Vec<Duration> {
        self.when(|c| matches!(c, Call::Signal { id: i, signal } if i == id && *signal == s))
    }
}

fn container<'a>(r: &'a SubmitTaskStateChangeRequest, name: &str) -> &'a ContainerStateChange {
    r.containers
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|c| c.container_name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no container {name} in {r:?}"))
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

// ---- the task's life ---------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_task_runs_and_stops_when_asked() {
    let n = Node::new().await;
    let t = task("t1", "none", &[def("app")]);
    n.send(vec![t.clone()]).await;
    let r = n.until("t1", "RUNNING").await;
    let c = container(&r, "app");
    assert_eq!(c.status.as_deref(), Some("RUNNING"));
    assert_eq!(c.runtime_id.as_deref(), Some("t1-app"));
    assert!(c.image_digest.as_deref().unwrap().starts_with("sha256:"));
    assert!(r.pull_started_at.is_some() && r.pull_stopped_at.is_some());
    assert_eq!(n.images.pulls(), ["img/app"]);
    assert_eq!(n.driver.running(), ["t1-app"]);
    assert!(n.states.load("t1").is_some(), "the task is recorded");

    n.send(vec![stopped(t)]).await;
    let r = n.until("t1", "STOPPED").await;
    assert_eq!(n.statuses("t1"), ["RUNNING", "STOPPING", "STOPPED"]);
    assert_eq!(container(&r, "app").exit_code, Some(143), "SIGTERM");
    assert!(r.execution_stopped_at.is_some());
    assert!(n.driver.running().is_empty());
    assert_eq!(
        n.when(|c| matches!(c, Call::Cleanup { id } if id == "t1-app"))
            .len(),
        1
    );
    n.idle(secs(1)).await;
    assert!(
        n.states.load("t1").is_none(),
        "forgotten once STOPPED was taken"
    );
}

#[tokio::test(start_paused = true)]
async fn an_essential_exit_stops_the_task() {
    let n = Node::new().await;
    n.driver.script(
        Match::Name("app".into()),
        Behaviour {
            exit_after: Some((secs(5), Exit::Code(3))),
            ..Default::default()
        },
    );
    n.send(vec![task("t1", "none", &[def("app"), def("sidecar")])])
        .await;
    let r = n.until("t1", "STOPPED").await;
    assert_eq!(
        r.reason.as_deref(),
        Some("Essential container in task exited")
    );
    assert_eq!(container(&r, "app").exit_code, Some(3));
    assert_eq!(container(&r, "sidecar").exit_code, Some(143));
    let term = n.signalled("t1-sidecar", Signal::SIGTERM);
    assert_eq!(term, [n.start_of("t1-app") + secs(5)]);
    assert!(
        n.signalled("t1-app", Signal::SIGTERM).is_empty(),
        "it had ended"
    );
}

#[tokio::test(start_paused = true)]
async fn a_non_essential_exit_is_reported_and_the_task_runs_on() {
    let n = Node::new().await;
    n.driver.script(
        Match::Name("worker".into()),
        Behaviour {
            exit_after: Some((secs(2), Exit::Code(0))),
            ..Default::default()
        },
    );
    let mut worker = def("worker");
    worker.essential = Some(false);
    n.send(vec![task("t1", "none", &[def("app"), worker])])
        .await;
    n.until("t1", "RUNNING").await;
    n.idle(secs(10)).await;
    let cs = n.cp.containers.lock().clone();
    assert_eq!(cs.len(), 1);
    assert_eq!(cs[0].container_name.as_deref(), Some("worker"));
    assert_eq!(cs[0].status.as_deref(), Some("STOPPED"));
    assert_eq!(cs[0].exit_code, Some(0));
    assert_eq!(n.statuses("t1"), ["RUNNING"]);
    assert_eq!(n.driver.running(), ["t1-app"]);
}

#[tokio::test(start_paused = true)]
async fn an_out_of_memory_kill_is_reported_as_such() {
    let n = Node::new().await;
    n.send(vec![task("t1", "none", &[def("app")])]).await;
    n.until("t1", "RUNNING").await;
    n.driver.exit("t1-app", Exit::OutOfMemory);
    let r = n.until("t1", "STOPPED").await;
    let c = container(&r, "app");
    assert_eq!(c.exit_code, Some(137));
    assert_eq!(
        c.reason.as_deref(),
        Some("OutOfMemoryError: Container killed due to memory usage")
    );
}

#[tokio::test(start_paused = true)]
async fn a_task_stopped_before_its_containers_start_never_starts_them() {
    let n = Node::new().await;
    n.images.delay("img/app", secs(10));
    let t = task("t1", "none", &[def("app")]);
    n.send(vec![t.clone()]).await;
    n.idle(secs(1)).await;
    n.send(vec![stopped(t)]).await;
    let r = n.until("t1", "STOPPED").await;
    assert_eq!(n.statuses("t1"), ["STOPPED"], "no RUNNING, no STOPPING");
    assert!(n.started().is_empty());
    assert_eq!(container(&r, "app").exit_code, None);
}

#[tokio::test(start_paused = true)]
async fn a_stale_payload_does_not_start_a_finished_task_again() {
    let n = Node::new().await;
    let t = task("t1", "none", &[def("app")]);
    n.send(vec![t.clone()]).await;
    n.until("t1", "RUNNING").await;
    n.send(vec![stopped(t.clone())]).await;
    n.until("t1", "STOPPED").await;
    n.send(vec![t]).await;
    n.idle(secs(5)).await;
    assert_eq!(n.started().len(), 1);
    assert_eq!(
        n.statuses("t1"),
        ["RUNNING", "STOPPING", "STOPPED", "STOPPED"]
    );
}

#[tokio::test(start_paused = true)]
async fn state_changes_are_retried_while_the_control_plane_is_away() {
    let n = Node::new().await;
    n.cp.unavailable.store(3, Ordering::SeqCst);
    n.send(vec![task("t1", "none", &[def("app")])]).await;
    n.until("t1", "RUNNING").await;
    assert_eq!(n.cp.unavailable.load(Ordering::SeqCst), 0);
    assert_eq!(n.statuses("t1"), ["RUNNING"], "delivered once");
}

// ---- dependsOn ---------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn containers_start_in_dependency_order() {
    let n = Node::new().await;
    let web = depends(def("web"), "db", "START");
    let proxy = depends(def("proxy"), "web", "START");
    n.send(vec![task("t1", "none", &[proxy, web, def("db")])])
        .await;
    let r = n.until("t1", "RUNNING").await;
    assert_eq!(n.started(), ["t1-db", "t1-web", "t1-proxy"]);
    assert!(
        r.containers
            .unwrap()
            .iter()
            .all(|c| c.status.as_deref() == Some("RUNNING"))
    );
}

#[tokio::test(start_paused = true)]
async fn complete_and_success_wait_for_the_exit() {
    let n = Node::new().await;
    for (name, after) in [("migrate", 3), ("seed", 6)] {
        n.driver.script(
            Match::Name(name.into()),
            Behaviour {
                exit_after: Some((secs(after), Exit::Code(0))),
                ..Default::default()
            },
        );
    }
    let mut migrate = def("migrate");
    migrate.essential = Some(false);
    let mut seed = def("seed");
    seed.essential = Some(false);
    let app = depends(
        depends(def("app"), "migrate", "SUCCESS"),
        "seed",
        "COMPLETE",
    );
    n.send(vec![task("t1", "none", &[app, migrate, seed])])
        .await;
    let r = n.until("t1", "RUNNING").await;
    assert_eq!(n.started(), ["t1-migrate", "t1-seed", "t1-app"]);
    let app_at = n.start_of("t1-app") - n.start_of("t1-seed");
    assert!(app_at >= secs(6), "after seed ended: {app_at:?}");
    assert_eq!(container(&r, "migrate").exit_code, Some(0));
}

#[tokio::test(start_paused = true)]
async fn a_failed_success_dependency_fails_the_task() {
    let n = Node::new().await;
    n.driver.script(
        Match::Name("migrate".into()),
        Behaviour {
            exit_after: Some((secs(2), Exit::Code(1))),
            ..Default::default()
        },
    );
    let mut migrate = def("migrate");
    migrate.essential = Some(false);
    let app = depends(def("app"), "migrate", "SUCCESS");
    n.send(vec![task("t1", "none", &[app, migrate])]).await;
    let r = n.until("t1", "STOPPED").await;
    assert_eq!(
        r.reason.as_deref(),
        Some(
            "DependencyConditionNotMet: container app depends on migrate exiting successfully; it exited with 1"
        )
    );
    assert_eq!(n.started(), ["t1-migrate"]);
    assert_eq!(n.statuses("t1"), ["STOPPING", "STOPPED"]);
}

#[tokio::test(start_paused = true)]
async fn a_healthy_dependency_waits_for_the_check() {
    let n = Node::new().await;
    let db = checked(def("db"), 5, 3, 0);
    let app = depends(def("app"), "db", "HEALTHY");
    n.send(vec![task("t1", "none", &[app, db])]).await;
    n.until("t1", "RUNNING").await;
    let app_at = n.start_of("t1-app") - n.start_of("t1-db");
    assert!(app_at >= secs(5), "after the first check: {app_at:?}");
    let h = n.cp.health.lock().clone();
    let c = &h[0].tasks.as_ref().unwrap()[0].containers.as_ref().unwrap()[0];
    assert_eq!(c.container_name.as_deref(), Some("db"));
    assert_eq!(c.health_status.as_deref(), Some("HEALTHY"));
}

#[tokio::test(start_paused = true)]
async fn an_unhealthy_dependency_fails_the_task() {
    let n = Node::new().await;
    n.driver.script(
        Match::Name("db".into()),
        Behaviour {
            exec_code: 1,
            ..Default::default()
        },
    );
    let db = checked(def("db"), 1, 2, 0);
    let app = depends(def("app"), "db", "HEALTHY");
    n.send(vec![task("t1", "none", &[app, db])]).await;
    let r = n.until("t1", "STOPPED").await;
    assert_eq!(
        r.reason.as_deref(),
        Some(
            "DependencyConditionNotMet: container app depends on db being HEALTHY; it is UNHEALTHY"
        )
    );
    assert_eq!(n.started(), ["t1-db"]);
}

#[tokio::test(start_paused = true)]
async fn waiting_for_dependencies_times_out() {
    let n = Node::new().await;
    let mut app = depends(def("app"), "db", "COMPLETE");
    app.start_timeout = Some(10);
    n.send(vec![task("t1", "none", &[app, def("db")])]).await;
    let r = n.until("t1", "STOPPED").await;
    assert_eq!(
        r.reason.as_deref(),
        Some(
            "DependencyConditionNotMet: container app timed out waiting for its dependencies (10s)"
        )
    );
    let stop = n.signalled("t1-db", Signal::SIGTERM)[0] - n.start_of("t1-db");
    assert!(stop >= secs(10) && stop < secs(11), "{stop:?}");
}

// ---- stopping ----------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn stop_goes_in_reverse_dependency_order() {
    let n = Node::new().await;
    n.driver.script(
        Match::Name("app".into()),
        Behaviour {
            term_delay: secs(2),
            on_term: Exit::Code(0),
            ..Default::default()
        },
    );
    let app = depends(def("app"), "db", "START");
    let t = task("t1", "none", &[app, def("db")]);
    n.send(vec![t.clone()]).await;
    n.until("t1", "RUNNING").await;
    n.idle(secs(1)).await;
    n.send(vec![stopped(t)]).await;
    let r = n.until("t1", "STOPPED").await;
    let app_term = n.signalled("t1-app", Signal::SIGTERM);
    let db_term = n.signalled("t1-db", Signal::SIGTERM);
    assert_eq!(
        db_term[0] - app_term[0],
        secs(2),
        "db only once app had ended"
    );
    assert_eq!(container(&r, "app").exit_code, Some(0));
    assert_eq!(container(&r, "db").exit_code, Some(143));
}

#[tokio::test(start_paused = true)]
async fn sigkill_follows_the_containers_stop_timeout() {
    let n = Node::new().await;
    n.driver.script(
        Match::Name("app".into()),
        Behaviour {
            ignore_term: true,
            ..Default::default()
        },
    );
    let mut app = def("app");
    app.stop_timeout = Some(7);
    let t = task("t1", "none", &[app]);
    n.send(vec![t.clone()]).await;
    n.until("t1", "RUNNING").await;
    n.send(vec![stopped(t)]).await;
    let r = n.until("t1", "STOPPED").await;
    let term = n.signalled("t1-app", Signal::SIGTERM);
    let kill = n.signalled("t1-app", Signal::SIGKILL);
    assert_eq!(kill[0] - term[0], secs(7));
    assert_eq!(container(&r, "app").exit_code, Some(137));
}

#[tokio::test(start_paused = true)]
async fn the_agents_stop_timeout_is_the_default() {
    let n = Node::with(|c, _| c.stop_timeout = secs(3)).await;
    n.driver.script(
        Match::Name("app".into()),
        Behaviour {
            ignore_term: true,
            ..Default::default()
        },
    );
    let t = task("t1", "none", &[def("app")]);
    n.send(vec![t.clone()]).await;
    n.until("t1", "RUNNING").await;
    n.send(vec![stopped(t)]).await;
    n.until("t1", "STOPPED").await;
    let term = n.signalled("t1-app", Signal::SIGTERM);
    let kill = n.signalled("t1-app", Signal::SIGKILL);
    assert_eq!(kill[0] - term[0], secs(3));
}

// ---- health ------------------------------------------------------------------------------------

fn published(n: &Node) -> Vec<String> {
    n.cp.health
        .lock()
        .iter()
        .map(|h| {
            h.tasks.as_ref().unwrap()[0].containers.as_ref().unwrap()[0]
                .health_status
                .clone()
                .unwrap()
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn health_transitions_are_published() {
    let n = Node::new().await;
    n.send(vec![task("t1", "none", &[checked(def("app"), 2, 2, 0)])])
        .await;
    n.until("t1", "RUNNING").await;
    n.idle(secs(3)).await;
    assert_eq!(published(&n), ["HEALTHY"]);
    let failing = Behaviour {
        exec_code: 1,
        ..Default::default()
    };
    n.driver.script(Match::Name("app".into()), failing);
    n.idle(secs(2)).await;
    assert_eq!(published(&n), ["HEALTHY"], "one failure is not enough");
    n.idle(secs(2)).await;
    assert_eq!(published(&n), ["HEALTHY", "UNHEALTHY"]);
    n.driver
        .script(Match::Name("app".into()), Behaviour::default());
    n.idle(secs(2)).await;
    assert_eq!(published(&n), ["HEALTHY", "UNHEALTHY", "HEALTHY"]);
    assert_eq!(
        n.states
            .load("t1")
            .unwrap()
            .container("app")
            .unwrap()
            .health
            .as_deref(),
        Some("HEALTHY")
    );
}

/// The times the agent reports are its clock's, not the machine's: on a clock that reads
/// START, a task sent 90 s in whose image takes 5 s to pull reports its pull as START+90 to
/// START+95, its container as started at START+95, its first health verdict (a check every
/// 10 s) at START+105, and its end when it is stopped at START+155.
#[tokio::test(start_paused = true)]
async fn reported_times_follow_the_agents_clock() {
    let at = |s: u64| Some(START + secs(s));
    let reported = |t: Option<f64>| t.map(Timestamp::from_secs_f64);
    let n = Node::new().await;
    n.images.delay("img/app", secs(5));
    n.idle(secs(90)).await;
    let t = task("t1", "none", &[checked(def("app"), 10, 1, 0)]);
    n.send(vec![t.clone()]).await;
    let r = n.until("t1", "RUNNING").await;
    assert_eq!(reported(r.pull_started_at), at(90));
    assert_eq!(reported(r.pull_stopped_at), at(95));
    let saved = n.states.load("t1").unwrap();
    assert_eq!(reported(saved.container("app").unwrap().started_at), at(95));

    n.idle(secs(15)).await;
    let h = n.cp.health.lock()[0].clone();
    assert_eq!(reported(h.timestamp), at(105));
    let c = &h.tasks.as_ref().unwrap()[0].containers.as_ref().unwrap()[0];
    assert_eq!(c.health_status.as_deref(), Some("HEALTHY"));
    assert_eq!(reported(c.status_since), at(105));

    // (From the node's start: `until` returns on its own polling tick.)
    tokio::time::sleep_until(n.t0 + secs(155)).await;
    n.send(vec![stopped(t)]).await;
    let r = n.until("t1", "STOPPED").await;
    assert_eq!(reported(r.execution_stopped_at), at(155));
    assert_eq!(reported(r.pull_started_at), at(90), "kept from the start");
}

#[tokio::test(start_paused = true)]
async fn failures_in_the_start_period_do_not_count() {
    let n = Node::new().await;
    n.driver.script(
        Match::Name("app".into()),
        Behaviour {
            exec_hangs: true,
            ..Default::default()
        },
    );
    n.send(vec![task("t1", "none", &[checked(def("app"), 2, 1, 10)])])
        .await;
    n.until("t1", "RUNNING").await;
    n.idle(secs(9)).await;
    assert!(published(&n).is_empty());
    n.idle(secs(6)).await;
    assert_eq!(published(&n), ["UNHEALTHY"]);
    let execs = n.when(|c| matches!(c, Call::Exec { id, .. } if id == "t1-app"));
    assert!(execs.len() >= 4, "a probe every interval: {execs:?}");
}

#[tokio::test(start_paused = true)]
async fn health_checks_end_with_their_container() {
    let n = Node::new().await;
    let mut job = checked(def("job"), 1, 1, 0);
    job.essential = Some(false);
    n.driver.script(
        Match::Name("job".into()),
        Behaviour {
            exit_after: Some((secs(3), Exit::Code(0))),
            ..Default::default()
        },
    );
    n.send(vec![task("t1", "none", &[def("app"), job])]).await;
    n.until("t1", "RUNNING").await;
    n.idle(secs(10)).await;
    let end = n.start_of("t1-job") + secs(3);
    let execs = n.when(|c| matches!(c, Call::Exec { id, .. } if id == "t1-job"));
    assert!(
        execs.len() >= 2 && execs.iter().all(|t| *t <= end),
        "{execs:?}"
    );
}

// ---- restarts ----------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_restarted_agent_reattaches_to_running_containers() {
    let mut n = Node::new().await;
    let t = task("t1", "none", &[checked(def("app"), 2, 1, 0)]);
    n.send(vec![t.clone()]).await;
    n.until("t1", "RUNNING").await;
    n.restart().await;
    n.send(vec![t.clone()]).await;
    n.idle(secs(5)).await;
    assert_eq!(n.started(), ["t1-app"], "not started twice");
    let found = n.when(|c| matches!(c, Call::Attach { id, found: true } if id == "t1-app"));
    assert_eq!(found.len(), 1);
    let probes = n.when(|c| matches!(c, Call::Exec { .. }));
    assert!(probes.iter().any(|t| *t >= secs(2)), "the check runs again");
    n.send(vec![stopped(t)]).await;
    let r = n.until("t1", "STOPPED").await;
    assert_eq!(container(&r, "app").exit_code, Some(143));
    assert_eq!(n.statuses("t1"), ["RUNNING", "STOPPING", "STOPPED"]);
}

#[tokio::test(start_paused = true)]
async fn a_container_whose_start_the_agent_did_not_record_is_found_again() {
    // The agent died between asking the driver to start the container and saving its pids:
    // the record says CREATED with no pids. The restarted agent asks the driver for them and
    // re-attaches instead of reporting the running container as never started.
    let mut n = Node::new().await;
    let t = task("t1", "none", &[def("app")]);
    n.send(vec![t.clone()]).await;
    n.until("t1", "RUNNING").await;
    n.agent.take().unwrap().shutdown();
    let mut st = n.states.load("t1").unwrap();
    let c = st.container_mut("app").unwrap();
    (c.status, c.pid, c.shim_pid, c.started_at) = (NodeContainerStatus::Created, 0, 0, None);
    n.states.save(&st).unwrap();
    *n.cp.feed.lock() = None;
    n.start().await;
    n.send(vec![t.clone()]).await;
    n.idle(secs(5)).await;
    assert_eq!(n.started(), ["t1-app"], "not started twice");
    let found = n.when(|c| matches!(c, Call::Attach { id, found: true } if id == "t1-app"));
    assert_eq!(found.len(), 1, "re-attached by the pid the driver gave");
    n.send(vec![stopped(t)]).await;
    let r = n.until("t1", "STOPPED").await;
    assert_eq!(container(&r, "app").exit_code, Some(143));
}

#[tokio::test(start_paused = true)]
async fn a_container_that_ended_while_the_agent_was_away_is_reported() {
    let mut n = Node::new().await;
    let t = task("t1", "none", &[def("app")]);
    n.send(vec![t.clone()]).await;
    n.until("t1", "RUNNING").await;
    n.agent.take().unwrap().shutdown();
    n.driver.exit("t1-app", Exit::Code(7));
    *n.cp.feed.lock() = None;
    n.start().await;
    n.send(vec![t]).await;
    let r = n.until("t1", "STOPPED").await;
    assert_eq!(container(&r, "app").exit_code, Some(7));
    assert_eq!(
        r.reason.as_deref(),
        Some("Essential container in task exited")
    );
    assert_eq!(n.started().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_task_the_control_plane_dropped_is_stopped_on_reconnect() {
    let mut n = Node::new().await;
    n.send(vec![task("t1", "none", &[def("app")])]).await;
    n.until("t1", "RUNNING").await;
    n.restart().await;
    n.send(vec![]).await;
    n.until("t1", "STOPPED").await;
    assert!(n.driver.running().is_empty());
}

#[tokio::test(start_paused = true)]
async fn bridge_ports_survive_an_agent_restart() {
    let mut n = Node::new().await;
    let mut app = def("app");
    app.port_mappings = Some(vec![PortMapping {
        container_port: Some(80),
        host_port: Some(8080),
        ..Default::default()
    }]);
    let t = task("t1", "bridge", &[app]);
    n.send(vec![t.clone()]).await;
    n.until("t1", "RUNNING").await;
    let before = n
        .states
        .load("t1")
        .unwrap()
        .container("app")
        .unwrap()
        .forwarders
        .clone();
    n.restart().await;
    n.send(vec![t.clone()]).await;
    n.idle(secs(2)).await;
    let after = n
        .states
        .load("t1")
        .unwrap()
        .container("app")
        .unwrap()
        .forwarders
        .clone();
    assert_eq!(before, after, "the forwarder was adopted, not replaced");
    assert_eq!(n.net.as_ref().unwrap().ports(), [8080]);
    n.send(vec![stopped(t)]).await;
    n.until("t1", "STOPPED").await;
    assert!(n.net.as_ref().unwrap().ports().is_empty());
}

// ---- failures at each step ---------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn the_guard_refuses_before_anything_is_pulled() {
    let n = Node::with(|c, _| c.guard.disable_privileged = true).await;
    let mut app = def("app");
    app.privileged = Some(true);
    n.send(vec![task("t1", "none", &[app])]).await;
    let r = n.until("t1", "STOPPED").await;
    assert_eq!(
        r.reason.as_deref(),
        Some(
            "CannotStartContainerError: container app: privileged containers are disabled on this node"
        )
    );
    assert!(n.images.pulls().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_failed_pull_fails_the_task() {
    let n = Node::new().await;
    n.images.fail("img/app", "manifest unknown");
    n.send(vec![task("t1", "none", &[def("app"), def("sidecar")])])
        .await;
    let r = n.until("t1", "STOPPED").await;
    let why = "CannotPullContainerError: failed to resolve ref img/app: manifest unknown";
    assert_eq!(r.reason.as_deref(), Some(why));
    assert_eq!(container(&r, "app").reason.as_deref(), Some(why));
    assert!(n.started().is_empty());
    assert_eq!(n.statuses("t1"), ["STOPPED"]);
}

#[tokio::test(start_paused = true)]
async fn a_failed_task_cgroup_fails_the_task() {
    let n = Node::new().await;
    n.driver.fail_task_cgroups(Some("no memory controller"));
    n.send(vec![task("t1", "none", &[def("app")])]).await;
    let r = n.until("t1", "STOPPED").await;
    assert_eq!(
        r.reason.as_deref(),
        Some("CannotStartContainerError: task limits: create /berth/t1: no memory controller")
    );
    assert!(n.started().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_container_without_a_command_fails_the_task() {
    let n = Node::new().await;
    n.images.config("img/app", serde_json::json!({}));
    n.send(vec![task("t1", "none", &[def("app")])]).await;
    let r = n.until("t1", "STOPPED").await;
    assert!(
        r.reason
            .as_deref()
            .unwrap()
            .starts_with("CannotStartContainerError: container app: no command specified"),
        "{r:?}"
    );
    assert!(n.started().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_failed_start_fails_the_task_and_takes_its_network_back() {
    let n = Node::new().await;
    n.driver.script(
        Match::Image("img/app".into()),
        Behaviour {
            fail_start: Some("exec /app: no such file or directory".into()),
            ..Default::default()
        },
    );
    let mut app = def("app");
    app.port_mappings = Some(vec![PortMapping {
        container_port: Some(80),
        host_port: Some(0),
        ..Default::default()
    }]);
    n.send(vec![task("t1", "bridge", &[app])]).await;
    let r = n.until("t1", "STOPPED").await;
    let why = "CannotStartContainerError: exec /app: no such file or directory";
    assert_eq!(r.reason.as_deref(), Some(why));
    assert_eq!(container(&r, "app").reason.as_deref(), Some(why));
    let net = n.net.as_ref().unwrap();
    assert!(net.endpoints().is_empty(), "{:?}", net.endpoints());
    assert!(net.ports().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_taken_host_port_fails_the_start() {
    let n = Node::new().await;
    n.net.as_ref().unwrap().take_port(8080);
    let mut app = def("app");
    app.port_mappings = Some(vec![PortMapping {
        container_port: Some(80),
        host_port: Some(8080),
        ..Default::default()
    }]);
    n.send(vec![task("t1", "bridge", &[app])]).await;
    let r = n.until("t1", "STOPPED").await;
    assert_eq!(
        r.reason.as_deref(),
        Some("CannotStartContainerError: port 8080/tcp: Address already in use (os error 98)")
    );
    assert!(n.started().is_empty());
    assert!(n.net.as_ref().unwrap().endpoints().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_node_without_a_network_runs_no_bridge_task() {
    let n = Node::with(|_, net| *net = None).await;
    n.send(vec![
        task("t1", "bridge", &[def("app")]),
        task("t2", "host", &[def("app")]),
    ])
    .await;
    let r = n.until("t1", "STOPPED").await;
    assert_eq!(
        r.reason.as_deref(),
        Some(
            "CannotStartContainerError: container networking is not available on this node (no bridge here); use networkMode host or none"
        )
    );
    n.until("t2", "RUNNING").await;
}

#[tokio::test(start_paused = true)]
async fn a_failed_awsvpc_endpoint_fails_the_task() {
    let n = Node::new().await;
    n.net
        .as_ref()
        .unwrap()
        .fail_create(Some("address pool exhausted"));
    n.send(vec![task("t1", "awsvpc", &[def("app")])]).await;
    let r = n.until("t1", "STOPPED").await;
    assert_eq!(
        r.reason.as_deref(),
        Some("CannotStartContainerError: network setup: address pool exhausted")
    );
    assert!(n.cp.networks.lock().is_empty());
}

// ---- what the hooks hand the driver ------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn an_awsvpc_task_gets_its_endpoint_reported_and_removed() {
    let n = Node::new().await;
    let t = task("t1", "awsvpc", &[def("app"), def("sidecar")]);
    n.send(vec![t.clone()]).await;
    n.until("t1", "RUNNING").await;
    let reports = n.cp.networks.lock().clone();
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].subnet, "10.254.0.0/16");
    let net = n.net.as_ref().unwrap();
    assert_eq!(net.endpoints(), ["t1"]);
    let ns = NetworkNs::Path("/fake/netns/t1".into());
    assert_eq!(
        n.spec_of("t1-app").network,
        ns,
        "containers share the task's namespace"
    );
    assert_eq!(n.spec_of("t1-sidecar").network, ns);
    n.send(vec![stopped(t)]).await;
    n.until("t1", "STOPPED").await;
    assert_eq!(
        n.statuses("t1"),
        [
            "PENDING",
            "RUNNING",
            "STOPPING",
            "DEPROVISIONING",
            "STOPPED"
        ]
    );
    assert!(net.endpoints().is_empty());
}

#[tokio::test(start_paused = true)]
async fn bridge_containers_get_endpoints_and_host_ports() {
    let n = Node::new().await;
    let mut app = def("app");
    app.port_mappings = Some(vec![PortMapping {
        container_port: Some(80),
        host_port: Some(0),
        ..Default::default()
    }]);
    let t = task("t1", "bridge", &[app]);
    n.send(vec![t.clone()]).await;
    let r = n.until("t1", "RUNNING").await;
    let b = &container(&r, "app").network_bindings.as_ref().unwrap()[0];
    assert_eq!((b.container_port, b.host_port), (Some(80), Some(49153)));
    let net = n.net.as_ref().unwrap();
    assert_eq!(net.endpoints(), ["t1-app"]);
    assert_eq!(
        n.spec_of("t1-app").network,
        NetworkNs::Path("/fake/netns/t1-app".into())
    );
    assert_eq!(n.spec_of("t1-app").hostname, "t1-app");
    n.send(vec![stopped(t)]).await;
    n.until("t1", "STOPPED").await;
    assert!(net.endpoints().is_empty());
    assert!(net.ports().is_empty());
}

#[tokio::test(start_paused = true)]
async fn host_and_none_modes() {
    let n = Node::new().await;
    let mut app = def("app");
    app.port_mappings = Some(vec![PortMapping {
        container_port: Some(8000),
        ..Default::default()
    }]);
    n.send(vec![
        task("t1", "host", &[app.clone()]),
        task("t2", "none", &[app]),
    ])
    .await;
    let r = n.until("t1", "RUNNING").await;
    let b = &container(&r, "app").network_bindings.as_ref().unwrap()[0];
    assert_eq!(
        b.host_port,
        Some(8000),
        "host mode publishes the container port"
    );
    assert_eq!(n.spec_of("t1-app").network, NetworkNs::Host);
    let r = n.until("t2", "RUNNING").await;
    assert!(
        container(&r, "app")
            .network_bindings
            .as_ref()
            .unwrap()
            .is_empty()
    );
    assert_eq!(n.spec_of("t2-app").network, NetworkNs::New);
    assert!(n.net.as_ref().unwrap().endpoints().is_empty());
}

#[tokio::test(start_paused = true)]
async fn volumes_are_bind_mounted_and_the_scratch_space_removed() {
    let n = Node::new().await;
    let host_dir = n.cfg.root.join("shared");
    let mut t = task("t1", "none", &[]);
    let mut app = def("app");
    app.mount_points = Some(vec![
        MountPoint {
            source_volume: Some("scratch".into()),
            container_path: Some("/scratch".into()),
            read_only: None,
        },
        MountPoint {
            source_volume: Some("shared".into()),
            container_path: Some("/shared".into()),
            read_only: Some(true),
        },
    ]);
    t.containers = Some(vec![container_to_acs(&app, None, None)]);
    t.volumes = Some(vec![
        acs::Volume {
            name: Some("scratch".into()),
            r#type: Some("host".into()),
            host: Some(acs::HostVolumeProperties { source_path: None }),
            ..Default::default()
        },
        acs::Volume {
            name: Some("shared".into()),
            r#type: Some("host".into()),
            host: Some(acs::HostVolumeProperties {
                source_path: Some(host_dir.to_string_lossy().into_owned()),
            }),
            ..Default::default()
        },
    ]);
    n.send(vec![t.clone()]).await;
    n.until("t1", "RUNNING").await;
    let mounts = n.spec_of("t1-app").mounts;
    let scratch = n.cfg.root.join("tasks/t1/volumes/scratch");
    assert_eq!(mounts.len(), 2);
    assert_eq!(
        (mounts[0].source.clone(), mounts[0].readonly),
        (scratch.clone(), false)
    );
    assert_eq!(
        (mounts[1].source.clone(), mounts[1].readonly),
        (host_dir.clone(), true)
    );
    assert!(scratch.is_dir());
    n.send(vec![stopped(t)]).await;
    n.until("t1", "STOPPED").await;
    assert!(
        !n.cfg.root.join("tasks/t1").exists(),
        "the task's scratch space goes"
    );
    assert!(host_dir.is_dir(), "a host path stays");
}

#[tokio::test(start_paused = true)]
async fn task_limits_go_to_the_task_cgroup() {
    let n = Node::new().await;
    let mut t = task("t1", "none", &[def("app")]);
    t.cpu = Some(0.5);
    t.memory = Some(512);
    n.send(vec![t.clone()]).await;
    n.until("t1", "RUNNING").await;
    let made = n.when(|c| {
        matches!(c, Call::TaskCgroup { rel, cpu: Some(cpu), memory: Some(512) }
            if rel == "/berth/t1" && *cpu == 0.5)
    });
    assert_eq!(made.len(), 1);
    assert_eq!(n.spec_of("t1-app").cgroup_path, "/berth/t1/app");
    n.send(vec![stopped(t)]).await;
    n.until("t1", "STOPPED").await;
    let removed = n.when(|c| matches!(c, Call::RemoveTaskCgroup { rel } if rel == "/berth/t1"));
    assert_eq!(removed.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn many_tasks_run_side_by_side() {
    let n = Node::new().await;
    let tasks: Vec<acs::Task> = (0..50)
        .map(|i| task(&format!("m{i}"), "bridge", &[def("app"), def("sidecar")]))
        .collect();
    n.send(tasks.clone()).await;
    for i in 0..50 {
        n.until(&format!("m{i}"), "RUNNING").await;
    }
    assert_eq!(n.driver.running().len(), 100);
    assert_eq!(n.agent.as_ref().unwrap().task_count(), 50);
    n.send(tasks.into_iter().map(stopped).collect()).await;
    for i in 0..50 {
        n.until(&format!("m{i}"), "STOPPED").await;
    }
    assert!(n.driver.running().is_empty());
    assert!(n.net.as_ref().unwrap().endpoints().is_empty());
    n.idle(secs(1)).await;
    assert_eq!(n.agent.as_ref().unwrap().task_count(), 0);
}

// ---- dependency conditions, as a pure function -------------------------------------------------

fn dep(on: &str, cond: &str) -> ContainerDefinition {
    ContainerDefinition {
        name: Some("app".into()),
        depends_on: Some(vec![ContainerDependency {
            container_name: Some(on.into()),
            condition: Some(cond.into()),
        }]),
        ..Default::default()
    }
}

fn state(status: &str, started: bool, exit: Option<i32>, health: Option<&str>) -> TaskState {
    TaskState {
        containers: vec![ContainerState {
            name: "db".into(),
            status: status.parse().unwrap(),
            started_at: started.then_some(1.0),
            exit_code: exit,
            health: health.map(str::to_string),
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[test]
fn dependency_conditions() {
    let waiting = state("PULLED", false, None, Some("UNKNOWN"));
    let running = state("RUNNING", true, None, Some("UNKNOWN"));
    let healthy = state("RUNNING", true, None, Some("HEALTHY"));
    let unhealthy = state("RUNNING", true, None, Some("UNHEALTHY"));
    let ok_exit = state("STOPPED", true, Some(0), None);
    let bad_exit = state("STOPPED", true, Some(2), None);
    let never = state("STOPPED", false, None, None);
    assert_eq!(deps_ready(&waiting, &dep("db", "START")), Ok(false));
    assert_eq!(deps_ready(&running, &dep("db", "START")), Ok(true));
    assert_eq!(deps_ready(&ok_exit, &dep("db", "START")), Ok(true));
    assert!(deps_ready(&never, &dep("db", "START")).is_err());
    assert_eq!(deps_ready(&running, &dep("db", "COMPLETE")), Ok(false));
    assert_eq!(deps_ready(&bad_exit, &dep("db", "COMPLETE")), Ok(true));
    assert_eq!(deps_ready(&ok_exit, &dep("db", "SUCCESS")), Ok(true));
    assert!(deps_ready(&bad_exit, &dep("db", "SUCCESS")).is_err());
    assert_eq!(deps_ready(&running, &dep("db", "HEALTHY")), Ok(false));
    assert_eq!(deps_ready(&healthy, &dep("db", "HEALTHY")), Ok(true));
    assert!(deps_ready(&unhealthy, &dep("db", "HEALTHY")).is_err());
    assert!(deps_ready(&ok_exit, &dep("db", "HEALTHY")).is_err());
    assert!(deps_ready(&running, &dep("nope", "START")).is_err());
    assert_eq!(
        deps_ready(&running, &ContainerDefinition::default()),
        Ok(true),
        "no dependencies"
    );
}

/// A runner waiting for its containers holds little: 10,000 simulated nodes run hundreds of
/// thousands of them in one process. Its steps are boxed futures, alive only while they run.
#[tokio::test]
async fn an_idle_runner_is_small() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::system();
    let parts = NodeParts {
        driver: Arc::new(FakeDriver::new(clock, Behaviour::default())),
        images: Arc::new(FakeImages::default()),
        net: None,
        net_error: None,
        states: StateDir::memory(),
        credentials_endpoint: false,
    };
    let agent = Agent::start_with(
        config(dir.path(), clock),
        Arc::new(Recorder::default()),
        parts,
    )
    .await
    .unwrap();
    let st = TaskState {
        arn: arn("x"),
        payload: task("x", "bridge", &[def("a")]),
        ..Default::default()
    };
    let (_tx, rx) = watch::channel("RUNNING".to_string());
    let run = Runner::new(agent.inner.clone(), st, rx).run();
    let size = std::mem::size_of_val(&run);
    assert!(
        size < 4096,
        "the runner's future is {size} bytes (it was 9.7 KiB before its steps were boxed)"
    );
}
