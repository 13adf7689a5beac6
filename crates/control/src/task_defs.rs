//! Task definition operations: RegisterTaskDefinition (revisions per family, validated and
//! normalised by `berth_model::taskdef`), DescribeTaskDefinition, ListTaskDefinitions,
//! ListTaskDefinitionFamilies, DeregisterTaskDefinition, DeleteTaskDefinitions.

use berth_model::arn::EcsResource;
use berth_model::taskdef;
use berth_model::wire::ecs::{
    DeleteTaskDefinitionsRequest, DeleteTaskDefinitionsResponse, DeregisterTaskDefinitionRequest,
    DeregisterTaskDefinitionResponse, DescribeTaskDefinitionRequest,
    DescribeTaskDefinitionResponse, Failure, ListTaskDefinitionFamiliesRequest,
    ListTaskDefinitionFamiliesResponse, ListTaskDefinitionsRequest, ListTaskDefinitionsResponse,
    RegisterTaskDefinitionRequest, RegisterTaskDefinitionResponse, TaskDefinition,
};
use berth_store::{Compare, Op, Txn};

use crate::error::{ControlError, Result};
use crate::records::{FamilyRecord, TaskDefRecord};
use crate::tags::validate_tags;
use crate::view::{Entry, ViewData};
use crate::{Control, keys, paging};

/// A task definition reference as users write it.
enum TdRef {
    Family(String),
    Revision(String, i32),
}

fn unable() -> ControlError {
    ControlError::Client("Unable to describe task definition.".into())
}

impl Control {
    fn parse_td_ref(&self, s: &str) -> Result<TdRef> {
        if s.starts_with("arn:") {
            return match self.part.parse_ecs(s) {
                Some(EcsResource::TaskDefinition { family, revision }) => {
                    Ok(TdRef::Revision(family, revision))
                }
                _ => Err(ControlError::invalid(format!(
                    "Invalid task definition ARN: {s}"
                ))),
            };
        }
        match s.rsplit_once(':') {
            Some((f, r)) => {
                let rev: i32 = r.parse().map_err(|_| {
                    ControlError::Client(format!("Invalid revision number. Number: {r}"))
                })?;
                Ok(TdRef::Revision(f.to_string(), rev))
            }
            None => Ok(TdRef::Family(s.to_string())),
        }
    }

    /// Find a task definition by `family`, `family:revision` or ARN. `family` alone means
    /// its latest ACTIVE revision.
    pub(crate) fn find_task_def(&self, d: &ViewData, s: &str) -> Result<Entry<TaskDefRecord>> {
        match self.parse_td_ref(s)? {
            TdRef::Family(f) => d
                .task_defs()
                .get(&f)
                .and_then(|m| {
                    m.values()
                        .rev()
                        .find(|e| e.value.def.status.as_deref() == Some("ACTIVE"))
                })
                .cloned()
                .ok_or_else(unable),
            TdRef::Revision(f, r) => d
                .task_defs()
                .get(&f)
                .and_then(|m| m.get(&r))
                .cloned()
                .ok_or_else(unable),
        }
    }

