//! kill -9 while writing: everything acknowledged before the kill is there after reopening.
//! The parent re-runs this test binary as a child (selecting `child_writer`), reads the
//! revisions the child saw acknowledged, SIGKILLs it by PID mid-stream, and reopens the file.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;

use berth_store::{RedbStore, Store};

const ENV: &str = "BERTH_STORE_CRASH_CHILD";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_writer() {
    let Ok(path) = std::env::var(ENV) else {
        return; // only does something when run as the child
    };
    let s = Arc::new(RedbStore::open(std::path::Path::new(&path)).unwrap());
    // 8 concurrent writers, so kills land inside group commits too.
    let mut tasks = Vec::new();
    for w in 0..8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0.. {
                let key = format!("w{w}/{i:08}");
                let rev = s.put(key.as_bytes(), &[7u8; 512]).await.unwrap();
                println!("ACK {key} {rev}");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_nothing_acknowledged() {
    if std::env::var(ENV).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.redb");
    for round in 0..3 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "child_writer",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(ENV, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id();
        let out = BufReader::new(child.stdout.take().unwrap());
        let mut acked = Vec::new();
        let target = 300 + round * 500;
        for line in out.lines() {
            let line = line.unwrap();
            if let Some(rest) = line.strip_prefix("ACK ") {
                let mut it = rest.split(' ');
                let key = it.next().unwrap().to_string();
                let rev: i64 = it.next().unwrap().parse().unwrap();
                acked.push((key, rev));
                if acked.len() == target {
                    // SIGKILL by PID, mid-stream.
                    let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
                    break;
                }
            }
        }
        let _ = child.wait();
        assert_eq!(acked.len(), target, "child stopped before the kill");
        let s = RedbStore::open(&path).unwrap();
        for (key, rev) in &acked {
            let kv = s
                .get(key.as_bytes())
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("round {round}: acknowledged {key} lost"));
            assert_eq!(kv.mod_revision, *rev);
        }
        let max = acked.iter().map(|(_, r)| *r).max().unwrap();
        assert!(s.revision().await.unwrap() >= max);
    }
}
