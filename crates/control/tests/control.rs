//! Control-plane logic over the in-memory store (the same paths run over redb in the
//! end-to-end tests). Tests that wait do so on a paused clock (`start_paused`): the control
//! plane's clock is tokio's, so hours of retention and credential lifetimes pass in no real
//! time.

use std::sync::Arc;

use berth_control::command::{Access, Caller};
use berth_control::{Control, ControlConfig, ControlError};
use berth_model::wire::ecs::{
    ContainerDefinition, CreateClusterRequest, DescribeClustersRequest,
    DescribeContainerInstancesRequest, ListTasksRequest, RegisterContainerInstanceRequest,
    RegisterTaskDefinitionRequest, Resource, RunTaskRequest, StopTaskRequest,
    UpdateContainerInstancesStateRequest,
};
use berth_store::{MemStore, Store};

fn cfg() -> ControlConfig {
    ControlConfig {
        region: "us-east-1".into(),
        account_id: "000000000000".into(),
        ..Default::default()
    }
}

/// [`cfg`] for tests that let hours pass: the fake agents here open no session, and with
/// ECS's timers their instances would be lost after 72 s and their tasks stopped.
fn patient_cfg() -> ControlConfig {
    let day = std::time::Duration::from_secs(86_400);
    ControlConfig {
        liveness: berth_control::liveness::Liveness {
            agent_timeout: day,
            lost_grace: day,
            ..Default::default()
        },
        ..cfg()
    }
}

async fn setup(store: Arc<dyn Store>) -> Arc<Control> {
    Control::open(cfg(), store).await.unwrap()
}

fn td(family: &str, cpu: i32) -> RegisterTaskDefinitionRequest {
    RegisterTaskDefinitionRequest {
        family: Some(family.into()),
        container_definitions: Some(vec![ContainerDefinition {
            name: Some("a".into()),
            image: Some("busybox".into()),
            memory: Some(16),
            cpu: Some(cpu),
            ..Default::default()
        }]),
        ..Default::default()
    }
}

async fn instance(c: &Control, cluster: &str, cpu: i32) -> String {
    instance_with(c, cluster, cpu, &[]).await
}

/// An instance with `cpu` units, plenty of memory and the named attributes (no values).
async fn instance_with(c: &Control, cluster: &str, cpu: i32, attrs: &[&str]) -> String {
    let resource = |name: &str, v: i32| Resource {
        name: Some(name.into()),
        r#type: Some("INTEGER".into()),
        integer_value: Some(v),
        ..Default::default()
    };
    c.register_container_instance(RegisterContainerInstanceRequest {
        cluster: Some(cluster.into()),
        total_resources: Some(vec![resource("CPU", cpu), resource("MEMORY", 100_000)]),
        attributes: Some(
            attrs
                .iter()
                .map(|n| berth_model::wire::ecs::Attribute {
                    name: Some(n.to_string()),
                    ..Default::default()
                })
                .collect(),
        ),
        ..Default::default()
    })
    .await
    .unwrap()
    .container_instance
    .unwrap()
    .container_instance_arn
    .unwrap()
}

