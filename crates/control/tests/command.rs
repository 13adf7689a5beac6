//! The command boundary: every operation in the ECS table is authorized by
//! `Control::execute` against the resource AWS names for it. A role session allowed
//! everything but denied one operation on exactly the resource that operation acts on is
//! refused, and the store does not change. The IAM and STS tables get the same walk.

use std::collections::BTreeMap;
use std::sync::Arc;

use berth_control::command::{Caller, Codec};
use berth_control::ecs_ops::ecs;
use berth_control::iam::{NewRole, Principal};
use berth_control::{Control, ControlConfig, ControlError};
use berth_store::{MemStore, Store};
use serde_json::{Value, json};

const P: &str = "arn:aws:ecs:us-east-1:000000000000";

/// A codec over a JSON value, as the api crate's awsJson codec decodes bytes.
struct ValueCodec(Value);

impl Codec for ValueCodec {
    type Output = Value;
    type Error = ControlError;
    fn decode<T>(&mut self) -> Result<T, ControlError>
    where
        T: serde::de::DeserializeOwned + berth_model::wire::Validate,
    {
        serde_json::from_value(self.0.take()).map_err(|e| ControlError::Client(e.to_string()))
    }
    fn encode<T: serde::Serialize>(&mut self, v: &T) -> Result<Value, ControlError> {
        Ok(serde_json::to_value(v)?)
    }
}

async fn call(c: &Control, caller: &Caller, op: &str, body: Value) -> Result<Value, ControlError> {
    ecs::dispatch(c, c, caller, op, ValueCodec(body))
        .await
        .unwrap_or_else(|| panic!("{op} is not in the table"))
}

struct World {
    c: Arc<Control>,
    store: Arc<dyn Store>,
    root: Caller,
    instance: String,
    task: String,
}

