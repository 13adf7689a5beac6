//! The generated wire types against requests as the aws CLI sends them.

use berth_model::wire::{
    self, DecodeError, FieldError, FieldErrorKind, Validate, ecr, ecs, from_json,
};
use serde_json::{Value, json};

/// `aws ecs register-task-definition --cli-input-json file://td.json` sends this body.
fn register_task_definition_body() -> Value {
    json!({
        "family": "web",
        "taskRoleArn": "arn:aws:iam::123456789012:role/web-task",
        "networkMode": "bridge",
        "requiresCompatibilities": ["EC2"],
        "cpu": "256",
        "memory": "512",
        "containerDefinitions": [
            {
                "name": "app",
                "image": "registry.local/web:1.4",
                "cpu": 128,
                "memory": 256,
                "memoryReservation": 128,
                "essential": true,
                "command": ["serve", "--port", "8080"],
                "portMappings": [
                    {"containerPort": 8080, "hostPort": 0, "protocol": "tcp", "name": "http"}
                ],
                "environment": [
                    {"name": "RUST_LOG", "value": "info"},
                    {"name": "DB_HOST", "value": "db"}
                ],
                "healthCheck": {
                    "command": ["CMD-SHELL", "curl -f http://localhost:8080/health || exit 1"],
                    "interval": 10,
                    "timeout": 5,
                    "retries": 3,
                    "startPeriod": 15
                },
                "dependsOn": [{"containerName": "migrate", "condition": "SUCCESS"}],
                "dockerLabels": {"team": "web"},
                "logConfiguration": {
                    "logDriver": "json-file",
                    "options": {"max-size": "10m"}
                }
            },
            {
                "name": "migrate",
                "image": "registry.local/web:1.4",
                "essential": false,
                "command": ["migrate"]
            }
        ],
        "volumes": [{"name": "data", "host": {"sourcePath": "/srv/data"}}],
        "tags": [{"key": "env", "value": "test"}]
    })
}

fn decode<T: serde::de::DeserializeOwned>(v: &Value) -> Result<T, DecodeError> {
    from_json(serde_json::to_string(v).unwrap().as_bytes())
}

#[test]
fn register_task_definition_round_trips() {
    let body = register_task_definition_body();
    let req: ecs::RegisterTaskDefinitionRequest = decode(&body).unwrap();

    assert_eq!(req.family.as_deref(), Some("web"));
    assert_eq!(req.network_mode.as_deref(), Some("bridge"));
    let defs = req.container_definitions.as_ref().unwrap();
    assert_eq!(defs.len(), 2);
    let app = &defs[0];
    assert_eq!(app.memory, Some(256));
    assert_eq!(app.essential, Some(true));
    let pm = &app.port_mappings.as_ref().unwrap()[0];
    assert_eq!(pm.container_port, Some(8080));
    assert_eq!(pm.host_port, Some(0));
    assert_eq!(pm.protocol.as_deref(), Some("tcp"));
    let hc = app.health_check.as_ref().unwrap();
    assert_eq!(hc.command.as_ref().unwrap()[0], "CMD-SHELL");
    assert_eq!(hc.start_period, Some(15));
    let env = app.environment.as_ref().unwrap();
    assert_eq!(env[1].name.as_deref(), Some("DB_HOST"));
    let dep = &app.depends_on.as_ref().unwrap()[0];
    assert_eq!(dep.container_name.as_deref(), Some("migrate"));
    assert_eq!(dep.condition.as_deref(), Some("SUCCESS"));
    assert_eq!(
        app.docker_labels
            .as_ref()
            .unwrap()
            .get("team")
            .map(String::as_str),
        Some("web")
    );
    assert_eq!(
        app.log_configuration
            .as_ref()
            .unwrap()
            .options
            .as_ref()
            .unwrap()["max-size"],
        "10m"
    );
    assert_eq!(
        req.volumes.as_ref().unwrap()[0]
            .host
            .as_ref()
            .unwrap()
            .source_path
            .as_deref(),
        Some("/srv/data")
    );

    // A valid request has nothing to complain about.
    assert_eq!(wire::validate(&req), Vec::<FieldError>::new());

    // Serializing gives back exactly what was sent: same names, nothing added.
    assert_eq!(serde_json::to_value(&req).unwrap(), body);
    let again: ecs::RegisterTaskDefinitionRequest = decode(&body).unwrap();
    assert_eq!(again, req);
}

#[test]
fn unknown_members_are_ignored() {
    let req: ecs::RunTaskRequest =
        decode(&json!({"taskDefinition": "web:1", "someFutureMember": {"x": 1}})).unwrap();
    assert_eq!(req.task_definition.as_deref(), Some("web:1"));
}

