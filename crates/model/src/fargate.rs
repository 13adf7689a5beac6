//! Fargate's rules, shared by RegisterTaskDefinition (`requiresCompatibilities` FARGATE) and the
//! control plane's launches (RunTask, CreateService, UpdateService resolving to FARGATE): what a
//! task definition may hold, the task sizes, the platform versions, the built-in capacity
//! providers and their strategies, and which provider a strategy gives each task. Pure; the
//! messages are ECS's where it is known to word them, ECS-style otherwise.

use std::ops::RangeInclusive;

use crate::taskdef::{parse_cpu_units, parse_memory_mib};
use crate::wire::ecs::{CapacityProviderStrategyItem, TaskDefinition};

/// The platform version every Fargate task runs on (what `LATEST` resolves to).
pub const PLATFORM_VERSION: &str = "1.4.0";
/// The platform family of Linux Fargate tasks, as DescribeTasks shows it.
pub const PLATFORM_FAMILY: &str = "Linux";
/// ECS's built-in capacity providers; every cluster may list them.
pub const PROVIDERS: [&str; 2] = ["FARGATE", "FARGATE_SPOT"];
/// The ephemeral storage a Fargate task has when its definition asks for none, in GiB.
pub const DEFAULT_EPHEMERAL_GIB: i32 = 20;
/// The sizes `ephemeralStorage.sizeInGiB` may ask for.
pub const EPHEMERAL_GIB: RangeInclusive<i32> = 21..=200;
/// The one capability a Fargate container may add.
pub const ADDABLE_CAPABILITY: &str = "SYS_PTRACE";
/// Most items in a capacity provider strategy.
pub const MAX_STRATEGY_ITEMS: usize = 20;

/// Whether (cpu units, memory MiB) is a Fargate task size (AWS's table of valid combinations).
pub fn size_ok(cpu: i64, mem: i64) -> bool {
    let gib = 1024;
    match cpu {
        256 => [512, 1024, 2048].contains(&mem),
        512 => (gib..=4 * gib).contains(&mem) && mem % gib == 0,
        1024 => (2 * gib..=8 * gib).contains(&mem) && mem % gib == 0,
        2048 => (4 * gib..=16 * gib).contains(&mem) && mem % gib == 0,
        4096 => (8 * gib..=30 * gib).contains(&mem) && mem % gib == 0,
        8192 => (16 * gib..=60 * gib).contains(&mem) && mem % (4 * gib) == 0,
        16384 => (32 * gib..=120 * gib).contains(&mem) && mem % (8 * gib) == 0,
        _ => false,
    }
}

/// ECS's refusal of a task size Fargate does not offer.
pub fn size_error(cpu: i64, mem: i64) -> String {
    format!(
        "No Fargate configuration exists for given values: {cpu} CPU, {mem} memory. See the Amazon ECS documentation for the valid values."
    )
}

/// The task-level rules (network mode, a task size), which ECS checks before the containers.
pub fn check_task_level(
    network_mode: Option<&str>,
    cpu: Option<&str>,
    memory: Option<&str>,
) -> Result<(), String> {
    if network_mode != Some("awsvpc") {
        return Err("Fargate only supports network mode 'awsvpc'.".into());
    }
    let Some(cpu) = cpu else {
        return Err("Fargate requires that 'cpu' be defined at the task level.".into());
    };
    let Some(memory) = memory else {
        return Err("Fargate requires that 'memory' be defined at the task level.".into());
    };
    let (c, m) = (
        parse_cpu_units(cpu).unwrap_or(0),
        parse_memory_mib(memory).unwrap_or(0),
    );
    if !size_ok(c, m) {
        return Err(size_error(c, m));
    }
    Ok(())
}