/// The names in a registered definition's `requiresAttributes`.
fn required_names(def: berth_model::wire::ecs::TaskDefinition) -> Vec<String> {
    def.requires_attributes
        .unwrap_or_default()
        .into_iter()
        .filter_map(|a| a.name)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_registrations_get_distinct_revisions() {
    let c = setup(Arc::new(MemStore::new())).await;
    let mut hs = Vec::new();
    for _ in 0..20 {
        let c = c.clone();
        hs.push(tokio::spawn(async move {
            c.register_task_definition(td("web", 1), "me")
                .await
                .unwrap()
                .task_definition
                .unwrap()
                .revision
                .unwrap()
        }));
    }
    let mut revs = Vec::new();
    for h in hs {
        revs.push(h.await.unwrap());
    }
    revs.sort();
    assert_eq!(revs, (1..=20).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_run_tasks_never_oversubscribe() {
    let c = setup(Arc::new(MemStore::new())).await;
    c.create_cluster(CreateClusterRequest {
        cluster_name: Some("c".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    c.register_task_definition(td("w", 100), "me")
        .await
        .unwrap();
    let arn = instance(&c, "c", 1024).await;
    let mut hs = Vec::new();
    for _ in 0..30 {
        let c = c.clone();
        hs.push(tokio::spawn(async move {
            c.run_task(RunTaskRequest {
                cluster: Some("c".into()),
                task_definition: Some("w".into()),
                ..Default::default()
            })
            .await
            .unwrap()
        }));
    }
    let mut placed = 0;
    let mut refused = 0;
    for h in hs {
        let r = h.await.unwrap();
        placed += r.tasks.unwrap().len();
        let f = r.failures.unwrap();
        if !f.is_empty() {
            assert_eq!(f[0].reason.as_deref(), Some("RESOURCE:CPU"));
            refused += 1;
        }
    }
    assert_eq!((placed, refused), (10, 20));
    let d = c
        .describe_container_instances(DescribeContainerInstancesRequest {
            cluster: Some("c".into()),
            container_instances: Some(vec![arn]),
            ..Default::default()
        })
        .await
        .unwrap();
    let ci = &d.container_instances.unwrap()[0];
    let cpu = ci
        .remaining_resources
        .as_ref()
        .unwrap()
        .iter()
        .find(|r| r.name.as_deref() == Some("CPU"))
        .unwrap()
        .integer_value
        .unwrap();
    assert_eq!(cpu, 24);
    assert_eq!(ci.pending_tasks_count, Some(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_control_plane_on_the_same_store_sees_everything() {
    let store: Arc<dyn Store> = Arc::new(MemStore::new());
    let a = setup(store.clone()).await;
    a.create_cluster(CreateClusterRequest {
        cluster_name: Some("c".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    a.register_task_definition(td("w", 10), "me").await.unwrap();
    instance(&a, "c", 1024).await;
    let run = a
        .run_task(RunTaskRequest {
            cluster: Some("c".into()),
            task_definition: Some("w".into()),
            count: Some(3),
            ..Default::default()
        })
        .await
        .unwrap();
    let t = run.tasks.unwrap()[0].task_arn.clone().unwrap();
    // Rebuilt from the store alone (a restart), and following later writes made by `a`.
    let b = setup(store.clone()).await;
    let d = b
        .describe_clusters(DescribeClustersRequest {
            clusters: Some(vec!["c".into()]),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(d.clusters.unwrap()[0].pending_tasks_count, Some(3));
    a.stop_task(StopTaskRequest {
        cluster: Some("c".into()),
        task: Some(t.clone()),
        reason: None,
    })
    .await
    .unwrap();
    // b follows the store's watch: it sees a's stop without restarting.
    let mut stopped = Vec::new();
    for _ in 0..100 {
        stopped = b
            .list_tasks(ListTasksRequest {
                cluster: Some("c".into()),
                desired_status: Some("STOPPED".into()),
                ..Default::default()
            })
            .await
            .unwrap()
            .task_arns
            .unwrap();
        if !stopped.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(stopped, vec![t]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_typed_and_change_nothing() {
    let store: Arc<dyn Store> = Arc::new(MemStore::new());
    let c = setup(store.clone()).await;
    let before = store.revision().await.unwrap();
    let e = c
        .run_task(RunTaskRequest {
            cluster: Some("nope".into()),
            task_definition: Some("w".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(matches!(e, ControlError::ClusterNotFound));
    assert_eq!(e.code(), "ClusterNotFoundException");
    let mut bad = td("w", 10);
    bad.container_definitions.as_mut().unwrap()[0].memory = None;
    let e = c.register_task_definition(bad, "me").await.unwrap_err();
    assert_eq!(e.code(), "ClientException");
    assert_eq!(store.revision().await.unwrap(), before);
}

#[tokio::test(start_paused = true)]
async fn stopped_tasks_are_forgotten_after_retention() {
    let c = Control::open(patient_cfg(), Arc::new(MemStore::new()))
        .await
        .unwrap();
    c.create_cluster(CreateClusterRequest {
        cluster_name: Some("c".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    c.register_task_definition(td("w", 1), "me").await.unwrap();
    instance(&c, "c", 1024).await;
    let tasks = c
        .run_task(RunTaskRequest {
            cluster: Some("c".into()),
            task_definition: Some("w".into()),
            count: Some(2),
            ..Default::default()
        })
        .await
        .unwrap()
        .tasks
        .unwrap();
    let t0 = tasks[0].task_arn.clone().unwrap();
    c.submit_task_state_change(berth_model::wire::ecs::SubmitTaskStateChangeRequest {
        cluster: Some("c".into()),
        task: Some(t0.clone()),
        status: Some("STOPPED".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    let now = c.clock().now().as_secs_f64();
    assert_eq!(
        c.reap_stopped_tasks(now, 3600.0).await.unwrap(),
        0,
        "too recent"
    );
    let known = async |arn: &str| {
        c.describe_tasks(berth_model::wire::ecs::DescribeTasksRequest {
            cluster: Some("c".into()),
            tasks: Some(vec![arn.to_string()]),
            ..Default::default()
        })
        .await
        .unwrap()
        .tasks
        .unwrap()
        .len()
            == 1
    };
    // Housekeeping runs every minute and forgets a STOPPED task an hour after it stopped.
    // (The sleeps end between its runs.)
    tokio::time::sleep(std::time::Duration::from_secs(3600 - 30)).await;
    assert!(known(&t0).await, "kept for an hour");
    tokio::time::sleep(std::time::Duration::from_secs(120)).await;
    assert!(!known(&t0).await, "forgotten after an hour");
    let left = c
        .list_tasks(ListTasksRequest {
            cluster: Some("c".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .task_arns
        .unwrap();
    assert_eq!(
        left,
        vec![tasks[1].task_arn.clone().unwrap()],
        "the running one stays"
    );
}

#[tokio::test(start_paused = true)]
async fn the_retention_of_stopped_tasks_is_a_setting() {
    let cfg = ControlConfig {
        stopped_task_retention: std::time::Duration::from_secs(300),
        ..patient_cfg()
    };
    let c = Control::open(cfg, Arc::new(MemStore::new())).await.unwrap();
    c.create_cluster(CreateClusterRequest {
        cluster_name: Some("c".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    c.register_task_definition(td("w", 1), "me").await.unwrap();
    instance(&c, "c", 1024).await;
    let run = c
        .run_task(RunTaskRequest {
            cluster: Some("c".into()),
            task_definition: Some("w".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let t = run.tasks.unwrap()[0].task_arn.clone().unwrap();
    c.submit_task_state_change(berth_model::wire::ecs::SubmitTaskStateChangeRequest {
        cluster: Some("c".into()),
        task: Some(t.clone()),
        status: Some("STOPPED".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    let listed = async || {
        c.list_tasks(ListTasksRequest {
            cluster: Some("c".into()),
            desired_status: Some("STOPPED".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .task_arns
        .unwrap()
        .len()
    };
    // Housekeeping runs every minute; the sleeps end between its runs.
    tokio::time::sleep(std::time::Duration::from_secs(300 - 30)).await;
    assert_eq!(listed().await, 1, "kept for the five minutes");
    tokio::time::sleep(std::time::Duration::from_secs(120)).await;
    assert_eq!(
        listed().await,
        0,
        "forgotten after five minutes, not an hour"
    );
}

/// The agent feed: a task placed on an instance arrives as an ACS payload, then its desired
/// status change; a task reported STOPPED leaves the feed; a reconnecting agent gets the
/// unfinished tasks first.
/// The next payload of an agent feed (manifests skipped).
async fn payload(
    feed: &mut tokio::sync::mpsc::Receiver<berth_control::agent::FeedMessage>,
) -> berth_model::wire::acs::PayloadMessage {
    loop {
        let m = tokio::time::timeout(std::time::Duration::from_secs(5), feed.recv())
            .await
            .expect("a feed message within 5 s")
            .expect("the feed is open");
        if let berth_control::agent::FeedMessage::Payload(p) = m {
            return p;
        }
    }
}

/// An agent's report of a task's status.
async fn report(c: &Control, arn: &str, status: &str) {
    c.submit_task_state_change(berth_model::wire::ecs::SubmitTaskStateChangeRequest {
        task: Some(arn.to_string()),
        status: Some(status.to_string()),
        ..Default::default()
    })
    .await
    .unwrap();
}

/// A control plane with task definition `web` (10 CPU units) and one instance in the
/// default cluster; its ARN.
async fn with_web_and_instance() -> (Arc<Control>, String) {
    let c = setup(Arc::new(MemStore::new())).await;
    c.register_task_definition(td("web", 10), "me")
        .await
        .unwrap();
    let inst = instance(&c, "default", 1024).await;
    (c, inst)
}

#[tokio::test(start_paused = true)]
async fn agent_feed_carries_placements_and_stops() {
    use std::time::Duration;
    let (c, inst) = with_web_and_instance().await;
    let mut feed = c.agent_feed("default", &inst).await.unwrap();
    let first = payload(&mut feed).await;
    assert_eq!(
        first.tasks.as_ref().map(Vec::len),
        Some(0),
        "nothing placed yet"
    );
    let run = c
        .run_task(RunTaskRequest {
            task_definition: Some("web".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let arn = run.tasks.unwrap()[0].task_arn.clone().unwrap();
    let p = payload(&mut feed).await;
    let t = &p.tasks.as_ref().unwrap()[0];
    assert_eq!(t.arn.as_deref(), Some(arn.as_str()));
    assert_eq!(t.desired_status.as_deref(), Some("RUNNING"));
    assert_eq!(t.family.as_deref(), Some("web"));
    assert_eq!(t.version.as_deref(), Some("1"));
    let cont = &t.containers.as_ref().unwrap()[0];
    assert_eq!(cont.image.as_deref(), Some("busybox"));
    assert!(p.seq_num.unwrap() > first.seq_num.unwrap());
    // A reconnecting agent learns the task again, first thing.
    let mut feed2 = c.agent_feed("default", &inst).await.unwrap();
    let again = payload(&mut feed2).await;
    assert_eq!(again.tasks.unwrap()[0].arn.as_deref(), Some(arn.as_str()));
    c.stop_task(StopTaskRequest {
        task: Some(arn.clone()),
        ..Default::default()
    })
    .await
    .unwrap();
    let p = payload(&mut feed).await;
    assert_eq!(
        p.tasks.unwrap()[0].desired_status.as_deref(),
        Some("STOPPED")
    );
    report(&c, &arn, "STOPPED").await;
    let mut feed3 = c.agent_feed("default", &inst).await.unwrap();
    assert_eq!(payload(&mut feed3).await.tasks.map(|t| t.len()), Some(0));
    // Nothing more arrives on the first feed for a finished task.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), payload(&mut feed))
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarting_agent_does_not_undo_draining() {
    let c = setup(Arc::new(MemStore::new())).await;
    c.create_cluster(CreateClusterRequest {
        cluster_name: Some("c".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    let arn = instance(&c, "c", 1024).await;
    c.update_container_instances_state(UpdateContainerInstancesStateRequest {
        cluster: Some("c".into()),
        container_instances: Some(vec![arn.clone()]),
        status: Some("DRAINING".into()),
    })
    .await
    .unwrap();
    // The agent restarts and registers again with its instance's ARN.
    let reregister = || {
        c.register_container_instance(RegisterContainerInstanceRequest {
            cluster: Some("c".into()),
            container_instance_arn: Some(arn.clone()),
            ..Default::default()
        })
    };
    let again = reregister().await.unwrap().container_instance.unwrap();
    assert_eq!(again.container_instance_arn.as_deref(), Some(arn.as_str()));
    assert_eq!(again.status.as_deref(), Some("DRAINING"));
    let described = c
        .describe_container_instances(DescribeContainerInstancesRequest {
            cluster: Some("c".into()),
            container_instances: Some(vec![arn.clone()]),
            ..Default::default()
        })
        .await
        .unwrap()
        .container_instances
        .unwrap();
    assert_eq!(described[0].status.as_deref(), Some("DRAINING"));
    // Deregistering is final: the same ARN cannot come back; the machine joins anew.
    c.deregister_container_instance(berth_model::wire::ecs::DeregisterContainerInstanceRequest {
        cluster: Some("c".into()),
        container_instance: Some(arn.clone()),
        force: Some(true),
    })
    .await
    .unwrap();
    let e = reregister().await.unwrap_err();
    assert_eq!(e.code(), "ClientException");
    assert!(e.to_string().ends_with("is inactive."), "{e}");
    let fresh = instance(&c, "c", 1024).await;
    assert_ne!(fresh, arn);
}

#[tokio::test]
async fn a_task_needing_a_capability_the_instance_lacks_is_refused_with_attribute() {
    let c = setup(Arc::new(MemStore::new())).await;
    c.create_cluster(CreateClusterRequest {
        cluster_name: Some("c".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut req = td("hc", 10);
    req.container_definitions.as_mut().unwrap()[0].health_check =
        Some(berth_model::wire::ecs::HealthCheck {
            command: Some(vec!["CMD-SHELL".into(), "true".into()]),
            ..Default::default()
        });
    let def = c
        .register_task_definition(req, "me")
        .await
        .unwrap()
        .task_definition
        .unwrap();
    assert_eq!(
        required_names(def),
        vec!["ecs.capability.container-health-check"]
    );
    let arn = instance(&c, "c", 1024).await;
    let r = c
        .run_task(RunTaskRequest {
            cluster: Some("c".into()),
            task_definition: Some("hc".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(r.tasks.unwrap().is_empty());
    let f = r.failures.unwrap();
    assert_eq!(f[0].reason.as_deref(), Some("ATTRIBUTE"));
    assert_eq!(f[0].arn.as_deref(), Some(arn.as_str()));
}

#[tokio::test]
async fn an_agent_session_reports_only_about_its_own_tasks() {
    use berth_model::wire::tcs::{ContainerHealth, PublishHealthRequest, TaskHealth};
    let c = setup(Arc::new(MemStore::new())).await;
    c.create_cluster(CreateClusterRequest {
        cluster_name: Some("c".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    c.register_task_definition(td("w", 10), "me").await.unwrap();
    let mine = instance(&c, "c", 1024).await;
    let other = instance(&c, "c", 1024).await;
    let t = c
        .start_task(berth_model::wire::ecs::StartTaskRequest {
            cluster: Some("c".into()),
            task_definition: Some("w".into()),
            container_instances: Some(vec![other.clone()]),
            ..Default::default()
        })
        .await
        .unwrap()
        .tasks
        .unwrap()
        .remove(0);
    let report = || PublishHealthRequest {
        tasks: Some(vec![TaskHealth {
            task_arn: t.task_arn.clone(),
            cluster_arn: Some("c".into()),
            containers: Some(vec![ContainerHealth {
                container_name: Some("a".into()),
                health_status: Some("UNHEALTHY".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }]),
        ..Default::default()
    };
    let arn = t.task_arn.clone().unwrap();
    let health = |c: Arc<Control>, arn: String| async move {
        c.describe_tasks(berth_model::wire::ecs::DescribeTasksRequest {
            cluster: Some("c".into()),
            tasks: Some(vec![arn]),
            include: None,
        })
        .await
        .unwrap()
        .tasks
        .unwrap()[0]
            .health_status
            .clone()
    };
    // Another instance's session cannot touch it …
    c.publish_health_from(Some(("c", &mine)), report())
        .await
        .unwrap();
    assert_eq!(
        health(c.clone(), arn.clone()).await.as_deref(),
        Some("UNKNOWN")
    );
    let net = berth_control::agent::TaskNetwork {
        private_ipv4: "10.0.0.9".into(),
        mac: "02:00:00:00:00:09".into(),
        subnet: "10.0.0.0/24".into(),
    };
    assert!(
        c.report_task_network_from("c", &mine, &arn, &net)
            .await
            .is_err()
    );
    // … its own can.
    c.publish_health_from(Some(("c", &other)), report())
        .await
        .unwrap();
    assert_eq!(
        health(c.clone(), arn.clone()).await.as_deref(),
        Some("UNHEALTHY")
    );
    c.report_task_network_from("c", &other, &arn, &net)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduler_picture_kept_change_by_change_matches_one_made_afresh() {
    use berth_model::wire::ecs::{PortMapping, SubmitTaskStateChangeRequest};
    let c = setup(Arc::new(MemStore::new())).await;
    c.register_task_definition(td("w", 50), "me").await.unwrap();
    let mut web = td("web", 100);
    web.container_definitions.as_mut().unwrap()[0].port_mappings = Some(vec![PortMapping {
        container_port: Some(80),
        host_port: Some(8080),
        protocol: Some("tcp".into()),
        ..Default::default()
    }]);
    c.register_task_definition(web, "me").await.unwrap();
    let mut insts = Vec::new();
    for _ in 0..3 {
        insts.push(instance(&c, "default", 1024).await);
    }
    let mut hs = Vec::new();
    for i in 0..16 {
        let c = c.clone();
        hs.push(tokio::spawn(async move {
            c.run_task(RunTaskRequest {
                task_definition: Some(if i % 4 == 0 { "web" } else { "w" }.into()),
                count: Some(if i % 4 == 0 { 2 } else { 3 }),
                ..Default::default()
            })
            .await
            .unwrap()
        }));
    }
    let mut arns = Vec::new();
    let mut refused_ports = 0;
    for h in hs {
        let r = h.await.unwrap();
        arns.extend(r.tasks.unwrap().into_iter().map(|t| t.task_arn.unwrap()));
        refused_ports += r
            .failures
            .unwrap()
            .iter()
            .filter(|f| f.reason.as_deref() == Some("RESOURCE:PORTS"))
            .count();
    }
    c.check_scheduler_picture().unwrap();
    // Three instances hold one port-8080 task each; the other five were refused.
    assert_eq!(arns.len(), 36 + 3);
    assert!(refused_ports > 0);
    let report = |arn: String, status: &'static str| {
        let c = c.clone();
        async move {
            c.submit_task_state_change(SubmitTaskStateChangeRequest {
                task: Some(arn),
                status: Some(status.into()),
                ..Default::default()
            })
            .await
            .unwrap();
        }
    };
    for a in &arns[..20] {
        report(a.clone(), "RUNNING").await;
    }
    c.check_scheduler_picture().unwrap();
    for a in &arns[..5] {
        report(a.clone(), "STOPPED").await;
    }
    for a in &arns[5..12] {
        c.stop_task(StopTaskRequest {
            task: Some(a.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    c.check_scheduler_picture().unwrap();
    for a in &arns[5..9] {
        report(a.clone(), "STOPPED").await;
    }
    c.update_container_instances_state(UpdateContainerInstancesStateRequest {
        container_instances: Some(vec![insts[0].clone()]),
        status: Some("DRAINING".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    c.check_scheduler_picture().unwrap();
    // Room freed by stopped tasks is placed again.
    let r = c
        .run_task(RunTaskRequest {
            task_definition: Some("w".into()),
            count: Some(10),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(r.tasks.unwrap().len(), 10);
    c.check_scheduler_picture().unwrap();
}

#[tokio::test]
async fn awsvpc_tasks_go_only_to_nodes_that_make_task_networks() {
    use berth_model::wire::ecs::{AwsVpcConfiguration, NetworkConfiguration};
    let c = setup(Arc::new(MemStore::new())).await;
    let mut req = td("vpc", 10);
    req.network_mode = Some("awsvpc".into());
    let def = c
        .register_task_definition(req, "me")
        .await
        .unwrap()
        .task_definition
        .unwrap();
    // The definition shows what ECS would show.
    assert_eq!(required_names(def), vec!["ecs.capability.task-eni"]);
    // A stock ECS agent: task-eni, but no berth task networks.
    let stock = instance_with(&c, "default", 1024, &["ecs.capability.task-eni"]).await;
    let run = || {
        let c = c.clone();
        async move {
            c.run_task(RunTaskRequest {
                task_definition: Some("vpc".into()),
                network_configuration: Some(NetworkConfiguration {
                    awsvpc_configuration: Some(AwsVpcConfiguration {
                        subnets: Some(vec!["subnet-1".into()]),
                        ..Default::default()
                    }),
                }),
                ..Default::default()
            })
            .await
            .unwrap()
        }
    };
    let r = run().await;
    assert!(r.tasks.unwrap().is_empty());
    let f = r.failures.unwrap();
    assert_eq!(
        (f[0].reason.as_deref(), f[0].arn.as_deref()),
        (Some("ATTRIBUTE"), Some(stock.as_str()))
    );
    let berth = instance_with(
        &c,
        "default",
        1024,
        &[
            "ecs.capability.task-eni",
            berth_model::taskdef::TASK_NETWORK_CAPABILITY,
        ],
    )
    .await;
    let r = run().await;
    let t = &r.tasks.unwrap()[0];
    assert_eq!(t.container_instance_arn.as_deref(), Some(berth.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifests_list_what_should_run_and_stops_are_verified() {
    use berth_control::agent::FeedMessage;
    use berth_model::wire::acs::{TaskIdentifier, TaskStopVerificationMessage};
    let (c, inst) = with_web_and_instance().await;
    let other = instance(&c, "default", 1024).await;
    let run = |target: &str| {
        let (c, target) = (c.clone(), target.to_string());
        async move {
            c.start_task(berth_model::wire::ecs::StartTaskRequest {
                task_definition: Some("web".into()),
                container_instances: Some(vec![target]),
                ..Default::default()
            })
            .await
            .unwrap()
            .tasks
            .unwrap()[0]
                .task_arn
                .clone()
                .unwrap()
        }
    };
    let (keep, stop, gone, elsewhere) = (
        run(&inst).await,
        run(&inst).await,
        run(&inst).await,
        run(&other).await,
    );
    c.stop_task(StopTaskRequest {
        task: Some(stop.clone()),
        ..Default::default()
    })
    .await
    .unwrap();
    c.stop_task(StopTaskRequest {
        task: Some(gone.clone()),
        ..Default::default()
    })
    .await
    .unwrap();
    report(&c, &gone, "STOPPED").await;
    let mut feed = c.agent_feed("default", &inst).await.unwrap();
    let first = payload(&mut feed).await;
    let m = loop {
        match tokio::time::timeout(std::time::Duration::from_secs(5), feed.recv())
            .await
            .unwrap()
            .unwrap()
        {
            FeedMessage::Manifest(m) => break m,
            FeedMessage::Payload(_) | FeedMessage::Credentials(_) => {}
        }
    };
    assert!(
        m.timeline.unwrap() > i64::from(first.seq_num.unwrap()),
        "a manifest's timeline is above the payloads before it"
    );
    let mut listed: Vec<(String, String)> = m
        .tasks
        .unwrap()
        .into_iter()
        .map(|t| (t.task_arn.unwrap(), t.desired_status.unwrap()))
        .collect();
    listed.sort();
    let mut want = vec![
        (keep.clone(), "RUNNING".to_string()),
        (stop.clone(), "STOPPED".to_string()),
    ];
    want.sort();
    assert_eq!(listed, want, "unfinished tasks of this instance only");
    // The agent proposes stops; the server agrees to all but the task that should run.
    let ident = |a: &str| TaskIdentifier {
        task_arn: Some(a.to_string()),
        ..Default::default()
    };
    let unknown = keep.replace(&keep[keep.len() - 4..], "0000");
    let ack = c.verify_task_stops(
        "default",
        &inst,
        &TaskStopVerificationMessage {
            message_id: m.message_id.clone(),
            stop_candidates: Some(vec![
                ident(&keep),
                ident(&stop),
                ident(&gone),
                ident(&elsewhere),
                ident(&unknown),
            ]),
        },
    );
    assert_eq!(ack.message_id, m.message_id);
    let agreed: Vec<String> = ack
        .stop_tasks
        .unwrap()
        .into_iter()
        .filter_map(|t| t.task_arn)
        .collect();
    assert_eq!(agreed, vec![stop, gone, elsewhere, unknown]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payloads_say_how_to_log_in_to_berths_registry() {
    let c = setup(Arc::new(MemStore::new())).await;
    c.set_registry("berth.test:8470", "https://berth.test:8470");
    let mut req = td("web", 10);
    let mut side = req.container_definitions.as_ref().unwrap()[0].clone();
    side.name = Some("side".into());
    side.image = Some("berth.test:8470/side:1".into());
    req.container_definitions.as_mut().unwrap().push(side);
    c.register_task_definition(req, "me").await.unwrap();
    let inst = instance(&c, "default", 1024).await;
    let mut feed = c.agent_feed("default", &inst).await.unwrap();
    payload(&mut feed).await;
    c.run_task(RunTaskRequest {
        task_definition: Some("web".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    let p = payload(&mut feed).await;
    let cs = p.tasks.unwrap()[0].containers.clone().unwrap();
    let auth = |name: &str| {
        cs.iter()
            .find(|x| x.name.as_deref() == Some(name))
            .unwrap()
            .registry_authentication
            .clone()
    };
    assert_eq!(auth("a"), None, "busybox is not berth's");
    let a = auth("side").expect("berth's registry");
    assert_eq!(a.r#type.as_deref(), Some("ecr"));
    let e = a.ecr_auth_data.unwrap();
    assert_eq!(
        (
            e.endpoint_override.as_deref(),
            e.region.as_deref(),
            e.registry_id.as_deref()
        ),
        (
            Some("https://berth.test:8470"),
            Some("us-east-1"),
            Some("000000000000")
        )
    );
}

/// Task roles: a task whose definition names a role trusting ECS tasks gets the role's
/// credentials in its payload; they are a working session of the role; they are renewed
/// at half their life (ECS's 6 hours, on a paused clock) under the same credentials id, and
/// expire at the end of it; a role that does not trust ECS tasks is refused at RunTask; a
/// malformed role ARN at registration.
#[tokio::test(start_paused = true)]
async fn task_roles_get_session_credentials_in_payloads_and_renewals() {
    use berth_control::agent::FeedMessage;
    use berth_control::iam::{NewRole, Principal};
    use std::time::Duration;
    let c = Control::open(patient_cfg(), Arc::new(MemStore::new()))
        .await
        .unwrap();
    let ttl = cfg().task_credentials_ttl;
    assert_eq!(ttl, Duration::from_secs(6 * 3600));
    let trust = |service: &str| {
        format!(
            r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Principal":{{"Service":"{service}"}},"Action":"sts:AssumeRole"}}]}}"#
        )
    };
    let role = c
        .create_role(NewRole {
            role_name: "app".into(),
            assume_role_policy: trust("ecs-tasks.amazonaws.com"),
            ..Default::default()
        })
        .await
        .unwrap();
    c.create_role(NewRole {
        role_name: "lambda-only".into(),
        assume_role_policy: trust("lambda.amazonaws.com"),
        ..Default::default()
    })
    .await
    .unwrap();
    let inst = instance(&c, "default", 1024).await;
    let with_role = |family: &str, role: &str| RegisterTaskDefinitionRequest {
        task_role_arn: Some(role.into()),
        ..td(family, 10)
    };
    let bad = c
        .register_task_definition(with_role("bad", "app"), "test")
        .await
        .unwrap_err();
    assert_eq!(bad.code(), "ClientException");
    c.register_task_definition(with_role("web", &role.arn), "test")
        .await
        .unwrap();
    c.register_task_definition(
        with_role("other", "arn:aws:iam::000000000000:role/lambda-only"),
        "test",
    )
    .await
    .unwrap();
    let refused = c
        .run_task(RunTaskRequest {
            task_definition: Some("other".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("unable to assume the role"),
        "{refused}"
    );
    let mut feed = c.agent_feed("default", &inst).await.unwrap();
    payload(&mut feed).await;
    let t = c
        .run_task(RunTaskRequest {
            task_definition: Some("web".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .tasks
        .unwrap()
        .remove(0);
    let p = payload(&mut feed).await;
    let issued = c.clock().instant();
    let creds = p.tasks.unwrap()[0].role_credentials.clone().unwrap();
    assert_eq!(creds.role_arn.as_deref(), Some(role.arn.as_str()));
    let akid = creds.access_key_id.clone().unwrap();
    assert!(akid.starts_with("ASIA"));
    let who = c.principal(&akid, creds.session_token.as_deref()).unwrap();
    let Principal::Session(claims) = &who else {
        panic!("a session");
    };
    assert_eq!(claims.role_name, "app");
    assert_eq!(
        claims.session_name,
        t.task_arn.as_deref().unwrap().rsplit('/').next().unwrap()
    );
    // No policy yet: the session may do nothing.
    assert_eq!(
        c.authorize_access(
            &Caller::local(who.clone()),
            "ecs",
            "ListClusters",
            &Access::any()
        )
        .unwrap_err()
        .code(),
        "AccessDeniedException"
    );
    c.put_role_policy(
        "app",
        "list",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"ecs:List*","Resource":"*"}]}"#,
    )
    .await
    .unwrap();
    c.authorize_access(
        &Caller::local(who.clone()),
        "ecs",
        "ListClusters",
        &Access::any(),
    )
    .unwrap();
    // Renewed at half their life (looked at every tenth of it), under the same id; not
    // before.
    let next_credentials = async |feed: &mut tokio::sync::mpsc::Receiver<FeedMessage>| loop {
        if let FeedMessage::Credentials(m) = feed.recv().await.expect("the feed is open") {
            break m;
        }
    };
    assert!(
        tokio::time::timeout(
            ttl / 2 - Duration::from_secs(60),
            next_credentials(&mut feed)
        )
        .await
        .is_err(),
        "renewed before half their life"
    );
    let renewed = tokio::time::timeout(
        ttl / 10 + Duration::from_secs(120),
        next_credentials(&mut feed),
    )
    .await
    .expect("renewed soon after half their life");
    let at = c.clock().elapsed(issued);
    assert!(
        at >= ttl / 2 && at <= ttl / 2 + ttl / 10,
        "renewed after {at:?}"
    );
    assert_eq!(renewed.role_type.as_deref(), Some("TaskApplication"));
    assert_eq!(renewed.task_arn, t.task_arn);
    let fresh = renewed.role_credentials.unwrap();
    assert_eq!(fresh.credentials_id, creds.credentials_id);
    assert_ne!(fresh.access_key_id, creds.access_key_id);
    let works = |k: &berth_model::wire::acs::IAMRoleCredentials| {
        c.principal(
            k.access_key_id.as_deref().unwrap(),
            k.session_token.as_deref(),
        )
        .is_ok()
    };
    assert!(works(&fresh));
    assert!(works(&creds), "the first ones still work until they expire");
    // At the end of their life the first ones expire; the renewed ones live on.
    tokio::time::sleep_until(issued + ttl + Duration::from_secs(60)).await;
    assert!(!works(&creds), "expired after {ttl:?}");
    assert!(works(&fresh));
}

/// ListRoles pages with an opaque marker and walks every role once, in name order.
#[tokio::test]
async fn roles_page_with_markers() {
    use berth_control::iam::NewRole;
    let c = setup(Arc::new(MemStore::new())).await;
    for name in ["c-role", "A-role", "b-role"] {
        c.create_role(NewRole {
            role_name: name.into(),
            assume_role_policy: r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"000000000000"},"Action":"sts:AssumeRole"}]}"#.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let (first, marker) = c.list_roles(None, None, Some(2)).unwrap();
    let names: Vec<_> = first.iter().map(|r| r.role_name.as_str()).collect();
    assert_eq!(names, ["A-role", "b-role"]);
    let (rest, end) = c.list_roles(None, marker.as_deref(), Some(2)).unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].role_name, "c-role");
    assert!(end.is_none());
    assert!(c.list_roles(None, None, Some(0)).is_err());
    assert!(c.list_roles(None, Some("!!not a marker"), None).is_err());
}

/// A store whose watch streams deliver every batch late: a control plane on it sees the other
/// servers' writes (and its own) only after `lag`, like a server whose view trails the store.
struct Lagging {
    inner: Arc<dyn Store>,
    lag: std::time::Duration,
}

#[async_trait::async_trait]
impl Store for Lagging {
    async fn get(
        &self,
        key: &[u8],
    ) -> Result<Option<berth_store::KeyValue>, berth_store::StoreError> {
        self.inner.get(key).await
    }
    async fn range(
        &self,
        req: berth_store::RangeRequest,
    ) -> Result<berth_store::RangeResponse, berth_store::StoreError> {
        self.inner.range(req).await
    }
    async fn txn(
        &self,
        txn: berth_store::Txn,
    ) -> Result<berth_store::TxnResponse, berth_store::StoreError> {
        self.inner.txn(txn).await
    }
    async fn watch(
        &self,
        prefix: &[u8],
        from: berth_store::Revision,
    ) -> Result<berth_store::Watcher, berth_store::StoreError> {
        let mut w = self.inner.watch(prefix, from).await?;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let lag = self.lag;
        tokio::spawn(async move {
            while let Some(batch) = w.next().await {
                tokio::time::sleep(lag).await;
                if tx.send(batch).is_err() {
                    break;
                }
            }
        });
        Ok(berth_store::Watcher::new(rx))
    }
    async fn revision(&self) -> Result<berth_store::Revision, berth_store::StoreError> {
        self.inner.revision().await
    }
    async fn compact(
        &self,
        revision: berth_store::Revision,
    ) -> Result<(), berth_store::StoreError> {
        self.inner.compact(revision).await
    }
}

/// Two servers on one store place on the same instance at once; the second one's view has
/// not seen the first's tasks yet. The allocation revision in the commit refuses the stale
/// plan, the server catches up and plans again: the instance is never oversold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_placing_at_once_never_oversell_an_instance() {
    let store: Arc<dyn Store> = Arc::new(MemStore::new());
    let a = setup(store.clone()).await;
    a.create_cluster(CreateClusterRequest {
        cluster_name: Some("c".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    a.register_task_definition(td("w", 100), "me")
        .await
        .unwrap();
    let arn = instance(&a, "c", 1000).await;
    let b = setup(Arc::new(Lagging {
        inner: store.clone(),
        lag: std::time::Duration::from_millis(300),
    }))
    .await;
    let run = |c: Arc<Control>, count: i32| async move {
        c.run_task(RunTaskRequest {
            cluster: Some("c".into()),
            task_definition: Some("w".into()),
            count: Some(count),
            ..Default::default()
        })
        .await
        .unwrap()
    };
    // a fills the instance; b, whose view trails by 300 ms, tries right after.
    let first = run(a.clone(), 10).await;
    assert_eq!(first.tasks.unwrap().len(), 10);
    let second = run(b.clone(), 5).await;
    assert_eq!(second.tasks.unwrap().len(), 0, "b oversold the instance");
    assert_eq!(
        second.failures.unwrap()[0].reason.as_deref(),
        Some("RESOURCE:CPU")
    );
    // Both at once, from both servers, after a stop frees room for three.
    let listed = a
        .list_tasks(ListTasksRequest {
            cluster: Some("c".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .task_arns
        .unwrap();
    for t in &listed[..3] {
        a.stop_task(StopTaskRequest {
            cluster: Some("c".into()),
            task: Some(t.clone()),
            reason: None,
        })
        .await
        .unwrap();
    }
    // Stopped tasks keep their reservation until the agent reports them stopped.
    for t in &listed[..3] {
        a.submit_task_state_change(berth_model::wire::ecs::SubmitTaskStateChangeRequest {
            cluster: Some("c".into()),
            task: Some(t.clone()),
            status: Some("STOPPED".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let (ra, rb) = tokio::join!(
        async {
            let mut n = 0;
            for _ in 0..4 {
                n += run(a.clone(), 1).await.tasks.unwrap().len();
            }
            n
        },
        async {
            let mut n = 0;
            for _ in 0..4 {
                n += run(b.clone(), 1).await.tasks.unwrap().len();
            }
            n
        }
    );
    assert_eq!(ra + rb, 3, "placed {ra} + {rb} into room for 3");
    let d = setup(store.clone())
        .await
        .describe_container_instances(DescribeContainerInstancesRequest {
            cluster: Some("c".into()),
            container_instances: Some(vec![arn]),
            ..Default::default()
        })
        .await
        .unwrap();
    let ci = &d.container_instances.unwrap()[0];
    let cpu = ci
        .remaining_resources
        .as_ref()
        .unwrap()
        .iter()
        .find(|r| r.name.as_deref() == Some("CPU"))
        .unwrap()
        .integer_value
        .unwrap();
    assert_eq!(cpu, 0);
}

/// An agent's report with a status ECS does not have is refused with ECS's error and changes
/// nothing: a bad task status, and a bad container status alone or inside a task report
/// (which would otherwise still move the task on).
#[tokio::test]
async fn reports_with_unknown_statuses_are_refused_and_change_nothing() {
    use berth_model::wire::ecs::{
        ContainerStateChange, DescribeTasksRequest, SubmitContainerStateChangeRequest,
        SubmitTaskStateChangeRequest,
    };
    let (c, _inst) = with_web_and_instance().await;
    let arn = c
        .run_task(RunTaskRequest {
            task_definition: Some("web".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .tasks
        .unwrap()[0]
        .task_arn
        .clone()
        .unwrap();
    let state = |c: Arc<Control>, arn: String| async move {
        let t = c
            .describe_tasks(DescribeTasksRequest {
                tasks: Some(vec![arn]),
                ..Default::default()
            })
            .await
            .unwrap()
            .tasks
            .unwrap()
            .remove(0);
        let cs = t.containers.unwrap();
        (t.last_status, t.version, cs[0].last_status.clone())
    };
    let before = state(c.clone(), arn.clone()).await;
    let invalid = |e: ControlError, what: &str| {
        assert!(
            matches!(&e, ControlError::InvalidParameter(m) if m == what),
            "{e:?}"
        );
    };
    let e = c
        .submit_task_state_change(SubmitTaskStateChangeRequest {
            task: Some(arn.clone()),
            status: Some("BOGUS".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    invalid(e, "Invalid task status: BOGUS");
    let e = c
        .submit_task_state_change(SubmitTaskStateChangeRequest {
            task: Some(arn.clone()),
            status: Some("RUNNING".into()),
            containers: Some(vec![ContainerStateChange {
                container_name: Some("a".into()),
                status: Some("CREATED".into()),
                ..Default::default()
            }]),
            ..Default::default()
        })
        .await
        .unwrap_err();
    invalid(e, "Invalid container status: CREATED");
    let e = c
        .submit_container_state_change(SubmitContainerStateChangeRequest {
            task: Some(arn.clone()),
            container_name: Some("a".into()),
            status: Some("running".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    invalid(e, "Invalid container status: running");
    assert_eq!(state(c.clone(), arn.clone()).await, before);
    // A good report still moves it on.
    report(&c, &arn, "RUNNING").await;
    assert_eq!(
        state(c.clone(), arn.clone()).await.0.as_deref(),
        Some("RUNNING")
    );
}