#[test]
fn wrong_type_reports_the_path() {
    let mut body = register_task_definition_body();
    body["containerDefinitions"][0]["memory"] = json!("abc");
    match decode::<ecs::RegisterTaskDefinitionRequest>(&body) {
        Err(DecodeError::Type { path, message }) => {
            assert_eq!(path, "containerDefinitions[0].memory");
            assert!(
                message.contains("containerDefinitions[0].memory"),
                "{message}"
            );
            assert!(message.contains("expected i32"), "{message}");
        }
        other => panic!("expected a type error, got {other:?}"),
    }

    // A list where a string is expected.
    match decode::<ecs::RunTaskRequest>(&json!({"taskDefinition": ["web"]})) {
        Err(DecodeError::Type { path, .. }) => assert_eq!(path, "taskDefinition"),
        other => panic!("expected a type error, got {other:?}"),
    }
}

#[test]
fn malformed_json_is_a_syntax_error() {
    for body in [
        &b"{\"family\": "[..],
        b"{\"family\": \"web\",}",
        b"not json",
    ] {
        match from_json::<ecs::RegisterTaskDefinitionRequest>(body) {
            Err(DecodeError::Syntax(msg)) => assert!(msg.starts_with("Malformed JSON"), "{msg}"),
            other => panic!("expected a syntax error for {body:?}, got {other:?}"),
        }
    }
}

#[test]
fn empty_body_is_an_empty_request() {
    let req: ecs::ListClustersRequest = from_json(b"").unwrap();
    assert_eq!(req, ecs::ListClustersRequest::default());
    let req: ecs::ListClustersRequest = from_json(b"{}").unwrap();
    assert_eq!(req, ecs::ListClustersRequest::default());
}

#[test]
fn timestamps_accept_integers_and_fractions() {
    let t: ecs::Task =
        decode(&json!({"createdAt": 1_700_000_000, "startedAt": 1_700_000_001.25})).unwrap();
    assert_eq!(t.created_at, Some(1_700_000_000.0));
    assert_eq!(t.started_at, Some(1_700_000_001.25));
}

#[test]
fn missing_required_member() {
    let req: ecs::RunTaskRequest = decode(&json!({"cluster": "default", "count": 1})).unwrap();
    assert_eq!(
        wire::validate(&req),
        vec![FieldError {
            path: "taskDefinition".into(),
            kind: FieldErrorKind::Missing
        }]
    );
    assert_eq!(
        wire::validate(&req)[0].to_string(),
        "Missing required parameter 'taskDefinition'"
    );
}

