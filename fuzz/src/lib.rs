//! berth-fuzz: one fuzz target for every parser of untrusted bytes in berth, as plain
//! functions `fuzz_<target>(data: &[u8])` that panic when a property fails.
//!
//! Two drivers call them: the afl++ binary (`src/bin/afl.rs`, built only by `bench/fuzz.sh`
//! with the `afl` feature), and the replay test (`tests/replay.rs`), which runs every file of
//! `fuzz/corpus/<target>/` and `fuzz/crashes/<target>/` through its target on every
//! `cargo test`. So a crash found once stays fixed.
//!
//! Targets check properties where they are cheap, not only "does not panic": a parsed digest
//! renders back to its input; a request signed by [`berth_auth::sign`] verifies; a decoded
//! awsJson request re-encodes to one that decodes to the same value; a layer never creates
//! anything outside its root; ranges never come out with start > end.
//!
//! Must not: touch anything outside the temporary directories it makes (the layer target
//! unpacks into a fresh directory per input and checks that nothing beside it changed), or
//! talk to the network.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// A fuzz target: panics when a property of its parser fails on `data`.
pub type Target = fn(data: &[u8]);

/// Every target by name, as `bench/fuzz.sh`, the afl driver and the replay test know them.
pub const TARGETS: &[(&str, Target)] = &[
    ("sigv4", fuzz_sigv4),
    ("awsjson", fuzz_awsjson),
    ("query", fuzz_query),
    ("manifest", fuzz_manifest),
    ("layer", fuzz_layer),
    ("cql", fuzz_cql),
    ("policy", fuzz_policy),
    ("frames", fuzz_frames),
    ("ranges", fuzz_ranges),
    ("refs", fuzz_refs),
    ("tokens", fuzz_tokens),
];

/// The target called `name`.
pub fn target(name: &str) -> Option<Target> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
}

/// Split `data` at the first newline: (first line, rest). Many targets take a small selector
/// or a header on the first line and the document after it, so seeds stay readable text.
fn first_line(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}

fn text(data: &[u8]) -> String {
    String::from_utf8_lossy(data).into_owned()
}

// ---------------------------------------------------------------------------------------
// SigV4

/// The one key the SigV4 target knows (the AWS documentation's example key).
pub const ACCESS_KEY: &str = "AKIDEXAMPLE";
pub const SECRET_KEY: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
/// The target's clock: its seeds are signed at this moment.
pub const NOW: time::OffsetDateTime = time::macros::datetime!(2024-05-01 12:00:00 UTC);

struct OneKey;
impl berth_auth::SecretLookup for OneKey {
    fn secret_for(&self, access_key_id: &str) -> Option<String> {
        (access_key_id == ACCESS_KEY).then(|| SECRET_KEY.to_string())
    }
}

/// A request as raw HTTP/1.1 text: `METHOD TARGET` line, `Name: value` lines, a blank line,
/// the body.
struct RawRequest {
    method: String,
    path: String,
    query: Option<String>,
    headers: http::HeaderMap,
    body: Vec<u8>,
}

fn raw_request(data: &[u8]) -> RawRequest {
    let (head, body) = match data.windows(2).position(|w| w == b"\n\n") {
        Some(i) => (&data[..i], &data[i + 2..]),
        None => (data, &[][..]),
    };
    let head = text(head);
    let mut lines = head.lines();
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or("/");
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), Some(q.to_string())),
        None => (target.to_string(), None),
    };
    let mut headers = http::HeaderMap::new();
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if let (Ok(n), Ok(v)) = (
            http::HeaderName::from_bytes(name.trim().as_bytes()),
            http::HeaderValue::from_str(value.trim()),
        ) {
            headers.append(n, v);
        }
    }
    RawRequest {
        method,
        path,
        query,
        headers,
        body: body.to_vec(),
    }
}

fn has_query_param(q: &str, name: &str) -> bool {
    q.split('&')
        .any(|kv| kv.split_once('=').map_or(kv, |(k, _)| k) == name)
}

/// Whether a raw request verifies at [`NOW`] with [`ACCESS_KEY`].
pub fn sigv4_verifies(data: &[u8]) -> bool {
    let r = raw_request(data);
    let parts = berth_auth::RequestParts {
        method: &r.method,
        path: &r.path,
        query: r.query.as_deref(),
        headers: &r.headers,
        body: &r.body,
    };
    berth_auth::verify(&parts, &OneKey, NOW, time::Duration::minutes(15)).is_ok()
}

