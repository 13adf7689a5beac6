use rand::SeedableRng;
use rand::rngs::StdRng;

use super::*;

fn inst(id: &str, az: &str, cpu: i64, mem: i64) -> Instance {
    let mut i = Instance {
        arn: format!("arn:ci/{id}"),
        id: id.into(),
        status: "ACTIVE".into(),
        agent_connected: true,
        cpu,
        memory: mem,
        ..Default::default()
    };
    std::sync::Arc::make_mut(&mut i.attributes)
        .insert("ecs.availability-zone".into(), Some(az.into()));
    i
}

fn req(cpu: i64, mem: i64) -> TaskRequirements {
    TaskRequirements {
        cpu,
        memory: mem,
        group: "family:web".into(),
        ..Default::default()
    }
}

fn rng() -> StdRng {
    StdRng::seed_from_u64(7)
}

#[test]
fn no_instances() {
    let p = place(&[], &req(1, 1), 2, &[], &[], &mut rng());
    assert!(p.placed.is_empty());
    assert_eq!(p.failures[0].reason, NO_INSTANCES);
    assert_eq!(p.failures[0].arn, None);
}

#[test]
fn each_resource_reason() {
    let is = vec![inst("a", "z1", 100, 1000)];
    let reason = |r: TaskRequirements| {
        place(&is, &r, 1, &[], &[], &mut rng()).failures[0]
            .reason
            .clone()
    };
    assert_eq!(reason(req(200, 10)), REASON_CPU);
    assert_eq!(reason(req(10, 2000)), REASON_MEMORY);
    let mut g = req(1, 1);
    g.gpus = 1;
    assert_eq!(reason(g), REASON_GPU);
    let mut busy = is.clone();
    busy[0].used_ports_tcp.insert(80);
    let mut pr = req(1, 1);
    pr.ports_tcp = vec![80];
    assert_eq!(
        place(&busy, &pr, 1, &[], &[], &mut rng()).failures[0].reason,
        REASON_PORTS
    );
    let mut off = is.clone();
    off[0].agent_connected = false;
    assert_eq!(
        place(&off, &req(1, 1), 1, &[], &[], &mut rng()).failures[0].reason,
        REASON_AGENT
    );
}

#[test]
fn placements_within_one_call_see_each_other() {
    let is = vec![inst("a", "z1", 1024, 1024)];
    let p = place(&is, &req(400, 10), 3, &[], &[], &mut rng());
    assert_eq!(p.placed, vec![0, 0]);
    assert_eq!(p.failures.len(), 1);
    assert_eq!(p.failures[0].reason, REASON_CPU);
    let mut pr = req(1, 1);
    pr.ports_tcp = vec![8080];
    let p = place(&is, &pr, 2, &[], &[], &mut rng());
    assert_eq!(p.placed.len(), 1, "one host port, one task");
}

#[test]
fn draining_instances_get_nothing() {
    let mut is = vec![inst("a", "z1", 1024, 1024), inst("b", "z1", 1024, 1024)];
    is[0].status = "DRAINING".into();
    for _ in 0..5 {
        let p = place(
            &is,
            &req(1, 1),
            1,
            &[PlacementStrategy::Random],
            &[],
            &mut rng(),
        );
        assert_eq!(p.placed, vec![1]);
    }
    is[1].status = "DRAINING".into();
    let p = place(&is, &req(1, 1), 1, &[], &[], &mut rng());
    assert_eq!(p.failures[0].reason, NO_INSTANCES);
}

#[test]
fn binpack_picks_the_fullest_that_fits() {
    let is = vec![
        inst("a", "z1", 4096, 4000),
        inst("b", "z1", 4096, 600),
        inst("c", "z1", 4096, 100),
    ];
    let p = place(
        &is,
        &req(1, 500),
        1,
        &[PlacementStrategy::Binpack(BinpackField::Memory)],
        &[],
        &mut rng(),
    );
    assert_eq!(p.placed, vec![1]);
    // Fill b first (600 → 300 → 0), then a.
    let p = place(
        &is,
        &req(1, 300),
        3,
        &[PlacementStrategy::Binpack(BinpackField::Memory)],
        &[],
        &mut rng(),
    );
    assert_eq!(p.placed, vec![1, 1, 0]);
}

