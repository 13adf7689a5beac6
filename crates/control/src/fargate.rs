//! The Fargate launch type on the API side: DescribeCapacityProviders (ECS's built-in
//! `FARGATE` and `FARGATE_SPOT`), how RunTask and CreateService/UpdateService resolve a launch
//! type or capacity provider strategy (the cluster's default strategy when they give neither),
//! and the checks a launch resolving to Fargate must pass. The rules themselves live in
//! [`berth_model::fargate`]; this module applies them to requests and words the errors as ECS.
//!
//! Must not: place Fargate tasks on container instances. Fargate tasks are created without
//! one, PROVISIONING, and wait there for the platform capacity pool (a later part of berth).

use berth_model::fargate;
use berth_model::wire::ecs::{
    CapacityProvider, CapacityProviderStrategyItem, Cluster, DescribeCapacityProvidersRequest,
    DescribeCapacityProvidersResponse, Failure, NetworkConfiguration, PlacementConstraint,
    PlacementStrategy, TaskDefinition,
};

use crate::error::{ControlError, Result};
use crate::{Control, paging};

/// What a launch resolved to: a launch type, and for a capacity provider strategy the strategy
/// (its providers by name).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Resolved {
    pub(crate) launch_type: String,
    pub(crate) strategy: Vec<CapacityProviderStrategyItem>,
}

impl Resolved {
    pub(crate) fn is_fargate(&self) -> bool {
        self.launch_type == "FARGATE"
    }
}

/// Resolve a launch: `launchType`, else `capacityProviderStrategy`, else the cluster's default
/// strategy, else EC2. Both given is refused as ECS does.
pub(crate) fn resolve(
    cluster: &Cluster,
    launch_type: Option<&str>,
    strategy: Option<&[CapacityProviderStrategyItem]>,
) -> Result<Resolved> {
    let strategy = strategy.filter(|s| !s.is_empty());
    if launch_type.is_some() && strategy.is_some() {
        return Err(ControlError::invalid(
            "Specifying both a launch type and capacity provider strategy is not supported. Remove one and try again.",
        ));
    }
    if let Some(lt) = launch_type {
        return match lt {
            "EC2" | "EXTERNAL" | "FARGATE" => Ok(Resolved {
                launch_type: lt.to_string(),
                strategy: vec![],
            }),
            other => Err(ControlError::invalid(format!(
                "Invalid launchType: {other}."
            ))),
        };
    }
    let providers = cluster.capacity_providers.clone().unwrap_or_default();
    let (items, given) = match strategy {
        Some(s) => (s.to_vec(), true),
        None => (
            cluster
                .default_capacity_provider_strategy
                .clone()
                .unwrap_or_default(),
            false,
        ),
    };
    if items.is_empty() {
        return Ok(Resolved {
            launch_type: "EC2".into(),
            strategy: vec![],
        });
    }
    fargate::check_strategy(&items, &providers, true).map_err(|e| {
        if given {
            ControlError::invalid(e)
        } else {
            ControlError::invalid(format!(
                "The cluster's default capacity provider strategy cannot be used: {e}"
            ))
        }
    })?;
    let items = items
        .into_iter()
        .map(|mut i| {
            let n = fargate::provider_name(i.capacity_provider.as_deref().unwrap_or_default());
            i.capacity_provider = Some(n.to_string());
            i.weight.get_or_insert(0);
            i.base.get_or_insert(0);
            i
        })
        .collect();
    Ok(Resolved {
        // Every provider berth has is a Fargate one.
        launch_type: "FARGATE".into(),
        strategy: items,
    })
}

/// The checks of a launch that resolved to Fargate, beyond the task definition's own: the
/// definition must be Fargate-compatible (under the rules of this build: a definition stored
/// by an older one is checked again), task-size overrides a Fargate size, a network
/// configuration given (awsvpc), no placement constraints or strategies. Returns the platform
/// version the tasks run on.
pub(crate) fn check_launch(
    td: &TaskDefinition,
    size_override: (Option<&str>, Option<&str>),
    network: Option<&NetworkConfiguration>,
    constraints: &[PlacementConstraint],
    strategies: &[PlacementStrategy],
    platform_version: Option<&str>,
) -> Result<&'static str> {
    let compatible = td
        .compatibilities
        .as_ref()
        .is_some_and(|c| c.iter().any(|c| c == "FARGATE"))
        && fargate::check_definition(td).is_ok();
    if !compatible {
        return Err(ControlError::invalid(
            "Task definition does not support launch_type FARGATE.",
        ));
    }
    if let (None, None) = size_override {
    } else {
        let cpu = size_override.0.or(td.cpu.as_deref()).unwrap_or_default();
        let mem = size_override.1.or(td.memory.as_deref()).unwrap_or_default();
        let c = berth_model::taskdef::parse_cpu_units(cpu).unwrap_or(0);
        let m = berth_model::taskdef::parse_memory_mib(mem).unwrap_or(0);
        if !fargate::size_ok(c, m) {
            return Err(ControlError::invalid(fargate::size_error(c, m)));
        }
    }
    if network
        .and_then(|n| n.awsvpc_configuration.as_ref())
        .is_none()
    {
        return Err(ControlError::invalid(
            "Network Configuration must be provided when networkMode 'awsvpc' is specified.",
        ));
    }
    if !constraints.is_empty() {
        return Err(ControlError::invalid(
            "Placement constraints are not supported with FARGATE launch type.",
        ));
    }
    if !strategies.is_empty() {
        return Err(ControlError::invalid(
            "Placement strategies are not supported with FARGATE launch type.",
        ));
    }
    fargate::platform_version(platform_version).map_err(ControlError::invalid)
}

