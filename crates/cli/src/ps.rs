//! `berth ps` (tasks and containers through the ECS API, like `docker ps`) and `berth logs`
//! (a container's output, kept by the local node after the task stops, like `docker logs`).

use std::io::{Read, Seek, SeekFrom, Write};
use std::time::Duration;

use anyhow::Context;
use serde_json::{Value, json};

use crate::config::ServeArgs;
use crate::table::{print_table, short};

const ECS: &str = "AmazonEC2ContainerServiceV20141113";

#[derive(clap::Args, Debug)]
pub struct PsArgs {
    /// Include stopped tasks (kept for an hour after they stop).
    #[arg(short, long)]
    all: bool,
    /// Only this cluster (default: every cluster).
    #[arg(long)]
    cluster: Option<String>,
    #[command(flatten)]
    local: ServeArgs,
}

#[derive(clap::Args, Debug)]
pub struct LogsArgs {
    /// Task id or ARN.
    task: String,
    /// Container name (needed when the task has several).
    #[arg(long, short)]
    container: Option<String>,
    /// Keep printing new output until the container stops.
    #[arg(long, short)]
    follow: bool,
    /// Print only the last N lines.
    #[arg(long)]
    tail: Option<usize>,
    #[command(flatten)]
    local: ServeArgs,
}

pub(crate) fn uptime(since: f64, now: f64) -> String {
    let s = (now - since).max(0.0) as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{}s", s / 60, s % 60),
        3600..=86399 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{}h", s / 86400, (s % 86400) / 3600),
    }
}

fn ports(c: &Value) -> String {
    let mut out = Vec::new();
    for b in c["networkBindings"].as_array().into_iter().flatten() {
        out.push(format!(
            "{}:{}->{}/{}",
            b["bindIP"].as_str().unwrap_or("0.0.0.0"),
            b["hostPort"],
            b["containerPort"],
            b["protocol"].as_str().unwrap_or("tcp")
        ));
    }
    for n in c["networkInterfaces"].as_array().into_iter().flatten() {
        if let Some(ip) = n["privateIpv4Address"].as_str() {
            out.push(ip.to_string());
        }
    }
    out.join(",")
}

pub async fn ps(a: PsArgs, clock: berth_clock::Clock) -> anyhow::Result<()> {
    let aws = crate::api_client(&a.local)?;
    let clusters: Vec<String> = match &a.cluster {
        Some(c) => vec![c.clone()],
        None => crate::services::list_all(&aws, "ListClusters", json!({}), "clusterArns")
            .await
            .context("listing clusters")?,
    };
    let now = clock.now().as_secs_f64();
    let mut rows = vec![[
        "TASK".to_string(),
        "CLUSTER".into(),
        "DEFINITION".into(),
        "CONTAINER".into(),
        "STATUS".into(),
        "PORTS".into(),
        "UPTIME".into(),
    ]];
    let statuses: &[&str] = if a.all {
        &["RUNNING", "STOPPED"]
    } else {
        &["RUNNING"]
    };
    for cluster in &clusters {
        let mut arns: Vec<Value> = Vec::new();
        for st in statuses {
            let req = json!({"cluster": cluster, "desiredStatus": st});
            arns.extend(
                crate::services::list_all(&aws, "ListTasks", req, "taskArns")
                    .await?
                    .into_iter()
                    .map(Value::from),
            );
        }
        for chunk in arns.chunks(100) {
            let r = aws
                .call(
                    ECS,
                    "ecs",
                    "DescribeTasks",
                    &json!({"cluster": cluster, "tasks": chunk}),
                )
                .await?;
            for t in r["tasks"].as_array().into_iter().flatten() {
                let task_status = t["lastStatus"].as_str().unwrap_or("");
                let def = short(t["taskDefinitionArn"].as_str().unwrap_or("")).to_string();
                for c in t["containers"].as_array().into_iter().flatten() {
                    let status = match (c["lastStatus"].as_str(), c["exitCode"].as_i64()) {
                        (Some("STOPPED"), Some(code)) => format!("STOPPED ({code})"),
                        (Some(s), _) => s.to_string(),
                        _ => task_status.to_string(),
                    };
                    let status = match c["healthStatus"].as_str() {
                        Some(h) if h != "UNKNOWN" => format!("{status} {}", h.to_lowercase()),
                        _ => status,
                    };
                    let up = match (t["startedAt"].as_f64(), t["stoppedAt"].as_f64()) {
                        (Some(s), None) => uptime(s, now),
                        (Some(s), Some(e)) => format!("ran {}", uptime(s, e)),
                        _ => "-".into(),
                    };
                    rows.push([
                        short(t["taskArn"].as_str().unwrap_or("")).to_string(),
                        short(cluster).to_string(),
                        def.clone(),
                        c["name"].as_str().unwrap_or("").to_string(),
                        status,
                        ports(c),
                        up,
                    ]);
                }
            }
        }
    }
    print_table(&rows)
}

