//! berth-scheduler: ECS task placement as pure functions. A snapshot of container instances
//! and a task's requirements go in; the chosen instances (or ECS's failure reasons) come out.
//!
//! Placement follows ECS: instances that cannot hold the task (CPU, memory, GPUs, host ports,
//! agent not connected, not ACTIVE) are filtered out, then the constraints (binding), then the
//! strategies narrow the rest in order (each keeps the best candidates by its own measure, the
//! next one breaks ties), and a random pick settles what is still tied. Each placed task is
//! reserved on the local copy of its instance so that the next one sees it. With `random`
//! alone a task first samples a few instances (uniform over those that fit, by rejection), so
//! a large cluster costs no more than a small one; spread counts per value once per call.
//!
//! Must not: do I/O, read clocks or keep state between calls. Randomness comes from the caller.

pub mod cql;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use rand::Rng;

/// One container instance as placement sees it: what it has left, what runs there.
#[derive(Debug, Clone, Default)]
pub struct Instance {
    pub arn: String,
    /// The container-instance id (last part of the ARN).
    pub id: String,
    /// `ACTIVE`, `DRAINING`, …: only ACTIVE instances get tasks.
    pub status: String,
    pub agent_connected: bool,
    pub agent_version: Option<String>,
    /// Epoch seconds.
    pub registered_at: i64,
    /// Attribute name → value (attributes may have no value). Shared: placement copies an
    /// instance for every reservation it makes, and attributes do not change with tasks.
    pub attributes: Arc<BTreeMap<String, Option<String>>>,
    pub ec2_instance_id: Option<String>,
    /// Remaining CPU units.
    pub cpu: i64,
    /// Remaining memory, MiB.
    pub memory: i64,
    /// Remaining GPUs.
    pub gpus: i64,
    /// Host ports taken (reserved by the instance or by tasks).
    pub used_ports_tcp: BTreeSet<u16>,
    pub used_ports_udp: BTreeSet<u16>,
    /// Task group → number of this instance's tasks in it.
    pub task_groups: BTreeMap<String, i64>,
    pub running_tasks_count: i64,
}

/// What one task needs.
#[derive(Debug, Clone, Default)]
pub struct TaskRequirements {
    pub cpu: i64,
    pub memory: i64,
    /// Fixed host ports (dynamic ones need no reservation).
    pub ports_tcp: Vec<u16>,
    pub ports_udp: Vec<u16>,
    pub gpus: i64,
    /// `family:<name>` or `service:<name>`: what distinctInstance and spread count.
    pub group: String,
    /// Attributes the instance must have (and their values, where given).
    pub attributes: Vec<(String, Option<String>)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinpackField {
    Cpu,
    Memory,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlacementStrategy {
    /// Fewest remaining units of the field that still fit.
    Binpack(BinpackField),
    /// Evenly over the values of a field: `instanceId`/`host`, or `attribute:<name>`.
    Spread(String),
    Random,
}

#[derive(Debug, Clone)]
pub enum PlacementConstraint {
    /// At most one task of the group per instance.
    DistinctInstance,
    /// Only instances matching the expression.
    MemberOf(cql::Expr),
}

/// A task that could not be placed, as ECS reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The instance the reason is about (none when the cluster has no instances).
    pub arn: Option<String>,
    pub reason: String,
}

/// The outcome of one placement call.
#[derive(Debug, Clone, Default)]
pub struct Placement {
    /// For each placed task, the index of its instance in the input slice.
    pub placed: Vec<usize>,
    /// Why the others could not be placed: one entry per instance that was considered
    /// (its first failing check), or one cluster-level entry.
    pub failures: Vec<Failure>,
}

pub const NO_INSTANCES: &str = "No Container Instances were found in your cluster.";
pub const REASON_CPU: &str = "RESOURCE:CPU";
pub const REASON_MEMORY: &str = "RESOURCE:MEMORY";
pub const REASON_PORTS: &str = "RESOURCE:PORTS";
pub const REASON_GPU: &str = "RESOURCE:GPU";
pub const REASON_AGENT: &str = "AGENT";
/// The instance lacks an attribute the task definition requires (`requiresAttributes`).
pub const REASON_ATTRIBUTE: &str = "ATTRIBUTE";
pub const REASON_DISTINCT: &str = "DistinctInstance placement constraint unsatisfied.";
pub const REASON_MEMBER_OF: &str = "MemberOf placement constraint unsatisfied.";

/// What RunTask uses when the request names no strategy.
pub fn default_run_task_strategy() -> Vec<PlacementStrategy> {
    vec![PlacementStrategy::Random]
}

/// Whether `inst` has the attributes `req` requires.
pub fn has_attributes(inst: &Instance, req: &TaskRequirements) -> bool {
    req.attributes
        .iter()
        .all(|(name, value)| match inst.attributes.get(name) {
            None => false,
            Some(have) => value.is_none() || have == value,
        })
}

/// Whether `inst` can hold one task of `req`: its agent, the attributes the task requires,
/// and room (CPU, memory, ports, GPUs).
pub fn fits(inst: &Instance, req: &TaskRequirements) -> Result<(), &'static str> {
    if !inst.agent_connected {
        return Err(REASON_AGENT);
    }
    if !has_attributes(inst, req) {
        return Err(REASON_ATTRIBUTE);
    }
    if inst.cpu < req.cpu {
        return Err(REASON_CPU);
    }
    if inst.memory < req.memory {
        return Err(REASON_MEMORY);
    }
    if req
        .ports_tcp
        .iter()
        .any(|p| inst.used_ports_tcp.contains(p))
        || req
            .ports_udp
            .iter()
            .any(|p| inst.used_ports_udp.contains(p))
    {
        return Err(REASON_PORTS);
    }
    if inst.gpus < req.gpus {
        return Err(REASON_GPU);
    }
    Ok(())
}