/// SigV4 verification of a raw request (header, query and presigned forms), and the
/// round trip: the same request signed with [`berth_auth::sign`] verifies.
pub fn fuzz_sigv4(data: &[u8]) {
    let r = raw_request(data);
    let parts = berth_auth::RequestParts {
        method: &r.method,
        path: &r.path,
        query: r.query.as_deref(),
        headers: &r.headers,
        body: &r.body,
    };
    let skew = time::Duration::minutes(15);
    if let Ok(v) = berth_auth::verify(&parts, &OneKey, NOW, skew) {
        assert_eq!(v.access_key_id, ACCESS_KEY);
    }
    for now in [
        time::OffsetDateTime::UNIX_EPOCH,
        time::macros::datetime!(9999-12-31 23:59:59 UTC),
    ] {
        let _ = berth_auth::verify(&parts, &OneKey, now, skew);
    }

    // Round trip: strip the signature, sign it ourselves, and it must verify.
    if r.query.as_deref().is_some_and(|q| {
        has_query_param(q, "X-Amz-Signature") || has_query_param(q, "X-Amz-Credential")
    }) {
        return;
    }
    let mut headers = r.headers.clone();
    for h in [
        "authorization",
        "x-amz-date",
        "x-amz-security-token",
        "x-amz-content-sha256",
    ] {
        headers.remove(h);
    }
    if !headers.contains_key("host") {
        headers.insert("host", http::HeaderValue::from_static("localhost"));
    }
    let creds = berth_auth::Credentials {
        access_key_id: ACCESS_KEY.into(),
        secret_access_key: SECRET_KEY.into(),
        session_token: None,
    };
    berth_auth::sign(
        &r.method,
        &r.path,
        r.query.as_deref(),
        &mut headers,
        &r.body,
        &creds,
        "us-east-1",
        "ecs",
        NOW,
    );
    let parts = berth_auth::RequestParts {
        method: &r.method,
        path: &r.path,
        query: r.query.as_deref(),
        headers: &headers,
        body: &r.body,
    };
    let v = berth_auth::verify(&parts, &OneKey, NOW, skew)
        .unwrap_or_else(|e| panic!("a request berth signed does not verify: {e}"));
    assert_eq!(v.service, "ecs");
}

// ---------------------------------------------------------------------------------------
// awsJson

/// Decode `body` as the request `T` the way the JSON protocols do; when accepted, its
/// encoding must decode again (and validate) to the same value.
fn json_round_trip<T>(body: &[u8]) -> Option<T>
where
    T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug + berth_model::wire::Validate,
{
    let v: T = berth_api::awsjson::decode(body).ok()?;
    let again = serde_json::to_vec(&v).expect("an accepted request encodes");
    let back: T = berth_api::awsjson::decode(&again)
        .unwrap_or_else(|e| panic!("an accepted request, re-encoded, is refused: {e:?}"));
    assert_eq!(back, v, "an accepted request changes when re-encoded");
    Some(v)
}

macro_rules! json_ops {
    ($fn:ident, $module:path, { $($name:ident => $req:ident),* $(,)? }) => {
        /// Decode the request of operation `op`; `false` for an unknown operation.
        fn $fn(op: &str, body: &[u8]) -> bool {
            use $module as w;
            match op {
                $(stringify!($name) => {
                    json_round_trip::<w::$req>(body);
                })*
                _ => return false,
            }
            true
        }
    };
}

