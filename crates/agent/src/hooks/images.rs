//! The images hook: every container's image made ready before the task starts (the pull
//! times are the task's `pullStartedAt`/`pullStoppedAt`); a failed pull fails the task with
//! `CannotPullContainerError`.

use async_trait::async_trait;
use berth_model::status::NodeContainerStatus;

use super::Hook;
use crate::task::{Launch, Task};

pub(crate) struct Images;

#[async_trait]
impl Hook for Images {
    async fn prepare(&mut self, t: &mut Task) -> Result<(), String> {
        if !t.unfinished() {
            return Ok(());
        }
        if t.st.pull_started_at.is_none() {
            t.st.pull_started_at = Some(t.inner.now());
        }
        let wanted: Vec<(String, String)> = t
            .defs
            .iter()
            .map(|d| {
                (
                    d.name.clone().unwrap_or_default(),
                    d.image.clone().unwrap_or_default(),
                )
            })
            .collect();
        let images = t.inner.images.clone();
        let pulls = wanted.iter().map(|(_, image)| images.pull(image));
        let results = futures::future::join_all(pulls).await;
        let mut failure = None;
        for ((name, image), r) in wanted.iter().zip(results) {
            match r {
                Ok(img) => {
                    if let Some(c) = t.st.container_mut(name) {
                        c.image_digest = Some(img.manifest_digest.clone());
                        if c.status == NodeContainerStatus::None {
                            c.status = NodeContainerStatus::Pulled;
                        }
                    }
                    t.images.insert(name.clone(), img);
                }
                Err(e) => {
                    let reason =
                        format!("CannotPullContainerError: failed to resolve ref {image}: {e}");
                    if let Some(c) = t.st.container_mut(name) {
                        c.reason = Some(reason.clone());
                    }
                    failure.get_or_insert(reason);
                }
            }
        }
        if t.st.pull_stopped_at.is_none() {
            t.st.pull_stopped_at = Some(t.inner.now());
        }
        t.save();
        match failure {
            Some(f) => Err(f),
            None => Ok(()),
        }
    }

    async fn create(&mut self, t: &mut Task, c: &mut Launch) -> Result<(), String> {
        t.inner.images.mark_used(&c.image);
        Ok(())
    }
}
