//! StopTask: ask a task to stop (a task no agent has started yet is done at once).

use berth_model::status::{DesiredStatus, stop_code};
use berth_model::wire::ecs::{StopTaskRequest, StopTaskResponse};

use super::{finish, task_id_of};
use crate::error::{ControlError, Result};
use crate::{Control, keys};

impl Control {
    pub async fn stop_task(&self, req: StopTaskRequest) -> Result<StopTaskResponse> {
        let cname = self.cluster_name_of(req.cluster.as_deref())?.to_string();
        if !self.view.data.read().clusters().contains_key(&cname) {
            return Err(ControlError::ClusterNotFound);
        }
        let given = req.task.clone().unwrap_or_default();
        let id = task_id_of(self, &cname, &given)
            .ok_or_else(|| ControlError::invalid("The referenced task was not found."))?
            .to_string();
        let reason = req.reason.clone().unwrap_or_default();
        if reason.chars().count() > 255 {
            return Err(ControlError::invalid(
                "reason may be at most 255 characters.",
            ));
        }
        let rec = self
            .modify(
                &keys::task(&cname, &id),
                |d| d.tasks().get(&cname)?.get(&id).map(|e| e.entry()),
                || ControlError::invalid("The referenced task was not found."),
                |r| {
                    if DesiredStatus::of(r.task.desired_status.as_deref())
                        == Some(DesiredStatus::Stopped)
                    {
                        return Ok(());
                    }
                    let t = &mut r.task;
                    let at = self.now().as_secs_f64();
                    t.desired_status = Some(DesiredStatus::Stopped.into());
                    t.stop_code = Some(stop_code::USER_INITIATED.into());
                    t.stopped_reason = Some(if reason.is_empty() {
                        "Task stopped by user".into()
                    } else {
                        reason.clone()
                    });
                    t.stopping_at = Some(at);
                    t.version = Some(t.version.unwrap_or(0) + 1);
                    // A task no agent has started yet has nothing to stop: it is done.
                    if t.container_instance_arn.is_none() {
                        finish(t, at);
                    }
                    Ok(())
                },
            )
            .await?;
        Ok(StopTaskResponse {
            task: Some(rec.task),
        })
    }
}
