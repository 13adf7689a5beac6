//! RunTask (placement by the scheduler crate) and StartTask (on named instances): plan against
//! the view's scheduler picture, which counts the placements in flight (see
//! [`crate::view::PlanGuard`]), so concurrent RunTasks never oversubscribe an instance, then
//! commit every new task in one transaction guarded by the allocation revisions of the
//! instances placed on ([`crate::alloc`]). A RunTask resolving to Fargate places nothing: its
//! tasks are created PROVISIONING without an instance (see [`crate::fargate`]).

use berth_model::wire::ecs::{
    ContainerInstance, Failure, RunTaskRequest, RunTaskResponse, StartTaskRequest,
    StartTaskResponse,
};
use berth_scheduler as sched;
use berth_store::{Compare, Op, Txn};

use super::launch::{Launch, MAX_RUN_COUNT, check_constraints, check_strategies};
use super::{task_failure, task_id};
use crate::error::{ControlError, Result};
use crate::records::TaskRecord;
use crate::view::{Usage, ViewData};
use crate::{Control, keys};

/// Tasks placed and not yet committed, with the failures of those that could not be; the
/// plan counts in the scheduler's picture until this is dropped (after the commit).
pub(crate) struct Planned {
    pub(crate) records: Vec<TaskRecord>,
    pub(crate) failures: Vec<Failure>,
    /// The allocation revisions of the instances placed on, for the commit to compare.
    pub(crate) claims: crate::alloc::Claims,
    _guard: crate::view::PlanGuard,
}

/// How many times RunTask/StartTask plan again when another server placed on the same
/// instances first.
const PLACEMENT_ATTEMPTS: usize = 5;

/// The store operations that create `recs` (each key must be new).
pub(crate) fn create_ops(cluster: &str, recs: &[TaskRecord]) -> Result<(Vec<Compare>, Vec<Op>)> {
    let mut compare = Vec::with_capacity(recs.len());
    let mut ops = Vec::with_capacity(recs.len());
    for r in recs {
        let key = keys::task(cluster, task_id(r));
        compare.push(Compare::missing(key.clone()));
        ops.push(Op::put(key, serde_json::to_vec(r)?));
    }
    Ok((compare, ops))
}

/// Every attempt lost the race for its instances to another server's placements.
fn placement_contended() -> ControlError {
    ControlError::Server(
        "Placement kept conflicting with placements by other servers; try again.".into(),
    )
}

impl Control {
    /// The scheduler's picture of one container instance.
    pub(crate) fn snapshot(
        &self,
        d: &ViewData,
        cluster: &str,
        id: &str,
        ci: &ContainerInstance,
    ) -> sched::Instance {
        let empty = Usage::default();
        let u = d
            .usage()
            .get(&(cluster.to_string(), id.to_string()))
            .unwrap_or(&empty);
        crate::view::sched_instance(id, ci, u)
    }

    /// Commit a plan's new tasks in one transaction (every key is new, every instance placed
    /// on still at the allocation revision the plan saw). `false`: another server placed on
    /// one of those instances first; nothing was written, plan again.
    async fn commit_tasks(&self, cluster: &str, p: &mut Planned) -> Result<bool> {
        let (mut compare, mut success) = create_ops(cluster, &p.records)?;
        let (c, o) = p.claims.guard().await;
        compare.extend(c);
        success.extend(o);
        let resp = self
            .commit(Txn {
                compare,
                success,
                failure: vec![],
            })
            .await?;
        p.claims.settle(resp.succeeded.then_some(resp.revision));
        Ok(resp.succeeded)
    }

