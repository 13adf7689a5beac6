//! Container instance operations: RegisterContainerInstance (what agents call),
//! DeregisterContainerInstance, DescribeContainerInstances, ListContainerInstances (with a
//! cluster-query-language `filter`), UpdateContainerInstancesState, and the attribute
//! operations PutAttributes / DeleteAttributes / ListAttributes.

use std::collections::BTreeMap;

use berth_model::arn::EcsResource;
use berth_model::wire::ecs::{
    Attribute, ContainerInstance, DeleteAttributesRequest, DeleteAttributesResponse,
    DeregisterContainerInstanceRequest, DeregisterContainerInstanceResponse,
    DescribeContainerInstancesRequest, DescribeContainerInstancesResponse, Failure,
    ListAttributesRequest, ListAttributesResponse, ListContainerInstancesRequest,
    ListContainerInstancesResponse, PutAttributesRequest, PutAttributesResponse,
    RegisterContainerInstanceRequest, RegisterContainerInstanceResponse, Resource,
    UpdateContainerInstancesStateRequest, UpdateContainerInstancesStateResponse,
};
use berth_store::{Compare, Op, Txn};

use crate::error::{ControlError, Result};
use crate::tags::validate_tags;
use crate::view::{Usage, ViewData};
use crate::{Control, keys, paging};

/// Custom attributes one container instance may carry (ECS allows 10).
pub const MAX_CUSTOM_ATTRIBUTES: usize = 10;

/// Attribute names and values: 1–128 letters, digits, `-_/.@:` (names) or also spaces (values).
fn valid_attr_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_/.@:".contains(&b))
}

fn valid_attr_value(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_/.@: #".contains(&b))
}

/// Attributes the platform sets itself (not counted as custom).
fn is_builtin(name: &str) -> bool {
    name.starts_with("ecs.") || name.starts_with("com.amazonaws.ecs.") || name.starts_with("berth.")
}