json_ops!(ecs_op, berth_model::wire::ecs, {
    CreateCluster => CreateClusterRequest,
    DescribeClusters => DescribeClustersRequest,
    ListClusters => ListClustersRequest,
    DeleteCluster => DeleteClusterRequest,
    UpdateCluster => UpdateClusterRequest,
    UpdateClusterSettings => UpdateClusterSettingsRequest,
    PutClusterCapacityProviders => PutClusterCapacityProvidersRequest,
    DescribeCapacityProviders => DescribeCapacityProvidersRequest,
    DescribeTaskDefinition => DescribeTaskDefinitionRequest,
    ListTaskDefinitions => ListTaskDefinitionsRequest,
    ListTaskDefinitionFamilies => ListTaskDefinitionFamiliesRequest,
    DeregisterTaskDefinition => DeregisterTaskDefinitionRequest,
    DeleteTaskDefinitions => DeleteTaskDefinitionsRequest,
    RegisterContainerInstance => RegisterContainerInstanceRequest,
    DeregisterContainerInstance => DeregisterContainerInstanceRequest,
    DescribeContainerInstances => DescribeContainerInstancesRequest,
    ListContainerInstances => ListContainerInstancesRequest,
    UpdateContainerInstancesState => UpdateContainerInstancesStateRequest,
    PutAttributes => PutAttributesRequest,
    DeleteAttributes => DeleteAttributesRequest,
    ListAttributes => ListAttributesRequest,
    RunTask => RunTaskRequest,
    StartTask => StartTaskRequest,
    StopTask => StopTaskRequest,
    DescribeTasks => DescribeTasksRequest,
    ListTasks => ListTasksRequest,
    SubmitTaskStateChange => SubmitTaskStateChangeRequest,
    SubmitContainerStateChange => SubmitContainerStateChangeRequest,
    DiscoverPollEndpoint => DiscoverPollEndpointRequest,
    CreateService => CreateServiceRequest,
    UpdateService => UpdateServiceRequest,
    DeleteService => DeleteServiceRequest,
    DescribeServices => DescribeServicesRequest,
    ListServices => ListServicesRequest,
    TagResource => TagResourceRequest,
    UntagResource => UntagResourceRequest,
    ListTagsForResource => ListTagsForResourceRequest,
});

json_ops!(ecr_op, berth_model::wire::ecr, {
    BatchCheckLayerAvailability => BatchCheckLayerAvailabilityRequest,
    BatchDeleteImage => BatchDeleteImageRequest,
    BatchGetImage => BatchGetImageRequest,
    CreateRepository => CreateRepositoryRequest,
    DeleteLifecyclePolicy => DeleteLifecyclePolicyRequest,
    DeleteRepository => DeleteRepositoryRequest,
    DeleteRepositoryPolicy => DeleteRepositoryPolicyRequest,
    DescribeImages => DescribeImagesRequest,
    DescribeRepositories => DescribeRepositoriesRequest,
    GetAuthorizationToken => GetAuthorizationTokenRequest,
    GetLifecyclePolicy => GetLifecyclePolicyRequest,
    GetLifecyclePolicyPreview => GetLifecyclePolicyPreviewRequest,
    GetRepositoryPolicy => GetRepositoryPolicyRequest,
    ListImages => ListImagesRequest,
    ListTagsForResource => ListTagsForResourceRequest,
    PutImage => PutImageRequest,
    PutImageTagMutability => PutImageTagMutabilityRequest,
    PutLifecyclePolicy => PutLifecyclePolicyRequest,
    SetRepositoryPolicy => SetRepositoryPolicyRequest,
    StartLifecyclePolicyPreview => StartLifecyclePolicyPreviewRequest,
    TagResource => TagResourceRequest,
    UntagResource => UntagResourceRequest,
});

