//! What the agent keeps on disk about each task it runs, so that a restarted agent finds its
//! running containers again (their shim and init pids, network endpoints, port bindings) and
//! finishes what it was doing. One JSON file per task, replaced atomically (write to a
//! temporary file, rename). The files hold the containers' environment and the tasks' credential
//! ids: the directory is the owner's alone (0700, its files 0600, tightened when found looser).
//! Not fsynced: the file must survive the agent process dying, and
//! when the machine itself goes down the containers go with it.
//!
//! [`StateDir::memory`] keeps the same records in memory instead (as the same JSON), for
//! simulated nodes (whose containers die with the process anyway) and unit tests; clones share
//! the records, so a test can start a second agent on what the first one left.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_model::status::{NodeContainerStatus, TaskStatus};
use berth_model::wire::acs;
use berth_model::wire::ecs::NetworkBinding;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// The agent's knowledge of one container.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ContainerState {
    pub name: String,
    /// Its steps on this node (NONE, PULLED, CREATED while being started, RUNNING, STOPPED).
    pub status: NodeContainerStatus,
    pub runtime_id: String,
    pub pid: i32,
    pub shim_pid: i32,
    pub image_digest: Option<String>,
    pub exit_code: Option<i32>,
    pub reason: Option<String>,
    /// HEALTHY, UNHEALTHY, UNKNOWN; None without a health check.
    pub health: Option<String>,
    pub started_at: Option<f64>,
    pub finished_at: Option<f64>,
    pub bindings: Vec<NetworkBinding>,
    /// Pids of the forwarder processes of a bridge-mode container's host ports, in the
    /// order of `bindings`.
    #[serde(default)]
    pub forwarders: Vec<i32>,
    /// A bridge-mode container's own network endpoint.
    pub endpoint: Option<serde_json::Value>,
}

/// The agent's knowledge of one task.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TaskState {
    pub arn: String,
    pub cluster_arn: String,
    /// The payload the control plane sent (what to run), without its roles' keys: only
    /// their ids are kept ([`crate::credentials::scrub`]).
    pub payload: acs::Task,
    pub desired: String,
    /// PENDING, RUNNING, STOPPED as reported to the control plane; None before the first
    /// report (records of earlier builds wrote `""`).
    #[serde(deserialize_with = "task_status")]
    pub status: Option<TaskStatus>,
    pub pull_started_at: Option<f64>,
    pub pull_stopped_at: Option<f64>,
    pub stopping_reason: Option<String>,
    /// An `awsvpc` task's network endpoint.
    pub endpoint: Option<serde_json::Value>,
    pub containers: Vec<ContainerState>,
    /// Whether the final STOPPED report was acknowledged.
    pub stopped_reported: bool,
}

/// A task status as records hold it: absent, `""` (earlier builds) or an ECS status.
fn task_status<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<TaskStatus>, D::Error> {
    match Option::<String>::deserialize(d)?.as_deref() {
        None | Some("") => Ok(None),
        Some(s) => s.parse().map(Some).map_err(serde::de::Error::custom),
    }
}

impl TaskState {
    pub fn id(&self) -> &str {
        self.arn.rsplit('/').next().unwrap_or_default()
    }

    pub fn container(&self, name: &str) -> Option<&ContainerState> {
        self.containers.iter().find(|c| c.name == name)
    }

    pub fn container_mut(&mut self, name: &str) -> Option<&mut ContainerState> {
        self.containers.iter_mut().find(|c| c.name == name)
    }
}

/// The directory of task files (or its in-memory stand-in).
#[derive(Debug, Clone)]
pub struct StateDir {
    store: Store,
}

#[derive(Debug, Clone)]
enum Store {
    Dir(PathBuf),
    /// Task id → the record as it would be written to its file.
    Memory(Arc<Mutex<BTreeMap<String, Vec<u8>>>>),
}

impl StateDir {
    /// Open (or create) the directory, making it and its task files private to the owner.
    pub fn open(dir: &Path) -> std::io::Result<StateDir> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        tighten(dir, 0o700)?;
        // Files of older versions were world-readable.
        for e in std::fs::read_dir(dir)?.flatten() {
            if e.file_type().is_ok_and(|t| t.is_file()) {
                tighten(&e.path(), 0o600)?;
            }
        }
        Ok(StateDir {
            store: Store::Dir(dir.to_path_buf()),
        })
    }

    /// Records in memory only (see the module header).
    pub fn memory() -> StateDir {
        StateDir {
            store: Store::Memory(Default::default()),
        }
    }

    fn path(dir: &Path, id: &str) -> PathBuf {
        dir.join(format!("{id}.json"))
    }

    pub fn save(&self, t: &TaskState) -> std::io::Result<()> {
        let dir = match &self.store {
            Store::Dir(d) => d,
            Store::Memory(m) => {
                let bytes = serde_json::to_vec(t)?;
                m.lock().insert(t.id().to_string(), bytes);
                return Ok(());
            }
        };
        let p = Self::path(dir, t.id());
        let tmp = p.with_extension("json.tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        // The mode above applies to a new file only: a temporary file left by a crash keeps
        // its own.
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        f.write_all(&serde_json::to_vec(t)?)?;
        drop(f);
        std::fs::rename(&tmp, &p)
    }

    pub fn load(&self, id: &str) -> Option<TaskState> {
        match &self.store {
            Store::Dir(d) => serde_json::from_slice(&std::fs::read(Self::path(d, id)).ok()?).ok(),
            Store::Memory(m) => serde_json::from_slice(m.lock().get(id)?).ok(),
        }
    }

    pub fn remove(&self, id: &str) {
        match &self.store {
            Store::Dir(d) => {
                let _ = std::fs::remove_file(Self::path(d, id));
            }
            Store::Memory(m) => {
                m.lock().remove(id);
            }
        }
    }

    /// Every task record (unreadable files are skipped with a warning).
    pub fn all(&self) -> Vec<TaskState> {
        let mut out = Vec::new();
        self.each(|t| out.push(t.clone()));
        out
    }

    /// Look at every task record in turn.
    pub fn each(&self, mut f: impl FnMut(&TaskState)) {
        let dir = match &self.store {
            Store::Dir(d) => d,
            Store::Memory(m) => {
                let records: Vec<Vec<u8>> = m.lock().values().cloned().collect();
                for r in records {
                    if let Ok(t) = serde_json::from_slice(&r) {
                        f(&t);
                    }
                }
                return;
            }
        };
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.extension().and_then(|x| x.to_str()) != Some("json") {
                continue;
            }
            match std::fs::read(&p)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
            {
                Ok(t) => f(&t),
                Err(e) => tracing::warn!(path = %p.display(), "unreadable task state skipped: {e}"),
            }
        }
    }
}

