//! berth-loadgen: drives berth's ECS API at high concurrency, signing every request with
//! SigV4 exactly as an SDK does (fresh signature per request), and reports throughput and
//! latency. Used by `bench/runtask.sh`.

#![allow(
    clippy::disallowed_methods,
    reason = "a load generator measures real time and signs with the machine's"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

#[derive(Parser, Debug, Clone)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    args: Args,
}

#[derive(clap::Subcommand, Debug, Clone)]
enum Cmd {
    /// The peer: durable single-key puts to etcd through its JSON gateway.
    EtcdPut {
        /// etcd client URL.
        #[arg(long)]
        etcd: String,
        #[arg(long, default_value_t = 10_000)]
        puts: usize,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
    },
    /// RunTask → RUNNING latency of real containers on berth's local node: one task at a
    /// time, DescribeTasks polled every millisecond, then StopTask and wait for STOPPED.
    TaskStart {
        /// The image (already pushed to berth's registry).
        #[arg(long)]
        image: String,
        /// networkMode of the task definition.
        #[arg(long, default_value = "none")]
        network_mode: String,
        /// Tasks to start (one after another).
        #[arg(long, default_value_t = 100)]
        runs: usize,
        /// Tasks started and stopped first, not measured (image cached, paths warm).
        #[arg(long, default_value_t = 3)]
        warmup: usize,
    },
}

#[derive(clap::Args, Debug, Clone)]
struct Args {
    /// berth's endpoint (AWS_ENDPOINT_URL).
    #[arg(long, env = "AWS_ENDPOINT_URL", default_value = "")]
    endpoint: String,
    #[arg(long, env = "AWS_ACCESS_KEY_ID", default_value = "")]
    access_key: String,
    #[arg(long, env = "AWS_SECRET_ACCESS_KEY", default_value = "")]
    secret_key: String,
    #[arg(long, env = "AWS_REGION", default_value = "us-east-1")]
    region: String,
    /// Tasks to run and then stop.
    #[arg(long, default_value_t = 10_000)]
    tasks: usize,
    /// Requests in flight.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Fake container instances to register (0: the placement-failure path).
    #[arg(long, default_value_t = 10)]
    instances: usize,
    /// Cluster name to use (created).
    #[arg(long, default_value = "loadgen")]
    cluster: String,
    /// Placement strategy of every RunTask: random (ECS's default for RunTask), spread
    /// (over `ecs.availability-zone`), binpack (memory), spread-binpack (both, in order).
    #[arg(long, default_value = "random")]
    strategy: String,
    /// Stop every placed task afterwards (and measure StopTask).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    stop: bool,
    /// Print progress every this many seconds (0: never).
    #[arg(long, default_value_t = 0)]
    progress: u64,
}

struct Api {
    client: Client<HttpConnector, Full<Bytes>>,
    args: Args,
    host: String,
    creds: berth_auth::Credentials,
}

impl Api {
    async fn call(&self, op: &str, body: Value) -> anyhow::Result<Value> {
        let body = serde_json::to_vec(&body)?;
        let mut headers = http::HeaderMap::new();
        headers.insert("host", self.host.parse()?);
        headers.insert("content-type", "application/x-amz-json-1.1".parse()?);
        headers.insert(
            "x-amz-target",
            format!("AmazonEC2ContainerServiceV20141113.{op}").parse()?,
        );
        berth_auth::sign(
            "POST",
            "/",
            None,
            &mut headers,
            &body,
            &self.creds,
            &self.args.region,
            "ecs",
            time::OffsetDateTime::now_utc(),
        );
        let mut req = http::Request::post(format!("{}/", self.args.endpoint))
            .body(Full::new(Bytes::from(body)))?;
        *req.headers_mut() = headers;
        let resp = self.client.request(req).await?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await?.to_bytes();
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("{op}: HTTP {status}: {v}");
        }
        Ok(v)
    }
}

struct Stats {
    latencies: Vec<Duration>,
    elapsed: Duration,
}

impl Stats {
    fn pct(&self, p: f64) -> Duration {
        let mut l = self.latencies.clone();
        l.sort();
        if l.is_empty() {
            return Duration::ZERO;
        }
        l[((l.len() as f64 * p) as usize).min(l.len() - 1)]
    }
}

/// Run `n` jobs through `concurrency` workers; job i gets index i.
async fn drive<F, Fut>(n: usize, concurrency: usize, f: F) -> anyhow::Result<Stats>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let f = Arc::new(f);
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..concurrency {
        let (f, next) = (f.clone(), next.clone());
        handles.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let t = Instant::now();
                f(i).await?;
                lat.push(t.elapsed());
            }
            anyhow::Ok(lat)
        }));
    }
    let mut latencies = Vec::new();
    for h in handles {
        latencies.extend(h.await??);
    }
    Ok(Stats {
        latencies,
        elapsed: start.elapsed(),
    })
}

