//! The network hook: an `awsvpc` task's endpoint (made before any container starts, reported
//! to the control plane, then PENDING again), the network namespace and hostname of each
//! container by network mode, a bridge-mode container's own endpoint and host ports (bound
//! before the start, so a taken port fails it at once; forwarding once it runs; restored after
//! an agent restart), all removed when the container or the task ends (DEPROVISIONING first
//! for an `awsvpc` task).

use std::collections::HashMap;
use std::net::Ipv4Addr;

use async_trait::async_trait;
use berth_model::wire::ecs::NetworkBinding;
use berth_runtime::spec::NetworkNs;

use super::Hook;
use crate::backend::TaskNetworkReport;
use crate::net::{Endpoint, PortForward};
use crate::task::{Launch, Task};

#[derive(Default)]
pub(crate) struct Network {
    /// Host ports bound for a container about to start, with its address.
    pending: HashMap<String, (Ipv4Addr, Vec<Box<dyn PortForward>>)>,
    /// The port forwards of running containers.
    forwards: HashMap<String, Vec<Box<dyn PortForward>>>,
}

fn cannot(e: String) -> String {
    format!("CannotStartContainerError: {e}")
}

impl Network {
    /// Port forwards of a re-attached container: its forwarder processes kept where they
    /// still run (they outlived the agent), started again where not.
    fn restore_forwards(&mut self, t: &mut Task, name: &str) {
        let Some(c) = t.st.container(name).cloned() else {
            return;
        };
        let Some(ep) = c
            .endpoint
            .and_then(|v| serde_json::from_value::<Endpoint>(v).ok())
        else {
            return;
        };
        let Some(net) = t.inner.net.clone() else {
            return;
        };
        let mut fs = Vec::new();
        let mut pids = Vec::new();
        for (i, b) in c.bindings.iter().enumerate() {
            let proto = b.protocol.clone().unwrap_or_else(|| "tcp".into());
            let host_port = b.host_port.unwrap_or(0) as u16;
            let cport = b.container_port.unwrap_or(0) as u16;
            let kept = c
                .forwarders
                .get(i)
                .and_then(|&pid| net.adopt_port(pid, &proto, host_port, ep.ip, cport, c.pid));
            let f = match kept {
                Some(f) => Ok(f),
                None => net
                    .bind_port(&proto, host_port, cport)
                    .and_then(|mut f| f.run(ep.ip, c.pid).map(|_| f)),
            };
            match f {
                Ok(f) => {
                    pids.push(f.pid().unwrap_or(0));
                    fs.push(f);
                }
                Err(e) => {
                    pids.push(0);
                    tracing::warn!(container = %name, "port {host_port} not restored: {e}")
                }
            }
        }
        if let Some(cs) = t.st.container_mut(name)
            && cs.forwarders != pids
        {
            cs.forwarders = pids;
            t.save();
        }
        self.forwards.insert(name.to_string(), fs);
    }
}

#[async_trait]
impl Hook for Network {
    async fn prepare(&mut self, t: &mut Task) -> Result<(), String> {
        if t.network_mode() != "awsvpc" || t.st.endpoint.is_some() || !t.unfinished() {
            return Ok(());
        }
        let net = t
            .inner
            .net
            .clone()
            .ok_or_else(|| t.inner.no_network_reason())?;
        let ep = net
            .create(t.st.id())
            .await
            .map_err(|e| cannot(format!("network setup: {e}")))?;
        t.st.endpoint = Some(serde_json::to_value(&ep).unwrap_or_default());
        t.save();
        let report = TaskNetworkReport {
            cluster: t.st.cluster_arn.clone(),
            task_arn: t.st.arn.clone(),
            private_ipv4: ep.ip.to_string(),
            mac: ep.mac.clone(),
            subnet: net.subnet(),
        };
        if let Err(e) = t.inner.backend.report_task_network(report).await {
            tracing::warn!("reporting the task network: {e}");
        }
        t.report_status("PENDING").await;
        Ok(())
    }