/// awsJson bodies into the wire types: first line `ecs:<Operation>` or `ecr:<Operation>`,
/// then the body. A task definition goes on through normalisation and its reservation.
pub fn fuzz_awsjson(data: &[u8]) {
    let (op, body) = first_line(data);
    let op = text(op);
    match op.split_once(':') {
        Some(("ecs", "RegisterTaskDefinition")) => {
            use berth_model::wire::ecs::RegisterTaskDefinitionRequest;
            if let Some(req) = json_round_trip::<RegisterTaskDefinitionRequest>(body)
                && let Ok(td) = berth_model::taskdef::normalize(&req)
            {
                let r = berth_model::taskdef::requirements(&td);
                assert!(r.cpu >= 0 && r.memory >= 0 && r.gpus >= 0, "{r:?}");
                let _ = berth_model::taskdef::required_attributes(&td);
            }
        }
        Some(("ecs", name)) => {
            ecs_op(name, body);
        }
        Some(("ecr", name)) => {
            ecr_op(name, body);
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------
// Query protocol (IAM, STS)

/// Form bodies as IAM and STS read them: the pairs, the parameter tree, every request shape
/// of the two tables, and the answers' XML.
pub fn fuzz_query(data: &[u8]) {
    use berth_api::query::form::{Node, from_node};
    use berth_model::wire::{iam, sts};
    let body = text(data);
    let pairs = berth_api::query::form_pairs(&body);
    assert!(pairs.len() <= body.split('&').count());
    let Ok(node) = Node::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))) else {
        return;
    };
    macro_rules! shapes {
        ($($t:ty),* $(,)?) => {$(
            if let Ok(r) = from_node::<$t>(node.clone()) {
                let _ = berth_model::wire::validate(&r);
                let _ = berth_api::query::xml::to_xml(&r);
            }
        )*};
    }
    shapes!(
        iam::CreateRoleRequest,
        iam::GetRoleRequest,
        iam::ListRolesRequest,
        iam::PutRolePolicyRequest,
        iam::CreatePolicyRequest,
        iam::ListPoliciesRequest,
        iam::ListAttachedRolePoliciesRequest,
        sts::AssumeRoleRequest,
        sts::GetCallerIdentityRequest,
    );
    if let Ok(r) = from_node::<iam::PutRolePolicyRequest>(node)
        && let Some(doc) = r.policy_document
    {
        for kind in [
            berth_auth::policy::PolicyKind::Identity,
            berth_auth::policy::PolicyKind::Trust,
        ] {
            let _ = berth_auth::policy::Policy::parse(&doc, kind);
        }
    }
}

// ---------------------------------------------------------------------------------------
// OCI manifests and indexes

/// A manifest as the registry takes it on PUT (first line: the Content-Type, may be empty)
/// and as the client reads it on pull.
pub fn fuzz_manifest(data: &[u8]) {
    let (ct, body) = first_line(data);
    let ct = text(ct);
    let ct = (!ct.is_empty()).then_some(ct.as_str());
    if let Ok(p) = berth_registry::manifest::parse(body, ct) {
        assert!(berth_registry::manifest::MEDIA_TYPES.contains(&p.media_type.as_str()));
        assert!(p.image_size() >= 0, "image size {}", p.image_size());
        for d in p
            .config
            .iter()
            .chain(&p.layers)
            .chain(&p.manifests)
            .chain(&p.subject)
        {
            let parsed = berth_registry::Digest::parse(&d.digest).expect("a checked digest");
            assert_eq!(parsed.as_str(), d.digest);
            assert!(d.size >= 0);
        }
        assert!(p.is_index() || p.config.is_some());
    }
    if let Ok(doc) = berth_client::Document::parse(body) {
        let check = |d: &berth_client::Descriptor| {
            assert_eq!(d.digest.hex().len(), 64);
            assert_eq!(
                berth_client::Digest::parse(d.digest.as_str()).expect("reparses"),
                d.digest
            );
        };
        match doc {
            berth_client::Document::Image { config, layers } => {
                check(&config);
                layers.iter().for_each(check);
            }
            berth_client::Document::Index { manifests } => {
                manifests.iter().for_each(|m| check(&m.manifest));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Image layers

/// Every path under `dir` (relative), without following links, sorted.
fn tree(dir: &Path) -> Vec<(String, String)> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            let rel = p.strip_prefix(base).unwrap_or(&p).display().to_string();
            let Ok(m) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            let what = if m.is_dir() {
                walk(base, &p, out);
                "dir".to_string()
            } else if m.file_type().is_symlink() {
                format!("link {:?}", std::fs::read_link(&p).ok())
            } else {
                format!("file {} {:?}", m.len(), std::fs::read(&p).ok())
            };
            out.push((rel, what));
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// A tar layer (plain or gzipped), applied twice onto a fresh root (the second time over
/// what the first left, as stacked layers are). Nothing may appear or change beside the
/// root: a sibling directory with a file and a symlink pointing back out are checked after.
pub fn fuzz_layer(data: &[u8]) {
    use std::os::unix::fs::PermissionsExt;
    let sandbox = tempfile::Builder::new()
        .prefix("berth-fuzz-layer")
        .tempdir()
        .expect("a temp dir");
    let base = sandbox.path();
    let root = base.join("root");
    let outside = base.join("outside");
    std::fs::create_dir(&root).expect("mkdir root");
    std::fs::create_dir(&outside).expect("mkdir outside");
    std::fs::write(outside.join("canary"), b"canary").expect("write canary");
    std::os::unix::fs::symlink("../outside", root.join("escape")).expect("symlink");
    let before = tree(&outside);
    let limits = berth_runtime::unpack::Limits {
        max_bytes: 1 << 20,
        max_entries: 4096,
    };
    for _ in 0..2 {
        if berth_runtime::unpack::apply_layer_within(&root, data, &limits).is_err() {
            break;
        }
    }
    let mut names: Vec<String> = std::fs::read_dir(base)
        .expect("read sandbox")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["outside", "root"], "a layer wrote beside its root");
    assert_eq!(
        tree(&outside),
        before,
        "a layer changed a directory beside its root"
    );
    // Let the temp dir go whatever modes the layer set (a directory without `w` or `x`).
    fn open_up(dir: &Path) {
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    open_up(&e.path());
                }
            }
        }
    }
    open_up(&root);
}