/// `platformVersion` on a launch that is not Fargate: ECS refuses it.
pub(crate) fn check_no_platform_version(v: Option<&str>) -> Result<()> {
    match v {
        Some(_) => Err(ControlError::invalid(
            "The platform version must be null when specifying an EC2 launch type.",
        )),
        None => Ok(()),
    }
}

/// `assignPublicIp`, when given, is ENABLED or DISABLED.
pub(crate) fn check_assign_public_ip(n: Option<&NetworkConfiguration>) -> Result<()> {
    match n
        .and_then(|n| n.awsvpc_configuration.as_ref())
        .and_then(|a| a.assign_public_ip.as_deref())
    {
        None | Some("ENABLED" | "DISABLED") => Ok(()),
        Some(v) => Err(ControlError::invalid(format!(
            "Invalid assignPublicIp value: {v}. Valid values are ENABLED and DISABLED."
        ))),
    }
}

/// For `n` new tasks of a strategy, which provider each gets, given the tasks each provider
/// has already (by provider name).
pub(crate) fn providers_for(
    strategy: &[CapacityProviderStrategyItem],
    existing: &std::collections::HashMap<String, usize>,
    n: usize,
) -> Vec<String> {
    let mut counts: Vec<usize> = strategy
        .iter()
        .map(|i| {
            existing
                .get(i.capacity_provider.as_deref().unwrap_or_default())
                .copied()
                .unwrap_or(0)
        })
        .collect();
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let Some(i) = fargate::pick_provider(strategy, &counts) else {
            break;
        };
        counts[i] += 1;
        out.push(strategy[i].capacity_provider.clone().unwrap_or_default());
    }
    out
}

impl Control {
    /// One built-in provider as ECS describes it.
    fn built_in_provider(&self, name: &str, with_tags: bool) -> CapacityProvider {
        CapacityProvider {
            capacity_provider_arn: Some(self.part.capacity_provider(name)),
            name: Some(name.to_string()),
            status: Some("ACTIVE".into()),
            r#type: Some(name.to_string()),
            tags: with_tags.then(Vec::new),
            ..Default::default()
        }
    }