/// Take one task's resources from `inst`.
pub fn reserve(inst: &mut Instance, req: &TaskRequirements) {
    inst.cpu -= req.cpu;
    inst.memory -= req.memory;
    inst.gpus -= req.gpus;
    inst.used_ports_tcp.extend(req.ports_tcp.iter().copied());
    inst.used_ports_udp.extend(req.ports_udp.iter().copied());
    *inst.task_groups.entry(req.group.clone()).or_default() += 1;
    inst.running_tasks_count += 1;
}

/// Give one task's resources back to `inst` (the inverse of [`reserve`]).
pub fn unreserve(inst: &mut Instance, req: &TaskRequirements) {
    inst.cpu += req.cpu;
    inst.memory += req.memory;
    inst.gpus += req.gpus;
    for p in &req.ports_tcp {
        inst.used_ports_tcp.remove(p);
    }
    for p in &req.ports_udp {
        inst.used_ports_udp.remove(p);
    }
    if let Some(n) = inst.task_groups.get_mut(&req.group) {
        *n -= 1;
        if *n <= 0 {
            inst.task_groups.remove(&req.group);
        }
    }
    inst.running_tasks_count -= 1;
}

fn check(
    inst: &Instance,
    req: &TaskRequirements,
    constraints: &[PlacementConstraint],
) -> Result<(), &'static str> {
    fits(inst, req)?;
    for c in constraints {
        match c {
            PlacementConstraint::DistinctInstance => {
                if inst.task_groups.get(&req.group).is_some_and(|n| *n > 0) {
                    return Err(REASON_DISTINCT);
                }
            }
            PlacementConstraint::MemberOf(e) => {
                if !e.matches(inst) {
                    return Err(REASON_MEMBER_OF);
                }
            }
        }
    }
    Ok(())
}

/// The value an instance has for a spread field (`None`: it has none).
fn spread_value<'a>(inst: &'a Instance, field: &str) -> Option<&'a str> {
    match field {
        "instanceId" | "host" => Some(inst.id.as_str()),
        _ => {
            let name = field.strip_prefix("attribute:").unwrap_or(field);
            inst.attributes
                .get(name)
                .map(|v| v.as_deref().unwrap_or(""))
        }
    }
}