    /// Place `count` tasks of `l` by the strategies and constraints, against the scheduler's
    /// picture (committed tasks and every plan in flight).
    pub(crate) fn plan_placement(
        &self,
        l: &Launch,
        count: usize,
        strategies: &[sched::PlacementStrategy],
        constraints: &[sched::PlacementConstraint],
    ) -> Planned {
        let treq = l.sched_requirements();
        let mut d = self.view.data.write();
        let spread: Vec<_> = strategies
            .iter()
            .filter_map(|s| match s {
                sched::PlacementStrategy::Spread(f) => Some(d.spread_values(&l.cluster, f)),
                _ => None,
            })
            .collect();
        let empty = crate::view::SchedCluster::default();
        let sc = d.sched().get(&l.cluster).unwrap_or(&empty);
        let known: Vec<&sched::SpreadValues> = spread.iter().map(|v| &**v).collect();
        let instances = &sc.instances;
        let mut rng = rand::rng();
        let placement = sched::place_with(
            instances,
            Default::default(),
            &known,
            &treq,
            count,
            strategies,
            constraints,
            &mut rng,
        );
        let records: Vec<TaskRecord> = placement
            .placed
            .iter()
            .map(|&i| self.new_task(l, Some((&instances[i].arn, &instances[i]))))
            .collect();
        let mut failures: Vec<Failure> = Vec::new();
        for f in placement.failures {
            let fl = task_failure(f.arn, &f.reason);
            if !failures.contains(&fl) {
                failures.push(fl);
            }
        }
        let ids: Vec<String> = placement
            .placed
            .iter()
            .map(|&i| instances[i].id.clone())
            .collect();
        self.planned(&mut d, l, &treq, ids, records, failures)
    }

    /// Count placed tasks (`ids[i]`: the instance of `records[i]`) in the scheduler's picture
    /// until they are applied or the returned plan drops.
    fn planned(
        &self,
        d: &mut ViewData,
        l: &Launch,
        treq: &sched::TaskRequirements,
        ids: Vec<String>,
        records: Vec<TaskRecord>,
        failures: Vec<Failure>,
    ) -> Planned {
        let placed: Vec<(String, String)> = ids
            .iter()
            .cloned()
            .zip(records.iter().map(|r| task_id(r).to_string()))
            .collect();
        let plan = d.add_plan(&l.cluster, &placed, treq);
        let claims = crate::alloc::Claims::take(d, &self.view, &l.cluster, &ids);
        Planned {
            records,
            failures,
            claims,
            _guard: crate::view::PlanGuard {
                view: self.view.clone(),
                cluster: l.cluster.clone(),
                ids,
                plan,
            },
        }
    }

    /// Tasks of `l` not placed on any instance (Fargate's): a plan that claims nothing.
    pub(crate) fn plan_unplaced(&self, l: &Launch, records: Vec<TaskRecord>) -> Planned {
        let mut d = self.view.data.write();
        let treq = l.sched_requirements();
        self.planned(&mut d, l, &treq, vec![], records, vec![])
    }

    /// One task of `l` on each of the named instances (ARNs or ids), where it fits.
    pub(crate) fn plan_on_instances(&self, l: &Launch, targets: &[String]) -> Planned {
        let mut d = self.view.data.write();
        let empty = crate::view::SchedCluster::default();
        let sc = d.sched().get(&l.cluster).unwrap_or(&empty);
        let mut placed_ids = Vec::new();
        let mut records = Vec::new();
        let mut failures = Vec::new();
        let treq = l.sched_requirements();
        for t in targets {
            let hit = self.instance_id(&l.cluster, t).and_then(|id| {
                let i = sc.position(id)?;
                let snap = &sc.instances[i];
                (snap.status == "ACTIVE").then(|| snap.clone())
            });
            let Some(mut snap) = hit else {
                failures.push(task_failure(Some(t.clone()), "MISSING"));
                continue;
            };
            // Account for tasks this same call already put there.
            for r in &records {
                let r: &TaskRecord = r;
                if r.task.container_instance_arn.as_deref() == Some(snap.arn.as_str()) {
                    sched::reserve(&mut snap, &treq);
                }
            }
            match sched::fits(&snap, &treq) {
                Ok(()) => {
                    placed_ids.push(snap.id.clone());
                    records.push(self.new_task(l, Some((&snap.arn.clone(), &snap))))
                }
                Err(reason) => failures.push(task_failure(Some(snap.arn.clone()), reason)),
            }
        }
        self.planned(&mut d, l, &treq, placed_ids, records, failures)
    }

