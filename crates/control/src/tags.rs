//! TagResource, UntagResource and ListTagsForResource on every taggable ECS ARN (clusters,
//! task definitions, tasks, container instances), and the tag rules ECS enforces.

use berth_model::arn::EcsResource;
use berth_model::status::ServiceStatus;
use berth_model::wire::ecs::{
    ListTagsForResourceRequest, ListTagsForResourceResponse, Tag, TagResourceRequest,
    TagResourceResponse, UntagResourceRequest, UntagResourceResponse,
};

use crate::error::{ControlError, Result};
use crate::{Control, keys, rollout};

pub use berth_model::tags::MAX_TAGS;
use berth_model::tags::TagRule;

/// ECS's tag rules ([`berth_model::tags`]) in ECS's words.
pub fn validate_tags(tags: &[Tag]) -> Result<()> {
    let pairs = tags.iter().map(|t| {
        (
            t.key.as_deref().unwrap_or_default(),
            t.value.as_deref().unwrap_or_default(),
        )
    });
    berth_model::tags::check(pairs).map_err(|rule| {
        ControlError::invalid(match rule {
            TagRule::TooMany => format!("The number of tags exceeds the limit of {MAX_TAGS}."),
            TagRule::KeyLength(_) => "Tag keys must be between 1 and 128 characters.".into(),
            TagRule::ValueLength(_) => "Tag values must be between 0 and 256 characters.".into(),
            TagRule::ReservedPrefix(_) => {
                "Tag keys may not start with the reserved prefix 'aws:'.".into()
            }
        })
    })
}

/// Merge `new` into `cur` (same key → new value), keeping the limit.
pub fn merge(cur: &mut Vec<Tag>, new: &[Tag]) -> Result<()> {
    for t in new {
        match cur.iter_mut().find(|x| x.key == t.key) {
            Some(x) => x.value = t.value.clone(),
            None => cur.push(t.clone()),
        }
    }
    validate_tags(cur)
}

fn not_found() -> ControlError {
    ControlError::ResourceNotFound("The specified resource is not found.".into())
}

impl Control {
    fn resource_of(&self, arn: Option<&str>) -> Result<EcsResource> {
        let arn = arn.unwrap_or_default();
        self.part
            .parse_ecs(arn)
            .ok_or_else(|| ControlError::invalid("The ARN provided is invalid."))
    }

    /// Apply `f` to the tag list of the resource named by `arn`.
    async fn modify_tags(
        &self,
        arn: Option<&str>,
        mut f: impl FnMut(&mut Vec<Tag>) -> Result<()>,
    ) -> Result<()> {
        match self.resource_of(arn)? {
            EcsResource::Cluster { name } => {
                self.modify(
                    &keys::cluster(&name),
                    |d| {
                        d.clusters()
                            .get(&name)
                            .filter(|e| e.value.status.as_deref() == Some("ACTIVE"))
                            .cloned()
                    },
                    || ControlError::ClusterNotFound,
                    |c| {
                        let mut t = c.tags.take().unwrap_or_default();
                        f(&mut t)?;
                        c.tags = Some(t);
                        Ok(())
                    },
                )
                .await?;
            }
            EcsResource::TaskDefinition { family, revision } => {
                self.modify(
                    &keys::task_def(&family, revision),
                    |d| d.task_defs().get(&family)?.get(&revision).cloned(),
                    not_found,
                    |r| f(&mut r.tags),
                )
                .await?;
            }
            EcsResource::Task { cluster, id } => {
                self.modify(
                    &keys::task(&cluster, &id),
                    |d| d.tasks().get(&cluster)?.get(&id).map(|e| e.entry()),
                    not_found,
                    |r| {
                        let mut t = r.task.tags.take().unwrap_or_default();
                        f(&mut t)?;
                        r.task.tags = Some(t);
                        Ok(())
                    },
                )
                .await?;
            }
            EcsResource::Service { cluster, name } => {
                self.modify(
                    &keys::service(&cluster, &name),
                    |d| {
                        d.services()
                            .get(&cluster)?
                            .get(&name)
                            .filter(|e| {
                                rollout::service_status(&e.value.service)
                                    != Some(ServiceStatus::Inactive)
                            })
                            .cloned()
                    },
                    not_found,
                    |r| {
                        let mut t = r.service.tags.take().unwrap_or_default();
                        f(&mut t)?;
                        r.service.tags = Some(t);
                        Ok(())
                    },
                )
                .await?;
            }
            EcsResource::ContainerInstance { cluster, id } => {
                self.modify(
                    &keys::instance(&cluster, &id),
                    |d| d.instances().get(&cluster)?.get(&id).cloned(),
                    not_found,
                    |ci| {
                        let mut t = ci.tags.take().unwrap_or_default();
                        f(&mut t)?;
                        ci.tags = Some(t);
                        Ok(())
                    },
                )
                .await?;
            }
            _ => return Err(not_found()),
        }
        Ok(())
    }