    pub async fn register_task_definition(
        &self,
        req: RegisterTaskDefinitionRequest,
        registered_by: &str,
    ) -> Result<RegisterTaskDefinitionResponse> {
        let body = taskdef::normalize(&req).map_err(|e| ControlError::Client(e.0))?;
        for role in [&req.task_role_arn, &req.execution_role_arn]
            .into_iter()
            .flatten()
        {
            if !Control::is_role_arn(role) {
                return Err(ControlError::Client("Role is not valid".into()));
            }
        }
        let tags = req.tags.clone().unwrap_or_default();
        validate_tags(&tags)?;
        let family = body.family.clone().unwrap_or_default();
        let fkey = keys::family(&family);
        loop {
            let cur = self.view.data.read().families().get(&family).cloned();
            let revision = cur.as_ref().map_or(0, |e| e.value.last_revision) + 1;
            let mut def: TaskDefinition = body.clone();
            def.task_definition_arn = Some(self.part.task_definition(&family, revision));
            def.revision = Some(revision);
            def.status = Some("ACTIVE".into());
            def.registered_at = Some(self.now().as_secs_f64());
            def.registered_by = Some(registered_by.to_string());
            def.requires_attributes = Some(taskdef::required_attributes(&def));
            let rec = TaskDefRecord {
                def,
                tags: tags.clone(),
            };
            let fam = FamilyRecord {
                family: family.clone(),
                last_revision: revision,
            };
            let txn = Txn {
                compare: vec![Compare::mod_revision_is(
                    fkey.clone(),
                    cur.as_ref().map_or(0, |e| e.rev),
                )],
                success: vec![
                    Op::put(fkey.clone(), serde_json::to_vec(&fam)?),
                    Op::put(keys::task_def(&family, revision), serde_json::to_vec(&rec)?),
                ],
                failure: vec![],
            };
            if self.commit(txn).await?.succeeded {
                return Ok(RegisterTaskDefinitionResponse {
                    task_definition: Some(rec.def),
                    tags: Some(rec.tags),
                });
            }
        }
    }

    pub async fn describe_task_definition(
        &self,
        req: DescribeTaskDefinitionRequest,
    ) -> Result<DescribeTaskDefinitionResponse> {
        let s = req.task_definition.as_deref().unwrap_or_default();
        let e = self.find_task_def(&self.view.data.read(), s)?;
        let with_tags = crate::paging::includes(req.include.as_deref(), "TAGS");
        Ok(DescribeTaskDefinitionResponse {
            task_definition: Some(e.value.def.clone()),
            tags: with_tags.then(|| e.value.tags.clone()),
        })
    }

    pub async fn list_task_definitions(
        &self,
        req: ListTaskDefinitionsRequest,
    ) -> Result<ListTaskDefinitionsResponse> {
        let limit = paging::max_results(req.max_results, 100, 100)?;
        let after = paging::decode(req.next_token.as_deref())?;
        let status = req.status.as_deref().unwrap_or("ACTIVE");
        let desc = req.sort.as_deref() == Some("DESC");
        let d = self.view.data.read();
        // Sort key: family, then zero-padded revision (inverted for DESC) — the page token is
        // this key, so ordering and resumption agree.
        let mut items: Vec<(String, String)> = Vec::new();
        let families: Box<dyn Iterator<Item = (&String, _)>> = match req.family_prefix.as_deref() {
            // ECS's familyPrefix here is the full family name.
            Some(f) => Box::new(d.task_defs().get_key_value(f).into_iter()),
            None => Box::new(d.task_defs().iter()),
        };
        for (fam, revs) in families {
            for (rev, e) in revs {
                if e.value.def.status.as_deref() != Some(status) {
                    continue;
                }
                items.push((
                    format!("{fam}\u{0}{rev:010}"),
                    e.value.def.task_definition_arn.clone().unwrap_or_default(),
                ));
            }
        }
        if desc {
            items.reverse();
        }
        let (arns, next) = paging::page_ordered(items.into_iter(), after.as_deref(), limit, desc);
        Ok(ListTaskDefinitionsResponse {
            task_definition_arns: Some(arns),
            next_token: next,
        })
    }

    pub async fn list_task_definition_families(
        &self,
        req: ListTaskDefinitionFamiliesRequest,
    ) -> Result<ListTaskDefinitionFamiliesResponse> {
        let limit = paging::max_results(req.max_results, 100, 100)?;
        let after = paging::decode(req.next_token.as_deref())?;
        let status = req.status.as_deref().unwrap_or("ACTIVE");
        let prefix = req.family_prefix.as_deref().unwrap_or("");
        let d = self.view.data.read();
        let (families, next) = paging::page(
            d.task_defs()
                .iter()
                .filter(|(f, _)| f.starts_with(prefix))
                .filter(|(_, revs)| {
                    let active = revs
                        .values()
                        .any(|e| e.value.def.status.as_deref() == Some("ACTIVE"));
                    match status {
                        "ALL" => true,
                        "INACTIVE" => !active,
                        _ => active,
                    }
                })
                .map(|(f, _)| (f.clone(), f.clone())),
            after.as_deref(),
            limit,
        );
        Ok(ListTaskDefinitionFamiliesResponse {
            families: Some(families),
            next_token: next,
        })
    }