// ---------------------------------------------------------------------------------------
// Cluster query language

fn instances() -> Vec<berth_scheduler::Instance> {
    let attrs: BTreeMap<String, Option<String>> = [
        ("ecs.os-type", Some("linux")),
        ("ecs.cpu-architecture", Some("x86_64")),
        ("stack", Some("prod")),
        ("flag", None),
        ("version", Some("1.2.10")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
    .collect();
    let a = berth_scheduler::Instance {
        arn: "arn:aws:ecs:us-east-1:000000000000:container-instance/default/a".into(),
        id: "a".into(),
        status: "ACTIVE".into(),
        agent_connected: true,
        agent_version: Some("1.82.0".into()),
        registered_at: 1_700_000_000,
        attributes: Arc::new(attrs),
        ec2_instance_id: Some("i-0123456789abcdef0".into()),
        cpu: 1024,
        memory: 2048,
        task_groups: [("service:web".to_string(), 2)].into_iter().collect(),
        running_tasks_count: 2,
        ..Default::default()
    };
    let b = berth_scheduler::Instance {
        id: "b".into(),
        registered_at: -1,
        running_tasks_count: i64::MAX,
        ..Default::default()
    };
    vec![a, b]
}

/// `memberOf` expressions and ListContainerInstances filters: parse, then match.
pub fn fuzz_cql(data: &[u8]) {
    let s = text(data);
    let _ = berth_scheduler::cql::parse_date(&s);
    match berth_scheduler::cql::Expr::parse(&s) {
        Ok(e) => {
            for i in instances() {
                let _ = e.matches(&i);
            }
        }
        Err(e) => assert!(e.pos <= s.len(), "error at {} of {}", e.pos, s.len()),
    }
}

// ---------------------------------------------------------------------------------------
// Policy documents

/// IAM policies (identity, trust, resource), evaluated against a fixed set of requests, and
/// ECR lifecycle policies, evaluated against a fixed set of images.
pub fn fuzz_policy(data: &[u8]) {
    use berth_auth::policy::{AccessRequest, Caller, Decision, Policy, PolicyKind, combine};
    let doc = text(data);
    let arns = vec![
        "arn:aws:iam::000000000000:role/app".to_string(),
        "arn:aws:sts::000000000000:assumed-role/app/s1".to_string(),
    ];
    let user = Caller {
        account: "000000000000",
        arns: &arns,
        service: None,
    };
    let service = Caller {
        account: "000000000000",
        arns: &[],
        service: Some("ecs-tasks.amazonaws.com"),
    };
    let mut context: HashMap<String, Vec<String>> = HashMap::new();
    context.insert("aws:username".into(), vec!["app".into()]);
    context.insert(
        "ecs:cluster".into(),
        vec!["arn:aws:ecs:us-east-1:000000000000:cluster/default".into()],
    );
    context.insert("aws:sourceaccount".into(), vec!["000000000000".into()]);
    context.insert("aws:epochtime".into(), vec!["1714564800".into()]);
    let empty = HashMap::new();
    let requests = [
        AccessRequest {
            action: "ecs:RunTask",
            resource: Some("arn:aws:ecs:us-east-1:000000000000:task-definition/web:3"),
            caller: Some(&user),
            context: &context,
        },
        AccessRequest {
            action: "sts:AssumeRole",
            resource: Some("arn:aws:iam::000000000000:role/app"),
            caller: Some(&service),
            context: &empty,
        },
        AccessRequest {
            action: "ecr:BatchGetImage",
            resource: None,
            caller: None,
            context: &context,
        },
        AccessRequest {
            action: "iam:PassRole",
            resource: Some("arn:aws:iam::000000000000:role/a*b?c"),
            caller: Some(&user),
            context: &empty,
        },
    ];
    for kind in [
        PolicyKind::Identity,
        PolicyKind::Trust,
        PolicyKind::Resource,
    ] {
        if let Ok(p) = Policy::parse(&doc, kind) {
            assert_eq!(p.kind(), kind);
            let ds: Vec<Decision> = requests.iter().map(|r| p.evaluate(r)).collect();
            // Evaluation is a function of the policy and the request.
            let again: Vec<Decision> = requests.iter().map(|r| p.evaluate(r)).collect();
            assert_eq!(ds, again);
            let c = combine(ds.iter().copied());
            assert!(ds.contains(&c) || c == Decision::NotApplicable);
        }
    }
    if let Ok(p) = berth_registry::lifecycle::Policy::parse(&doc) {
        let images: Vec<berth_registry::lifecycle::ImageInfo> = [
            (vec!["latest"], 1_714_000_000.0),
            (vec!["v1", "prod-1"], 1_600_000_000.0),
            (vec![], 1_500_000_000.0),
            (vec![], f64::MAX),
        ]
        .into_iter()
        .enumerate()
        .map(|(i, (tags, at))| berth_registry::lifecycle::ImageInfo {
            digest: format!("sha256:{i:064x}"),
            tags: tags.into_iter().map(str::to_string).collect(),
            pushed_at: at,
        })
        .collect();
        let out = p.evaluate(&images, 1_714_564_800.0);
        let mut seen: Vec<&str> = out.iter().map(|e| e.image.digest.as_str()).collect();
        let n = seen.len();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), n, "an image expired twice");
    }
}

