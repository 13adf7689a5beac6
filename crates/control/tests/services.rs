//! Services over the in-memory store with the controller running: the API's checks, and the
//! controller keeping the desired count as a fake agent reports its tasks (the same paths run
//! with real agents and containers in tests/e2e/test_services.py). The controller's timers
//! (health settling, throttling, placement retries) run on a paused clock (`start_paused`):
//! the control plane reads tokio's clock, so they take no real time.

use std::sync::Arc;
use std::time::Duration;

use berth_control::{Control, ControlConfig, ControlError};
use berth_model::wire::ecs::{
    ContainerDefinition, CreateClusterRequest, CreateServiceRequest, DeleteServiceRequest,
    DescribeServicesRequest, ListServicesRequest, ListTasksRequest,
    RegisterContainerInstanceRequest, RegisterTaskDefinitionRequest, Resource, Service,
    SubmitTaskStateChangeRequest, UpdateServiceRequest,
};
use berth_store::MemStore;

/// Tasks without health checks count as healthy at once (the 40 s of ECS is pinned in the
/// rollout tests).
fn cfg() -> ControlConfig {
    ControlConfig {
        service_task_healthy_after: Duration::ZERO,
        ..Default::default()
    }
}

async fn setup() -> Arc<Control> {
    setup_with(cfg()).await
}