async fn world() -> World {
    let store: Arc<dyn Store> = Arc::new(MemStore::new());
    let c = Control::open(
        ControlConfig {
            region: "us-east-1".into(),
            account_id: "000000000000".into(),
            ..Default::default()
        },
        store.clone(),
    )
    .await
    .unwrap();
    let key = c.ensure_root_key().await.unwrap();
    let root = Caller::local(Principal::Key(key.access_key_id));
    call(&c, &root, "CreateCluster", json!({"clusterName": "prod"}))
        .await
        .unwrap();
    call(
        &c,
        &root,
        "RegisterTaskDefinition",
        json!({"family": "web",
        "containerDefinitions": [{"name": "a", "image": "busybox", "memory": 16}]}),
    )
    .await
    .unwrap();
    let ci = call(
        &c,
        &root,
        "RegisterContainerInstance",
        json!({"cluster": "prod",
        "totalResources": [
            {"name": "CPU", "type": "INTEGER", "integerValue": 4096},
            {"name": "MEMORY", "type": "INTEGER", "integerValue": 8192}]}),
    )
    .await
    .unwrap();
    let instance = ci["containerInstance"]["containerInstanceArn"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    let t = call(
        &c,
        &root,
        "RunTask",
        json!({"cluster": "prod", "taskDefinition": "web"}),
    )
    .await
    .unwrap();
    let task = t["tasks"][0]["taskArn"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    call(
        &c,
        &root,
        "CreateService",
        json!({"cluster": "prod", "serviceName": "svc",
        "taskDefinition": "web", "desiredCount": 0}),
    )
    .await
    .unwrap();
    World {
        c,
        store,
        root,
        instance,
        task,
    }
}

/// Each operation: a request, and the resource AWS checks it against.
fn fixtures(w: &World) -> BTreeMap<&'static str, (Value, String)> {
    let (i, t) = (&w.instance, &w.task);
    let cluster = format!("{P}:cluster/prod");
    let ci = format!("{P}:container-instance/prod/{i}");
    let task = format!("{P}:task/prod/{t}");
    let svc = format!("{P}:service/prod/svc");
    let td = format!("{P}:task-definition/web:1");
    let any = "*".to_string();
    let resources = json!([{"name": "CPU", "type": "INTEGER", "integerValue": 1}]);
    BTreeMap::from([
        (
            "CreateCluster",
            (json!({"clusterName": "newc"}), format!("{P}:cluster/newc")),
        ),
        (
            "DescribeClusters",
            (json!({"clusters": ["prod"]}), cluster.clone()),
        ),
        ("ListClusters", (json!({}), any.clone())),
        (
            "DeleteCluster",
            (json!({"cluster": "prod"}), cluster.clone()),
        ),
        (
            "UpdateCluster",
            (json!({"cluster": "prod"}), cluster.clone()),
        ),
        (
            "UpdateClusterSettings",
            (
                json!({"cluster": "prod",
            "settings": [{"name": "containerInsights", "value": "enabled"}]}),
                cluster.clone(),
            ),
        ),
        (
            "PutClusterCapacityProviders",
            (
                json!({"cluster": "prod", "capacityProviders": [],
            "defaultCapacityProviderStrategy": []}),
                cluster.clone(),
            ),
        ),
        ("DescribeCapacityProviders", (json!({}), any.clone())),
        (
            "RegisterTaskDefinition",
            (
                json!({"family": "x",
            "containerDefinitions": [{"name": "a", "image": "busybox", "memory": 16}]}),
                any.clone(),
            ),
        ),
        (
            "DescribeTaskDefinition",
            (json!({"taskDefinition": "web"}), any.clone()),
        ),
        ("ListTaskDefinitions", (json!({}), any.clone())),
        ("ListTaskDefinitionFamilies", (json!({}), any.clone())),
        (
            "DeregisterTaskDefinition",
            (json!({"taskDefinition": "web:1"}), any.clone()),
        ),
        (
            "DeleteTaskDefinitions",
            (json!({"taskDefinitions": ["web:1"]}), td.clone()),
        ),
        (
            "RegisterContainerInstance",
            (
                json!({"cluster": "prod", "totalResources": resources}),
                cluster.clone(),
            ),
        ),
        (
            "DeregisterContainerInstance",
            (
                json!({"cluster": "prod", "containerInstance": i,
            "force": true}),
                cluster.clone(),
            ),
        ),
        (
            "DescribeContainerInstances",
            (
                json!({"cluster": "prod", "containerInstances": [i]}),
                ci.clone(),
            ),
        ),
        (
            "ListContainerInstances",
            (json!({"cluster": "prod"}), cluster.clone()),
        ),
        (
            "UpdateContainerInstancesState",
            (
                json!({"cluster": "prod", "containerInstances": [i],
            "status": "DRAINING"}),
                ci.clone(),
            ),
        ),
        (
            "PutAttributes",
            (
                json!({"cluster": "prod", "attributes": [{"name": "a",
            "targetId": i}]}),
                cluster.clone(),
            ),
        ),
        (
            "DeleteAttributes",
            (
                json!({"cluster": "prod", "attributes": [{"name": "a",
            "targetId": i}]}),
                cluster.clone(),
            ),
        ),
        (
            "ListAttributes",
            (
                json!({"cluster": "prod", "targetType": "container-instance"}),
                cluster.clone(),
            ),
        ),
        (
            "RunTask",
            (
                json!({"cluster": "prod", "taskDefinition": "web"}),
                td.clone(),
            ),
        ),
        (
            "StartTask",
            (
                json!({"cluster": "prod", "taskDefinition": "web",
            "containerInstances": [i]}),
                td.clone(),
            ),
        ),
        (
            "StopTask",
            (json!({"cluster": "prod", "task": t}), task.clone()),
        ),
        (
            "DescribeTasks",
            (json!({"cluster": "prod", "tasks": [t]}), task.clone()),
        ),
        (
            "ListTasks",
            (
                json!({"cluster": "prod", "containerInstance": i}),
                ci.clone(),
            ),
        ),
        (
            "SubmitTaskStateChange",
            (
                json!({"cluster": "prod", "task": t, "status": "RUNNING"}),
                cluster.clone(),
            ),
        ),
        (
            "SubmitContainerStateChange",
            (
                json!({"cluster": "prod", "task": t,
            "containerName": "a", "status": "RUNNING"}),
                cluster.clone(),
            ),
        ),
        (
            "DiscoverPollEndpoint",
            (json!({"cluster": "prod"}), any.clone()),
        ),
        (
            "CreateService",
            (
                json!({"cluster": "prod", "serviceName": "svc2",
            "taskDefinition": "web", "desiredCount": 1}),
                format!("{P}:service/prod/svc2"),
            ),
        ),
        (
            "UpdateService",
            (
                json!({"cluster": "prod", "service": "svc", "desiredCount": 2}),
                svc.clone(),
            ),
        ),
        (
            "DeleteService",
            (
                json!({"cluster": "prod", "service": "svc", "force": true}),
                svc.clone(),
            ),
        ),
        (
            "DescribeServices",
            (json!({"cluster": "prod", "services": ["svc"]}), svc.clone()),
        ),
        ("ListServices", (json!({"cluster": "prod"}), any.clone())),
        (
            "TagResource",
            (
                json!({"resourceArn": cluster, "tags": [{"key": "a", "value": "b"}]}),
                cluster.clone(),
            ),
        ),
        (
            "UntagResource",
            (
                json!({"resourceArn": cluster, "tagKeys": ["a"]}),
                cluster.clone(),
            ),
        ),
        (
            "ListTagsForResource",
            (json!({"resourceArn": cluster}), cluster.clone()),
        ),
    ])
}

/// A role session of a role whose only policy is `document`.
async fn session(w: &World, name: &str, document: Value) -> Caller {
    let role =
        w.c.create_role(NewRole {
            role_name: name.into(),
            assume_role_policy: json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
                "Principal": {"AWS": "000000000000"}, "Action": "sts:AssumeRole"}]})
            .to_string(),
            ..Default::default()
        })
        .await
        .unwrap();
    w.c.put_role_policy(name, "p", &document.to_string())
        .await
        .unwrap();
    let s =
        w.c.assume_role(&w.root, &role.arn, "test", None, None)
            .unwrap();
    Caller::local(
        w.c.principal(&s.access_key_id, Some(&s.session_token))
            .unwrap(),
    )
}