/// The last `n` lines of `data`.
fn tail_of(data: &[u8], n: usize) -> &[u8] {
    let mut count = 0;
    let body = data.strip_suffix(b"\n").unwrap_or(data);
    for (i, b) in body.iter().enumerate().rev() {
        if *b == b'\n' {
            count += 1;
            if count == n {
                return &data[i + 1..];
            }
        }
    }
    data
}

pub async fn logs(a: LogsArgs) -> anyhow::Result<()> {
    let cfg = a.local.resolve()?;
    let task_id = short(&a.task).to_string();
    let dir = cfg.data_dir.join("node/runtime/logs");
    let container = match &a.container {
        Some(c) => c.clone(),
        None => {
            let prefix = format!("{task_id}-");
            let mut names: Vec<String> = std::fs::read_dir(&dir)
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|e| {
                    let n = e.file_name().into_string().ok()?;
                    Some(n.strip_prefix(&prefix)?.strip_suffix(".log")?.to_string())
                })
                .collect();
            names.sort();
            match names.len() {
                0 => anyhow::bail!(
                    "no logs for task {task_id} on this machine's node ({})",
                    dir.display()
                ),
                1 => names.remove(0),
                _ => anyhow::bail!(
                    "task {task_id} has several containers; pick one with --container: {}",
                    names.join(", ")
                ),
            }
        }
    };
    let path = crate::node::log_path(&cfg.data_dir, &task_id, &container);
    let mut f = std::fs::File::open(&path)
        .with_context(|| format!("no logs for container {container} of task {task_id}"))?;
    // Rotated copies first, oldest first.
    let mut data = Vec::new();
    for i in (1..100).rev() {
        let mut rotated = path.clone().into_os_string();
        rotated.push(format!(".{i}"));
        if let Ok(b) = std::fs::read(&rotated) {
            data.extend(b);
        }
    }
    let before = data.len();
    f.read_to_end(&mut data)?;
    let current_len = data.len() - before;
    let shown = match a.tail {
        Some(n) => tail_of(&data, n),
        None => &data[..],
    };
    let mut out = std::io::stdout().lock();
    out.write_all(shown)?;
    out.flush()?;
    drop(out);
    if !a.follow {
        return Ok(());
    }
    // Follow until the node no longer runs the task (its state file is gone or says STOPPED).
    let state = cfg
        .data_dir
        .join("node/state")
        .join(format!("{task_id}.json"));
    let mut pos = current_len as u64;
    loop {
        let running = std::fs::read(&state)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .is_some_and(|v| {
                v["containers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["name"] == container.as_str() && c["status"] != "STOPPED")
            });
        f.seek(SeekFrom::Start(pos))?;
        let mut more = Vec::new();
        f.read_to_end(&mut more)?;
        if !more.is_empty() {
            pos += more.len() as u64;
            let mut out = std::io::stdout().lock();
            out.write_all(&more)?;
            out.flush()?;
        } else if !running {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tails() {
        assert_eq!(tail_of(b"a\nb\nc\n", 2), b"b\nc\n");
        assert_eq!(tail_of(b"a\nb\nc", 1), b"c");
        assert_eq!(tail_of(b"a\n", 5), b"a\n");
        assert_eq!(uptime(0.0, 75.0), "1m15s");
    }
}