/// Why `td` cannot run on Fargate, or `Ok` when it can.
pub fn check_definition(td: &TaskDefinition) -> Result<(), String> {
    check_task_level(
        td.network_mode.as_deref(),
        td.cpu.as_deref(),
        td.memory.as_deref(),
    )?;
    for v in td.volumes.as_deref().unwrap_or_default() {
        if v.host.as_ref().is_some_and(|h| h.source_path.is_some()) {
            return Err("Fargate compatible task definitions do not support sourcePath".into());
        }
        if v.docker_volume_configuration.is_some() {
            return Err(
                "Fargate compatible task definitions do not support dockerVolumeConfiguration"
                    .into(),
            );
        }
    }
    if td.ipc_mode.is_some() {
        return Err("Tasks using the Fargate launch type do not support ipcMode.".into());
    }
    if td.pid_mode.as_deref() == Some("host") {
        return Err("Tasks using the Fargate launch type do not support pidMode 'host'.".into());
    }
    if td
        .placement_constraints
        .as_ref()
        .is_some_and(|p| !p.is_empty())
    {
        return Err(
            "Tasks using the Fargate launch type do not support placementConstraints.".into(),
        );
    }
    for c in td.container_definitions.as_deref().unwrap_or_default() {
        let name = c.name.as_deref().unwrap_or_default();
        if c.privileged == Some(true) {
            return Err(format!(
                "Tasks using the Fargate launch type do not support privileged containers. Container '{name}' is privileged."
            ));
        }
        if c.links.as_ref().is_some_and(|l| !l.is_empty()) {
            return Err("Tasks using the Fargate launch type do not support links.".into());
        }
        let added = c
            .linux_parameters
            .as_ref()
            .and_then(|l| l.capabilities.as_ref())
            .and_then(|k| k.add.as_deref())
            .unwrap_or_default();
        if let Some(cap) = added.iter().find(|a| a.as_str() != ADDABLE_CAPABILITY) {
            return Err(format!(
                "Tasks using the Fargate launch type only support adding the SYS_PTRACE kernel capability. Container '{name}' adds {cap}."
            ));
        }
    }
    if let Some(size) = td.ephemeral_storage.as_ref().and_then(|e| e.size_in_gi_b) {
        check_ephemeral(size)?;
    }
    if let Some(os) = td
        .runtime_platform
        .as_ref()
        .and_then(|r| r.operating_system_family.as_deref())
        && os != "LINUX"
    {
        return Err(format!(
            "Fargate on this berth installation runs only the LINUX operating system family, not {os}."
        ));
    }
    Ok(())
}

/// The ephemeral storage size rule (any task definition that asks for some).
pub fn check_ephemeral(size: i32) -> Result<(), String> {
    if EPHEMERAL_GIB.contains(&size) {
        Ok(())
    } else {
        Err(format!(
            "The ephemeral storage size must be between {} and {} GiB. Given: {size}.",
            EPHEMERAL_GIB.start(),
            EPHEMERAL_GIB.end()
        ))
    }
}

/// The platform version a Fargate launch resolves `asked` to; refuses others as ECS does.
pub fn platform_version(asked: Option<&str>) -> Result<&'static str, String> {
    match asked {
        None | Some("LATEST") | Some(PLATFORM_VERSION) => Ok(PLATFORM_VERSION),
        Some(v @ ("1.0.0" | "1.1.0" | "1.2.0" | "1.3.0")) => Err(format!(
            "The platform version {v} is not supported by this berth installation. Specify LATEST or 1.4.0."
        )),
        Some(_) => Err("The specified platform version does not exist.".into()),
    }
}

/// The provider name a strategy item or cluster names (a name or its ARN).
pub fn provider_name(s: &str) -> &str {
    s.rsplit_once(":capacity-provider/").map_or(s, |(_, n)| n)
}

/// Whether `name` (a name or ARN) is one of the built-in providers.
pub fn known_provider(name: &str) -> bool {
    PROVIDERS.contains(&provider_name(name))
}

/// ECS's refusal of a provider it does not have.
pub const PROVIDER_NOT_FOUND: &str = "The specified capacity provider was not found. Specify a valid capacity provider and try again.";

/// The providers a cluster lists: each known, none twice.
pub fn check_providers(names: &[String]) -> Result<(), String> {
    for (i, n) in names.iter().enumerate() {
        if !known_provider(n) {
            return Err(format!("{PROVIDER_NOT_FOUND} Capacity provider: {n}"));
        }
        if names[..i]
            .iter()
            .any(|m| provider_name(m) == provider_name(n))
        {
            return Err(format!(
                "The capacity provider {n} is listed more than once."
            ));
        }
    }
    Ok(())
}