    pub async fn run_task(&self, req: RunTaskRequest) -> Result<RunTaskResponse> {
        let count = req.count.unwrap_or(1);
        if !(1..=MAX_RUN_COUNT).contains(&count) {
            return Err(ControlError::invalid(format!(
                "count must be between 1 and {MAX_RUN_COUNT}."
            )));
        }
        let resolved = {
            let cl = self.active_cluster(req.cluster.as_deref()).await?;
            crate::fargate::resolve(
                &cl.value,
                req.launch_type.as_deref(),
                req.capacity_provider_strategy.as_deref(),
            )?
        };
        crate::fargate::check_assign_public_ip(req.network_configuration.as_ref())?;
        let strategies = check_strategies(req.placement_strategy.as_deref().unwrap_or_default())?;
        let l = self
            .prepare_launch(
                req.cluster.as_deref(),
                req.task_definition.as_deref(),
                req.overrides.clone(),
                req.group.clone(),
                req.started_by.clone(),
                Some(resolved.launch_type.clone()),
                req.tags.clone(),
                req.network_configuration.clone(),
                req.enable_execute_command,
            )
            .await?;
        let constraints = check_constraints(
            req.placement_constraints.as_deref().unwrap_or_default(),
            &l.td.def,
        )?;
        if resolved.is_fargate() {
            return self.run_fargate(req, l, &resolved, count as usize).await;
        }
        crate::fargate::check_no_platform_version(req.platform_version.as_deref())?;
        let strategies = if strategies.is_empty() {
            sched::default_run_task_strategy()
        } else {
            strategies
        };
        for _ in 0..PLACEMENT_ATTEMPTS {
            let mut p = self.plan_placement(&l, count as usize, &strategies, &constraints);
            if p.records.is_empty() || self.commit_tasks(&l.cluster, &mut p).await? {
                return Ok(RunTaskResponse {
                    tasks: Some(
                        std::mem::take(&mut p.records)
                            .into_iter()
                            .map(|r| r.task)
                            .collect(),
                    ),
                    failures: Some(std::mem::take(&mut p.failures)),
                });
            }
        }
        Err(placement_contended())
    }

    /// RunTask resolving to Fargate: Fargate's checks, then the tasks created without an
    /// instance, PROVISIONING, each with the provider the strategy gives it. They wait there
    /// for platform capacity (the pool that runs them is a later part of berth).
    async fn run_fargate(
        &self,
        req: RunTaskRequest,
        mut l: Launch,
        resolved: &crate::fargate::Resolved,
        count: usize,
    ) -> Result<RunTaskResponse> {
        let version = crate::fargate::check_launch(
            &l.td.def,
            (l.overrides.cpu.as_deref(), l.overrides.memory.as_deref()),
            l.network.as_ref(),
            req.placement_constraints.as_deref().unwrap_or_default(),
            req.placement_strategy.as_deref().unwrap_or_default(),
            req.platform_version.as_deref(),
        )?;
        l.platform_version = Some(version.to_string());
        let providers = if resolved.strategy.is_empty() {
            vec![]
        } else {
            crate::fargate::providers_for(&resolved.strategy, &Default::default(), count)
        };
        let records: Vec<TaskRecord> = (0..count)
            .map(|i| self.new_fargate_task(&l, providers.get(i).map(String::as_str)))
            .collect();
        let (compare, success) = create_ops(&l.cluster, &records)?;
        let resp = self
            .commit(Txn {
                compare,
                success,
                failure: vec![],
            })
            .await?;
        if !resp.succeeded {
            return Err(ControlError::Server(
                "A new task id collided with an existing one; try again.".into(),
            ));
        }
        Ok(RunTaskResponse {
            tasks: Some(records.into_iter().map(|r| r.task).collect()),
            failures: Some(vec![]),
        })
    }

    pub async fn start_task(&self, req: StartTaskRequest) -> Result<StartTaskResponse> {
        let targets = req.container_instances.clone().unwrap_or_default();
        if targets.is_empty() || targets.len() > 10 {
            return Err(ControlError::invalid(
                "containerInstances must contain between 1 and 10 elements.",
            ));
        }
        let l = self
            .prepare_launch(
                req.cluster.as_deref(),
                req.task_definition.as_deref(),
                req.overrides.clone(),
                req.group.clone(),
                req.started_by.clone(),
                Some("EC2".into()),
                req.tags.clone(),
                req.network_configuration.clone(),
                req.enable_execute_command,
            )
            .await?;
        for _ in 0..PLACEMENT_ATTEMPTS {
            let mut p = self.plan_on_instances(&l, &targets);
            if p.records.is_empty() || self.commit_tasks(&l.cluster, &mut p).await? {
                return Ok(StartTaskResponse {
                    tasks: Some(
                        std::mem::take(&mut p.records)
                            .into_iter()
                            .map(|r| r.task)
                            .collect(),
                    ),
                    failures: Some(std::mem::take(&mut p.failures)),
                });
            }
        }
        Err(placement_contended())
    }
}