/// One placement call's scan of the instances: which can take a task, why the others cannot,
/// and what each has left (CPU, memory) for binpack.
struct Scan {
    /// ACTIVE instances.
    active: usize,
    /// ACTIVE instances that pass every check, in index order.
    candidates: Vec<usize>,
    /// ACTIVE instances that fail one, with the first failing check.
    reasons: Vec<(usize, &'static str)>,
    /// Per instance index: remaining (CPU, memory).
    left: Vec<(i64, i64)>,
}

impl Scan {
    fn new(
        instances: &[Instance],
        changed: &HashMap<usize, Instance>,
        req: &TaskRequirements,
        constraints: &[PlacementConstraint],
    ) -> Scan {
        let mut sc = Scan {
            active: 0,
            candidates: Vec::new(),
            reasons: Vec::new(),
            left: Vec::with_capacity(instances.len()),
        };
        for (i, inst) in instances.iter().enumerate() {
            let inst = changed.get(&i).unwrap_or(inst);
            sc.left.push((inst.cpu, inst.memory));
            if inst.status != "ACTIVE" {
                continue;
            }
            sc.active += 1;
            match check(inst, req, constraints) {
                Ok(()) => sc.candidates.push(i),
                Err(r) => sc.reasons.push((i, r)),
            }
        }
        sc
    }

