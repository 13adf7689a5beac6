//! A fake [`Driver`]: containers are modelled, nothing is started. Like Nomad's mock driver,
//! it exists for the agent's unit tests and for simulated nodes (`berth agent --simulate`).
//!
//! A container runs from `start` until it exits by itself ([`Behaviour::exit_after`]), is
//! signalled (SIGTERM ends it with [`Behaviour::on_term`] unless it ignores SIGTERM; SIGKILL
//! always ends it), or a test ends it ([`FakeDriver::exit`]). What a container does is
//! scripted by rules, matched by container name or image ([`Match`]); time is the clock it is
//! given (`berth_clock`, tokio's clock), so tests run on a paused clock. With
//! [`FakeDriver::recording`] every call is recorded (with its time) for tests to assert the
//! order of starts, signals and cleanups; simulated nodes leave it off, so memory stays bounded
//! by the containers that exist.
//!
//! Must not: touch the host (no processes, mounts, cgroups or files).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use berth_clock::{Clock, Instant};
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::driver::{CgroupStats, Container, Driver, Exit, RuntimeError, Signal};
use crate::spec::ContainerSpec;

/// Which containers a rule scripts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    /// A container by its name: its id (`<task>-<name>` for the agent's containers) ends with
    /// `-NAME`, or is `NAME`.
    Name(String),
    /// Containers whose image root filesystem is this path (the agent's fake image store
    /// gives an image the path of its reference).
    Image(String),
}

impl Match {
    fn matches(&self, id: &str, rootfs: &Path) -> bool {
        match self {
            Match::Name(n) => {
                id == n
                    || (id.len() > n.len()
                        && id.ends_with(n)
                        && id[..id.len() - n.len()].ends_with('-'))
            }
            Match::Image(i) => rootfs == Path::new(i),
        }
    }
}

/// What a modelled container does.
#[derive(Debug, Clone)]
pub struct Behaviour {
    /// Time `start` takes.
    pub start_delay: Duration,
    /// `start` fails with this message.
    pub fail_start: Option<String>,
    /// It ends by itself this long after starting, like this.
    pub exit_after: Option<(Duration, Exit)>,
    /// SIGTERM does nothing (only SIGKILL ends it).
    pub ignore_term: bool,
    /// How SIGTERM ends it …
    pub on_term: Exit,
    /// … this long after the signal.
    pub term_delay: Duration,
    /// The exit code of commands run inside it (health checks).
    pub exec_code: i32,
    /// Commands run inside it never finish (they time out).
    pub exec_hangs: bool,
    /// Memory it uses, bytes (CPU: half a core while it runs).
    pub memory_bytes: u64,
}

impl Default for Behaviour {
    fn default() -> Behaviour {
        Behaviour {
            start_delay: Duration::ZERO,
            fail_start: None,
            exit_after: None,
            ignore_term: false,
            on_term: Exit::Signal(15),
            term_delay: Duration::ZERO,
            exec_code: 0,
            exec_hangs: false,
            memory_bytes: 64 << 20,
        }
    }
}

/// A call the driver saw (with [`FakeDriver::recording`]).
#[derive(Debug, Clone)]
pub enum Call {
    Start {
        id: String,
        spec: Box<ContainerSpec>,
    },
    StartFailed {
        id: String,
    },
    Attach {
        id: String,
        found: bool,
    },
    Signal {
        id: String,
        signal: Signal,
    },
    Exec {
        id: String,
        args: Vec<String>,
    },
    Exited {
        id: String,
        exit: Exit,
    },
    TaskCgroup {
        rel: String,
        cpu: Option<f64>,
        memory: Option<i64>,
    },
    RemoveTaskCgroup {
        rel: String,
    },
    Cleanup {
        id: String,
    },
}

struct Modelled {
    pid: i32,
    rootfs: PathBuf,
    started: Instant,
    ended: watch::Sender<Option<Exit>>,
}

struct State {
    clock: Clock,
    rules: Vec<(Match, Behaviour)>,
    containers: HashMap<String, Modelled>,
    next_pid: i32,
    calls: Option<Vec<(Instant, Call)>>,
    task_cgroup_error: Option<String>,
}

impl State {
    fn record(&mut self, c: Call) {
        if let Some(calls) = &mut self.calls {
            calls.push((self.clock.instant(), c));
        }
    }

    /// The behaviour of container `id`: the last rule that matches, else the default.
    fn behaviour(&self, id: &str, rootfs: &Path, default: &Behaviour) -> Behaviour {
        self.rules
            .iter()
            .rev()
            .find(|(m, _)| m.matches(id, rootfs))
            .map_or_else(|| default.clone(), |(_, b)| b.clone())
    }
}