// ---------------------------------------------------------------------------------------
// ACS / TCS frames

/// A websocket text frame of the agent protocol, as the server reads what agents send (ACS
/// and TCS, TCS frames perhaps behind signed-request headers) and as the agent reads what
/// the server sends (payloads, credentials), down to the container definitions it runs.
pub fn fuzz_frames(data: &[u8]) {
    use berth_model::wire::{acs, tcs};
    use serde_json::Value;
    let t = text(data);
    if let Ok(v) = serde_json::from_str::<Value>(berth_api::tcs::frame_json(&t)) {
        let msg = v["message"].clone();
        match v["type"].as_str().unwrap_or_default() {
            "PublishMetricsRequest" => {
                let _ = serde_json::from_value::<tcs::PublishMetricsRequest>(msg);
            }
            "PublishHealthRequest" => {
                let _ = serde_json::from_value::<tcs::PublishHealthRequest>(msg);
            }
            "TaskStopVerificationMessage" => {
                let _ = serde_json::from_value::<acs::TaskStopVerificationMessage>(msg);
            }
            _ => {}
        }
        match berth_agent::session::inbound(v) {
            Some(berth_agent::backend::Inbound::Payload(p)) => {
                for task in p.tasks.iter().flatten() {
                    for c in task.containers.iter().flatten() {
                        let def = berth_model::payload::container_from_acs(c);
                        assert_eq!(def.name, c.name);
                    }
                    let _ = berth_model::payload::volumes_from_acs(task);
                }
            }
            Some(berth_agent::backend::Inbound::Credentials(_)) | None => {}
        }
    }
}

// ---------------------------------------------------------------------------------------
// Registry HTTP headers and parameters

/// `Content-Range` of upload PATCHes, `Range` of blob GETs, and query parameters of `/v2`.
pub fn fuzz_ranges(data: &[u8]) {
    if let Ok(v) = http::HeaderValue::from_bytes(data) {
        if let Ok((a, b)) = berth_api::registry::parse_content_range(&v) {
            assert!(a <= b, "Content-Range {a}-{b}");
        }
        for size in [0, 1, 2, 100, u64::MAX] {
            if let Some((a, b)) = berth_api::registry::parse_range(&v, size) {
                assert!(a <= b && b < size, "Range {a}-{b} of {size}");
            }
        }
    }
    let s = text(data);
    let d = berth_api::registry::percent_decode(&s);
    assert!(
        d.len() <= s.len() + 2 * s.chars().count(),
        "decoding grew the text"
    );
}