/// Take away the permission bits of `p` that `mode` does not have (a symlink is left alone).
fn tighten(p: &Path, mode: u32) -> std::io::Result<()> {
    let meta = std::fs::symlink_metadata(p)?;
    let now = meta.permissions().mode() & 0o7777;
    if meta.file_type().is_symlink() || now & !mode == 0 {
        return Ok(());
    }
    tracing::info!(path = %p.display(), "mode {now:o} tightened to {:o}", now & mode);
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(now & mode))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_load_remove() {
        let d = tempfile::tempdir().unwrap();
        let s = StateDir::open(d.path()).unwrap();
        let t = TaskState {
            arn: "arn:aws:ecs:us-east-1:0:task/default/abc".into(),
            desired: "RUNNING".into(),
            containers: vec![ContainerState {
                name: "web".into(),
                pid: 42,
                ..Default::default()
            }],
            ..Default::default()
        };
        s.save(&t).unwrap();
        assert_eq!(s.load("abc"), Some(t.clone()));
        std::fs::write(d.path().join("junk.json"), b"{").unwrap();
        assert_eq!(s.all(), vec![t]);
        s.remove("abc");
        assert_eq!(s.load("abc"), None);
    }

    #[test]
    fn records_of_earlier_builds_read_with_typed_statuses() {
        // Earlier builds wrote statuses as free strings, "" before the first report.
        let old = |task: &str, container: &str| {
            serde_json::json!({
                "arn": "arn:aws:ecs:us-east-1:0:task/default/abc", "cluster_arn": "c",
                "payload": {}, "desired": "RUNNING", "status": task,
                "pull_started_at": null, "pull_stopped_at": null, "stopping_reason": null,
                "endpoint": null, "stopped_reported": false,
                "containers": [{"name": "web", "status": container, "runtime_id": "abc-web",
                    "pid": 7, "shim_pid": 8, "image_digest": null, "exit_code": null,
                    "reason": null, "health": null, "started_at": null, "finished_at": null,
                    "bindings": [], "endpoint": null}]
            })
        };
        let t: TaskState = serde_json::from_value(old("", "NONE")).unwrap();
        assert_eq!(t.status, None);
        assert_eq!(t.containers[0].status, NodeContainerStatus::None);
        let t: TaskState = serde_json::from_value(old("RUNNING", "CREATED")).unwrap();
        assert_eq!(t.status, Some(TaskStatus::Running));
        assert_eq!(t.containers[0].status, NodeContainerStatus::Created);
        // What this build writes reads back the same.
        let back: TaskState = serde_json::from_slice(&serde_json::to_vec(&t).unwrap()).unwrap();
        assert_eq!(back, t);
        assert!(serde_json::from_value::<TaskState>(old("BOGUS", "RUNNING")).is_err());
    }

    #[test]
    fn memory_records_are_shared_by_clones() {
        let s = StateDir::memory();
        let t = TaskState {
            arn: "arn:aws:ecs:us-east-1:0:task/default/abc".into(),
            ..Default::default()
        };
        s.save(&t).unwrap();
        let other = s.clone();
        assert_eq!(other.load("abc"), Some(t.clone()));
        assert_eq!(other.all(), vec![t]);
        other.remove("abc");
        assert_eq!(s.load("abc"), None);
    }

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn directory_and_files_are_private() {
        let d = tempfile::tempdir().unwrap();
        let t = TaskState {
            arn: "arn:aws:ecs:us-east-1:0:task/default/abc".into(),
            ..Default::default()
        };
        // New: made private.
        let fresh = d.path().join("new/state");
        let s = StateDir::open(&fresh).unwrap();
        s.save(&t).unwrap();
        assert_eq!(mode(&fresh), 0o700);
        assert_eq!(mode(&fresh.join("abc.json")), 0o600);
        // Left by an older version (or by hand): tightened at open and at save.
        let old = d.path().join("old");
        std::fs::create_dir(&old).unwrap();
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o755)).unwrap();
        for f in ["abc.json", "xyz.json.tmp", "abc.json.tmp"] {
            std::fs::write(old.join(f), b"{}").unwrap();
            std::fs::set_permissions(old.join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        let s = StateDir::open(&old).unwrap();
        assert_eq!(mode(&old), 0o700);
        assert_eq!(mode(&old.join("xyz.json.tmp")), 0o600);
        std::fs::set_permissions(
            old.join("abc.json.tmp"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        s.save(&t).unwrap();
        assert_eq!(mode(&old.join("abc.json")), 0o600);
    }
}
