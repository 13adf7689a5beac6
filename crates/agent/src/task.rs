//! A task as the runner ([`crate::engine`]) and its hooks ([`crate::hooks`]) share it: its
//! state record, definitions and images ([`Task`]), a container about to start as the hooks
//! shape it ([`Launch`]), and what the runner hears about its containers ([`Event`]). Both
//! sides use these types; neither imports the other for them.

use std::collections::HashMap;
use std::sync::Arc;

use berth_model::status::NodeContainerStatus;
use berth_model::wire::ecs::{
    ContainerDefinition, NetworkBinding, SubmitTaskStateChangeRequest, Volume,
};
use berth_runtime::PulledImage;
use berth_runtime::driver::Exit;
use berth_runtime::spec::ContainerSpec;
use tokio::sync::mpsc;

use crate::Inner;
use crate::net::Endpoint;
use crate::state::TaskState;

/// What happens to a task's containers.
pub(crate) enum Event {
    Exited(String, Result<Exit, String>),
    Health(String, String),
}

/// A task as the runner and its hooks share it.
pub(crate) struct Task {
    pub(crate) inner: Arc<Inner>,
    pub(crate) st: TaskState,
    pub(crate) defs: Vec<ContainerDefinition>,
    pub(crate) volumes: Vec<Volume>,
    /// The containers' images, by container name (the images hook fills it).
    pub(crate) images: HashMap<String, PulledImage>,
    /// Events for the runner (container exits, health verdicts); boxed, so that the channel
    /// of an idle task stays small.
    pub(crate) events: mpsc::Sender<Box<Event>>,
}

impl Task {
    pub(crate) fn def(&self, name: &str) -> Option<&ContainerDefinition> {
        self.defs.iter().find(|d| d.name.as_deref() == Some(name))
    }

    pub(crate) fn id(&self) -> String {
        self.st.id().to_string()
    }

    pub(crate) fn save(&self) {
        if let Err(e) = self.inner.states.save(&self.st) {
            tracing::error!(task = %self.st.arn, "saving task state: {e}");
        }
    }

    pub(crate) fn network_mode(&self) -> String {
        self.st
            .payload
            .network_mode
            .clone()
            .unwrap_or_else(|| "bridge".into())
    }

    /// Whether some container has yet to end (so the task needs its images, cgroup and
    /// network).
    pub(crate) fn unfinished(&self) -> bool {
        self.st
            .containers
            .iter()
            .any(|c| c.status != NodeContainerStatus::Stopped)
    }

    /// The cgroup (relative to the hierarchy's root) the task's containers live under.
    pub(crate) fn cgroup(&self) -> String {
        format!("/berth/{}", self.st.id())
    }

    /// Report a task status on the way (PENDING after provisioning, STOPPING,
    /// DEPROVISIONING).
    pub(crate) async fn report_status(&self, status: &str) {
        let req = SubmitTaskStateChangeRequest {
            cluster: Some(self.st.cluster_arn.clone()),
            task: Some(self.st.arn.clone()),
            status: Some(status.into()),
            ..Default::default()
        };
        self.inner.submit_task(req).await;
    }
}

/// A container about to start, as the hooks shape it.
pub(crate) struct Launch {
    pub(crate) name: String,
    /// Its id in the driver.
    pub(crate) id: String,
    pub(crate) image: PulledImage,
    pub(crate) spec: ContainerSpec,
    /// A bridge-mode container's own network endpoint.
    pub(crate) endpoint: Option<Endpoint>,
    pub(crate) bindings: Vec<NetworkBinding>,
}