#[test]
fn spread_balances_zones_then_instances() {
    let is = vec![
        inst("a", "z1", 4096, 4096),
        inst("b", "z1", 4096, 4096),
        inst("c", "z2", 4096, 4096),
        inst("d", "z3", 4096, 4096),
    ];
    let strat = [
        PlacementStrategy::Spread("attribute:ecs.availability-zone".into()),
        PlacementStrategy::Spread("instanceId".into()),
    ];
    let p = place(&is, &req(1, 1), 6, &strat, &[], &mut rng());
    let mut per_zone = BTreeMap::new();
    let mut per_inst = BTreeMap::new();
    for &i in &p.placed {
        let z = is[i].attributes["ecs.availability-zone"].clone().unwrap();
        *per_zone.entry(z).or_insert(0) += 1;
        *per_inst.entry(is[i].id.clone()).or_insert(0) += 1;
    }
    assert_eq!(
        per_zone.values().copied().collect::<Vec<_>>(),
        vec![2, 2, 2]
    );
    assert_eq!(per_inst["a"], 1);
    assert_eq!(per_inst["b"], 1);
}

#[test]
fn spread_counts_existing_tasks() {
    let mut is = vec![inst("a", "z1", 4096, 4096), inst("b", "z2", 4096, 4096)];
    is[0].task_groups.insert("family:web".into(), 3);
    let p = place(
        &is,
        &req(1, 1),
        2,
        &[PlacementStrategy::Spread(
            "attribute:ecs.availability-zone".into(),
        )],
        &[],
        &mut rng(),
    );
    assert_eq!(p.placed, vec![1, 1]);
}

#[test]
fn distinct_instance_and_member_of() {
    let is = vec![inst("a", "z1", 4096, 4096), inst("b", "z2", 4096, 4096)];
    let p = place(
        &is,
        &req(1, 1),
        3,
        &[],
        &[PlacementConstraint::DistinctInstance],
        &mut rng(),
    );
    assert_eq!(p.placed.len(), 2);
    assert_eq!(p.failures[0].reason, REASON_DISTINCT);
    let e = cql::Expr::parse("attribute:ecs.availability-zone == z2").unwrap();
    let p = place(
        &is,
        &req(1, 1),
        3,
        &[],
        &[PlacementConstraint::MemberOf(e)],
        &mut rng(),
    );
    assert_eq!(p.placed, vec![1, 1, 1]);
    let none = cql::Expr::parse("attribute:ecs.availability-zone == z9").unwrap();
    let p = place(
        &is,
        &req(1, 1),
        1,
        &[],
        &[PlacementConstraint::MemberOf(none)],
        &mut rng(),
    );
    assert!(p.placed.is_empty());
    assert!(p.failures.iter().all(|f| f.reason == REASON_MEMBER_OF));
}

#[test]
fn strategies_apply_in_order() {
    // binpack first: the fuller instance wins even though its zone is busier.
    let mut is = vec![inst("a", "z1", 4096, 500), inst("b", "z2", 4096, 4000)];
    is[0].task_groups.insert("family:web".into(), 2);
    let bp = PlacementStrategy::Binpack(BinpackField::Memory);
    let sp = PlacementStrategy::Spread("attribute:ecs.availability-zone".into());
    let p = place(
        &is,
        &req(1, 100),
        1,
        &[bp.clone(), sp.clone()],
        &[],
        &mut rng(),
    );
    assert_eq!(p.placed, vec![0]);
    let p = place(&is, &req(1, 100), 1, &[sp, bp], &[], &mut rng());
    assert_eq!(p.placed, vec![1]);
}

#[test]
fn random_pick_finds_the_one_instance_that_fits_among_many() {
    let mut all: Vec<Instance> = (0..500)
        .map(|i| inst(&format!("i{i}"), "a", 10, 10))
        .collect();
    all[337].cpu = 1000;
    all[337].memory = 1000;
    let p = place(
        &all,
        &req(100, 100),
        3,
        &[PlacementStrategy::Random],
        &[],
        &mut rng(),
    );
    assert_eq!(p.placed, vec![337, 337, 337]);
}

#[test]
fn random_pick_is_uniform_over_fitting_instances() {
    // 3 of 300 fit: each should get about a third of 3,000 placements.
    let mut all: Vec<Instance> = (0..300)
        .map(|i| inst(&format!("i{i}"), "a", 0, 0))
        .collect();
    for i in [5, 150, 299] {
        all[i].cpu = 1_000_000;
        all[i].memory = 1_000_000;
    }
    let mut counts = HashMap::new();
    let mut r = rng();
    for _ in 0..3000 {
        let p = place(&all, &req(1, 1), 1, &[], &[], &mut r);
        *counts.entry(p.placed[0]).or_insert(0) += 1;
    }
    assert_eq!(counts.len(), 3);
    for n in counts.values() {
        assert!((850..=1150).contains(n), "{counts:?}");
    }
}