async fn etcd_put(url: String, puts: usize, concurrency: usize) -> anyhow::Result<()> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(concurrency)
        .build(connector);
    let value = b64.encode([7u8; 700]); // about the size of a task record
    let stats = drive(puts, concurrency, move |i| {
        let client = client.clone();
        let body = json!({"key": b64.encode(format!("bench/{i:08}")), "value": value}).to_string();
        let url = format!("{url}/v3/kv/put");
        async move {
            let req = http::Request::post(url).body(Full::new(Bytes::from(body)))?;
            let resp = client.request(req).await?;
            let status = resp.status();
            resp.into_body().collect().await?;
            if !status.is_success() {
                bail!("etcd put: HTTP {status}");
            }
            Ok(())
        }
    })
    .await?;
    println!(
        "etcd put x{puts} ({concurrency} in flight): {:.0} puts/s committed; latency p50 {:.2} ms p99 {:.2} ms",
        puts as f64 / stats.elapsed.as_secs_f64(),
        stats.pct(0.5).as_secs_f64() * 1000.0,
        stats.pct(0.99).as_secs_f64() * 1000.0,
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Cmd::EtcdPut {
        etcd,
        puts,
        concurrency,
    }) = cli.cmd
    {
        return etcd_put(etcd, puts, concurrency).await;
    }
    let args = cli.args;
    let task_start = match cli.cmd {
        Some(Cmd::TaskStart {
            image,
            network_mode,
            runs,
            warmup,
        }) => Some((image, network_mode, runs, warmup)),
        _ => None,
    };
    if args.endpoint.is_empty() || args.access_key.is_empty() {
        bail!("set AWS_ENDPOINT_URL and the keys (eval \"$(berth env)\")");
    }
    let uri: http::Uri = args.endpoint.parse().context("endpoint")?;
    let host = uri.authority().context("endpoint has no host")?.to_string();
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(args.concurrency)
        .build(connector);
    let api = Arc::new(Api {
        client,
        host,
        creds: berth_auth::Credentials {
            access_key_id: args.access_key.clone(),
            secret_access_key: args.secret_key.clone(),
            session_token: None,
        },
        args: args.clone(),
    });
    if let Some((image, mode, runs, warmup)) = task_start {
        return task_start_bench(&api, &image, &mode, runs, warmup).await;
    }
    let cl = args.cluster.clone();
    api.call("CreateCluster", json!({"clusterName": cl}))
        .await?;
    api.call(
        "RegisterTaskDefinition",
        json!({"family": "loadgen", "containerDefinitions": [
            {"name": "a", "image": "busybox", "memory": 8, "cpu": 1}]}),
    )
    .await?;
    for i in 0..args.instances {
        api.call(
            "RegisterContainerInstance",
            json!({"cluster": cl, "totalResources": [
                {"name": "CPU", "type": "INTEGER", "integerValue": 1_000_000},
                {"name": "MEMORY", "type": "INTEGER", "integerValue": 1_000_000}],
              "attributes": [{"name": "ecs.availability-zone", "value": format!("zone-{}", i % 3)}]}),
        )
        .await?;
    }

    // RunTask, 10 tasks per call.
    let strategy = match args.strategy.as_str() {
        "random" => json!([{"type": "random"}]),
        "spread" => json!([{"type": "spread", "field": "attribute:ecs.availability-zone"}]),
        "binpack" => json!([{"type": "binpack", "field": "memory"}]),
        "spread-binpack" => json!([
            {"type": "spread", "field": "attribute:ecs.availability-zone"},
            {"type": "binpack", "field": "memory"}]),
        other => bail!("unknown --strategy {other}"),
    };
    let calls = args.tasks.div_ceil(10);
    let done = Arc::new(AtomicUsize::new(0));
    if args.progress > 0 {
        let (done, every) = (done.clone(), args.progress);
        let t0 = Instant::now();
        tokio::spawn(async move {
            let mut last = 0;
            loop {
                tokio::time::sleep(Duration::from_secs(every)).await;
                let d = done.load(Ordering::Relaxed) * 10;
                eprintln!(
                    "  {:>6.1} s: {d} tasks requested, {:.0}/s lately",
                    t0.elapsed().as_secs_f64(),
                    (d - last) as f64 / every as f64
                );
                last = d;
            }
        });
    }
    let arns = Arc::new(std::sync::Mutex::new(Vec::with_capacity(args.tasks)));
    let failures = Arc::new(AtomicUsize::new(0));
    let run = {
        let (api, arns, failures, cl) = (api.clone(), arns.clone(), failures.clone(), cl.clone());
        let (strategy, done) = (strategy.clone(), done.clone());
        drive(calls, args.concurrency, move |_| {
            let (api, arns, failures, cl) =
                (api.clone(), arns.clone(), failures.clone(), cl.clone());
            let (strategy, done) = (strategy.clone(), done.clone());
            async move {
                let v = api
                    .call(
                        "RunTask",
                        json!({"cluster": cl, "taskDefinition": "loadgen", "count": 10,
                               "placementStrategy": strategy}),
                    )
                    .await?;
                done.fetch_add(1, Ordering::Relaxed);
                let got: Vec<String> = v["tasks"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|t| t["taskArn"].as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
                failures.fetch_add(
                    v["failures"].as_array().map_or(0, |f| f.len()),
                    Ordering::Relaxed,
                );
                if let Ok(mut a) = arns.lock() {
                    a.extend(got);
                }
                Ok(())
            }
        })
        .await?
    };
    let placed = arns.lock().map(|a| a.len()).unwrap_or(0);
    println!(
        "RunTask x{calls} (count=10, {} in flight): {placed} tasks placed, {} failure answers; {:.0} calls/s, {:.0} tasks/s requested, {:.0} tasks/s placed+committed; latency p50 {:.2} ms p99 {:.2} ms",
        args.concurrency,
        failures.load(Ordering::Relaxed),
        calls as f64 / run.elapsed.as_secs_f64(),
        (calls * 10) as f64 / run.elapsed.as_secs_f64(),
        placed as f64 / run.elapsed.as_secs_f64(),
        run.pct(0.5).as_secs_f64() * 1000.0,
        run.pct(0.99).as_secs_f64() * 1000.0,
    );
    if placed == 0 || !args.stop {
        return Ok(());
    }
    let list: Arc<Vec<String>> = Arc::new(arns.lock().map(|a| a.clone()).unwrap_or_default());
    let stop = {
        let (api, list, cl) = (api.clone(), list.clone(), cl.clone());
        drive(list.len(), args.concurrency, move |i| {
            let (api, list, cl) = (api.clone(), list.clone(), cl.clone());
            async move {
                api.call(
                    "StopTask",
                    json!({"cluster": cl, "task": list[i], "reason": "loadgen"}),
                )
                .await?;
                Ok(())
            }
        })
        .await?
    };
    println!(
        "StopTask x{} ({} in flight): {:.0} tasks/s committed; latency p50 {:.2} ms p99 {:.2} ms",
        list.len(),
        args.concurrency,
        list.len() as f64 / stop.elapsed.as_secs_f64(),
        stop.pct(0.5).as_secs_f64() * 1000.0,
        stop.pct(0.99).as_secs_f64() * 1000.0,
    );
    Ok(())
}

