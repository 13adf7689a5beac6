//! `berth services` (the services of every cluster, with their counts and rollout, like
//! `docker service ls`) and `berth service events NAME` (its event log, oldest first, `-f` to
//! follow), through the ECS API.

use std::collections::HashSet;
use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use serde_json::{Value, json};

use crate::config::ServeArgs;
use crate::table::{print_table, short};

const ECS: &str = "AmazonEC2ContainerServiceV20141113";

#[derive(clap::Args, Debug)]
pub struct ServicesArgs {
    /// Only this cluster (default: every cluster).
    #[arg(long)]
    cluster: Option<String>,
    #[command(flatten)]
    local: ServeArgs,
}

#[derive(clap::Args, Debug)]
pub struct ServiceArgs {
    #[command(subcommand)]
    cmd: ServiceCmd,
}

#[derive(clap::Subcommand, Debug)]
enum ServiceCmd {
    /// Print a service's events, oldest first (ECS keeps the newest 100).
    Events(EventsArgs),
}

#[derive(clap::Args, Debug)]
struct EventsArgs {
    /// Service name or ARN.
    service: String,
    #[arg(long, default_value = "default")]
    cluster: String,
    /// Keep printing new events as they come (until interrupted).
    #[arg(long, short)]
    follow: bool,
    /// Print only the last N events.
    #[arg(long)]
    tail: Option<usize>,
    #[command(flatten)]
    local: ServeArgs,
}

/// Every page of an ECS list operation: the strings of `field`.
pub(crate) async fn list_all(
    aws: &berth_client::AwsClient,
    op: &str,
    mut req: Value,
    field: &str,
) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    loop {
        let r = aws.call(ECS, "ecs", op, &req).await?;
        out.extend(
            r[field]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(str::to_string)),
        );
        match r["nextToken"].as_str() {
            Some(t) => req["nextToken"] = json!(t),
            None => return Ok(out),
        }
    }
}

pub async fn services(a: ServicesArgs) -> anyhow::Result<()> {
    let aws = crate::api_client(&a.local)?;
    let clusters = match &a.cluster {
        Some(c) => vec![c.clone()],
        None => list_all(&aws, "ListClusters", json!({}), "clusterArns")
            .await
            .context("listing clusters")?,
    };
    let mut rows = vec![
        [
            "SERVICE",
            "CLUSTER",
            "STATUS",
            "DESIRED",
            "RUNNING",
            "PENDING",
            "DEFINITION",
            "ROLLOUT",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for cluster in &clusters {
        let arns = list_all(
            &aws,
            "ListServices",
            json!({"cluster": cluster, "maxResults": 100}),
            "serviceArns",
        )
        .await?;
        for chunk in arns.chunks(10) {
            let r = aws
                .call(
                    ECS,
                    "ecs",
                    "DescribeServices",
                    &json!({"cluster": cluster, "services": chunk}),
                )
                .await?;
            for s in r["services"].as_array().into_iter().flatten() {
                let deps = s["deployments"].as_array().cloned().unwrap_or_default();
                let primary = deps.first().cloned().unwrap_or(Value::Null);
                let rollout = match (primary["rolloutState"].as_str(), deps.len()) {
                    (Some(r), 1) => r.to_string(),
                    (Some(r), n) => format!("{r} ({n} deployments)"),
                    (None, _) => "-".into(),
                };
                let num = |k: &str| s[k].as_i64().unwrap_or(0).to_string();
                rows.push(vec![
                    s["serviceName"].as_str().unwrap_or("").to_string(),
                    short(cluster).to_string(),
                    s["status"].as_str().unwrap_or("").to_string(),
                    num("desiredCount"),
                    num("runningCount"),
                    num("pendingCount"),
                    short(s["taskDefinition"].as_str().unwrap_or("")).to_string(),
                    rollout,
                ]);
            }
        }
    }
    print_table(&rows)
}

pub async fn service(a: ServiceArgs) -> anyhow::Result<()> {
    match a.cmd {
        ServiceCmd::Events(e) => events(e).await,
    }
}

fn timestamp(secs: f64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos((secs * 1e9) as i128)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let f = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    t.format(&f).unwrap_or_default()
}

async fn events(a: EventsArgs) -> anyhow::Result<()> {
    let aws = crate::api_client(&a.local)?;
    let mut seen: HashSet<String> = HashSet::new();
    let mut first = true;
    loop {
        let r = aws
            .call(
                ECS,
                "ecs",
                "DescribeServices",
                &json!({"cluster": a.cluster, "services": [a.service]}),
            )
            .await?;
        let Some(s) = r["services"].as_array().and_then(|v| v.first()).cloned() else {
            anyhow::bail!("service {} not found in cluster {}", a.service, a.cluster);
        };
        // Newest first on the wire; print oldest first.
        let mut new: Vec<&Value> = s["events"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| !seen.contains(e["id"].as_str().unwrap_or_default()))
            .collect();
        new.reverse();
        if first && let Some(n) = a.tail {
            let skip = new.len().saturating_sub(n);
            for e in &new[..skip] {
                seen.insert(e["id"].as_str().unwrap_or_default().to_string());
            }
            new.drain(..skip);
        }
        let mut out = std::io::stdout().lock();
        for e in new {
            seen.insert(e["id"].as_str().unwrap_or_default().to_string());
            let line = writeln!(
                out,
                "{}  {}",
                timestamp(e["createdAt"].as_f64().unwrap_or(0.0)),
                e["message"].as_str().unwrap_or_default()
            )
            .and_then(|_| out.flush());
            match line {
                // The reader went away (`| head`): nothing more to say.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
                r => r?,
            }
        }
        drop(out);
        first = false;
        if !a.follow || s["status"].as_str() == Some("INACTIVE") {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