    async fn create(&mut self, t: &mut Task, c: &mut Launch) -> Result<(), String> {
        let mode = t.network_mode();
        let Some(d) = t.def(&c.name) else {
            return Ok(());
        };
        c.spec.network = if d.disable_networking == Some(true) {
            NetworkNs::New
        } else {
            match mode.as_str() {
                "host" => NetworkNs::Host,
                "none" => NetworkNs::New,
                "awsvpc" => {
                    let ep: Endpoint =
                        t.st.endpoint
                            .clone()
                            .and_then(|v| serde_json::from_value(v).ok())
                            .ok_or_else(|| cannot("the task has no network endpoint".into()))?;
                    NetworkNs::Path(ep.netns.clone())
                }
                _ => {
                    let net = t
                        .inner
                        .net
                        .clone()
                        .ok_or_else(|| t.inner.no_network_reason())?;
                    let ep = net
                        .create(&c.id)
                        .await
                        .map_err(|e| cannot(format!("network setup: {e}")))?;
                    let path = ep.netns.clone();
                    c.endpoint = Some(ep);
                    NetworkNs::Path(path)
                }
            }
        };
        if d.hostname.is_none() {
            c.spec.hostname = match mode.as_str() {
                "host" => nix::unistd::gethostname()
                    .ok()
                    .and_then(|h| h.into_string().ok())
                    .unwrap_or_else(|| "berth".into()),
                _ => c.id.chars().take(12).collect(),
            };
        }
        // Port bindings: bridge forwards host ports; host publishes the container port.
        let mut bindings = Vec::new();
        let mut forwards = Vec::new();
        for pm in d.port_mappings.as_deref().unwrap_or_default() {
            let cport = pm.container_port.unwrap_or(0);
            let proto = pm.protocol.clone().unwrap_or_else(|| "tcp".into());
            match (mode.as_str(), &c.endpoint, &t.inner.net) {
                ("bridge", Some(_), Some(net)) => {
                    let hp = pm.host_port.unwrap_or(0);
                    let f = net
                        .bind_port(&proto, hp as u16, cport as u16)
                        .map_err(|e| cannot(format!("port {hp}/{proto}: {e}")))?;
                    bindings.push(NetworkBinding {
                        bind_ip: Some("0.0.0.0".into()),
                        container_port: Some(cport),
                        host_port: Some(f.host_port() as i32),
                        protocol: Some(proto.clone()),
                        ..Default::default()
                    });
                    forwards.push(f);
                }
                ("host", _, _) => bindings.push(NetworkBinding {
                    bind_ip: Some("0.0.0.0".into()),
                    container_port: Some(cport),
                    host_port: Some(cport),
                    protocol: Some(proto.clone()),
                    ..Default::default()
                }),
                _ => {}
            }
        }
        c.bindings = bindings;
        if let Some(ep) = &c.endpoint {
            self.pending.insert(c.name.clone(), (ep.ip, forwards));
        }
        Ok(())
    }

    async fn undo(&mut self, t: &mut Task, c: &Launch) {
        // Bound ports close as they are dropped.
        self.pending.remove(&c.name);
        if c.endpoint.is_some()
            && let Some(net) = &t.inner.net
        {
            net.remove(&c.id).await;
        }
    }

    async fn running(&mut self, t: &mut Task, name: &str, pid: i32, resumed: bool) {
        if resumed {
            self.restore_forwards(t, name);
            return;
        }
        // The bound host ports go to their forwarder processes now that the container runs.
        let Some((ip, mut forwards)) = self.pending.remove(name) else {
            return;
        };
        let mut pids = Vec::new();
        for f in &mut forwards {
            match f.run(ip, pid) {
                Ok(p) => pids.push(p),
                Err(e) => {
                    tracing::error!(container = %name, port = f.host_port(), "no forwarder: {e}")
                }
            }
        }
        if let Some(c) = t.st.container_mut(name) {
            c.forwarders = pids;
        }
        self.forwards.insert(name.to_string(), forwards);
    }

    async fn exited(&mut self, t: &mut Task, name: &str) {
        for mut f in self.forwards.remove(name).unwrap_or_default() {
            f.stop();
        }
        let Some(c) = t.st.container(name) else {
            return;
        };
        if c.endpoint.is_some()
            && let Some(net) = &t.inner.net
        {
            net.remove(&c.runtime_id).await;
        }
        if let Some(c) = t.st.container_mut(name) {
            c.endpoint = None;
        }
    }

    async fn finish(&mut self, t: &mut Task) {
        // Forwarders end by themselves with their containers.
        self.forwards.clear();
        self.pending.clear();
        if t.st.endpoint.is_some() {
            t.report_status("DEPROVISIONING").await;
        }
        if let Some(net) = t.inner.net.clone() {
            for c in &t.st.containers {
                if c.endpoint.is_some() {
                    net.remove(&c.runtime_id).await;
                }
            }
            if t.st.endpoint.is_some() {
                net.remove(t.st.id()).await;
            }
        }
    }
}