fn resource_int(rs: &[Resource], name: &str) -> i64 {
    rs.iter()
        .find(|r| r.name.as_deref() == Some(name))
        .map(|r| {
            r.integer_value
                .map(i64::from)
                .or(r.long_value)
                .or(r.double_value.map(|d| d as i64))
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

fn resource_set(rs: &[Resource], name: &str) -> Vec<String> {
    rs.iter()
        .find(|r| r.name.as_deref() == Some(name))
        .and_then(|r| r.string_set_value.clone())
        .unwrap_or_default()
}

fn int_resource(name: &str, v: i64) -> Resource {
    Resource {
        name: Some(name.into()),
        r#type: Some("INTEGER".into()),
        integer_value: Some(v.clamp(i32::MIN as i64, i32::MAX as i64) as i32),
        double_value: Some(0.0),
        long_value: Some(0),
        ..Default::default()
    }
}

fn set_resource(name: &str, v: Vec<String>) -> Resource {
    Resource {
        name: Some(name.into()),
        r#type: Some("STRINGSET".into()),
        string_set_value: Some(v),
        double_value: Some(0.0),
        long_value: Some(0),
        integer_value: Some(0),
    }
}

/// What an instance has left once its tasks' reservations are taken.
pub fn remaining(ci: &ContainerInstance, u: &Usage) -> Vec<Resource> {
    let reg = ci.registered_resources.as_deref().unwrap_or_default();
    let mut ports = resource_set(reg, "PORTS");
    ports.extend(u.ports_tcp.iter().map(|p| p.to_string()));
    let mut ports_udp = resource_set(reg, "PORTS_UDP");
    ports_udp.extend(u.ports_udp.iter().map(|p| p.to_string()));
    let mut out = vec![
        int_resource("CPU", resource_int(reg, "CPU") - u.cpu),
        int_resource("MEMORY", resource_int(reg, "MEMORY") - u.memory),
        set_resource("PORTS", ports),
        set_resource("PORTS_UDP", ports_udp),
    ];
    let gpus = resource_int(reg, "GPU");
    if gpus > 0 {
        out.push(int_resource("GPU", gpus - u.gpus));
    }
    out
}

impl Control {
    /// Resolve a container instance given as ARN or id within a cluster.
    pub(crate) fn instance_id<'a>(&self, cluster: &str, s: &'a str) -> Option<&'a str> {
        if s.starts_with("arn:") {
            let arn_cluster_ok = matches!(
                self.part.parse_ecs(s),
                Some(EcsResource::ContainerInstance { cluster: ref c, .. }) if c == cluster
            );
            return arn_cluster_ok.then(|| s.rsplit('/').next()).flatten();
        }
        Some(s)
    }

    /// A container instance as DescribeContainerInstances shows it.
    pub(crate) fn present_instance(
        &self,
        d: &ViewData,
        cluster: &str,
        id: &str,
        ci: &ContainerInstance,
        include_tags: bool,
    ) -> ContainerInstance {
        let mut out = ci.clone();
        let u = d
            .usage()
            .get(&(cluster.to_string(), id.to_string()))
            .cloned()
            .unwrap_or_default();
        out.remaining_resources = Some(remaining(ci, &u));
        out.running_tasks_count = Some(u.running as i32);
        out.pending_tasks_count = Some(u.pending as i32);
        if !include_tags {
            out.tags = None;
        }
        out
    }

    pub async fn register_container_instance(
        &self,
        req: RegisterContainerInstanceRequest,
    ) -> Result<RegisterContainerInstanceResponse> {
        self.register_container_instance_by(req, None).await
    }

    /// RegisterContainerInstance by `owner` (see [`crate::command::Caller::owner_id`]): a new
    /// instance is bound to it, and so is one registered before berth recorded owners.
    pub async fn register_container_instance_by(
        &self,
        req: RegisterContainerInstanceRequest,
        owner: Option<&str>,
    ) -> Result<RegisterContainerInstanceResponse> {
        let cluster = self.active_cluster(req.cluster.as_deref()).await?;
        let cname = cluster.value.cluster_name.clone().unwrap_or_default();
        let total = req.total_resources.clone().unwrap_or_default();
        for r in &total {
            let n = r.name.as_deref().unwrap_or_default();
            match n {
                "CPU" | "MEMORY" | "GPU" if resource_int(&total, n) < 0 => {
                    return Err(ControlError::invalid(format!(
                        "Resource {n} must not be negative."
                    )));
                }
                "PORTS" | "PORTS_UDP" => {
                    for p in r.string_set_value.as_deref().unwrap_or_default() {
                        if p.parse::<u16>().is_err() {
                            return Err(ControlError::invalid(format!(
                                "Invalid port '{p}' in {n}."
                            )));
                        }
                    }
                }
                _ => {}
            }
        }
        let attrs = req.attributes.clone().unwrap_or_default();
        for a in &attrs {
            check_attribute(a)?;
        }
        let tags = req.tags.clone().unwrap_or_default();
        validate_tags(&tags)?;
        // Re-registration by ARN updates the instance in place (an agent restarting).
        let existing_id = match req.container_instance_arn.as_deref() {
            Some(arn) => Some(
                self.instance_id(&cname, arn)
                    .ok_or_else(|| {
                        ControlError::invalid(format!("Invalid container instance ARN: {arn}"))
                    })?
                    .to_string(),
            ),
            None => None,
        };
        loop {
            let (id, prev) = match &existing_id {
                Some(id) => {
                    let prev = self
                        .view
                        .data
                        .read()
                        .instances()
                        .get(&cname)
                        .and_then(|m| m.get(id))
                        .cloned();
                    if prev.is_none() {
                        return Err(ControlError::invalid(format!(
                            "Container instance {id} is not registered in cluster {cname}."
                        )));
                    }
                    // Deregistering is final, as in ECS: the agent may join again as a new
                    // instance, not bring the old one back.
                    if prev
                        .as_ref()
                        .is_some_and(|e| e.value.status.as_deref() == Some("INACTIVE"))
                    {
                        return Err(ControlError::Client(format!(
                            "Container instance {id} is inactive."
                        )));
                    }
                    (id.clone(), prev)
                }
                None => (berth_model::arn::new_id(self.now()), None),
            };
            let mut ci = prev
                .as_ref()
                .map(|e| (*e.value).clone())
                .unwrap_or_default();
            ci.container_instance_arn = Some(self.part.container_instance(&cname, &id));
            ci.registered_resources = Some(total.clone());
            // A restarting agent re-registers: that does not undo an operator's DRAINING.
            if ci.status.as_deref() != Some("DRAINING") {
                ci.status = Some("ACTIVE".into());
            }
            ci.agent_connected = Some(true);
            ci.version = Some(ci.version.unwrap_or(0) + 1);
            ci.version_info = req.version_info.clone().or(ci.version_info);
            if prev.is_none() {
                ci.registered_at = Some(self.now().as_secs_f64());
            }
            let mut merged: BTreeMap<String, Attribute> = ci
                .attributes
                .take()
                .unwrap_or_default()
                .into_iter()
                .filter_map(|a| Some((a.name.clone()?, a)))
                .collect();
            for a in &attrs {
                if let Some(n) = &a.name {
                    merged.insert(
                        n.clone(),
                        Attribute {
                            name: Some(n.clone()),
                            value: a.value.clone(),
                            ..Default::default()
                        },
                    );
                }
            }
            identity_attributes(req.instance_identity_document.as_deref(), &mut merged);
            if let Some(id) =
                identity_field(req.instance_identity_document.as_deref(), "instanceId")
            {
                ci.ec2_instance_id = Some(id);
            }
            ci.attributes = Some(merged.into_values().collect());
            if !tags.is_empty() || ci.tags.is_none() {
                ci.tags = Some(tags.clone());
            }
            let key = keys::instance(&cname, &id);
            let mut success = vec![Op::put(key.clone(), serde_json::to_vec(&ci)?)];
            let owned = (self.view.data.read().instance_owners())
                .contains_key(&(cname.clone(), id.clone()));
            if let Some(o) = owner
                && !owned
            {
                success.push(Op::put(
                    keys::instance_owner(&cname, &id),
                    serde_json::to_vec(o)?,
                ));
            }
            let txn = Txn {
                compare: vec![Compare::mod_revision_is(
                    key.clone(),
                    prev.as_ref().map_or(0, |e| e.rev),
                )],
                success,
                failure: vec![],
            };
            if self.commit(txn).await?.succeeded {
                let d = self.view.data.read();
                return Ok(RegisterContainerInstanceResponse {
                    container_instance: Some(self.present_instance(&d, &cname, &id, &ci, true)),
                });
            }
        }
    }

    pub async fn deregister_container_instance(
        &self,
        req: DeregisterContainerInstanceRequest,
    ) -> Result<DeregisterContainerInstanceResponse> {
        let cname = self.cluster_name_of(req.cluster.as_deref())?.to_string();
        if !self.view.data.read().clusters().contains_key(&cname) {
            return Err(ControlError::ClusterNotFound);
        }
        let given = req.container_instance.clone().unwrap_or_default();
        let id = self
            .instance_id(&cname, &given)
            .ok_or_else(|| ControlError::invalid(format!("Invalid container instance: {given}")))?
            .to_string();
        let force = req.force.unwrap_or(false);
        let ci = self
            .modify(
                &keys::instance(&cname, &id),
                |d| {
                    d.instances()
                        .get(&cname)?
                        .get(&id)
                        .filter(|e| e.value.status.as_deref() != Some("INACTIVE"))
                        .cloned()
                },
                || {
                    ControlError::invalid(format!(
                        "Container instance {given} not found in cluster {cname}."
                    ))
                },
                |ci| {
                    let busy = {
                        let d = self.view.data.read();
                        d.usage()
                            .get(&(cname.clone(), id.clone()))
                            .is_some_and(|u| u.running + u.pending > 0)
                    };
                    if busy && !force {
                        return Err(ControlError::invalid(
                            "The container instance has tasks that are running or pending. Stop them first, or deregister with force.",
                        ));
                    }
                    ci.status = Some("INACTIVE".into());
                    ci.agent_connected = Some(false);
                    ci.version = Some(ci.version.unwrap_or(0) + 1);
                    Ok(())
                },
            )
            .await?;
        let d = self.view.data.read();
        Ok(DeregisterContainerInstanceResponse {
            container_instance: Some(self.present_instance(&d, &cname, &id, &ci, false)),
        })
    }

    pub async fn describe_container_instances(
        &self,
        req: DescribeContainerInstancesRequest,
    ) -> Result<DescribeContainerInstancesResponse> {
        let cname = self.cluster_name_of(req.cluster.as_deref())?.to_string();
        let list = paging::batch(req.container_instances.as_ref(), 100, "containerInstances")?;
        let include_tags = paging::includes(req.include.as_deref(), "TAGS");
        let d = self.view.data.read();
        if !d.clusters().contains_key(&cname) {
            return Err(ControlError::ClusterNotFound);
        }
        let mut found = Vec::new();
        let mut failures = Vec::new();
        for s in &list {
            let hit = self
                .instance_id(&cname, s)
                .and_then(|id| Some((id, d.instances().get(&cname)?.get(id)?)));
            match hit {
                Some((id, e)) => {
                    found.push(self.present_instance(&d, &cname, id, &e.value, include_tags))
                }
                None => failures.push(Failure {
                    arn: Some(if s.starts_with("arn:") {
                        s.clone()
                    } else {
                        self.part.container_instance(&cname, s)
                    }),
                    reason: Some("MISSING".into()),
                    detail: None,
                }),
            }
        }
        Ok(DescribeContainerInstancesResponse {
            container_instances: Some(found),
            failures: Some(failures),
        })
    }

    pub async fn list_container_instances(
        &self,
        req: ListContainerInstancesRequest,
    ) -> Result<ListContainerInstancesResponse> {
        let cname = self.cluster_name_of(req.cluster.as_deref())?.to_string();
        let limit = paging::max_results(req.max_results, 100, 100)?;
        let after = paging::decode(req.next_token.as_deref())?;
        let filter = match req.filter.as_deref() {
            Some(f) if !f.trim().is_empty() => Some(
                berth_scheduler::cql::Expr::parse(f)
                    .map_err(|e| ControlError::invalid(format!("Invalid filter: {e}")))?,
            ),
            _ => None,
        };
        let d = self.view.data.read();
        if !d.clusters().contains_key(&cname) {
            return Err(ControlError::ClusterNotFound);
        }
        let status = req.status.as_deref();
        let empty = BTreeMap::new();
        let m = d.instances().get(&cname).unwrap_or(&empty);
        let (arns, next) = paging::page(
            m.iter()
                .filter(|(_, e)| match status {
                    Some(s) => e.value.status.as_deref() == Some(s),
                    None => e.value.status.as_deref() != Some("INACTIVE"),
                })
                .filter(|(id, e)| {
                    filter.as_ref().is_none_or(|f| {
                        let snap = self.snapshot(&d, &cname, id, &e.value);
                        f.matches(&snap)
                    })
                })
                .map(|(id, e)| {
                    (
                        id.clone(),
                        e.value.container_instance_arn.clone().unwrap_or_default(),
                    )
                }),
            after.as_deref(),
            limit,
        );
        Ok(ListContainerInstancesResponse {
            container_instance_arns: Some(arns),
            next_token: next,
        })
    }

    pub async fn update_container_instances_state(
        &self,
        req: UpdateContainerInstancesStateRequest,
    ) -> Result<UpdateContainerInstancesStateResponse> {
        let cname = self.cluster_name_of(req.cluster.as_deref())?.to_string();
        let status = req.status.clone().unwrap_or_default();
        if status != "ACTIVE" && status != "DRAINING" {
            return Err(ControlError::invalid(
                "Container instances status can only be updated to ACTIVE or DRAINING.",
            ));
        }
        let list = req.container_instances.clone().unwrap_or_default();
        if list.is_empty() || list.len() > 10 {
            return Err(ControlError::invalid(
                "containerInstances must contain between 1 and 10 elements.",
            ));
        }
        if !self.view.data.read().clusters().contains_key(&cname) {
            return Err(ControlError::ClusterNotFound);
        }
        let mut out = Vec::new();
        let mut failures = Vec::new();
        for s in &list {
            let Some(id) = self.instance_id(&cname, s).map(str::to_string) else {
                failures.push(missing_failure(s));
                continue;
            };
            let r = self
                .modify(
                    &keys::instance(&cname, &id),
                    |d| {
                        d.instances()
                            .get(&cname)?
                            .get(&id)
                            .filter(|e| e.value.status.as_deref() != Some("INACTIVE"))
                            .cloned()
                    },
                    || ControlError::invalid("missing"),
                    |ci| {
                        if ci.status.as_deref() != Some(status.as_str()) {
                            ci.status = Some(status.clone());
                            ci.version = Some(ci.version.unwrap_or(0) + 1);
                        }
                        Ok(())
                    },
                )
                .await;
            match r {
                Ok(ci) => {
                    let d = self.view.data.read();
                    out.push(self.present_instance(&d, &cname, &id, &ci, false));
                }
                Err(_) => {
                    failures.push(missing_failure(&self.part.container_instance(&cname, &id)))
                }
            }
        }
        Ok(UpdateContainerInstancesStateResponse {
            container_instances: Some(out),
            failures: Some(failures),
        })
    }

    /// The instance an attribute targets, as (cluster, id).
    fn attribute_target(&self, cname: &str, a: &Attribute) -> Result<String> {
        if let Some(t) = a.target_type.as_deref()
            && t != "container-instance"
        {
            return Err(ControlError::invalid(format!(
                "Invalid targetType '{t}': only container-instance is supported."
            )));
        }
        let tid = a.target_id.as_deref().ok_or_else(|| {
            ControlError::invalid("targetId is required: the container instance ARN or id.")
        })?;
        let id = self
            .instance_id(cname, tid)
            .ok_or_else(|| ControlError::invalid(format!("Invalid targetId: {tid}")))?;
        let exists = self
            .view
            .data
            .read()
            .instances()
            .get(cname)
            .is_some_and(|m| m.contains_key(id));
        if !exists {
            return Err(ControlError::invalid(format!(
                "The target {tid} does not exist in cluster {cname}."
            )));
        }
        Ok(id.to_string())
    }

    /// Check an attribute request and group its attributes by target instance. Everything
    /// is checked before anything changes: a bad attribute changes nothing.
    fn attributes_by_target(
        &self,
        cluster: Option<&str>,
        attrs: &[Attribute],
        check_values: bool,
    ) -> Result<(String, BTreeMap<String, Vec<Attribute>>)> {
        let cname = self.cluster_name_of(cluster)?.to_string();
        if !self.view.data.read().clusters().contains_key(&cname) {
            return Err(ControlError::ClusterNotFound);
        }
        if attrs.is_empty() || attrs.len() > 10 {
            return Err(ControlError::invalid(
                "attributes must contain between 1 and 10 elements.",
            ));
        }
        let mut per_target: BTreeMap<String, Vec<Attribute>> = BTreeMap::new();
        for a in attrs {
            if check_values {
                check_attribute(a)?;
            }
            let id = self.attribute_target(&cname, a)?;
            per_target.entry(id).or_default().push(a.clone());
        }
        Ok((cname, per_target))
    }

    pub async fn put_attributes(&self, req: PutAttributesRequest) -> Result<PutAttributesResponse> {
        let attrs = req.attributes.clone().unwrap_or_default();
        let (cname, per_target) =
            self.attributes_by_target(req.cluster.as_deref(), &attrs, true)?;
        for (id, list) in &per_target {
            self.modify(
                &keys::instance(&cname, id),
                |d| d.instances().get(&cname)?.get(id).cloned(),
                || ControlError::invalid("The target does not exist."),
                |ci| {
                    let mut cur = ci.attributes.take().unwrap_or_default();
                    for a in list {
                        match cur.iter_mut().find(|x| x.name == a.name) {
                            Some(x) => x.value = a.value.clone(),
                            None => cur.push(Attribute {
                                name: a.name.clone(),
                                value: a.value.clone(),
                                ..Default::default()
                            }),
                        }
                    }
                    let custom = cur
                        .iter()
                        .filter(|a| !is_builtin(a.name.as_deref().unwrap_or_default()))
                        .count();
                    if custom > MAX_CUSTOM_ATTRIBUTES {
                        return Err(ControlError::AttributeLimitExceeded(format!(
                            "A container instance can have at most {MAX_CUSTOM_ATTRIBUTES} custom attributes."
                        )));
                    }
                    ci.attributes = Some(cur);
                    Ok(())
                },
            )
            .await?;
        }
        Ok(PutAttributesResponse {
            attributes: Some(attrs),
        })
    }

    pub async fn delete_attributes(
        &self,
        req: DeleteAttributesRequest,
    ) -> Result<DeleteAttributesResponse> {
        let attrs = req.attributes.clone().unwrap_or_default();
        let (cname, per_target) =
            self.attributes_by_target(req.cluster.as_deref(), &attrs, false)?;
        for (id, list) in &per_target {
            self.modify(
                &keys::instance(&cname, id),
                |d| d.instances().get(&cname)?.get(id).cloned(),
                || ControlError::invalid("The target does not exist."),
                |ci| {
                    let mut cur = ci.attributes.take().unwrap_or_default();
                    cur.retain(|x| !list.iter().any(|a| a.name == x.name));
                    ci.attributes = Some(cur);
                    Ok(())
                },
            )
            .await?;
        }
        Ok(DeleteAttributesResponse {
            attributes: Some(attrs),
        })
    }

    pub async fn list_attributes(
        &self,
        req: ListAttributesRequest,
    ) -> Result<ListAttributesResponse> {
        let cname = self.cluster_name_of(req.cluster.as_deref())?.to_string();
        if req.target_type.as_deref() != Some("container-instance") {
            return Err(ControlError::invalid(
                "targetType must be container-instance.",
            ));
        }
        if req.attribute_value.is_some() && req.attribute_name.is_none() {
            return Err(ControlError::invalid(
                "attributeValue can only be given together with attributeName.",
            ));
        }
        let limit = paging::max_results(req.max_results, 100, 100)?;
        let after = paging::decode(req.next_token.as_deref())?;
        let d = self.view.data.read();
        if !d.clusters().contains_key(&cname) {
            return Err(ControlError::ClusterNotFound);
        }
        let empty = BTreeMap::new();
        let m = d.instances().get(&cname).unwrap_or(&empty);
        let mut items = Vec::new();
        for (id, e) in m {
            if e.value.status.as_deref() == Some("INACTIVE") {
                continue;
            }
            for a in e.value.attributes.as_deref().unwrap_or_default() {
                if req.attribute_name.is_some() && a.name != req.attribute_name {
                    continue;
                }
                if req.attribute_value.is_some() && a.value != req.attribute_value {
                    continue;
                }
                let k = format!("{id}\u{0}{}", a.name.as_deref().unwrap_or_default());
                items.push((
                    k,
                    Attribute {
                        name: a.name.clone(),
                        value: a.value.clone(),
                        target_type: Some("container-instance".into()),
                        target_id: e.value.container_instance_arn.clone(),
                    },
                ));
            }
        }
        let (attributes, next) = paging::page(items.into_iter(), after.as_deref(), limit);
        Ok(ListAttributesResponse {
            attributes: Some(attributes),
            next_token: next,
        })
    }
}

fn missing_failure(arn: &str) -> Failure {
    Failure {
        arn: Some(arn.to_string()),
        reason: Some("MISSING".into()),
        detail: None,
    }
}

fn check_attribute(a: &Attribute) -> Result<()> {
    let n = a.name.as_deref().unwrap_or_default();
    if !valid_attr_name(n) {
        return Err(ControlError::invalid(format!(
            "Invalid attribute name '{n}': 1-128 letters, numbers, hyphens, underscores, slashes, periods, at signs and colons."
        )));
    }
    if let Some(v) = a.value.as_deref()
        && !valid_attr_value(v)
    {
        return Err(ControlError::invalid(format!(
            "Invalid attribute value '{v}' for '{n}': 1-128 letters, numbers, hyphens, underscores, slashes, periods, at signs, colons, spaces and number signs."
        )));
    }
    Ok(())
}

/// One string field of an EC2 instance identity document (JSON), if the agent sent one.
fn identity_field(doc: Option<&str>, field: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(doc?.trim()).ok()?;
    v.get(field)?
        .as_str()
        .filter(|s| !s.is_empty())
        .map(String::from)
}

/// The attributes ECS derives from an instance identity document (the ECS agent on EC2 sends
/// the document instead of these attributes); attributes the agent sent win.
fn identity_attributes(doc: Option<&str>, attrs: &mut BTreeMap<String, Attribute>) {
    for (field, name) in [
        ("availabilityZone", "ecs.availability-zone"),
        ("instanceType", "ecs.instance-type"),
        ("imageId", "ecs.ami-id"),
        ("architecture", "ecs.cpu-architecture"),
    ] {
        if attrs.contains_key(name) {
            continue;
        }
        if let Some(v) = identity_field(doc, field) {
            attrs.insert(
                name.to_string(),
                Attribute {
                    name: Some(name.to_string()),
                    value: Some(v),
                    ..Default::default()
                },
            );
        }
    }
}

#[cfg(test)]
mod identity_tests {
    use super::*;

    #[test]
    fn identity_documents_give_zone_type_image_and_architecture() {
        let doc = r#"{"availabilityZone":"us-east-1b","instanceType":"m5.large",
            "imageId":"ami-0abc","architecture":"x86_64","instanceId":"i-0123"}"#;
        let mut attrs = BTreeMap::new();
        attrs.insert(
            "ecs.instance-type".to_string(),
            Attribute {
                name: Some("ecs.instance-type".into()),
                value: Some("given".into()),
                ..Default::default()
            },
        );
        identity_attributes(Some(doc), &mut attrs);
        let got: Vec<(&str, &str)> = attrs
            .iter()
            .map(|(k, a)| (k.as_str(), a.value.as_deref().unwrap_or_default()))
            .collect();
        assert_eq!(
            got,
            [
                ("ecs.ami-id", "ami-0abc"),
                ("ecs.availability-zone", "us-east-1b"),
                ("ecs.cpu-architecture", "x86_64"),
                ("ecs.instance-type", "given"),
            ]
        );
        assert_eq!(
            identity_field(Some(doc), "instanceId").as_deref(),
            Some("i-0123")
        );
        let mut none = BTreeMap::new();
        identity_attributes(Some("not json"), &mut none);
        identity_attributes(None, &mut none);
        assert!(none.is_empty());
    }
}