/// See the module header. Clones share their containers: one serves every simulated node of
/// a process.
#[derive(Clone)]
pub struct FakeDriver {
    state: Arc<Mutex<State>>,
    default: Arc<Behaviour>,
}

impl FakeDriver {
    /// Containers behave as `default` unless a rule says otherwise; their times (calls, CPU
    /// use) are `clock`'s.
    pub fn new(clock: Clock, default: Behaviour) -> FakeDriver {
        FakeDriver {
            state: Arc::new(Mutex::new(State {
                clock,
                rules: Vec::new(),
                containers: HashMap::new(),
                next_pid: 1000,
                calls: None,
                task_cgroup_error: None,
            })),
            default: Arc::new(default),
        }
    }

    /// Record every call from now on ([`Self::calls`]).
    pub fn recording(self) -> FakeDriver {
        self.state.lock().calls = Some(Vec::new());
        self
    }

    /// Script the containers `m` matches (a later rule wins over an earlier one). Applies to
    /// containers started from now on, and at once to how commands inside running ones end.
    pub fn script(&self, m: Match, b: Behaviour) {
        self.state.lock().rules.push((m, b));
    }

    /// Make task cgroups fail (Some) or work again (None).
    pub fn fail_task_cgroups(&self, message: Option<&str>) {
        self.state.lock().task_cgroup_error = message.map(str::to_string);
    }

    /// End a running container as if its process had exited.
    pub fn exit(&self, id: &str, exit: Exit) {
        let mut st = self.state.lock();
        end(&mut st, id, exit);
    }

    /// Ids of the containers running now, sorted.
    pub fn running(&self) -> Vec<String> {
        let st = self.state.lock();
        let mut v: Vec<String> = st
            .containers
            .iter()
            .filter(|(_, c)| c.ended.borrow().is_none())
            .map(|(id, _)| id.clone())
            .collect();
        v.sort();
        v
    }

    /// Every recorded call with its time (empty unless [`Self::recording`]).
    pub fn calls(&self) -> Vec<(Instant, Call)> {
        self.state.lock().calls.clone().unwrap_or_default()
    }

    /// The id of the container a runtime id ends in `-name` for (the agent's naming).
    pub fn id_of(&self, name: &str) -> Option<String> {
        let m = Match::Name(name.to_string());
        self.state
            .lock()
            .containers
            .keys()
            .find(|id| m.matches(id, Path::new("")))
            .cloned()
    }
}

/// End container `id` (once) and record it.
fn end(st: &mut State, id: &str, exit: Exit) {
    let Some(c) = st.containers.get(id) else {
        return;
    };
    if c.ended.borrow().is_some() {
        return;
    }
    c.ended.send_replace(Some(exit));
    st.record(Call::Exited {
        id: id.to_string(),
        exit,
    });
}

/// The end of a modelled container, for its [`Container`].
fn exit_future(id: &str, mut rx: watch::Receiver<Option<Exit>>) -> crate::driver::ExitFuture {
    let id = id.to_string();
    Box::pin(async move {
        loop {
            if let Some(e) = *rx.borrow_and_update() {
                return Ok(e);
            }
            if rx.changed().await.is_err() {
                return Err(RuntimeError::Container {
                    id,
                    message: "the fake driver forgot the container".into(),
                });
            }
        }
    })
}