    fn revision_ref(&self, s: &str) -> Result<(String, i32)> {
        match self.parse_td_ref(s)? {
            TdRef::Revision(f, r) => Ok((f, r)),
            TdRef::Family(_) => Err(ControlError::Client(
                "Invalid revision number. A revision must be given (family:revision or ARN)."
                    .into(),
            )),
        }
    }

    pub async fn deregister_task_definition(
        &self,
        req: DeregisterTaskDefinitionRequest,
    ) -> Result<DeregisterTaskDefinitionResponse> {
        let (family, rev) =
            self.revision_ref(req.task_definition.as_deref().unwrap_or_default())?;
        let rec = self
            .modify(
                &keys::task_def(&family, rev),
                |d| d.task_defs().get(&family)?.get(&rev).cloned(),
                unable,
                |r| {
                    if r.def.status.as_deref() == Some("ACTIVE") {
                        r.def.status = Some("INACTIVE".into());
                        r.def.deregistered_at = Some(self.now().as_secs_f64());
                    }
                    Ok(())
                },
            )
            .await?;
        Ok(DeregisterTaskDefinitionResponse {
            task_definition: Some(rec.def),
        })
    }

    pub async fn delete_task_definitions(
        &self,
        req: DeleteTaskDefinitionsRequest,
    ) -> Result<DeleteTaskDefinitionsResponse> {
        let refs = req.task_definitions.clone().unwrap_or_default();
        if refs.is_empty() || refs.len() > 10 {
            return Err(ControlError::invalid(
                "taskDefinitions must contain between 1 and 10 task definitions.",
            ));
        }
        let mut done = Vec::new();
        let mut failures = Vec::new();
        for s in &refs {
            let (family, rev) = match self.revision_ref(s) {
                Ok(x) => x,
                Err(e) => {
                    failures.push(Failure {
                        arn: Some(s.clone()),
                        reason: Some(e.to_string()),
                        detail: None,
                    });
                    continue;
                }
            };
            let mut still_active = false;
            let r = self
                .modify(
                    &keys::task_def(&family, rev),
                    |d| d.task_defs().get(&family)?.get(&rev).cloned(),
                    unable,
                    |r| {
                        if r.def.status.as_deref() == Some("ACTIVE") {
                            still_active = true;
                            return Err(ControlError::Client(
                                "The specified task definition is still in ACTIVE status. Please deregister the target and try again.".into(),
                            ));
                        }
                        if r.def.status.as_deref() == Some("INACTIVE") {
                            r.def.status = Some("DELETE_IN_PROGRESS".into());
                            r.def.delete_requested_at = Some(self.now().as_secs_f64());
                        }
                        Ok(())
                    },
                )
                .await;
            match r {
                Ok(rec) => done.push(rec.def),
                Err(e) => failures.push(Failure {
                    arn: Some(if s.starts_with("arn:") {
                        s.clone()
                    } else {
                        self.part.task_definition(&family, rev)
                    }),
                    reason: Some(if still_active {
                        "TASK_DEFINITION_NOT_INACTIVE".to_string()
                    } else {
                        "TASK_DEFINITION_NOT_FOUND".to_string()
                    }),
                    detail: Some(e.to_string()),
                }),
            }
        }
        Ok(DeleteTaskDefinitionsResponse {
            task_definitions: Some(done),
            failures: Some(failures),
        })
    }
}