/// Cluster `c` with `web:1` and `web:2` and two instances, on a control plane with `cfg`.
async fn setup_with(cfg: ControlConfig) -> Arc<Control> {
    let c = Control::open(cfg, Arc::new(MemStore::new())).await.unwrap();
    c.create_cluster(CreateClusterRequest {
        cluster_name: Some("c".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    for image in ["busybox", "busybox:2"] {
        c.register_task_definition(
            RegisterTaskDefinitionRequest {
                family: Some("web".into()),
                container_definitions: Some(vec![ContainerDefinition {
                    name: Some("a".into()),
                    image: Some(image.into()),
                    memory: Some(16),
                    ..Default::default()
                }]),
                ..Default::default()
            },
            "me",
        )
        .await
        .unwrap();
    }
    for _ in 0..2 {
        c.register_container_instance(RegisterContainerInstanceRequest {
            cluster: Some("c".into()),
            total_resources: Some(vec![
                Resource {
                    name: Some("CPU".into()),
                    r#type: Some("INTEGER".into()),
                    integer_value: Some(4096),
                    ..Default::default()
                },
                Resource {
                    name: Some("MEMORY".into()),
                    r#type: Some("INTEGER".into()),
                    integer_value: Some(4096),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    c
}

fn create(desired: Option<i32>) -> CreateServiceRequest {
    CreateServiceRequest {
        cluster: Some("c".into()),
        service_name: Some("web".into()),
        task_definition: Some("web:1".into()),
        desired_count: desired,
        ..Default::default()
    }
}

async fn describe(c: &Control) -> Service {
    c.describe_services(DescribeServicesRequest {
        cluster: Some("c".into()),
        services: Some(vec!["web".into()]),
        include: None,
    })
    .await
    .unwrap()
    .services
    .unwrap()
    .remove(0)
}

async fn tasks(c: &Control, desired: &str) -> Vec<String> {
    c.list_tasks(ListTasksRequest {
        cluster: Some("c".into()),
        service_name: Some("web".into()),
        desired_status: Some(desired.into()),
        ..Default::default()
    })
    .await
    .unwrap()
    .task_arns
    .unwrap()
}

/// The fake agent: report every task the server wants stopped as STOPPED and every other
/// one as RUNNING, until `until` holds.
async fn agent_until(c: &Control, what: &str, until: impl AsyncFn(&Control) -> bool) {
    for _ in 0..500 {
        for (desired, status) in [("RUNNING", "RUNNING"), ("STOPPED", "STOPPED")] {
            for t in tasks(c, desired).await {
                c.submit_task_state_change(SubmitTaskStateChangeRequest {
                    cluster: Some("c".into()),
                    task: Some(t),
                    status: Some(status.into()),
                    ..Default::default()
                })
                .await
                .unwrap();
            }
        }
        if until(c).await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let s = describe(c).await;
    panic!(
        "{what}: not reached; running {:?} pending {:?} desired {:?}; deployments {:#?}; events {:#?}",
        s.running_count, s.pending_count, s.desired_count, s.deployments, s.events
    );
}

/// One deployment, all tasks running, and the controller has said so.
async fn stable(c: &Control) -> bool {
    let s = describe(c).await;
    let said = s
        .events
        .as_ref()
        .and_then(|e| e.first())
        .and_then(|e| e.message.as_deref())
        == Some("(service web) has reached a steady state.");
    s.deployments.as_ref().map(Vec::len) == Some(1) && s.running_count == s.desired_count && said
}

#[tokio::test(start_paused = true)]
async fn the_controller_keeps_and_rolls_the_desired_count() {
    let c = setup().await;
    let s = c
        .create_service(create(Some(3)))
        .await
        .unwrap()
        .service
        .unwrap();
    assert_eq!(s.status.as_deref(), Some("ACTIVE"));
    assert_eq!(s.deployments.as_ref().unwrap().len(), 1);
    agent_until(&c, "steady", stable).await;
    let s = describe(&c).await;
    assert_eq!(s.running_count, Some(3));
    let msgs: Vec<String> = s
        .events
        .unwrap()
        .into_iter()
        .filter_map(|e| e.message)
        .collect();
    assert_eq!(msgs[0], "(service web) has reached a steady state.");
    assert!(
        msgs.iter()
            .any(|m| m.starts_with("(service web) has started 3 tasks:"))
    );

    // A task that dies is replaced.
    let victim = tasks(&c, "RUNNING").await.remove(0);
    c.submit_task_state_change(SubmitTaskStateChangeRequest {
        cluster: Some("c".into()),
        task: Some(victim.clone()),
        status: Some("STOPPED".into()),
        reason: Some("Essential container in task exited".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    agent_until(&c, "replaced", async |c: &Control| {
        let t = tasks(c, "RUNNING").await;
        t.len() == 3 && !t.contains(&victim) && stable(c).await
    })
    .await;

    // A rolling update ends with every task on the new definition.
    c.update_service(UpdateServiceRequest {
        cluster: Some("c".into()),
        service: Some("web".into()),
        task_definition: Some("web:2".into()),
        desired_count: Some(4),
        ..Default::default()
    })
    .await
    .unwrap();
    agent_until(&c, "rolled", async |c: &Control| {
        let s = describe(c).await;
        stable(c).await && s.deployments.unwrap()[0].rollout_state.as_deref() == Some("COMPLETED")
    })
    .await;
    let s = describe(&c).await;
    assert_eq!(s.running_count, Some(4));
    assert!(s.task_definition.unwrap().ends_with("web:2"));

    // Deletion: refused while scaled up, then forced: DRAINING → INACTIVE.
    let e = c
        .delete_service(DeleteServiceRequest {
            cluster: Some("c".into()),
            service: Some("web".into()),
            force: None,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), "InvalidParameterException");
    let s = c
        .delete_service(DeleteServiceRequest {
            cluster: Some("c".into()),
            service: Some("web".into()),
            force: Some(true),
        })
        .await
        .unwrap()
        .service
        .unwrap();
    assert_eq!(s.status.as_deref(), Some("DRAINING"));
    agent_until(&c, "inactive", async |c: &Control| {
        describe(c).await.status.as_deref() == Some("INACTIVE")
    })
    .await;
    let l = c
        .list_services(ListServicesRequest {
            cluster: Some("c".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(l.service_arns.unwrap().is_empty());
    // The name can be used again.
    c.create_service(create(Some(1))).await.unwrap();
}

#[tokio::test]
async fn bad_requests_change_nothing() {
    let c = setup().await;
    let cases: Vec<(CreateServiceRequest, &str)> = vec![
        (create(None), "InvalidParameterException"),
        (
            CreateServiceRequest {
                service_name: Some("bad name".into()),
                ..create(Some(1))
            },
            "InvalidParameterException",
        ),
        (
            CreateServiceRequest {
                task_definition: Some("nope:1".into()),
                ..create(Some(1))
            },
            "InvalidParameterException",
        ),
        (
            CreateServiceRequest {
                scheduling_strategy: Some("DAEMON".into()),
                ..create(Some(1))
            },
            "InvalidParameterException",
        ),
        (
            CreateServiceRequest {
                cluster: Some("nope".into()),
                ..create(Some(1))
            },
            "ClusterNotFoundException",
        ),
    ];
    for (req, code) in cases {
        let e: ControlError = c.create_service(req).await.unwrap_err();
        assert_eq!(e.code(), code, "{e}");
    }
    let l = c
        .list_services(ListServicesRequest {
            cluster: Some("c".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(l.service_arns.unwrap().is_empty());
    let e = c
        .update_service(UpdateServiceRequest {
            cluster: Some("c".into()),
            service: Some("web".into()),
            desired_count: Some(2),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), "ServiceNotFoundException");
    c.create_service(create(Some(1))).await.unwrap();
    let e = c.create_service(create(Some(1))).await.unwrap_err();
    assert_eq!(e.code(), "InvalidParameterException");
    assert!(e.to_string().contains("not idempotent"));
    let e = c
        .update_service(UpdateServiceRequest {
            cluster: Some("c".into()),
            service: Some("web".into()),
            desired_count: Some(-1),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), "InvalidParameterException");
    assert_eq!(describe(&c).await.desired_count, Some(1));
}

#[tokio::test(start_paused = true)]
async fn a_service_short_of_room_says_so_once_and_writes_nothing_more() {
    let store = Arc::new(MemStore::new());
    // No agent session here: the instance must not be found away (a write) meanwhile.
    let hour = Duration::from_secs(3600);
    let cfg = ControlConfig {
        liveness: berth_control::liveness::Liveness {
            agent_timeout: hour,
            lost_grace: hour,
            ..Default::default()
        },
        ..cfg()
    };
    let c = Control::open(cfg, store.clone()).await.unwrap();
    c.create_cluster(CreateClusterRequest {
        cluster_name: Some("c".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    c.register_task_definition(
        RegisterTaskDefinitionRequest {
            family: Some("web".into()),
            container_definitions: Some(vec![ContainerDefinition {
                name: Some("a".into()),
                image: Some("busybox".into()),
                memory: Some(3000),
                ..Default::default()
            }]),
            ..Default::default()
        },
        "me",
    )
    .await
    .unwrap();
    c.register_container_instance(RegisterContainerInstanceRequest {
        cluster: Some("c".into()),
        total_resources: Some(vec![Resource {
            name: Some("MEMORY".into()),
            r#type: Some("INTEGER".into()),
            integer_value: Some(4096),
            ..Default::default()
        }]),
        ..Default::default()
    })
    .await
    .unwrap();
    c.create_service(create(Some(2))).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rev = berth_store::Store::revision(&*store).await.unwrap();
    // A minute: a dozen retries of the placement (every 5 s).
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(
        berth_store::Store::revision(&*store).await.unwrap(),
        rev,
        "the controller kept writing"
    );
    let s = describe(&c).await;
    assert_eq!(tasks(&c, "RUNNING").await.len(), 1);
    let msgs: Vec<String> = s
        .events
        .unwrap()
        .into_iter()
        .filter_map(|e| e.message)
        .collect();
    let unplaced: Vec<&String> = msgs
        .iter()
        .filter(|m| m.contains("was unable to place a task"))
        .collect();
    assert_eq!(unplaced.len(), 1, "{msgs:?}");
    assert!(
        unplaced[0].contains("insufficient memory available"),
        "{msgs:?}"
    );
}

/// The fake agent's reports on one task.
async fn report(c: &Control, task: &str, status: &str) {
    c.submit_task_state_change(SubmitTaskStateChangeRequest {
        cluster: Some("c".into()),
        task: Some(task.to_string()),
        status: Some(status.into()),
        ..Default::default()
    })
    .await
    .unwrap();
}

/// The last event the service wrote.
async fn last_event(c: &Control) -> String {
    describe(c).await.events.unwrap()[0]
        .message
        .clone()
        .unwrap()
}

/// A task without container health checks counts as healthy once it has run for ECS's 40 s:
/// the deployment completes then, when the controller's own timer wakes it (nothing else
/// changes), by the control plane's clock.
#[tokio::test(start_paused = true)]
async fn a_deployment_completes_forty_seconds_after_its_tasks_run() {
    let c = setup_with(ControlConfig::default()).await;
    assert_eq!(
        ControlConfig::default().service_task_healthy_after,
        Duration::from_secs(40)
    );
    c.create_service(create(Some(1))).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t = tasks(&c, "RUNNING").await;
    assert_eq!(t.len(), 1);
    report(&c, &t[0], "RUNNING").await;
    let rollout = async || {
        describe(&c).await.deployments.unwrap()[0]
            .rollout_state
            .clone()
            .unwrap()
    };
    tokio::time::sleep(Duration::from_secs(39)).await;
    assert_eq!(rollout().await, "IN_PROGRESS");
    assert!(!stable(&c).await);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(rollout().await, "COMPLETED");
    assert!(stable(&c).await, "{}", last_event(&c).await);
}

/// Tasks of a new deployment that keep failing to start: after five in a row the controller
/// holds launches back, twice as long each time (0.1 s, 0.2 s, … as the clock counts), and at
/// ten the circuit breaker fails the deployment and rolls back to the last one that
/// completed.
#[tokio::test(start_paused = true)]
async fn failing_tasks_are_throttled_then_the_circuit_breaker_rolls_back() {
    let c = setup().await;
    c.create_service(create(Some(1))).await.unwrap();
    agent_until(&c, "steady", stable).await;
    let good = tasks(&c, "RUNNING").await;
    c.update_service(UpdateServiceRequest {
        cluster: Some("c".into()),
        service: Some("web".into()),
        task_definition: Some("web:2".into()),
        deployment_configuration: Some(berth_model::wire::ecs::DeploymentConfiguration {
            deployment_circuit_breaker: Some(berth_model::wire::ecs::DeploymentCircuitBreaker {
                enable: Some(true),
                rollback: Some(true),
            }),
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    let started = c.clock().now();
    // The fake agent: every task of web:2 fails to start as soon as it is seen.
    let mut failed: Vec<String> = Vec::new();
    for _ in 0..2000 {
        for t in tasks(&c, "RUNNING").await {
            if !good.contains(&t) && !failed.contains(&t) {
                report(&c, &t, "STOPPED").await;
                failed.push(t);
            }
        }
        let s = describe(&c).await;
        if s.task_definition
            .as_deref()
            .is_some_and(|d| d.ends_with("web:1"))
            && s.deployments.as_ref().is_some_and(|d| d.len() > 1)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        failed.len(),
        10,
        "the circuit breaker trips at ten failures"
    );
    let s = describe(&c).await;
    let deps = s.deployments.unwrap();
    assert!(
        deps[0]
            .task_definition
            .as_deref()
            .unwrap()
            .ends_with("web:1")
    );
    let msgs: Vec<String> = s
        .events
        .unwrap()
        .into_iter()
        .filter_map(|e| e.message)
        .collect();
    for said in [
        "unable to consistently start tasks",
        "deployment failed: tasks failed to start",
        "rolling back to",
    ] {
        assert!(msgs.iter().any(|m| m.contains(said)), "{said}: {msgs:?}");
    }
    // When each failed task was started and stopped, by the control plane's clock.
    let described = c
        .describe_tasks(berth_model::wire::ecs::DescribeTasksRequest {
            cluster: Some("c".into()),
            tasks: Some(failed.clone()),
            ..Default::default()
        })
        .await
        .unwrap()
        .tasks
        .unwrap();
    let mut times: Vec<(f64, f64)> = described
        .iter()
        .map(|t| (t.created_at.unwrap(), t.stopped_at.unwrap()))
        .collect();
    times.sort_by(|a, b| a.0.total_cmp(&b.0));
    for (n, w) in times.windows(2).enumerate() {
        let failures = n + 1;
        let gap = w[1].0 - w[0].1;
        if failures >= 5 {
            let held = 0.1 * 2f64.powi(failures as i32 - 5);
            assert!(
                gap >= held - 0.001,
                "after {failures} failures: {gap} s < {held} s"
            );
        } else {
            assert!(gap < 0.1, "after {failures} failures: held back {gap} s");
        }
    }
    // 0.1 + 0.2 + 0.4 + 0.8 + 1.6 s held back, at least.
    let spent = c.clock().now().duration_since(started);
    assert!(spent >= Duration::from_millis(3100), "{spent:?}");
}