/// A capacity provider strategy's own rules, and that every provider in it is one of
/// `cluster` (the cluster's providers). `launch`: the strategy places tasks now (RunTask,
/// a service), so some provider must have a weight.
pub fn check_strategy(
    items: &[CapacityProviderStrategyItem],
    cluster: &[String],
    launch: bool,
) -> Result<(), String> {
    if items.len() > MAX_STRATEGY_ITEMS {
        return Err(format!(
            "A capacity provider strategy can have at most {MAX_STRATEGY_ITEMS} items."
        ));
    }
    let mut with_base = 0;
    for (i, it) in items.iter().enumerate() {
        let p = it.capacity_provider.as_deref().unwrap_or_default();
        if !known_provider(p) {
            return Err(format!("{PROVIDER_NOT_FOUND} Capacity provider: {p}"));
        }
        if items[..i].iter().any(|o| {
            provider_name(o.capacity_provider.as_deref().unwrap_or_default()) == provider_name(p)
        }) {
            return Err(format!(
                "The capacity provider strategy cannot contain a capacity provider more than once. Capacity provider: {p}"
            ));
        }
        if !cluster.iter().any(|c| provider_name(c) == provider_name(p)) {
            return Err(format!(
                "The specified capacity provider strategy cannot contain a capacity provider that is not associated with the cluster. Associate the capacity provider with the cluster or specify a valid capacity provider and try again. Capacity provider: {p}"
            ));
        }
        let w = it.weight.unwrap_or(0);
        if !(0..=1000).contains(&w) {
            return Err(format!(
                "The weight of capacity provider {p} must be between 0 and 1000."
            ));
        }
        let b = it.base.unwrap_or(0);
        if !(0..=100_000).contains(&b) {
            return Err(format!(
                "The base of capacity provider {p} must be between 0 and 100000."
            ));
        }
        if b > 0 {
            with_base += 1;
        }
    }
    if with_base > 1 {
        return Err(
            "Only one capacity provider in a capacity provider strategy can have a base defined."
                .into(),
        );
    }
    if launch && !items.is_empty() && items.iter().all(|i| i.weight.unwrap_or(0) == 0) {
        return Err(
            "At least one capacity provider in a capacity provider strategy must have a weight greater than zero."
                .into(),
        );
    }
    Ok(())
}