async fn wait_status(api: &Api, arn: &str, status: &str) -> anyhow::Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v = api
            .call(
                "DescribeTasks",
                json!({"cluster": "default", "tasks": [arn]}),
            )
            .await?;
        let t = &v["tasks"][0];
        if t["lastStatus"] == status {
            return Ok(t.clone());
        }
        if t["lastStatus"] == "STOPPED" {
            bail!("task stopped: {}", t["stoppedReason"]);
        }
        if Instant::now() > deadline {
            bail!("task {arn} not {status} after 60 s: {t}");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn task_start_bench(
    api: &Api,
    image: &str,
    mode: &str,
    runs: usize,
    warmup: usize,
) -> anyhow::Result<()> {
    let family = format!("taskstart-{mode}");
    api.call(
        "RegisterTaskDefinition",
        json!({"family": family, "networkMode": mode, "containerDefinitions": [{
            "name": "c", "image": image, "memory": 32, "stopTimeout": 2,
            "command": ["/bin/sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]}]}),
    )
    .await?;
    let mut lat = Vec::with_capacity(runs);
    for i in 0..warmup + runs {
        let t0 = Instant::now();
        let mut req = json!({"cluster": "default", "taskDefinition": family});
        if mode == "awsvpc" {
            req["networkConfiguration"] =
                json!({"awsvpcConfiguration": {"subnets": ["subnet-berth"]}});
        }
        let v = api.call("RunTask", req).await?;
        let arn = v["tasks"][0]["taskArn"]
            .as_str()
            .with_context(|| format!("RunTask placed nothing: {v}"))?
            .to_string();
        wait_status(api, &arn, "RUNNING").await?;
        let took = t0.elapsed();
        if i >= warmup {
            lat.push(took);
        }
        api.call("StopTask", json!({"cluster": "default", "task": arn}))
            .await?;
        wait_status(api, &arn, "STOPPED").await?;
    }
    lat.sort();
    let pct =
        |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)].as_secs_f64() * 1000.0;
    println!(
        "berth RunTask -> RUNNING, networkMode {mode}, {runs} tasks one at a time: p50 {:.1} ms  p90 {:.1} ms  p99 {:.1} ms  min {:.1} ms  max {:.1} ms",
        pct(0.5),
        pct(0.9),
        pct(0.99),
        lat[0].as_secs_f64() * 1000.0,
        lat[lat.len() - 1].as_secs_f64() * 1000.0
    );
    Ok(())
}