    /// Instance `i` took a task: check it again.
    fn recheck(
        &mut self,
        i: usize,
        inst: &Instance,
        req: &TaskRequirements,
        constraints: &[PlacementConstraint],
    ) {
        self.left[i] = (inst.cpu, inst.memory);
        if let Err(r) = check(inst, req, constraints)
            && let Ok(pos) = self.candidates.binary_search(&i)
        {
            self.candidates.remove(pos);
            self.reasons.push((i, r));
        }
    }
}

/// Each instance's value of one spread field, numbered: instances with the same value share
/// a number. A function of the instances' identities and attributes only, so a caller that
/// keeps its instances may keep these between calls (see [`place_with`]).
#[derive(Debug, Clone)]
pub struct SpreadValues {
    pub field: String,
    /// Per instance index, the number of its value.
    pub of: Vec<u32>,
    /// How many distinct values.
    pub count: usize,
}

impl SpreadValues {
    pub fn new(instances: &[Instance], field: &str) -> SpreadValues {
        let mut numbers: HashMap<Option<&str>, u32> = HashMap::new();
        let of = instances
            .iter()
            .map(|inst| {
                let n = numbers.len() as u32;
                *numbers.entry(spread_value(inst, field)).or_insert(n)
            })
            .collect();
        SpreadValues {
            field: field.to_string(),
            of,
            count: numbers.len(),
        }
    }
}

/// Place `count` tasks. See the crate docs for the rules.
pub fn place(
    instances: &[Instance],
    req: &TaskRequirements,
    count: usize,
    strategies: &[PlacementStrategy],
    constraints: &[PlacementConstraint],
    rng: &mut impl Rng,
) -> Placement {
    place_with(
        instances,
        HashMap::new(),
        &[],
        req,
        count,
        strategies,
        constraints,
        rng,
    )
}

/// Tries of the random pick before it looks at every instance.
const RANDOM_TRIES: usize = 32;

/// [`place`] where some instances are seen as `changed` says (index → instance) instead of
/// as `instances` has them: reservations not yet in the snapshot (placements in flight).
///
/// `known` may hold spread values the caller kept for these same instances (used when the
/// field matches and the length is that of `instances`; others are computed here).
///
/// When the only strategy is `random`, a task tries a few instances drawn at random first
/// (each fitting instance is as likely as with a full scan: rejection sampling), so a large
/// cluster costs no more than a small one; the full scan is the fallback.
#[allow(clippy::too_many_arguments)]
pub fn place_with(
    instances: &[Instance],
    mut changed: HashMap<usize, Instance>,
    known: &[&SpreadValues],
    req: &TaskRequirements,
    count: usize,
    strategies: &[PlacementStrategy],
    constraints: &[PlacementConstraint],
    rng: &mut impl Rng,
) -> Placement {
    let mut out = Placement::default();
    let only_random = strategies
        .iter()
        .all(|s| matches!(s, PlacementStrategy::Random));
    let is_active = |inst: &Instance| inst.status == "ACTIVE";
    // Built on first need (a random placement that finds room by sampling never needs it):
    // the ACTIVE instances that can take a task and why the others cannot. Placing a task
    // changes only its own instance, so that one is checked again and the rest stay as
    // they were for the whole call.
    let mut scan: Option<Scan> = None;
    // Per spread strategy: the group's tasks per value (built on first need).
    type SpreadLoad<'v> = (std::borrow::Cow<'v, [u32]>, Vec<i64>);
    let mut spread_loads: Vec<Option<SpreadLoad>> = vec![None; strategies.len()];
    'tasks: for _ in 0..count {
        if only_random && !instances.is_empty() {
            for _ in 0..RANDOM_TRIES {
                let i = rng.random_range(0..instances.len());
                let inst = changed.get(&i).unwrap_or(&instances[i]);
                if is_active(inst) && check(inst, req, constraints).is_ok() {
                    let inst = changed.entry(i).or_insert_with(|| instances[i].clone());
                    reserve(inst, req);
                    out.placed.push(i);
                    if let Some(sc) = scan.as_mut() {
                        sc.recheck(i, inst, req, constraints);
                    }
                    continue 'tasks;
                }
            }
        }
        let sc = scan.get_or_insert_with(|| Scan::new(instances, &changed, req, constraints));
        if sc.active == 0 {
            out.failures.push(Failure {
                arn: None,
                reason: NO_INSTANCES.to_string(),
            });
            return out;
        }
        if sc.candidates.is_empty() {
            for &(i, r) in &sc.reasons {
                let f = Failure {
                    arn: Some(instances[i].arn.clone()),
                    reason: r.to_string(),
                };
                if !out.failures.contains(&f) {
                    out.failures.push(f);
                }
            }
            continue;
        }
        let mut candidates = sc.candidates.clone();
        for (si, s) in strategies.iter().enumerate() {
            if candidates.len() <= 1 {
                break;
            }
            match s {
                PlacementStrategy::Random => {
                    let pick = candidates[rng.random_range(0..candidates.len())];
                    candidates = vec![pick];
                }
                PlacementStrategy::Binpack(f) => {
                    let key = |i: usize| match f {
                        BinpackField::Cpu => sc.left[i].0,
                        BinpackField::Memory => sc.left[i].1,
                    };
                    let best = candidates.iter().map(|&i| key(i)).min().unwrap_or(0);
                    candidates.retain(|&i| key(i) == best);
                }
                PlacementStrategy::Spread(field) => {
                    // Tasks of the group per value, over every ACTIVE instance: counted once
                    // per call (values numbered, counts in a vector), then kept up to date
                    // as this call places tasks.
                    let (ix, counts) = spread_loads[si].get_or_insert_with(|| {
                        let values = match known
                            .iter()
                            .find(|v| v.field == *field && v.of.len() == instances.len())
                        {
                            Some(v) => (std::borrow::Cow::Borrowed(&v.of[..]), v.count),
                            None => {
                                let v = SpreadValues::new(instances, field);
                                (std::borrow::Cow::Owned(v.of), v.count)
                            }
                        };
                        let (ix, n) = values;
                        let mut counts = vec![0i64; n];
                        for (i, inst) in instances.iter().enumerate() {
                            let inst = changed.get(&i).unwrap_or(inst);
                            if is_active(inst) && !inst.task_groups.is_empty() {
                                counts[ix[i] as usize] +=
                                    inst.task_groups.get(&req.group).copied().unwrap_or(0);
                            }
                        }
                        (ix, counts)
                    });
                    let load = |i: usize| counts[ix[i] as usize];
                    let best = candidates.iter().map(|&i| load(i)).min().unwrap_or(0);
                    candidates.retain(|&i| load(i) == best);
                }
            }
        }
        let chosen = if candidates.len() == 1 {
            candidates[0]
        } else {
            candidates[rng.random_range(0..candidates.len())]
        };
        let inst = changed
            .entry(chosen)
            .or_insert_with(|| instances[chosen].clone());
        reserve(inst, req);
        sc.recheck(chosen, inst, req, constraints);
        out.placed.push(chosen);
        for (si, s) in strategies.iter().enumerate() {
            if let (PlacementStrategy::Spread(_), Some((ix, counts))) =
                (s, spread_loads[si].as_mut())
            {
                counts[ix[chosen] as usize] += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