    pub async fn tag_resource(&self, req: TagResourceRequest) -> Result<TagResourceResponse> {
        let tags = req.tags.clone().unwrap_or_default();
        validate_tags(&tags)?;
        self.modify_tags(req.resource_arn.as_deref(), |cur| merge(cur, &tags))
            .await?;
        Ok(TagResourceResponse::default())
    }

    pub async fn untag_resource(&self, req: UntagResourceRequest) -> Result<UntagResourceResponse> {
        let keys = req.tag_keys.clone().unwrap_or_default();
        self.modify_tags(req.resource_arn.as_deref(), |cur| {
            cur.retain(|t| !keys.iter().any(|k| Some(k) == t.key.as_ref()));
            Ok(())
        })
        .await?;
        Ok(UntagResourceResponse::default())
    }

    pub async fn list_tags_for_resource(
        &self,
        req: ListTagsForResourceRequest,
    ) -> Result<ListTagsForResourceResponse> {
        let d = self.view.data.read();
        let tags = match self.resource_of(req.resource_arn.as_deref())? {
            EcsResource::Cluster { name } => d
                .clusters()
                .get(&name)
                .filter(|e| e.value.status.as_deref() == Some("ACTIVE"))
                .ok_or(ControlError::ClusterNotFound)?
                .value
                .tags
                .clone(),
            EcsResource::TaskDefinition { family, revision } => Some(
                d.task_defs()
                    .get(&family)
                    .and_then(|m| m.get(&revision))
                    .ok_or_else(not_found)?
                    .value
                    .tags
                    .clone(),
            ),
            EcsResource::Task { cluster, id } => {
                d.tasks()
                    .get(&cluster)
                    .and_then(|m| m.get(&id))
                    .ok_or_else(not_found)?
                    .record()
                    .task
                    .tags
            }
            EcsResource::ContainerInstance { cluster, id } => d
                .instances()
                .get(&cluster)
                .and_then(|m| m.get(&id))
                .ok_or_else(not_found)?
                .value
                .tags
                .clone(),
            EcsResource::Service { cluster, name } => d
                .services()
                .get(&cluster)
                .and_then(|m| m.get(&name))
                .filter(|e| {
                    rollout::service_status(&e.value.service) != Some(ServiceStatus::Inactive)
                })
                .ok_or_else(not_found)?
                .value
                .service
                .tags
                .clone(),
            _ => return Err(not_found()),
        };
        Ok(ListTagsForResourceResponse {
            tags: Some(tags.unwrap_or_default()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(k: &str, v: &str) -> Tag {
        Tag {
            key: Some(k.into()),
            value: Some(v.into()),
        }
    }

    #[test]
    fn rules() {
        assert!(validate_tags(&[tag("a", "b")]).is_ok());
        assert!(validate_tags(&[tag("", "b")]).is_err());
        assert!(validate_tags(&[tag("aws:x", "b")]).is_err());
        assert!(validate_tags(&[tag(&"k".repeat(129), "b")]).is_err());
        assert!(validate_tags(&[tag("k", &"v".repeat(257))]).is_err());
        let many: Vec<Tag> = (0..51).map(|i| tag(&format!("k{i}"), "")).collect();
        assert!(validate_tags(&many).is_err());
        let mut cur = vec![tag("a", "1")];
        merge(&mut cur, &[tag("a", "2"), tag("b", "3")]).unwrap();
        assert_eq!(cur, vec![tag("a", "2"), tag("b", "3")]);
    }
}