// ---------------------------------------------------------------------------------------
// Digests, references, names

/// Digests, tags, repository names, manifest references, image references and token scopes:
/// what parses renders back to its input.
pub fn fuzz_refs(data: &[u8]) {
    let s = text(data);
    if let Ok(d) = berth_registry::Digest::parse(&s) {
        assert_eq!(d.as_str(), s);
        assert_eq!(format!("{}:{}", d.algorithm(), d.hex()), s);
    }
    match berth_registry::Reference::parse(&s) {
        Some(berth_registry::Reference::Tag(t)) => {
            assert_eq!(t, s);
            assert!(berth_registry::digest::valid_tag(&t));
        }
        Some(berth_registry::Reference::Digest(d)) => assert_eq!(d.as_str(), s),
        None => {}
    }
    if berth_registry::digest::valid_repo_name(&s) {
        assert!(!s.contains("..") && !s.starts_with('/') && s.len() <= 256);
    }
    if let Ok(d) = berth_client::Digest::parse(&s) {
        assert_eq!(d.as_str(), s);
        assert!(
            d.hex()
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
    }
    if let Ok(r) = berth_client::ImageRef::parse(&s) {
        assert!(!r.host.is_empty() && !r.repo.is_empty() && !r.reference.is_empty());
        assert!(s.starts_with(&format!("{}/{}", r.host, r.repo)), "{r:?}");
    }
    if let Ok(sc) = berth_registry::token::Scope::parse(&s) {
        assert!(sc.kind == "repository" || sc.kind == "registry");
        let shown = format!("{}:{}:{}", sc.kind, sc.name, sc.actions.join(","));
        assert_eq!(berth_registry::token::Scope::parse(&shown), Ok(sc));
    }
    let _ = berth_model::taskdef::parse_cpu_units(&s);
    let _ = berth_model::taskdef::parse_memory_mib(&s);
}

// ---------------------------------------------------------------------------------------
// Tokens

/// Registry passwords and bearer tokens, Basic headers and role session tokens as clients
/// present them; and the round trip: what is issued (for a subject from the input) verifies
/// to what was issued.
pub fn fuzz_tokens(data: &[u8]) {
    use berth_registry::token;
    let key = [7u8; 32];
    let now = 1_714_564_800;
    let s = text(data);
    let _ = token::verify_claims(&key, &s, now);
    let _ = token::from_basic(&s);
    let _ = berth_auth::session::open(&key, "ASIAEXAMPLE", &s, now);
    if let Some((akid, tok)) = s.split_once('\n') {
        let _ = berth_auth::session::open(&key, akid, tok, now);
    }
    // Round trip with the input as the subject.
    let exp = now + 3600;
    let t = token::issue(&key, &s, exp);
    assert_eq!(token::verify(&key, &t, now).as_deref(), Some(s.as_str()));
    let scopes = vec![token::Scope {
        kind: "repository".into(),
        name: "app/web".into(),
        actions: vec!["pull".into()],
    }];
    let t = token::issue_bearer(&key, &s, exp, &scopes);
    let c = token::verify_claims(&key, &t, now).expect("an issued bearer token verifies");
    assert_eq!(c.subject, s);
    assert_eq!(c.scopes, Some(scopes));
    assert_eq!(token::verify(&[8u8; 32], &t, now), None, "another key");
    assert_eq!(token::verify(&key, &t, exp), None, "expired");
}

#[cfg(test)]
mod table_tests {
    /// The awsjson target decodes every operation the ECS and ECR tables answer (its list is
    /// a copy, so a new operation must be added here too).
    #[test]
    fn the_awsjson_target_covers_every_operation() {
        for op in berth_control::ecs_ops::ecs::OPERATIONS {
            assert!(
                *op == "RegisterTaskDefinition" || super::ecs_op(op, b"{}"),
                "ECS {op} is not fuzzed"
            );
        }
        for op in berth_registry::ecr_ops::ecr::OPERATIONS {
            assert!(super::ecr_op(op, b"{}"), "ECR {op} is not fuzzed");
        }
    }
}
