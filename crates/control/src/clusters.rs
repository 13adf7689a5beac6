//! Cluster operations: CreateCluster, DescribeClusters, ListClusters, DeleteCluster,
//! UpdateCluster, UpdateClusterSettings, PutClusterCapacityProviders (ECS's built-in
//! `FARGATE` and `FARGATE_SPOT` providers, see [`crate::fargate`]) — and the implicit
//! `default` cluster, which exists as soon as something asks for it by default.

use std::sync::Arc;

use berth_model::wire::ecs::{
    CapacityProviderStrategyItem, Cluster, ClusterSetting, CreateClusterRequest,
    CreateClusterResponse, DeleteClusterRequest, DeleteClusterResponse, DescribeClustersRequest,
    DescribeClustersResponse, Failure, KeyValuePair, ListClustersRequest, ListClustersResponse,
    PutClusterCapacityProvidersRequest, PutClusterCapacityProvidersResponse, UpdateClusterRequest,
    UpdateClusterResponse, UpdateClusterSettingsRequest, UpdateClusterSettingsResponse,
};
use berth_store::{Compare, Op, Txn};

use crate::error::{ControlError, Result};
use crate::tags::validate_tags;
use crate::view::{Entry, LAUNCH_TYPES};
use crate::{Control, keys, paging};

pub const DEFAULT_CLUSTER: &str = "default";

/// Cluster names: up to 255 letters, numbers, hyphens and underscores.
pub fn validate_cluster_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ControlError::invalid(
            "Cluster name may contain up to 255 letters (uppercase and lowercase), numbers, hyphens, and underscores.",
        ))
    }
}

fn validate_settings(settings: &[ClusterSetting]) -> Result<()> {
    for s in settings {
        match (s.name.as_deref(), s.value.as_deref()) {
            (Some("containerInsights"), Some("enabled" | "disabled" | "enhanced")) => {}
            (Some("containerInsights"), v) => {
                return Err(ControlError::invalid(format!(
                    "Invalid value for containerInsights setting: {}. Valid values are enabled, disabled, enhanced.",
                    v.unwrap_or("null")
                )));
            }
            (n, _) => {
                return Err(ControlError::invalid(format!(
                    "Unknown cluster setting: {}. Valid settings: containerInsights.",
                    n.unwrap_or("null")
                )));
            }
        }
    }
    Ok(())
}