#[test]
fn bad_enum_value() {
    let mut body = register_task_definition_body();
    body["networkMode"] = json!("foo");
    let req: ecs::RegisterTaskDefinitionRequest = decode(&body).unwrap();
    let errs = wire::validate(&req);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].path, "networkMode");
    match &errs[0].kind {
        FieldErrorKind::BadEnum { value, allowed } => {
            assert_eq!(value, "foo");
            assert_eq!(*allowed, ecs::NETWORK_MODE_VALUES);
            assert!(allowed.contains(&"awsvpc"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn nested_paths_use_wire_names_and_indices() {
    let mut body = register_task_definition_body();
    let app = &mut body["containerDefinitions"][0];
    app["healthCheck"]
        .as_object_mut()
        .unwrap()
        .remove("command");
    app["dependsOn"][0]["condition"] = json!("READY");
    app["portMappings"][0]["protocol"] = json!("sctp");
    body["requiresCompatibilities"] = json!(["EC2", "MARS"]);
    let req: ecs::RegisterTaskDefinitionRequest = decode(&body).unwrap();
    let paths: Vec<_> = wire::validate(&req)
        .into_iter()
        .map(|e| (e.path, std::mem::discriminant(&e.kind)))
        .collect();
    let missing = std::mem::discriminant(&FieldErrorKind::Missing);
    let bad_enum = std::mem::discriminant(&FieldErrorKind::BadEnum {
        value: String::new(),
        allowed: &[],
    });
    for want in [
        ("containerDefinitions.0.healthCheck.command", missing),
        ("containerDefinitions.0.dependsOn.0.condition", bad_enum),
        ("containerDefinitions.0.portMappings.0.protocol", bad_enum),
        ("requiresCompatibilities.1", bad_enum),
    ] {
        assert!(
            paths.contains(&(want.0.to_string(), want.1)),
            "{want:?} not in {paths:?}"
        );
    }
    assert_eq!(paths.len(), 4, "{paths:?}");
}

#[test]
fn lengths_and_ranges() {
    // Tag keys are 1..=128 characters, values 0..=256.
    let req: ecs::TagResourceRequest = decode(&json!({
        "resourceArn": "arn:aws:ecs:us-east-1:123456789012:cluster/default",
        "tags": [{"key": "", "value": ""}, {"key": "k".repeat(129), "value": "v"}]
    }))
    .unwrap();
    assert_eq!(
        wire::validate(&req),
        vec![
            FieldError {
                path: "tags.0.key".into(),
                kind: FieldErrorKind::TooShort { min: 1 }
            },
            FieldError {
                path: "tags.1.key".into(),
                kind: FieldErrorKind::TooLong { max: 128 }
            },
        ]
    );

    // Elements of a list of strings are checked too.
    let req: ecs::UntagResourceRequest =
        decode(&json!({"resourceArn": "x", "tagKeys": ["ok", ""]})).unwrap();
    assert_eq!(
        wire::validate(&req),
        vec![FieldError {
            path: "tagKeys.1".into(),
            kind: FieldErrorKind::TooShort { min: 1 }
        }]
    );

    // Integer ranges (ECR maxResults is 1..=1000) and list lengths.
    let req: ecr::DescribeRepositoriesRequest =
        decode(&json!({"maxResults": 0, "repositoryNames": []})).unwrap();
    assert_eq!(
        wire::validate(&req),
        vec![
            FieldError {
                path: "repositoryNames".into(),
                kind: FieldErrorKind::TooShort { min: 1 }
            },
            FieldError {
                path: "maxResults".into(),
                kind: FieldErrorKind::OutOfRange {
                    min: Some(1.0),
                    max: Some(1000.0)
                }
            },
        ]
    );

    // Double ranges.
    let cfg = ecs::DaemonDeploymentConfiguration {
        drain_percent: Some(100.5),
        ..Default::default()
    };
    let mut errs = Vec::new();
    cfg.validate("deploymentConfiguration", &mut errs);
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].path, "deploymentConfiguration.drainPercent");
}

#[test]
fn task_serializes_only_set_members() {
    let task = ecs::Task {
        task_arn: Some("arn:aws:ecs:us-east-1:123456789012:task/default/0123abcd".into()),
        last_status: Some("RUNNING".into()),
        created_at: Some(1_700_000_000.5),
        version: Some(3),
        containers: Some(vec![ecs::Container {
            name: Some("app".into()),
            exit_code: None,
            ..Default::default()
        }]),
        ..Default::default()
    };
    assert_eq!(
        serde_json::to_value(&task).unwrap(),
        json!({
            "taskArn": "arn:aws:ecs:us-east-1:123456789012:task/default/0123abcd",
            "lastStatus": "RUNNING",
            "createdAt": 1_700_000_000.5,
            "version": 3,
            "containers": [{"name": "app"}]
        })
    );
    assert_eq!(serde_json::to_string(&ecs::Task::default()).unwrap(), "{}");
}

#[test]
fn service_tables() {
    assert_eq!(ecs::TARGET_PREFIX, "AmazonEC2ContainerServiceV20141113");
    assert_eq!(ecr::TARGET_PREFIX, "AmazonEC2ContainerRegistry_V20150921");

    let op = ecs::OPERATIONS
        .iter()
        .find(|o| o.name == "RegisterTaskDefinition")
        .unwrap();
    assert_eq!(op.input, Some("RegisterTaskDefinitionRequest"));
    assert_eq!(op.output, Some("RegisterTaskDefinitionResponse"));
    assert!(op.errors.contains(&"ClientException"));
    assert!(op.errors.contains(&"ServerException"));

    let err = |name: &str| {
        ecs::ERRORS
            .iter()
            .find(|e| e.name == name)
            .copied()
            .unwrap()
    };
    assert_eq!(err("ServerException").status, 500);
    assert!(err("ServerException").fault);
    assert_eq!(err("ClusterNotFoundException").status, 400);
    assert!(!err("ClusterNotFoundException").fault);
    // Every error an operation names is in the table.
    for op in ecs::OPERATIONS.iter().chain(ecr::OPERATIONS) {
        for e in op.errors {
            assert!(
                ecs::ERRORS.iter().chain(ecr::ERRORS).any(|x| x.name == *e),
                "{}: {e}",
                op.name
            );
        }
    }

    // Exception shapes are structures with a message.
    let e: ecs::ClusterNotFoundException = decode(&json!({"message": "gone"})).unwrap();
    assert_eq!(e.message.as_deref(), Some("gone"));
}