/// Which item of `strategy` the next task goes to, given how many tasks each item already has
/// (`counts[i]` for `strategy[i]`), by ECS's rule: first each provider's `base`, then the rest
/// in proportion to the weights — the next task goes where it keeps the tasks above base
/// closest to the weights' shares (smallest `(above + 1) / weight`; ties: the larger weight,
/// then fewer tasks in all, then the earlier item). `None` when no item can take a task (empty, or all weights 0 with
/// every base met).
pub fn pick_provider(strategy: &[CapacityProviderStrategyItem], counts: &[usize]) -> Option<usize> {
    let count = |i: usize| counts.get(i).copied().unwrap_or(0) as i64;
    if let Some(i) =
        (0..strategy.len()).find(|&i| count(i) < i64::from(strategy[i].base.unwrap_or(0)))
    {
        return Some(i);
    }
    let mut best: Option<(usize, i64, i64)> = None; // (index, above + 1, weight)
    for (i, it) in strategy.iter().enumerate() {
        let w = i64::from(it.weight.unwrap_or(0));
        if w <= 0 {
            continue;
        }
        let above = count(i) - i64::from(it.base.unwrap_or(0)).min(count(i)) + 1;
        let better = match best {
            None => true,
            // above/w < b_above/b_w, compared without division; ties: the larger weight,
            // then the provider with fewer tasks in all, then the earlier item.
            Some((b, ba, bw)) => {
                let (l, r) = (above * bw, ba * w);
                l < r || (l == r && (w > bw || (w == bw && count(i) < count(b))))
            }
        };
        if better {
            best = Some((i, above, w));
        }
    }
    best.map(|(i, _, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ecs::{
        ContainerDefinition, EphemeralStorage, HostVolumeProperties, KernelCapabilities,
        LinuxParameters, RuntimePlatform, Volume,
    };

    fn item(p: &str, weight: i32, base: i32) -> CapacityProviderStrategyItem {
        CapacityProviderStrategyItem {
            capacity_provider: Some(p.into()),
            weight: Some(weight),
            base: Some(base),
        }
    }

    /// The providers `n` tasks get, one after another, starting from no tasks.
    fn run(strategy: &[CapacityProviderStrategyItem], n: usize) -> Vec<usize> {
        let mut counts = vec![0; strategy.len()];
        let mut out = vec![];
        for _ in 0..n {
            let i = pick_provider(strategy, &counts).unwrap();
            counts[i] += 1;
            out.push(i);
        }
        out
    }

    #[test]
    fn base_first_then_weights() {
        // FARGATE base 2 weight 1, FARGATE_SPOT weight 3: two on FARGATE, then 1:3.
        let s = [item("FARGATE", 1, 2), item("FARGATE_SPOT", 3, 0)];
        let got = run(&s, 10);
        assert_eq!(&got[..2], &[0, 0]);
        let spot = got[2..].iter().filter(|&&i| i == 1).count();
        assert_eq!(spot, 6, "{got:?}");
        // Every prefix past the base stays within one task of the 1:3 share.
        let mut c = [0i64; 2];
        for &i in &got[2..] {
            c[i] += 1;
            assert!((c[1] - 3 * c[0]).abs() <= 3, "{got:?}");
        }
    }

    #[test]
    fn equal_weights_alternate_and_zero_weight_gets_only_base() {
        let s = [item("FARGATE", 1, 0), item("FARGATE_SPOT", 1, 0)];
        assert_eq!(run(&s, 4), vec![0, 1, 0, 1]);
        let s = [item("FARGATE", 0, 1), item("FARGATE_SPOT", 1, 0)];
        assert_eq!(run(&s, 4), vec![0, 1, 1, 1]);
        let s = [item("FARGATE", 0, 0)];
        assert_eq!(pick_provider(&s, &[0]), None);
        assert_eq!(pick_provider(&[], &[]), None);
    }

    #[test]
    fn existing_tasks_count() {
        // A service that already has 3 on SPOT and none on FARGATE gets FARGATE next.
        let s = [item("FARGATE", 1, 0), item("FARGATE_SPOT", 1, 0)];
        assert_eq!(pick_provider(&s, &[0, 3]), Some(0));
        // Base not yet met after a task was lost: the base provider first.
        let s = [item("FARGATE_SPOT", 4, 0), item("FARGATE", 1, 2)];
        assert_eq!(pick_provider(&s, &[10, 1]), Some(1));
    }

    #[test]
    fn strategy_rules() {
        let cl = vec!["FARGATE".to_string(), "FARGATE_SPOT".to_string()];
        assert!(check_strategy(&[item("FARGATE", 1, 0)], &cl, true).is_ok());
        let e = check_strategy(&[item("EC2_ASG", 1, 0)], &cl, true).unwrap_err();
        assert!(e.starts_with(PROVIDER_NOT_FOUND), "{e}");
        let e = check_strategy(&[item("FARGATE_SPOT", 1, 0)], &cl[..1], true).unwrap_err();
        assert!(e.contains("not associated with the cluster"), "{e}");
        let e = check_strategy(&[item("FARGATE", 1001, 0)], &cl, true).unwrap_err();
        assert!(e.contains("between 0 and 1000"), "{e}");
        let e = check_strategy(&[item("FARGATE", 1, 100_001)], &cl, true).unwrap_err();
        assert!(e.contains("between 0 and 100000"), "{e}");
        let two_bases = [item("FARGATE", 1, 1), item("FARGATE_SPOT", 1, 1)];
        assert!(
            check_strategy(&two_bases, &cl, false)
                .unwrap_err()
                .contains("Only one capacity provider")
        );
        let dup = [item("FARGATE", 1, 0), item("FARGATE", 1, 0)];
        assert!(check_strategy(&dup, &cl, true).is_err());
        let zero = [item("FARGATE", 0, 0)];
        assert!(check_strategy(&zero, &cl, false).is_ok());
        assert!(check_strategy(&zero, &cl, true).is_err());
        assert!(check_providers(&cl).is_ok());
        assert!(check_providers(&["FARGATE".into(), "FARGATE".into()]).is_err());
        assert!(check_providers(&["my-asg".into()]).is_err());
        assert!(known_provider(
            "arn:aws:ecs:us-east-1:123456789012:capacity-provider/FARGATE_SPOT"
        ));
    }

    #[test]
    fn sizes_and_versions() {
        assert!(size_ok(256, 512) && size_ok(16384, 120 * 1024) && size_ok(8192, 20 * 1024));
        assert!(!size_ok(256, 4096) && !size_ok(8192, 18 * 1024) && !size_ok(128, 512));
        assert_eq!(platform_version(None), Ok("1.4.0"));
        assert_eq!(platform_version(Some("LATEST")), Ok("1.4.0"));
        assert!(platform_version(Some("1.3.0")).is_err());
        assert_eq!(
            platform_version(Some("9.9.9")).unwrap_err(),
            "The specified platform version does not exist."
        );
    }

    fn fargate_td() -> TaskDefinition {
        TaskDefinition {
            network_mode: Some("awsvpc".into()),
            cpu: Some("256".into()),
            memory: Some("512".into()),
            container_definitions: Some(vec![ContainerDefinition {
                name: Some("app".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }
    }

    fn container(t: &mut TaskDefinition) -> &mut ContainerDefinition {
        &mut t.container_definitions.as_mut().unwrap()[0]
    }

    #[test]
    fn definition_rules() {
        assert_eq!(check_definition(&fargate_td()), Ok(()));
        let refused = |f: &dyn Fn(&mut TaskDefinition), want: &str| {
            let mut td = fargate_td();
            f(&mut td);
            let e = check_definition(&td).unwrap_err();
            assert!(e.contains(want), "{e} does not say {want}");
        };
        refused(&|t| t.network_mode = Some("bridge".into()), "awsvpc");
        refused(&|t| t.cpu = None, "'cpu' be defined");
        refused(&|t| t.memory = None, "'memory' be defined");
        refused(
            &|t| t.memory = Some("4096".into()),
            "No Fargate configuration",
        );
        refused(
            &|t| {
                t.volumes = Some(vec![Volume {
                    name: Some("v".into()),
                    host: Some(HostVolumeProperties {
                        source_path: Some("/etc".into()),
                    }),
                    ..Default::default()
                }])
            },
            "sourcePath",
        );
        refused(&|t| container(t).privileged = Some(true), "privileged");
        refused(
            &|t| container(t).links = Some(vec!["db".into()]),
            "do not support links",
        );
        refused(
            &|t| {
                container(t).linux_parameters = Some(LinuxParameters {
                    capabilities: Some(KernelCapabilities {
                        add: Some(vec!["SYS_PTRACE".into(), "NET_ADMIN".into()]),
                        drop: None,
                    }),
                    ..Default::default()
                })
            },
            "adds NET_ADMIN",
        );
        refused(
            &|t| {
                t.ephemeral_storage = Some(EphemeralStorage {
                    size_in_gi_b: Some(201),
                })
            },
            "between 21 and 200",
        );
        refused(
            &|t| {
                t.runtime_platform = Some(RuntimePlatform {
                    operating_system_family: Some("WINDOWS_SERVER_2022_CORE".into()),
                    cpu_architecture: None,
                })
            },
            "LINUX",
        );
        refused(&|t| t.ipc_mode = Some("task".into()), "ipcMode");
        let mut td = fargate_td();
        container(&mut td).linux_parameters = Some(LinuxParameters {
            capabilities: Some(KernelCapabilities {
                add: Some(vec!["SYS_PTRACE".into()]),
                drop: Some(vec!["ALL".into()]),
            }),
            ..Default::default()
        });
        td.ephemeral_storage = Some(EphemeralStorage {
            size_in_gi_b: Some(21),
        });
        assert_eq!(check_definition(&td), Ok(()));
    }
}
