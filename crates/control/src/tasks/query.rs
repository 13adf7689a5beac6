//! DescribeTasks and ListTasks, served from the view.

use std::collections::BTreeMap;

use berth_model::status::DesiredStatus;
use berth_model::wire::ecs::{
    DescribeTasksRequest, DescribeTasksResponse, ListTasksRequest, ListTasksResponse,
};

use super::{invalid_status, task_failure, task_id_of};
use crate::error::{ControlError, Result};
use crate::view::instance_id_of;
use crate::{Control, paging};

impl Control {
    pub async fn describe_tasks(&self, req: DescribeTasksRequest) -> Result<DescribeTasksResponse> {
        let cname = self.cluster_name_of(req.cluster.as_deref())?.to_string();
        let list = req.tasks.clone().unwrap_or_default();
        if list.is_empty() {
            return Err(ControlError::invalid("Tasks cannot be empty."));
        }
        if list.len() > 100 {
            return Err(ControlError::invalid(
                "Tasks cannot have more than 100 elements.",
            ));
        }
        let with_tags = paging::includes(req.include.as_deref(), "TAGS");
        let d = self.view.data.read();
        if !d.clusters().contains_key(&cname) {
            return Err(ControlError::ClusterNotFound);
        }
        let mut tasks = Vec::new();
        let mut failures = Vec::new();
        for s in &list {
            let hit = task_id_of(self, &cname, s).and_then(|id| d.tasks().get(&cname)?.get(id));
            match hit {
                Some(e) => {
                    let mut t = e.record().task;
                    if !with_tags {
                        t.tags = None;
                    }
                    tasks.push(t);
                }
                None => failures.push(task_failure(
                    Some(if s.starts_with("arn:") {
                        s.clone()
                    } else {
                        self.part.task(&cname, s)
                    }),
                    "MISSING",
                )),
            }
        }
        Ok(DescribeTasksResponse {
            tasks: Some(tasks),
            failures: Some(failures),
        })
    }

    pub async fn list_tasks(&self, req: ListTasksRequest) -> Result<ListTasksResponse> {
        let cname = self.cluster_name_of(req.cluster.as_deref())?.to_string();
        let limit = paging::max_results(req.max_results, 100, 100)?;
        let after = paging::decode(req.next_token.as_deref())?;
        if req.family.is_some() && req.service_name.is_some() {
            return Err(ControlError::invalid(
                "family and serviceName cannot both be specified.",
            ));
        }
        let desired = match req.desired_status.as_deref() {
            None => DesiredStatus::Running,
            Some(s) => s.parse().map_err(invalid_status)?,
        };
        let d = self.view.data.read();
        if !d.clusters().contains_key(&cname) {
            return Err(ControlError::ClusterNotFound);
        }
        let inst_id = req
            .container_instance
            .as_deref()
            .map(|ci| instance_id_of(ci).unwrap_or(ci).to_string());
        let family_prefix = req
            .family
            .as_deref()
            .map(|f| self.part.task_definition(f, 0))
            .map(|a| a.trim_end_matches(":0").to_string() + ":");
        let group = req.service_name.as_deref().map(|s| {
            let name = s.rsplit('/').next().unwrap_or(s);
            format!("service:{name}")
        });
        let empty = BTreeMap::new();
        let m = d.tasks().get(&cname).unwrap_or(&empty);
        let (arns, next) = paging::page(
            m.iter()
                .filter(|(_, e)| {
                    let t = &e.summary;
                    t.desired_status == desired
                        && inst_id
                            .as_ref()
                            .is_none_or(|a| t.instance_id.as_ref() == Some(a))
                        && family_prefix.as_ref().is_none_or(|p| {
                            t.task_definition_arn
                                .as_deref()
                                .is_some_and(|a| a.starts_with(p.as_str()))
                        })
                        && req
                            .started_by
                            .as_ref()
                            .is_none_or(|s| t.started_by.as_ref() == Some(s))
                        && group.as_ref().is_none_or(|g| t.group.as_ref() == Some(g))
                        && req
                            .launch_type
                            .as_ref()
                            .is_none_or(|lt| t.launch_type == lt.as_str())
                })
                .map(|(id, e)| (id.clone(), e.summary.arn.clone())),
            after.as_deref(),
            limit,
        );
        Ok(ListTasksResponse {
            task_arns: Some(arns),
            next_token: next,
        })
    }
}