#[tokio::test]
async fn a_deny_on_each_operations_action_and_resource_refuses_it_and_changes_nothing() {
    let w = world().await;
    let fx = fixtures(&w);
    let table: Vec<&str> = ecs::OPERATIONS.to_vec();
    let mut named: Vec<&str> = fx.keys().copied().collect();
    named.sort();
    let mut sorted = table.clone();
    sorted.sort();
    assert_eq!(
        sorted, named,
        "every operation in the table has a fixture here"
    );
    for (n, op) in table.iter().enumerate() {
        let (body, resource) = fx[op].clone();
        let caller = session(
            &w,
            &format!("r{n}"),
            json!({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "*", "Resource": "*"},
            {"Effect": "Deny", "Action": format!("ecs:{op}"), "Resource": resource}]}),
        )
        .await;
        let before = w.store.revision().await.unwrap();
        let r = call(&w.c, &caller, op, body).await;
        assert!(
            matches!(&r, Err(ControlError::AccessDenied(m)) if m.contains("explicit deny")),
            "{op} on {resource}: {r:?}"
        );
        assert_eq!(
            w.store.revision().await.unwrap(),
            before,
            "{op} changed the store"
        );
    }
}

#[tokio::test]
async fn a_deny_on_another_resource_of_the_same_kind_does_not_apply() {
    let w = world().await;
    let other = session(
        &w,
        "other",
        json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "*", "Resource": "*"},
        {"Effect": "Deny", "Action": "ecs:*", "Resource": [
            format!("{P}:cluster/staging"), format!("{P}:task/staging/*"),
            format!("{P}:task-definition/db:*"), format!("{P}:service/staging/*")]}]}),
    )
    .await;
    for (op, (body, _)) in fixtures(&w) {
        if op.starts_with("Describe") || op.starts_with("List") {
            call(&w.c, &other, op, body)
                .await
                .unwrap_or_else(|e| panic!("{op}: {e}"));
        }
    }
    let t = &w.task;
    call(
        &w.c,
        &other,
        "StopTask",
        json!({"cluster": "prod", "task": t}),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn ecs_cluster_condition_and_pass_role_come_from_the_typed_request() {
    let w = world().await;
    // Only in cluster prod, by condition, on every resource.
    let s = session(
        &w,
        "prod-only",
        json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "ecs:*", "Resource": "*",
         "Condition": {"ArnEquals": {"ecs:cluster": format!("{P}:cluster/prod")}}}]}),
    )
    .await;
    call(&w.c, &s, "ListTasks", json!({"cluster": "prod"}))
        .await
        .unwrap();
    let r = call(&w.c, &s, "ListTasks", json!({"cluster": "default"})).await;
    assert!(matches!(r, Err(ControlError::AccessDenied(_))), "{r:?}");
    // ListClusters is in no cluster: the condition does not hold.
    let r = call(&w.c, &s, "ListClusters", json!({})).await;
    assert!(matches!(r, Err(ControlError::AccessDenied(_))), "{r:?}");

    // A task definition with a role: RunTask passes it.
    let role =
        w.c.create_role(NewRole {
            role_name: "app".into(),
            assume_role_policy: json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
                "Principal": {"Service": "ecs-tasks.amazonaws.com"}, "Action": "sts:AssumeRole"}]})
            .to_string(),
            ..Default::default()
        })
        .await
        .unwrap();
    call(
        &w.c,
        &w.root,
        "RegisterTaskDefinition",
        json!({"family": "with-role",
        "taskRoleArn": role.arn,
        "containerDefinitions": [{"name": "a", "image": "busybox", "memory": 16}]}),
    )
    .await
    .unwrap();
    let before = w.store.revision().await.unwrap();
    let r = call(
        &w.c,
        &s,
        "RunTask",
        json!({"cluster": "prod", "taskDefinition": "with-role"}),
    )
    .await;
    match r {
        Err(ControlError::AccessDenied(m)) => assert!(m.contains("iam:PassRole"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(w.store.revision().await.unwrap(), before);
}

#[tokio::test]
async fn join_tokens_act_only_as_agents_in_their_cluster() {
    let w = world().await;
    let (key, _) = w.c.create_join_token("prod", None, "").await.unwrap();
    let token = Caller::local(Principal::Key(key.access_key_id));
    call(
        &w.c,
        &token,
        "DiscoverPollEndpoint",
        json!({"cluster": "prod"}),
    )
    .await
    .unwrap();
    for (op, body) in [
        ("DiscoverPollEndpoint", json!({"cluster": "default"})),
        ("ListClusters", json!({})),
        (
            "RunTask",
            json!({"cluster": "prod", "taskDefinition": "web"}),
        ),
        ("RegisterContainerInstance", json!({"cluster": "default"})),
    ] {
        let r = call(&w.c, &token, op, body).await;
        assert!(
            matches!(r, Err(ControlError::AccessDenied(_))),
            "{op}: {r:?}"
        );
    }
}

#[tokio::test]
async fn a_join_token_speaks_only_for_the_instances_it_registered() {
    let w = world().await;
    let token = |k: berth_control::AccessKey| Caller::local(Principal::Key(k.access_key_id));
    let a = token(w.c.create_join_token("prod", None, "a").await.unwrap().0);
    let b = token(w.c.create_join_token("prod", None, "b").await.unwrap().0);
    let resources = json!([{"name": "CPU", "type": "INTEGER", "integerValue": 1024},
        {"name": "MEMORY", "type": "INTEGER", "integerValue": 1024}]);
    let ci = call(
        &w.c,
        &a,
        "RegisterContainerInstance",
        json!({"cluster": "prod", "totalResources": resources}),
    )
    .await
    .unwrap();
    let arn = ci["containerInstance"]["containerInstanceArn"]
        .as_str()
        .unwrap()
        .to_string();
    // A task placed on A's node.
    let t = call(
        &w.c,
        &w.root,
        "StartTask",
        json!({"cluster": "prod", "taskDefinition": "web",
        "containerInstances": [arn]}),
    )
    .await
    .unwrap();
    let task = t["tasks"][0]["taskArn"].as_str().unwrap().to_string();

    let before = w.store.revision().await.unwrap();
    for (op, body) in [
        (
            "RegisterContainerInstance",
            json!({"cluster": "prod", "containerInstanceArn": arn,
            "totalResources": resources}),
        ),
        (
            "UpdateContainerInstancesState",
            json!({"cluster": "prod", "containerInstances": [arn],
            "status": "DRAINING"}),
        ),
        (
            "SubmitTaskStateChange",
            json!({"cluster": "prod", "task": task, "status": "STOPPED"}),
        ),
        (
            "SubmitContainerStateChange",
            json!({"cluster": "prod", "task": task,
            "containerName": "a", "status": "STOPPED"}),
        ),
        (
            "DeregisterContainerInstance",
            json!({"cluster": "prod", "containerInstance": arn}),
        ),
    ] {
        let r = call(&w.c, &b, op, body.clone()).await;
        assert!(
            matches!(&r, Err(ControlError::AccessDenied(m)) if m.contains("another credential")),
            "{op}: {r:?}"
        );
    }
    assert_eq!(w.store.revision().await.unwrap(), before, "nothing changed");
    // The agent session (ACS) and telemetry of A's node: refused to B, open to A.
    let access = w.c.node_access(&Some("prod".into()), &arn);
    assert!(w.c.authorize_access(&b, "ecs", "Poll", &access).is_err());
    w.c.authorize_access(&a, "ecs", "Poll", &access).unwrap();
    w.c.authorize_access(&a, "ecs", "StartTelemetrySession", &access)
        .unwrap();
    // A itself may report and re-register.
    call(
        &w.c,
        &a,
        "SubmitTaskStateChange",
        json!({"cluster": "prod", "task": task,
        "status": "RUNNING"}),
    )
    .await
    .unwrap();
    call(
        &w.c,
        &a,
        "RegisterContainerInstance",
        json!({"cluster": "prod",
        "containerInstanceArn": arn, "totalResources": resources}),
    )
    .await
    .unwrap();
}

/// IAM and STS operations: (request in wire names, the resource AWS names for it).
fn iam_fixtures() -> BTreeMap<(&'static str, &'static str), (Value, String)> {
    let role = "arn:aws:iam::000000000000:role/target".to_string();
    let policy = "arn:aws:iam::000000000000:policy/managed".to_string();
    let doc = json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "ecs:List*", "Resource": "*"}]})
    .to_string();
    let trust = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
        "Principal": {"AWS": "000000000000"}, "Action": "sts:AssumeRole"}]})
    .to_string();
    let r = |v: Value| (v, role.clone());
    let mut m = BTreeMap::new();
    m.insert(
        ("iam", "CreateRole"),
        (
            json!({"RoleName": "new", "Path": "/team/", "AssumeRolePolicyDocument": trust}),
            "arn:aws:iam::000000000000:role/team/new".to_string(),
        ),
    );
    m.insert(("iam", "GetRole"), r(json!({"RoleName": "target"})));
    m.insert(("iam", "ListRoles"), (json!({}), "*".to_string()));
    m.insert(("iam", "DeleteRole"), r(json!({"RoleName": "target"})));
    m.insert(
        ("iam", "UpdateAssumeRolePolicy"),
        r(json!({"RoleName": "target", "PolicyDocument": trust})),
    );
    m.insert(
        ("iam", "PutRolePolicy"),
        r(json!({"RoleName": "target", "PolicyName": "q", "PolicyDocument": doc})),
    );
    m.insert(
        ("iam", "GetRolePolicy"),
        r(json!({"RoleName": "target", "PolicyName": "p"})),
    );
    m.insert(
        ("iam", "ListRolePolicies"),
        r(json!({"RoleName": "target"})),
    );
    m.insert(
        ("iam", "DeleteRolePolicy"),
        r(json!({"RoleName": "target", "PolicyName": "p"})),
    );
    m.insert(
        ("iam", "CreatePolicy"),
        (
            json!({"PolicyName": "other", "PolicyDocument": doc}),
            "arn:aws:iam::000000000000:policy/other".to_string(),
        ),
    );
    m.insert(
        ("iam", "GetPolicy"),
        (json!({"PolicyArn": policy}), policy.clone()),
    );
    m.insert(
        ("iam", "GetPolicyVersion"),
        (
            json!({"PolicyArn": policy, "VersionId": "v1"}),
            policy.clone(),
        ),
    );
    m.insert(("iam", "ListPolicies"), (json!({}), "*".to_string()));
    m.insert(
        ("iam", "DeletePolicy"),
        (json!({"PolicyArn": policy}), policy.clone()),
    );
    m.insert(
        ("iam", "AttachRolePolicy"),
        r(json!({"RoleName": "target", "PolicyArn": policy})),
    );
    m.insert(
        ("iam", "DetachRolePolicy"),
        r(json!({"RoleName": "target", "PolicyArn": policy})),
    );
    m.insert(
        ("iam", "ListAttachedRolePolicies"),
        r(json!({"RoleName": "target"})),
    );
    m.insert(
        ("sts", "AssumeRole"),
        r(json!({"RoleArn": role, "RoleSessionName": "s1"})),
    );
    m
}