impl Control {
    /// The cluster named (or ARN'd) by a request member; `None` means `default`.
    /// Returns the cluster's name.
    pub(crate) fn cluster_name_of<'a>(&self, cluster: Option<&'a str>) -> Result<&'a str> {
        let c = cluster.unwrap_or(DEFAULT_CLUSTER);
        let name = self
            .part
            .cluster_name(c)
            .ok_or(ControlError::ClusterNotFound)?;
        Ok(name)
    }

    /// The ACTIVE cluster a request refers to. A request that names no cluster uses
    /// `default`, which is created on first use as ECS does.
    pub(crate) async fn active_cluster(&self, cluster: Option<&str>) -> Result<Entry<Cluster>> {
        let name = self.cluster_name_of(cluster)?;
        if let Some(e) = self.view.data.read().clusters().get(name)
            && e.value.status.as_deref() == Some("ACTIVE")
        {
            return Ok(e.clone());
        }
        if name == DEFAULT_CLUSTER {
            self.create_cluster(CreateClusterRequest::default()).await?;
            if let Some(e) = self.view.data.read().clusters().get(name) {
                return Ok(e.clone());
            }
        }
        Err(ControlError::ClusterNotFound)
    }

    pub async fn create_cluster(&self, req: CreateClusterRequest) -> Result<CreateClusterResponse> {
        let name = req
            .cluster_name
            .clone()
            .unwrap_or_else(|| DEFAULT_CLUSTER.to_string());
        validate_cluster_name(&name)?;
        validate_tags(req.tags.as_deref().unwrap_or_default())?;
        validate_settings(req.settings.as_deref().unwrap_or_default())?;
        check_capacity(
            req.capacity_providers.as_deref().unwrap_or_default(),
            req.default_capacity_provider_strategy
                .as_deref()
                .unwrap_or_default(),
        )?;
        let key = keys::cluster(&name);
        loop {
            let existing = self.view.data.read().clusters().get(&name).cloned();
            // CreateCluster is idempotent: an ACTIVE cluster of that name is returned as is.
            if let Some(e) = &existing
                && e.value.status.as_deref() == Some("ACTIVE")
            {
                return Ok(CreateClusterResponse {
                    cluster: Some(self.present_cluster(&e.value, &[])),
                });
            }
            let cluster = Cluster {
                cluster_arn: Some(self.part.cluster(&name)),
                cluster_name: Some(name.clone()),
                status: Some("ACTIVE".to_string()),
                tags: req.tags.clone().filter(|t| !t.is_empty()),
                settings: Some(req.settings.clone().unwrap_or_else(|| {
                    vec![ClusterSetting {
                        name: Some("containerInsights".into()),
                        value: Some("disabled".into()),
                    }]
                })),
                configuration: req.configuration.clone(),
                capacity_providers: Some(req.capacity_providers.clone().unwrap_or_default()),
                default_capacity_provider_strategy: Some(
                    req.default_capacity_provider_strategy
                        .clone()
                        .unwrap_or_default(),
                ),
                service_connect_defaults: req.service_connect_defaults.as_ref().map(|d| {
                    berth_model::wire::ecs::ClusterServiceConnectDefaults {
                        namespace: d.namespace.clone(),
                    }
                }),
                ..Default::default()
            };
            let txn = Txn {
                compare: vec![Compare::mod_revision_is(
                    key.clone(),
                    existing.as_ref().map_or(0, |e| e.rev),
                )],
                success: vec![Op::put(key.clone(), serde_json::to_vec(&cluster)?)],
                failure: vec![],
            };
            if self.commit(txn).await?.succeeded {
                let stored = self.view.data.read().clusters().get(&name).cloned();
                let c = stored.map(|e| e.value).unwrap_or_else(|| Arc::new(cluster));
                return Ok(CreateClusterResponse {
                    cluster: Some(self.present_cluster(&c, &[])),
                });
            }
        }
    }

    /// A cluster as DescribeClusters shows it: counts filled in, optional parts per `include`.
    fn present_cluster(&self, c: &Cluster, include: &[String]) -> Cluster {
        let has = |s: &str| include.iter().any(|i| i == s);
        let mut out = c.clone();
        let name = c.cluster_name.as_deref().unwrap_or_default();
        let d = self.view.data.read();
        let counts = d.counts().get(name).cloned().unwrap_or_default();
        out.registered_container_instances_count = Some(counts.instances as i32);
        out.running_tasks_count = Some(counts.running.iter().sum::<i64>() as i32);
        out.pending_tasks_count = Some(counts.pending.iter().sum::<i64>() as i32);
        out.active_services_count = Some(Control::active_services(&d, name));
        if !has("TAGS") {
            out.tags = None;
        } else if out.tags.is_none() {
            out.tags = Some(vec![]);
        }
        if !has("SETTINGS") {
            out.settings = None;
        }
        if !has("CONFIGURATIONS") {
            out.configuration = None;
        }
        if has("STATISTICS") {
            let mut stats = Vec::new();
            for (i, lt) in LAUNCH_TYPES.iter().enumerate() {
                let label = match *lt {
                    "EC2" => "EC2",
                    "FARGATE" => "Fargate",
                    _ => "External",
                };
                stats.push(kv(&format!("running{label}TasksCount"), counts.running[i]));
                stats.push(kv(&format!("pending{label}TasksCount"), counts.pending[i]));
                stats.push(kv(&format!("active{label}ServiceCount"), 0));
                stats.push(kv(&format!("draining{label}ServiceCount"), 0));
            }
            out.statistics = Some(stats);
        }
        if has("ATTACHMENTS") {
            out.attachments = Some(vec![]);
        }
        out
    }

    pub async fn describe_clusters(
        &self,
        req: DescribeClustersRequest,
    ) -> Result<DescribeClustersResponse> {
        let include = req.include.clone().unwrap_or_default();
        let names = match req.clusters.as_deref() {
            Some(c) if !c.is_empty() => c.to_vec(),
            _ => vec![DEFAULT_CLUSTER.to_string()],
        };
        if names.len() > 100 {
            return Err(ControlError::invalid(
                "Clusters cannot have more than 100 elements",
            ));
        }
        let mut clusters = Vec::new();
        let mut failures = Vec::new();
        for n in &names {
            let found = self
                .part
                .cluster_name(n)
                .and_then(|name| self.view.data.read().clusters().get(name).cloned());
            match found {
                Some(e) => clusters.push(self.present_cluster(&e.value, &include)),
                None => failures.push(Failure {
                    arn: Some(if n.starts_with("arn:") {
                        n.clone()
                    } else {
                        self.part.cluster(n)
                    }),
                    reason: Some("MISSING".into()),
                    detail: None,
                }),
            }
        }
        Ok(DescribeClustersResponse {
            clusters: Some(clusters),
            failures: Some(failures),
        })
    }

    pub async fn list_clusters(&self, req: ListClustersRequest) -> Result<ListClustersResponse> {
        let limit = paging::max_results(req.max_results, 100, 100)?;
        let after = paging::decode(req.next_token.as_deref())?;
        let d = self.view.data.read();
        let (arns, next) = paging::page(
            d.clusters()
                .iter()
                .filter(|(_, e)| e.value.status.as_deref() == Some("ACTIVE"))
                .map(|(k, e)| (k.clone(), e.value.cluster_arn.clone().unwrap_or_default())),
            after.as_deref(),
            limit,
        );
        Ok(ListClustersResponse {
            cluster_arns: Some(arns),
            next_token: next,
        })
    }

    pub async fn delete_cluster(&self, req: DeleteClusterRequest) -> Result<DeleteClusterResponse> {
        let name = self.cluster_name_of(req.cluster.as_deref())?.to_string();
        loop {
            let e = {
                let d = self.view.data.read();
                let e = d
                    .clusters()
                    .get(&name)
                    .filter(|e| e.value.status.as_deref() == Some("ACTIVE"))
                    .cloned()
                    .ok_or(ControlError::ClusterNotFound)?;
                if Control::active_services(&d, &name) > 0 {
                    return Err(ControlError::ClusterContainsServices);
                }
                let counts = d.counts().get(&name).cloned().unwrap_or_default();
                if counts.instances > 0 {
                    return Err(ControlError::ClusterContainsContainerInstances);
                }
                let live_tasks = d
                    .tasks()
                    .get(&name)
                    .is_some_and(|m| m.values().any(|t| t.summary.last_status.is_unfinished()));
                if live_tasks {
                    return Err(ControlError::ClusterContainsTasks);
                }
                e
            };
            let mut c = (*e.value).clone();
            c.status = Some("INACTIVE".into());
            let key = keys::cluster(&name);
            let txn = Txn {
                compare: vec![Compare::mod_revision_is(key.clone(), e.rev)],
                success: vec![Op::put(key, serde_json::to_vec(&c)?)],
                failure: vec![],
            };
            if self.commit(txn).await?.succeeded {
                return Ok(DeleteClusterResponse {
                    cluster: Some(self.present_cluster(&c, &[])),
                });
            }
        }
    }

    /// Read-modify-write of an ACTIVE cluster with compare-and-swap, retried on conflict.
    async fn modify_cluster(
        &self,
        cluster: Option<&str>,
        mut f: impl FnMut(&mut Cluster) -> Result<()>,
    ) -> Result<Cluster> {
        let name = self.cluster_name_of(cluster)?.to_string();
        loop {
            let e = self
                .view
                .data
                .read()
                .clusters()
                .get(&name)
                .filter(|e| e.value.status.as_deref() == Some("ACTIVE"))
                .cloned()
                .ok_or(ControlError::ClusterNotFound)?;
            let mut c = (*e.value).clone();
            f(&mut c)?;
            let key = keys::cluster(&name);
            let txn = Txn {
                compare: vec![Compare::mod_revision_is(key.clone(), e.rev)],
                success: vec![Op::put(key, serde_json::to_vec(&c)?)],
                failure: vec![],
            };
            if self.commit(txn).await?.succeeded {
                return Ok(c);
            }
        }
    }

    pub async fn update_cluster(&self, req: UpdateClusterRequest) -> Result<UpdateClusterResponse> {
        if let Some(s) = &req.settings {
            validate_settings(s)?;
        }
        let c = self
            .modify_cluster(req.cluster.as_deref(), |c| {
                if let Some(s) = &req.settings {
                    merge_settings(c, s);
                }
                if let Some(conf) = &req.configuration {
                    c.configuration = Some(conf.clone());
                }
                if let Some(d) = &req.service_connect_defaults {
                    c.service_connect_defaults =
                        Some(berth_model::wire::ecs::ClusterServiceConnectDefaults {
                            namespace: d.namespace.clone(),
                        });
                }
                Ok(())
            })
            .await?;
        let include = ["SETTINGS".to_string(), "CONFIGURATIONS".to_string()];
        Ok(UpdateClusterResponse {
            cluster: Some(self.present_cluster(&c, &include)),
        })
    }

    pub async fn update_cluster_settings(
        &self,
        req: UpdateClusterSettingsRequest,
    ) -> Result<UpdateClusterSettingsResponse> {
        let settings = req.settings.clone().unwrap_or_default();
        validate_settings(&settings)?;
        let c = self
            .modify_cluster(req.cluster.as_deref(), |c| {
                merge_settings(c, &settings);
                Ok(())
            })
            .await?;
        Ok(UpdateClusterSettingsResponse {
            cluster: Some(self.present_cluster(&c, &["SETTINGS".to_string()])),
        })
    }

    pub async fn put_cluster_capacity_providers(
        &self,
        req: PutClusterCapacityProvidersRequest,
    ) -> Result<PutClusterCapacityProvidersResponse> {
        let providers = req.capacity_providers.clone().unwrap_or_default();
        let strategy = req
            .default_capacity_provider_strategy
            .clone()
            .unwrap_or_default();
        if req.capacity_providers.is_none() || req.default_capacity_provider_strategy.is_none() {
            return Err(ControlError::invalid(
                "capacityProviders and defaultCapacityProviderStrategy are required.",
            ));
        }
        check_capacity(&providers, &strategy)?;
        let c = self
            .modify_cluster(req.cluster.as_deref(), |c| {
                c.capacity_providers = Some(providers.clone());
                c.default_capacity_provider_strategy = Some(strategy.clone());
                Ok(())
            })
            .await?;
        Ok(PutClusterCapacityProvidersResponse {
            cluster: Some(self.present_cluster(&c, &[])),
        })
    }
}

/// A cluster's capacity providers (ECS's built-in ones) and default strategy over them.
fn check_capacity(providers: &[String], strategy: &[CapacityProviderStrategyItem]) -> Result<()> {
    berth_model::fargate::check_providers(providers).map_err(ControlError::invalid)?;
    berth_model::fargate::check_strategy(strategy, providers, false).map_err(ControlError::invalid)
}

fn merge_settings(c: &mut Cluster, new: &[ClusterSetting]) {
    let mut cur = c.settings.take().unwrap_or_default();
    for s in new {
        match cur.iter_mut().find(|x| x.name == s.name) {
            Some(x) => x.value = s.value.clone(),
            None => cur.push(s.clone()),
        }
    }
    c.settings = Some(cur);
}

fn kv(name: &str, value: i64) -> KeyValuePair {
    KeyValuePair {
        name: Some(name.to_string()),
        value: Some(value.to_string()),
    }
}