    pub async fn describe_capacity_providers(
        &self,
        req: DescribeCapacityProvidersRequest,
    ) -> Result<DescribeCapacityProvidersResponse> {
        let with_tags = paging::includes(req.include.as_deref(), "TAGS");
        if let Some(c) = req.cluster.as_deref() {
            // Providers of a cluster berth does not have are not there to describe.
            let name = self.cluster_name_of(Some(c))?;
            if !self.view.data.read().clusters().contains_key(name) {
                return Err(ControlError::ClusterNotFound);
            }
        }
        let named = req.capacity_providers.clone().unwrap_or_default();
        if named.is_empty() {
            let limit = paging::max_results(req.max_results, 10, 10)?;
            let after = paging::decode(req.next_token.as_deref())?;
            let (providers, next) = paging::page(
                fargate::PROVIDERS
                    .iter()
                    .map(|n| (n.to_string(), self.built_in_provider(n, with_tags))),
                after.as_deref(),
                limit,
            );
            return Ok(DescribeCapacityProvidersResponse {
                capacity_providers: Some(providers),
                failures: Some(vec![]),
                next_token: next,
            });
        }
        if req.max_results.is_some() || req.next_token.is_some() {
            return Err(ControlError::invalid(
                "maxResults and nextToken can be used only when capacityProviders is not given.",
            ));
        }
        if named.len() > 100 {
            return Err(ControlError::invalid(
                "capacityProviders can have at most 100 items.",
            ));
        }
        let mut providers = Vec::new();
        let mut failures = Vec::new();
        for n in &named {
            if fargate::known_provider(n) {
                providers.push(self.built_in_provider(fargate::provider_name(n), with_tags));
            } else {
                failures.push(Failure {
                    arn: Some(if n.starts_with("arn:") {
                        n.clone()
                    } else {
                        self.part.capacity_provider(n)
                    }),
                    reason: Some("MISSING".into()),
                    detail: None,
                });
            }
        }
        Ok(DescribeCapacityProvidersResponse {
            capacity_providers: Some(providers),
            failures: Some(failures),
            next_token: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(p: &str, weight: i32, base: i32) -> CapacityProviderStrategyItem {
        CapacityProviderStrategyItem {
            capacity_provider: Some(p.into()),
            weight: Some(weight),
            base: Some(base),
        }
    }

    fn cluster(default: Vec<CapacityProviderStrategyItem>) -> Cluster {
        Cluster {
            capacity_providers: Some(vec!["FARGATE".into(), "FARGATE_SPOT".into()]),
            default_capacity_provider_strategy: Some(default),
            ..Default::default()
        }
    }

    #[test]
    fn resolution_order() {
        let c = cluster(vec![item("FARGATE_SPOT", 1, 0)]);
        // Neither: the cluster's default strategy.
        let r = resolve(&c, None, None).unwrap();
        assert!(r.is_fargate());
        assert_eq!(r.strategy, vec![item("FARGATE_SPOT", 1, 0)]);
        // A launch type wins over the default strategy.
        assert_eq!(resolve(&c, Some("EC2"), None).unwrap().launch_type, "EC2");
        // A given strategy wins over the default.
        let r = resolve(&c, None, Some(&[item("FARGATE", 1, 0)])).unwrap();
        assert_eq!(r.strategy[0].capacity_provider.as_deref(), Some("FARGATE"));
        // Both: refused.
        let e = resolve(&c, Some("FARGATE"), Some(&[item("FARGATE", 1, 0)])).unwrap_err();
        assert!(e.to_string().starts_with("Specifying both"), "{e}");
        // No default strategy: EC2.
        assert_eq!(
            resolve(&cluster(vec![]), None, None).unwrap().launch_type,
            "EC2"
        );
        // A provider the cluster lacks.
        let mut only = cluster(vec![]);
        only.capacity_providers = Some(vec!["FARGATE".into()]);
        let e = resolve(&only, None, Some(&[item("FARGATE_SPOT", 1, 0)])).unwrap_err();
        assert!(
            e.to_string().contains("not associated with the cluster"),
            "{e}"
        );
    }

    #[test]
    fn providers_follow_the_strategy_and_existing_tasks() {
        let s = [item("FARGATE", 1, 1), item("FARGATE_SPOT", 1, 0)];
        let none = std::collections::HashMap::new();
        assert_eq!(
            providers_for(&s, &none, 3),
            vec!["FARGATE", "FARGATE_SPOT", "FARGATE"]
        );
        let have: std::collections::HashMap<String, usize> =
            [("FARGATE".to_string(), 1), ("FARGATE_SPOT".to_string(), 0)].into();
        assert_eq!(providers_for(&s, &have, 1), vec!["FARGATE_SPOT"]);
    }

    #[test]
    fn launch_checks() {
        let mut td = TaskDefinition {
            network_mode: Some("awsvpc".into()),
            cpu: Some("256".into()),
            memory: Some("512".into()),
            compatibilities: Some(vec!["EC2".into(), "FARGATE".into()]),
            container_definitions: Some(vec![Default::default()]),
            ..Default::default()
        };
        let net = NetworkConfiguration {
            awsvpc_configuration: Some(berth_model::wire::ecs::AwsVpcConfiguration {
                subnets: Some(vec!["subnet-1".into()]),
                ..Default::default()
            }),
        };
        let ok = check_launch(&td, (None, None), Some(&net), &[], &[], Some("LATEST"));
        assert_eq!(ok.unwrap(), "1.4.0");
        let e = check_launch(&td, (None, None), None, &[], &[], None).unwrap_err();
        assert!(e.to_string().contains("Network Configuration"), "{e}");
        let e = check_launch(&td, (None, Some("4096")), Some(&net), &[], &[], None).unwrap_err();
        assert!(e.to_string().contains("No Fargate configuration"), "{e}");
        let pc = PlacementConstraint {
            r#type: Some("distinctInstance".into()),
            expression: None,
        };
        let e = check_launch(&td, (None, None), Some(&net), &[pc], &[], None).unwrap_err();
        assert!(e.to_string().contains("Placement constraints"), "{e}");
        let ps = PlacementStrategy {
            r#type: Some("random".into()),
            field: None,
        };
        let e = check_launch(&td, (None, None), Some(&net), &[], &[ps], None).unwrap_err();
        assert!(e.to_string().contains("Placement strategies"), "{e}");
        let e = check_launch(&td, (None, None), Some(&net), &[], &[], Some("1.3.0")).unwrap_err();
        assert!(e.to_string().contains("1.3.0"), "{e}");
        td.compatibilities = Some(vec!["EC2".into()]);
        let e = check_launch(&td, (None, None), Some(&net), &[], &[], None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Task definition does not support launch_type FARGATE."
        );
    }
}