async fn call_iam(
    c: &Control,
    caller: &Caller,
    service: &str,
    op: &str,
    body: Value,
) -> Result<Value, ControlError> {
    use berth_control::iam_ops::{iam, sts};
    let out = match service {
        "iam" => iam::dispatch(c, c, caller, op, ValueCodec(body)).await,
        _ => sts::dispatch(c, c, caller, op, ValueCodec(body)).await,
    };
    out.unwrap_or_else(|| panic!("{op} is not in the table"))
}

#[tokio::test]
async fn iam_and_sts_operations_are_refused_by_a_deny_on_their_action_and_resource() {
    use berth_control::iam_ops::{iam, sts};
    let w = world().await;
    let trust = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
        "Principal": {"AWS": "000000000000"}, "Action": "sts:AssumeRole"}]});
    w.c.create_role(NewRole {
        role_name: "target".into(),
        assume_role_policy: trust.to_string(),
        ..Default::default()
    })
    .await
    .unwrap();
    w.c.put_role_policy(
        "target",
        "p",
        &json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "ecs:List*", "Resource": "*"}]})
        .to_string(),
    )
    .await
    .unwrap();
    let doc = json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "ecs:List*", "Resource": "*"}]});
    w.c.create_policy("managed", None, &doc.to_string(), None)
        .await
        .unwrap();
    let fx = iam_fixtures();
    let mut named: Vec<String> = fx.keys().map(|(s, o)| format!("{s}:{o}")).collect();
    named.sort();
    let mut table: Vec<String> = iam::OPERATIONS
        .iter()
        .map(|o| format!("iam:{o}"))
        .chain(
            sts::OPERATIONS
                .iter()
                .filter(|o| **o != "GetCallerIdentity")
                .map(|o| format!("sts:{o}")),
        )
        .collect();
    table.sort();
    assert_eq!(
        table, named,
        "every operation in the tables has a fixture here"
    );
    for (n, ((service, op), (body, resource))) in fx.into_iter().enumerate() {
        let caller = session(
            &w,
            &format!("i{n}"),
            json!({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "*", "Resource": "*"},
            {"Effect": "Deny", "Action": format!("{service}:{op}"), "Resource": resource}]}),
        )
        .await;
        let before = w.store.revision().await.unwrap();
        let r = call_iam(&w.c, &caller, service, op, body.clone()).await;
        assert!(
            matches!(&r, Err(ControlError::AccessDenied(m)) if m.contains("explicit deny")),
            "{service}:{op} on {resource}: {r:?}"
        );
        assert_eq!(
            w.store.revision().await.unwrap(),
            before,
            "{op} changed the store"
        );
        // The same request by a session denied something else goes through the table.
        if op.starts_with("Get") || op.starts_with("List") || op == "AssumeRole" {
            let ok = session(
                &w,
                &format!("j{n}"),
                json!({"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Action": "*", "Resource": "*"},
                {"Effect": "Deny", "Action": format!("{service}:{op}"),
                 "Resource": "arn:aws:iam::000000000000:role/elsewhere"}]}),
            )
            .await;
            call_iam(&w.c, &ok, service, op, body)
                .await
                .unwrap_or_else(|e| panic!("{service}:{op}: {e}"));
        }
    }
    // Anyone may ask who they are, even under a Deny of everything.
    let none = session(
        &w,
        "nothing",
        json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Deny", "Action": "*", "Resource": "*"}]}),
    )
    .await;
    let id = call_iam(&w.c, &none, "sts", "GetCallerIdentity", json!({}))
        .await
        .unwrap();
    assert!(
        id["Arn"]
            .as_str()
            .unwrap()
            .contains("assumed-role/nothing/"),
        "{id}"
    );
}
