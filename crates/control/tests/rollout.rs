//! The service controller's decisions, pinned without any I/O: rolling updates within the
//! deployment limits, scale in/out, draining, health-check replacement, the circuit breaker
//! and its rollback, throttling, DAEMON placement, deletion.

use std::collections::{HashMap, HashSet};

use berth_control::records::ServiceControl;
use berth_control::rollout::{Decision, Inputs, TaskState, decide, new_deployment};
use berth_model::status::{HealthStatus, TaskStatus};
use berth_model::wire::ecs::{DeploymentCircuitBreaker, DeploymentConfiguration, Service};

const NOW: f64 = 1_000_000.0;

fn service(desired: i32, min: i32, max: i32) -> Service {
    let mut s = Service {
        service_name: Some("web".into()),
        status: Some("ACTIVE".into()),
        desired_count: Some(desired),
        task_definition: Some("td:1".into()),
        scheduling_strategy: Some("REPLICA".into()),
        deployment_configuration: Some(DeploymentConfiguration {
            minimum_healthy_percent: Some(min),
            maximum_percent: Some(max),
            deployment_circuit_breaker: Some(DeploymentCircuitBreaker {
                enable: Some(true),
                rollback: Some(true),
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let d = new_deployment(&s, NOW - 100.0);
    s.deployments = Some(vec![d]);
    s
}

fn dep_id(s: &Service, i: usize) -> String {
    s.deployments.as_ref().unwrap()[i].id.clone().unwrap()
}

/// Roll `s` to a new deployment of `td`.
fn redeploy(s: &mut Service, td: &str) {
    s.task_definition = Some(td.into());
    let d = new_deployment(s, NOW - 50.0);
    let deps = s.deployments.as_mut().unwrap();
    for o in deps.iter_mut() {
        o.status = Some("ACTIVE".into());
    }
    deps.insert(0, d);
}

fn task(id: &str, dep: &str, last: &'static str, inst: &str) -> TaskState {
    TaskState {
        id: id.into(),
        deployment: Some(dep.into()),
        live: true,
        last: last.parse().unwrap(),
        instance: Some(inst.into()),
        health: HealthStatus::Unknown,
        started_at: (last == "RUNNING").then_some(NOW - 10.0),
        stopped_at: None,
        failed: false,
    }
}

fn failed(id: &str, dep: &str, at: f64) -> TaskState {
    TaskState {
        id: id.into(),
        deployment: Some(dep.into()),
        live: false,
        last: TaskStatus::Stopped,
        instance: Some("i1".into()),
        health: HealthStatus::Unknown,
        started_at: None,
        stopped_at: Some(at),
        failed: true,
    }
}

struct World {
    draining: HashSet<String>,
    daemon: Vec<String>,
    hc: HashMap<String, bool>,
    ctl: ServiceControl,
    healthy_after: f64,
}

impl World {
    fn new() -> World {
        World {
            draining: HashSet::new(),
            daemon: vec![],
            hc: HashMap::new(),
            ctl: ServiceControl::default(),
            // Tasks without health checks count at once unless a test says otherwise.
            healthy_after: 0.0,
        }
    }
    fn decide(&self, s: &Service, tasks: &[TaskState]) -> Decision {
        decide(&Inputs {
            now: NOW,
            service: s,
            ctl: &self.ctl,
            tasks,
            draining: &self.draining,
            daemon_instances: &self.daemon,
            health_checked: &self.hc,
            healthy_after: self.healthy_after,
        })
    }
}

fn stopped_ids(d: &Decision) -> Vec<&str> {
    let mut v: Vec<&str> = d.stop.iter().map(|(id, _)| id.as_str()).collect();
    v.sort();
    v
}

fn events(d: &Decision) -> Vec<String> {
    d.service
        .events
        .iter()
        .flatten()
        .filter_map(|e| e.message.clone())
        .collect()
}

#[test]
fn a_new_service_launches_its_desired_count() {
    let s = service(3, 100, 200);
    let d = World::new().decide(&s, &[]);
    assert_eq!(d.launch, 3);
    assert!(d.stop.is_empty());
}

#[test]
fn max_percent_caps_the_launch_and_rounds_down() {
    // 3 × 150 % = 4.5 → 4 tasks at most; 3 old ones are live, so 1 new one may start.
    let mut s = service(3, 100, 150);
    let old = dep_id(&s, 0);
    redeploy(&mut s, "td:2");
    let tasks: Vec<TaskState> = (0..3)
        .map(|i| task(&format!("o{i}"), &old, "RUNNING", "i1"))
        .collect();
    let d = World::new().decide(&s, &tasks);
    assert_eq!(d.launch, 1);
    // min 100 % of 3 = 3 healthy must stay: none of the old may stop yet.
    assert!(d.stop.is_empty());
}

#[test]
fn old_tasks_stop_only_while_enough_healthy_ones_stay() {
    let mut s = service(3, 100, 200);
    let old = dep_id(&s, 0);
    redeploy(&mut s, "td:2");
    let new = dep_id(&s, 0);
    let mut tasks: Vec<TaskState> = (0..3)
        .map(|i| task(&format!("o{i}"), &old, "RUNNING", "i1"))
        .collect();
    // Two of the three new ones are running: two old ones may go.
    tasks.push(task("n0", &new, "RUNNING", "i2"));
    tasks.push(task("n1", &new, "RUNNING", "i2"));
    tasks.push(task("n2", &new, "PENDING", "i2"));
    let d = World::new().decide(&s, &tasks);
    assert_eq!(d.launch, 0);
    assert_eq!(d.stop.len(), 2);
    assert!(d.stop.iter().all(|(id, _)| id.starts_with('o')));
    assert!(d.stop[0].1.contains(&new));
}

#[test]
fn min_percent_zero_stops_old_tasks_at_once() {
    let mut s = service(2, 0, 100);
    let old = dep_id(&s, 0);
    redeploy(&mut s, "td:2");
    let tasks = vec![
        task("o0", &old, "RUNNING", "i1"),
        task("o1", &old, "RUNNING", "i1"),
    ];
    let d = World::new().decide(&s, &tasks);
    assert_eq!(stopped_ids(&d), vec!["o0", "o1"]);
    // No room under 100 % while the old ones are live.
    assert_eq!(d.launch, 0);
}

#[test]
fn a_health_checked_task_counts_only_when_healthy() {
    let mut s = service(1, 100, 200);
    let old = dep_id(&s, 0);
    redeploy(&mut s, "td:2");
    let new = dep_id(&s, 0);
    let mut w = World::new();
    w.hc.insert(new.clone(), true);
    let mut n = task("n0", &new, "RUNNING", "i2");
    let tasks = vec![task("o0", &old, "RUNNING", "i1"), n.clone()];
    // RUNNING but not yet HEALTHY: the old one stays.
    assert!(w.decide(&s, &tasks).stop.is_empty());
    n.health = HealthStatus::Healthy;
    let tasks = vec![task("o0", &old, "RUNNING", "i1"), n];
    assert_eq!(stopped_ids(&w.decide(&s, &tasks)), vec!["o0"]);
}

#[test]
fn scale_in_stops_the_least_useful_tasks_first() {
    let s = service(2, 100, 200);
    let dep = dep_id(&s, 0);
    let tasks = vec![
        task("a", &dep, "RUNNING", "i1"),
        task("b", &dep, "PENDING", "i1"),
        task("c", &dep, "RUNNING", "i2"),
        task("d", &dep, "PENDING", "i2"),
    ];
    let d = World::new().decide(&s, &tasks);
    assert_eq!(stopped_ids(&d), vec!["b", "d"]);
    assert_eq!(d.launch, 0);
}

#[test]
fn tasks_on_draining_instances_are_replaced_then_stopped() {
    let s = service(2, 100, 200);
    let dep = dep_id(&s, 0);
    let mut w = World::new();
    w.draining.insert("i1".into());
    let tasks = vec![
        task("a", &dep, "RUNNING", "i1"),
        task("b", &dep, "RUNNING", "i2"),
    ];
    let d = w.decide(&s, &tasks);
    // One replacement first; the drained task stays until it is running.
    assert_eq!(d.launch, 1);
    assert!(d.stop.is_empty());
    let tasks = vec![
        task("a", &dep, "RUNNING", "i1"),
        task("b", &dep, "RUNNING", "i2"),
        task("c", &dep, "RUNNING", "i3"),
    ];
    let d = w.decide(&s, &tasks);
    assert_eq!(stopped_ids(&d), vec!["a"]);
    assert_eq!(d.launch, 0);
}

#[test]
fn unhealthy_tasks_are_stopped_after_the_grace_period() {
    let mut s = service(1, 100, 200);
    s.health_check_grace_period_seconds = Some(30);
    let dep = dep_id(&s, 0);
    let mut w = World::new();
    w.hc.insert(dep.clone(), true);
    let mut t = task("a", &dep, "RUNNING", "i1");
    t.health = HealthStatus::Unhealthy;
    t.started_at = Some(NOW - 10.0);
    let d = w.decide(&s, std::slice::from_ref(&t));
    assert!(d.stop.is_empty());
    assert_eq!(d.wake_at, Some(NOW + 20.0));
    t.started_at = Some(NOW - 31.0);
    let d = w.decide(&s, &[t]);
    assert_eq!(stopped_ids(&d), vec!["a"]);
    assert!(
        d.stop[0]
            .1
            .starts_with("Task failed container health checks")
    );
    // Its replacement starts in the same look.
    assert_eq!(d.launch, 1);
    assert!(events(&d)[0].contains("failed container health checks"));
}

#[test]
fn steady_state_completes_the_deployment_once() {
    let s = service(2, 100, 200);
    let dep = dep_id(&s, 0);
    let tasks = vec![
        task("a", &dep, "RUNNING", "i1"),
        task("b", &dep, "RUNNING", "i2"),
    ];
    let mut w = World::new();
    let d = w.decide(&s, &tasks);
    assert!(d.changed);
    let deps = d.service.deployments.as_ref().unwrap();
    assert_eq!(deps[0].rollout_state.as_deref(), Some("COMPLETED"));
    assert_eq!(
        events(&d),
        vec![
            "(service web) has reached a steady state.".to_string(),
            format!("(service web) (deployment {dep}) deployment completed."),
        ]
    );
    assert!(d.ctl.steady);
    assert!(d.ctl.last_completed.is_some());
    // Nothing more to say the next time.
    w.ctl = d.ctl.clone();
    let again = w.decide(&d.service, &tasks);
    assert!(again.is_idle());
}

#[test]
fn an_old_deployment_leaves_once_its_tasks_have_stopped() {
    let mut s = service(1, 100, 200);
    let old = dep_id(&s, 0);
    redeploy(&mut s, "td:2");
    let new = dep_id(&s, 0);
    let mut gone = task("o0", &old, "STOPPED", "i1");
    gone.live = false;
    let tasks = vec![gone, task("n0", &new, "RUNNING", "i2")];
    let d = World::new().decide(&s, &tasks);
    let deps = d.service.deployments.as_ref().unwrap();
    assert_eq!(deps.len(), 1);
    assert_eq!(deps[0].id.as_deref(), Some(new.as_str()));
}

#[test]
fn the_circuit_breaker_trips_and_rolls_back() {
    let mut s = service(3, 100, 200);
    let good = dep_id(&s, 0);
    let mut w = World::new();
    let mut done = s.deployments.as_ref().unwrap()[0].clone();
    done.rollout_state = Some("COMPLETED".into());
    w.ctl.last_completed = Some(done);
    redeploy(&mut s, "td:2");
    let bad = dep_id(&s, 0);
    let mut tasks: Vec<TaskState> = (0..3)
        .map(|i| task(&format!("o{i}"), &good, "RUNNING", "i1"))
        .collect();
    // Nine failures: not yet (threshold max(ceil(3/2), 10) = 10).
    for i in 0..9 {
        tasks.push(failed(&format!("f{i}"), &bad, NOW - 100.0 + i as f64));
    }
    let d = w.decide(&s, &tasks);
    assert_eq!(
        d.service.deployments.as_ref().unwrap()[0]
            .rollout_state
            .as_deref(),
        Some("IN_PROGRESS")
    );
    tasks.push(failed("f9", &bad, NOW - 1.0));
    let d = w.decide(&s, &tasks);
    let deps = d.service.deployments.as_ref().unwrap();
    assert_eq!(deps.len(), 3);
    assert_eq!(deps[0].status.as_deref(), Some("PRIMARY"));
    assert_eq!(deps[0].task_definition.as_deref(), Some("td:1"));
    assert_eq!(deps[0].rollout_state.as_deref(), Some("IN_PROGRESS"));
    assert_eq!(deps[1].id.as_deref(), Some(bad.as_str()));
    assert_eq!(deps[1].status.as_deref(), Some("ACTIVE"));
    assert_eq!(deps[1].rollout_state.as_deref(), Some("FAILED"));
    assert_eq!(d.service.task_definition.as_deref(), Some("td:1"));
    assert_eq!(d.launch, 0, "the rollback starts on the next look");
    let ev = events(&d);
    assert!(
        ev.iter()
            .any(|e| e.contains("deployment failed: tasks failed to start"))
    );
    assert!(ev.iter().any(|e| e.contains("rolling back to")));
}

#[test]
fn a_task_that_runs_resets_the_failure_streak() {
    let mut s = service(3, 100, 200);
    let good = dep_id(&s, 0);
    redeploy(&mut s, "td:2");
    let bad = dep_id(&s, 0);
    let mut tasks: Vec<TaskState> = (0..10)
        .map(|i| failed(&format!("f{i}"), &bad, NOW - 100.0 + i as f64))
        .collect();
    let mut ok = task("n0", &bad, "RUNNING", "i2");
    ok.started_at = Some(NOW - 50.0);
    tasks.push(ok);
    tasks.push(task("o0", &good, "RUNNING", "i1"));
    let d = World::new().decide(&s, &tasks);
    assert_eq!(
        d.service.deployments.as_ref().unwrap()[0]
            .rollout_state
            .as_deref(),
        Some("IN_PROGRESS")
    );
}

#[test]
fn repeated_failures_throttle_launches() {
    let s = service(1, 100, 200);
    let dep = dep_id(&s, 0);
    let tasks: Vec<TaskState> = (0..7)
        .map(|i| failed(&format!("f{i}"), &dep, NOW - 0.1 + i as f64 * 0.01))
        .collect();
    let d = World::new().decide(&s, &tasks);
    assert_eq!(d.launch, 0);
    let until = d.wake_at.expect("a wake-up when the throttle ends");
    assert!(until > NOW && until < NOW + 1.0, "{until}");
    assert!(d.ctl.throttled);
    assert!(events(&d)[0].contains("unable to consistently start tasks"));
}

#[test]
fn a_daemon_runs_one_task_per_eligible_instance() {
    let mut s = service(0, 0, 100);
    s.scheduling_strategy = Some("DAEMON".into());
    s.desired_count = None;
    let dep = dep_id(&s, 0);
    let mut w = World::new();
    w.daemon = vec!["i1".into(), "i2".into(), "i3".into()];
    let tasks = vec![
        task("a", &dep, "RUNNING", "i1"),
        task("dup", &dep, "RUNNING", "i1"),
        task("x", &dep, "RUNNING", "i4"), // i4 is draining or gone
    ];
    let d = w.decide(&s, &tasks);
    assert_eq!(stopped_ids(&d), vec!["dup", "x"]);
    let mut on = d.launch_on.clone();
    on.sort();
    assert_eq!(on, vec!["i2", "i3"]);
    assert_eq!(d.service.desired_count, Some(3));
}

#[test]
fn a_daemon_replaces_old_tasks_one_instance_at_a_time_in_place() {
    let mut s = service(0, 0, 100);
    s.scheduling_strategy = Some("DAEMON".into());
    let old = dep_id(&s, 0);
    redeploy(&mut s, "td:2");
    let mut w = World::new();
    w.daemon = vec!["i1".into()];
    let tasks = vec![task("a", &old, "RUNNING", "i1")];
    let d = w.decide(&s, &tasks);
    assert_eq!(stopped_ids(&d), vec!["a"]);
    // The new one waits until the old one has stopped there.
    assert!(d.launch_on.is_empty());
}

#[test]
fn a_deleted_service_stops_everything_then_goes_inactive() {
    let mut s = service(2, 100, 200);
    s.status = Some("DRAINING".into());
    s.desired_count = Some(0);
    let dep = dep_id(&s, 0);
    let tasks = vec![task("a", &dep, "RUNNING", "i1")];
    let d = World::new().decide(&s, &tasks);
    assert_eq!(stopped_ids(&d), vec!["a"]);
    assert_eq!(d.service.status.as_deref(), Some("DRAINING"));
    let mut t = task("a", &dep, "STOPPED", "i1");
    t.live = false;
    let d = World::new().decide(&s, &[t]);
    assert_eq!(d.service.status.as_deref(), Some("INACTIVE"));
    assert_eq!(d.launch, 0);
}

#[test]
fn events_keep_the_newest_hundred() {
    let mut s = service(1, 100, 200);
    for i in 0..150 {
        berth_control::rollout::push_event(&mut s, NOW + i as f64, format!("e{i}"));
    }
    let ev = s.events.as_ref().unwrap();
    assert_eq!(ev.len(), 100);
    assert_eq!(ev[0].message.as_deref(), Some("e149"));
}

#[test]
fn a_task_without_health_checks_counts_after_it_has_run_a_while() {
    let mut s = service(1, 100, 200);
    let old = dep_id(&s, 0);
    redeploy(&mut s, "td:2");
    let new = dep_id(&s, 0);
    let mut w = World::new();
    w.healthy_after = 40.0;
    let mut o = task("o0", &old, "RUNNING", "i1");
    o.started_at = Some(NOW - 3600.0);
    let mut n = task("n0", &new, "RUNNING", "i2");
    n.started_at = Some(NOW - 10.0);
    // Running for 10 s only: the old task stays, and the controller looks again at 40 s.
    let d = w.decide(&s, &[o.clone(), n.clone()]);
    assert!(d.stop.is_empty());
    assert_eq!(d.wake_at, Some(NOW + 30.0));
    n.started_at = Some(NOW - 40.0);
    let d = w.decide(&s, &[o, n]);
    assert_eq!(stopped_ids(&d), vec!["o0"]);
}

#[test]
fn tasks_asked_to_stop_count_against_max_percent_until_they_have() {
    // max 100 %, min 0 %: the old task is asked to stop first; the new one starts only once
    // it has stopped.
    let mut s = service(1, 0, 100);
    let old = dep_id(&s, 0);
    redeploy(&mut s, "td:2");
    let mut o = task("o0", &old, "RUNNING", "i1");
    o.live = false;
    let d = World::new().decide(&s, std::slice::from_ref(&o));
    assert_eq!(d.launch, 0);
    o.last = TaskStatus::Stopped;
    let d = World::new().decide(&s, &[o]);
    assert_eq!(d.launch, 1);
}

#[test]
fn a_new_deployment_is_not_throttled_by_the_failures_of_the_last() {
    let mut s = service(1, 100, 200);
    let bad = dep_id(&s, 0);
    let tasks: Vec<TaskState> = (0..7)
        .map(|i| failed(&format!("f{i}"), &bad, NOW - 0.1 + i as f64 * 0.01))
        .collect();
    assert_eq!(World::new().decide(&s, &tasks).launch, 0);
    redeploy(&mut s, "td:2");
    let d = World::new().decide(&s, &tasks);
    assert_eq!(d.launch, 1);
    assert!(!d.ctl.throttled);
}