#[test]
fn in_flight_reservations_are_seen() {
    let all = vec![inst("a", "a", 100, 100), inst("b", "a", 100, 100)];
    let mut busy = all[0].clone();
    reserve(&mut busy, &req(100, 100));
    let changed = HashMap::from([(0usize, busy)]);
    let p = place_with(&all, changed, &[], &req(100, 100), 2, &[], &[], &mut rng());
    assert_eq!(p.placed, vec![1]);
    assert_eq!(p.failures.len(), 2);
}

#[test]
fn required_attributes_must_be_present_with_their_values() {
    let mut with = inst("a", "z1", 100, 100);
    std::sync::Arc::make_mut(&mut with.attributes).insert(
        "ecs.capability.container-health-check".into(),
        Some(String::new()),
    );
    let without = inst("b", "z1", 100, 100);
    let mut r = req(1, 1);
    r.attributes = vec![("ecs.capability.container-health-check".into(), None)];
    let p = place(std::slice::from_ref(&without), &r, 1, &[], &[], &mut rng());
    assert!(p.placed.is_empty());
    assert_eq!(p.failures[0].reason, REASON_ATTRIBUTE);
    let p = place(&[without, with], &r, 2, &[], &[], &mut rng());
    assert_eq!(p.placed, vec![1, 1]);
    // A value, when required, must match.
    r.attributes = vec![("ecs.availability-zone".into(), Some("z2".into()))];
    let p = place(&[inst("c", "z1", 100, 100)], &r, 1, &[], &[], &mut rng());
    assert_eq!(p.failures[0].reason, REASON_ATTRIBUTE);
    let p = place(&[inst("d", "z2", 100, 100)], &r, 1, &[], &[], &mut rng());
    assert_eq!(p.placed, vec![0]);
}

#[test]
fn unreserve_gives_back_what_reserve_took() {
    let before = inst("a", "z1", 1000, 1000);
    let mut r = req(100, 200);
    r.ports_tcp = vec![8080];
    r.gpus = 0;
    let mut i = before.clone();
    reserve(&mut i, &r);
    reserve(&mut i, &req(10, 10));
    assert_eq!((i.cpu, i.memory, i.running_tasks_count), (890, 790, 2));
    assert!(i.used_ports_tcp.contains(&8080));
    unreserve(&mut i, &r);
    assert_eq!(i.task_groups.get("family:web"), Some(&1));
    unreserve(&mut i, &req(10, 10));
    assert_eq!(
        (i.cpu, i.memory, i.gpus, i.running_tasks_count),
        (before.cpu, before.memory, before.gpus, 0)
    );
    assert!(i.used_ports_tcp.is_empty());
    assert!(i.task_groups.is_empty());
}

#[test]
fn kept_spread_values_place_as_computed_ones_do() {
    let mut is: Vec<Instance> = (0..40)
        .map(|n| inst(&format!("i{n}"), &format!("z{}", n % 3), 4096, 4096))
        .collect();
    reserve(&mut is[4], &req(1, 1));
    reserve(&mut is[7], &req(1, 1));
    let strat = [
        PlacementStrategy::Spread("attribute:ecs.availability-zone".into()),
        PlacementStrategy::Binpack(BinpackField::Memory),
    ];
    let zones = SpreadValues::new(&is, "attribute:ecs.availability-zone");
    assert_eq!(zones.count, 3);
    assert_eq!(zones.of[0], zones.of[3]);
    let fresh = place(&is, &req(1, 100), 25, &strat, &[], &mut rng());
    let with = |known: &[&SpreadValues]| {
        place_with(
            &is,
            HashMap::new(),
            known,
            &req(1, 100),
            25,
            &strat,
            &[],
            &mut rng(),
        )
    };
    assert_eq!(fresh.placed, with(&[&zones]).placed);
    // Values for other instances (another length) are not used.
    let stale = SpreadValues::new(&is[..10], "attribute:ecs.availability-zone");
    let other = with(&[&stale]);
    assert_eq!(fresh.placed, other.placed);
}
