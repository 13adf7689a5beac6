//! The health hook: while a container with a health check runs, its check runs
//! ([`crate::health::health_loop`]) and each verdict goes to the runner as an event.

use std::collections::HashMap;

use async_trait::async_trait;

use super::Hook;
use crate::health::{HealthCheck, health_loop};
use crate::task::{Event, Task};

#[derive(Default)]
pub(crate) struct Health {
    loops: HashMap<String, tokio::task::JoinHandle<()>>,
}

#[async_trait]
impl Hook for Health {
    async fn running(&mut self, t: &mut Task, name: &str, pid: i32, _resumed: bool) {
        let Some(hc) = t
            .def(name)
            .and_then(|d| d.health_check.clone())
            .and_then(|h| HealthCheck::from_ecs(&h))
        else {
            return;
        };
        let Some(rid) = t.st.container(name).map(|c| c.runtime_id.clone()) else {
            return;
        };
        let tx = t.events.clone();
        let driver = t.inner.driver.clone();
        let clock = t.inner.cfg.clock;
        let n = name.to_string();
        let h = tokio::spawn(async move {
            health_loop(hc, clock, driver, rid, pid, move |status| {
                let tx = tx.clone();
                let n = n.clone();
                async move {
                    let _ = tx.send(Box::new(Event::Health(n, status))).await;
                }
            })
            .await
        });
        if let Some(old) = self.loops.insert(name.to_string(), h) {
            old.abort();
        }
    }

    async fn exited(&mut self, _t: &mut Task, name: &str) {
        if let Some(h) = self.loops.remove(name) {
            h.abort();
        }
    }

    async fn finish(&mut self, _t: &mut Task) {
        for (_, h) in self.loops.drain() {
            h.abort();
        }
    }
}

impl Drop for Health {
    /// A runner that ends early (the agent shutting down) takes its checks along.
    fn drop(&mut self) {
        for (_, h) in self.loops.drain() {
            h.abort();
        }
    }
}