#[async_trait::async_trait]
impl Driver for FakeDriver {
    fn name(&self) -> &'static str {
        "simulated"
    }

    async fn start(
        &self,
        id: &str,
        image_rootfs: &Path,
        spec: &ContainerSpec,
    ) -> Result<Container, RuntimeError> {
        let b = self.state.lock().behaviour(id, image_rootfs, &self.default);
        if !b.start_delay.is_zero() {
            tokio::time::sleep(b.start_delay).await;
        }
        let mut st = self.state.lock();
        if let Some(message) = b.fail_start {
            st.record(Call::StartFailed { id: id.to_string() });
            return Err(RuntimeError::Container {
                id: id.to_string(),
                message,
            });
        }
        if st
            .containers
            .get(id)
            .is_some_and(|c| c.ended.borrow().is_none())
        {
            return Err(RuntimeError::Container {
                id: id.to_string(),
                message: "a container with this id is running".into(),
            });
        }
        st.next_pid += 1;
        let pid = st.next_pid;
        let (tx, rx) = watch::channel(None);
        let started = st.clock.instant();
        st.containers.insert(
            id.to_string(),
            Modelled {
                pid,
                rootfs: image_rootfs.to_path_buf(),
                started,
                ended: tx,
            },
        );
        if st.calls.is_some() {
            st.record(Call::Start {
                id: id.to_string(),
                spec: Box::new(spec.clone()),
            });
        }
        drop(st);
        if let Some((after, exit)) = b.exit_after {
            let me = self.clone();
            let cid = id.to_string();
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                me.exit(&cid, exit);
            });
        }
        Ok(Container::new(id, pid, 0, exit_future(id, rx)))
    }

    async fn attach(
        &self,
        id: &str,
        pid: i32,
        _shim_pid: i32,
    ) -> Result<Option<Container>, RuntimeError> {
        let mut st = self.state.lock();
        let rx = st
            .containers
            .get(id)
            .filter(|c| c.pid == pid && c.ended.borrow().is_none())
            .map(|c| c.ended.subscribe());
        st.record(Call::Attach {
            id: id.to_string(),
            found: rx.is_some(),
        });
        Ok(rx.map(|rx| Container::new(id, pid, 0, exit_future(id, rx))))
    }

    async fn exit_of(&self, id: &str) -> Option<Exit> {
        *self.state.lock().containers.get(id)?.ended.borrow()
    }

    async fn started_pids(&self, id: &str, _patience: Duration) -> Option<(i32, i32)> {
        // A modelled start is one step: the container exists or it never started.
        let st = self.state.lock();
        st.containers.get(id).map(|c| (c.pid, 0))
    }

    async fn signal(&self, id: &str, _pid: i32, signal: Signal) {
        let b = {
            let mut st = self.state.lock();
            st.record(Call::Signal {
                id: id.to_string(),
                signal,
            });
            let Some(rootfs) = st
                .containers
                .get(id)
                .filter(|c| c.ended.borrow().is_none())
                .map(|c| c.rootfs.clone())
            else {
                return;
            };
            if signal == Signal::SIGKILL {
                end(&mut st, id, Exit::Signal(9));
                return;
            }
            if signal != Signal::SIGTERM {
                return;
            }
            st.behaviour(id, &rootfs, &self.default)
        };
        if b.ignore_term {
            return;
        }
        if b.term_delay.is_zero() {
            self.exit(id, b.on_term);
        } else {
            let me = self.clone();
            let id = id.to_string();
            tokio::spawn(async move {
                tokio::time::sleep(b.term_delay).await;
                me.exit(&id, b.on_term);
            });
        }
    }

    async fn exec(
        &self,
        id: &str,
        _pid: i32,
        args: &[String],
        timeout: Duration,
    ) -> Result<(i32, String), RuntimeError> {
        let b = {
            let mut st = self.state.lock();
            st.record(Call::Exec {
                id: id.to_string(),
                args: args.to_vec(),
            });
            let c = st
                .containers
                .get(id)
                .filter(|c| c.ended.borrow().is_none())
                .ok_or_else(|| RuntimeError::Container {
                    id: id.to_string(),
                    message: "not running".into(),
                })?;
            let rootfs = c.rootfs.clone();
            st.behaviour(id, &rootfs, &self.default)
        };
        if b.exec_hangs {
            tokio::time::sleep(timeout).await;
            return Err(RuntimeError::Container {
                id: id.to_string(),
                message: format!("command timed out after {timeout:?}"),
            });
        }
        Ok((b.exec_code, String::new()))
    }

    async fn stats(&self, id: &str, _cgroup: &str) -> Option<CgroupStats> {
        let st = self.state.lock();
        let c = st.containers.get(id)?;
        if c.ended.borrow().is_some() {
            return None;
        }
        let b = st.behaviour(id, &c.rootfs, &self.default);
        Some(CgroupStats {
            cpu_ns: st.clock.elapsed(c.started).as_nanos() as u64 / 2,
            memory_bytes: b.memory_bytes,
        })
    }

    async fn task_cgroup(
        &self,
        rel: &str,
        cpu_vcpus: Option<f64>,
        memory_mib: Option<i64>,
    ) -> Result<(), RuntimeError> {
        let mut st = self.state.lock();
        st.record(Call::TaskCgroup {
            rel: rel.to_string(),
            cpu: cpu_vcpus,
            memory: memory_mib,
        });
        match &st.task_cgroup_error {
            Some(m) => Err(RuntimeError::Io {
                op: "create",
                path: PathBuf::from(rel),
                source: std::io::Error::other(m.clone()),
            }),
            None => Ok(()),
        }
    }

    async fn remove_task_cgroup(&self, rel: &str) {
        self.state.lock().record(Call::RemoveTaskCgroup {
            rel: rel.to_string(),
        });
    }

    async fn cleanup(&self, id: &str) {
        let mut st = self.state.lock();
        st.record(Call::Cleanup { id: id.to_string() });
        // A running container keeps its model (the agent cleans up only what ended).
        if st
            .containers
            .get(id)
            .is_some_and(|c| c.ended.borrow().is_some())
        {
            st.containers.remove(id);
        }
    }

    fn log_dir(&self) -> Option<PathBuf> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ContainerSpec {
        ContainerSpec {
            args: vec!["app".into()],
            ..Default::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn scripted_containers_start_exit_and_answer_signals() {
        let clock = Clock::starting_at(berth_clock::Timestamp::from_secs(1_000));
        let d = FakeDriver::new(clock, Behaviour::default()).recording();
        d.script(
            Match::Name("job".into()),
            Behaviour {
                exit_after: Some((Duration::from_secs(2), Exit::Code(1))),
                ..Default::default()
            },
        );
        d.script(
            Match::Image("broken:1".into()),
            Behaviour {
                fail_start: Some("no such file".into()),
                ..Default::default()
            },
        );
        d.script(
            Match::Name("stubborn".into()),
            Behaviour {
                ignore_term: true,
                ..Default::default()
            },
        );
        let t0 = clock.instant();
        let mut job = d.start("t1-job", Path::new("img"), &spec()).await.unwrap();
        assert_eq!(job.wait().await.unwrap(), Exit::Code(1));
        assert_eq!(clock.elapsed(t0), Duration::from_secs(2));
        assert!(job.wait().await.is_err(), "waited for once");
        let e = d
            .start("t1-x", Path::new("broken:1"), &spec())
            .await
            .err()
            .unwrap();
        assert_eq!(e.message(), "no such file");
        // "my-job" is not "job".
        let mut other = d
            .start("t1-my-jobs", Path::new("img"), &spec())
            .await
            .unwrap();
        d.signal("t1-my-jobs", other.pid, Signal::SIGTERM).await;
        assert_eq!(other.wait().await.unwrap(), Exit::Signal(15));
        let mut s = d
            .start("t1-stubborn", Path::new("img"), &spec())
            .await
            .unwrap();
        let t1 = clock.instant();
        assert_eq!(
            d.stop(&mut s, Duration::from_secs(5)).await.unwrap(),
            Exit::Signal(9)
        );
        assert_eq!(clock.elapsed(t1), Duration::from_secs(5));
        // Re-attach: only to a running container with the same pid.
        let r = d.start("t2-app", Path::new("img"), &spec()).await.unwrap();
        assert!(d.attach("t2-app", r.pid + 1, 0).await.unwrap().is_none());
        let mut again = d.attach("t2-app", r.pid, 0).await.unwrap().unwrap();
        d.exit("t2-app", Exit::OutOfMemory);
        assert_eq!(again.wait().await.unwrap(), Exit::OutOfMemory);
        assert_eq!(d.exit_of("t2-app").await, Some(Exit::OutOfMemory));
        assert!(d.attach("t2-app", r.pid, 0).await.unwrap().is_none());
        d.cleanup("t2-app").await;
        assert_eq!(d.exit_of("t2-app").await, None);
        assert!(matches!(d.calls()[0].1, Call::Start { ref id, .. } if id == "t1-job"));
    }

    #[tokio::test(start_paused = true)]
    async fn exec_follows_the_current_script() {
        let clock = Clock::system();
        let d = FakeDriver::new(clock, Behaviour::default());
        let c = d.start("t-web", Path::new("img"), &spec()).await.unwrap();
        let args = vec!["check".to_string()];
        let t = Duration::from_secs(1);
        assert_eq!(d.exec("t-web", c.pid, &args, t).await.unwrap().0, 0);
        d.script(
            Match::Name("web".into()),
            Behaviour {
                exec_code: 1,
                ..Default::default()
            },
        );
        assert_eq!(d.exec("t-web", c.pid, &args, t).await.unwrap().0, 1);
        d.script(
            Match::Name("web".into()),
            Behaviour {
                exec_hangs: true,
                ..Default::default()
            },
        );
        let t0 = clock.instant();
        assert!(d.exec("t-web", c.pid, &args, t).await.is_err());
        assert_eq!(clock.elapsed(t0), t);
        // Half a core for as long as the clock says it has run.
        tokio::time::advance(Duration::from_secs(9)).await;
        let s = d.stats("t-web", "").await.unwrap();
        assert_eq!(s.cpu_ns, 5_000_000_000);
        d.exit("t-web", Exit::Code(0));
        assert!(d.exec("t-web", c.pid, &args, t).await.is_err());
        assert!(d.stats("t-web", "").await.is_none());
    }
}
