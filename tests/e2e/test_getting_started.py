"""The getting-started flow of the README, through the real aws CLI and through boto3."""

import os

import pytest

from conftest import ROOT, register_instance

WEB = "file://" + os.path.join(ROOT, "examples", "web.json")
SIDECAR = "file://" + os.path.join(ROOT, "examples", "sidecar.json")


def test_cli_getting_started(berth):
    c = berth.aws("ecs", "create-cluster", "--cluster-name", "dev")["cluster"]
    assert c["clusterName"] == "dev"
    assert c["status"] == "ACTIVE"
    assert c["clusterArn"] == "arn:aws:ecs:us-east-1:000000000000:cluster/dev"

    td = berth.aws("ecs", "register-task-definition", "--cli-input-json", WEB)["taskDefinition"]
    assert td["family"] == "web" and td["revision"] == 1 and td["status"] == "ACTIVE"
    assert td["taskDefinitionArn"].endswith(":task-definition/web:1")
    assert td["containerDefinitions"][0]["essential"] is True

    # No container instances yet: the failure ECS reports, and nothing recorded.
    r = berth.aws("ecs", "run-task", "--cluster", "dev", "--task-definition", "web", "--count", "2")
    assert r["tasks"] == []
    assert r["failures"][0]["reason"] == "No Container Instances were found in your cluster."
    assert berth.aws("ecs", "list-tasks", "--cluster", "dev")["taskArns"] == []

    ecs = berth.client()
    inst = register_instance(ecs, "dev")
    r = berth.aws("ecs", "run-task", "--cluster", "dev", "--task-definition", "web", "--count", "2")
    assert r["failures"] == []
    assert len(r["tasks"]) == 2
    for t in r["tasks"]:
        assert t["lastStatus"] == "PENDING"
        assert t["desiredStatus"] == "RUNNING"
        assert t["containerInstanceArn"] == inst
        assert t["group"] == "family:web"
        assert t["launchType"] == "EC2"
    arns = [t["taskArn"] for t in r["tasks"]]

    d = berth.aws("ecs", "describe-tasks", "--cluster", "dev", "--tasks", *arns)
    assert sorted(t["taskArn"] for t in d["tasks"]) == sorted(arns)
    assert d["failures"] == []
    assert d["tasks"][0]["containers"][0]["name"] == "web"

    # Dynamic host ports reserve nothing; CPU and memory are taken per task.
    ci = ecs.describe_container_instances(cluster="dev", containerInstances=[inst])
    ci = ci["containerInstances"][0]
    rem = {r["name"]: r for r in ci["remainingResources"]}
    assert rem["CPU"]["integerValue"] == 4096 - 2 * 256
    assert rem["MEMORY"]["integerValue"] == 8192 - 2 * 128
    assert ci["pendingTasksCount"] == 2


FIXED_PORT = {
    "family": "fixed",
    "containerDefinitions": [{
        "name": "web", "image": "busybox", "memory": 64,
        "portMappings": [{"containerPort": 80, "hostPort": 8080}],
    }],
}


def test_cli_runs_two_tasks_on_two_instances(berth):
    berth.aws("ecs", "create-cluster", "--cluster-name", "dev")
    ecs = berth.client()
    ecs.register_task_definition(**FIXED_PORT)
    a = register_instance(ecs, "dev", zone="zone-a")
    b = register_instance(ecs, "dev", zone="zone-b")
    r = berth.aws("ecs", "run-task", "--cluster", "dev", "--task-definition", "fixed", "--count", "2")
    assert r["failures"] == []
    # Host port 8080 is fixed: the two tasks must be on different instances.
    assert sorted(t["containerInstanceArn"] for t in r["tasks"]) == sorted([a, b])
    # A third has nowhere to go.
    r = berth.aws("ecs", "run-task", "--cluster", "dev", "--task-definition", "fixed")
    assert r["tasks"] == []
    assert {f["reason"] for f in r["failures"]} == {"RESOURCE:PORTS"}

    cl = berth.aws("ecs", "describe-clusters", "--clusters", "dev", "--include", "STATISTICS")
    c = cl["clusters"][0]
    assert c["registeredContainerInstancesCount"] == 2
    assert c["pendingTasksCount"] == 2
    assert c["runningTasksCount"] == 0
    stats = {s["name"]: s["value"] for s in c["statistics"]}
    assert stats["pendingEC2TasksCount"] == "2"

    arn = berth.aws("ecs", "list-tasks", "--cluster", "dev")["taskArns"][0]
    s = berth.aws("ecs", "stop-task", "--cluster", "dev", "--task", arn, "--reason", "done")
    assert s["task"]["desiredStatus"] == "STOPPED"
    assert s["task"]["stopCode"] == "UserInitiated"
    assert s["task"]["stoppedReason"] == "done"
    running = berth.aws("ecs", "list-tasks", "--cluster", "dev")["taskArns"]
    assert arn not in running
    stopped = berth.aws("ecs", "list-tasks", "--cluster", "dev", "--desired-status", "STOPPED")
    assert stopped["taskArns"] == [arn]


def test_boto3_getting_started(berth):
    ecs = berth.client()
    ecs.create_cluster(clusterName="prod", tags=[{"key": "team", "value": "a"}],
                       settings=[{"name": "containerInsights", "value": "enabled"}])
    with open(os.path.join(ROOT, "examples", "sidecar.json")) as f:
        import json
        body = json.load(f)
    td = ecs.register_task_definition(**body, tags=[{"key": "app", "value": "web"}])
    assert td["taskDefinition"]["cpu"] == "512"
    assert td["taskDefinition"]["memory"] == "1024"
    assert "FARGATE" in td["taskDefinition"]["compatibilities"]
    register_instance(ecs, "prod")
    # awsvpc without a network configuration is refused, as ECS does.
    try:
        ecs.run_task(cluster="prod", taskDefinition="web-with-sidecar")
        raise AssertionError("expected InvalidParameterException")
    except ecs.exceptions.InvalidParameterException as e:
        assert "Network Configuration" in str(e)
    r = ecs.run_task(
        cluster="prod",
        taskDefinition="web-with-sidecar:1",
        networkConfiguration={"awsvpcConfiguration": {"subnets": ["berth-default"]}},
        startedBy="me",
        tags=[{"key": "run", "value": "1"}],
        overrides={"containerOverrides": [{"name": "app", "environment": [{"name": "A", "value": "1"}]}]},
    )
    assert r["failures"] == []
    t = r["tasks"][0]
    assert t["lastStatus"] == "PROVISIONING"
    assert t["attachments"][0]["type"] == "ElasticNetworkInterface"
    assert t["startedBy"] == "me"
    assert t["availabilityZone"] == "zone-a"
    assert [c["name"] for c in t["overrides"]["containerOverrides"]][0] == "app"

    d = ecs.describe_tasks(cluster="prod", tasks=[t["taskArn"]], include=["TAGS"])
    assert d["tasks"][0]["tags"] == [{"key": "run", "value": "1"}]
    d = ecs.describe_tasks(cluster="prod", tasks=[t["taskArn"], "nope"])
    assert "tags" not in d["tasks"][0]
    assert d["failures"][0]["reason"] == "MISSING"

    assert ecs.list_tasks(cluster="prod", startedBy="me")["taskArns"] == [t["taskArn"]]
    assert ecs.list_tasks(cluster="prod", family="web-with-sidecar")["taskArns"] == [t["taskArn"]]
    assert ecs.list_tasks(cluster="prod", family="other")["taskArns"] == []

    # The agent reports the task running, then stopped.
    ecs.submit_task_state_change(cluster="prod", task=t["taskArn"], status="RUNNING",
                                 containers=[{"containerName": "app", "status": "RUNNING",
                                              "runtimeId": "abc"}])
    d = ecs.describe_tasks(cluster="prod", tasks=[t["taskArn"]])["tasks"][0]
    assert d["lastStatus"] == "RUNNING" and "startedAt" in d
    c = ecs.describe_clusters(clusters=["prod"])["clusters"][0]
    assert c["runningTasksCount"] == 1 and c["pendingTasksCount"] == 0
    ecs.submit_task_state_change(cluster="prod", task=t["taskArn"], status="STOPPED",
                                 reason="Essential container in task exited",
                                 containers=[{"containerName": "app", "status": "STOPPED",
                                              "exitCode": 3}])
    d = ecs.describe_tasks(cluster="prod", tasks=[t["taskArn"]])["tasks"][0]
    assert d["lastStatus"] == "STOPPED"
    assert d["stopCode"] == "EssentialContainerExited"
    app = next(c for c in d["containers"] if c["name"] == "app")
    assert app["exitCode"] == 3
    # A late RUNNING report never moves a task backwards.
    ecs.submit_task_state_change(cluster="prod", task=t["taskArn"], status="RUNNING")
    assert ecs.describe_tasks(cluster="prod", tasks=[t["taskArn"]])["tasks"][0]["lastStatus"] == "STOPPED"

    c = ecs.describe_clusters(clusters=["prod", "ghost"], include=["TAGS", "SETTINGS"])
    assert c["clusters"][0]["tags"] == [{"key": "team", "value": "a"}]
    assert c["clusters"][0]["settings"] == [{"name": "containerInsights", "value": "enabled"}]
    assert c["failures"][0]["reason"] == "MISSING"


def test_default_cluster_and_cluster_lifecycle(berth):
    ecs = berth.client()
    # The default cluster appears when something uses it.
    ecs.register_task_definition(family="x", containerDefinitions=[
        {"name": "x", "image": "busybox", "memory": 32}])
    r = ecs.run_task(taskDefinition="x")
    assert r["failures"][0]["reason"] == "No Container Instances were found in your cluster."
    assert any(a.endswith(":cluster/default") for a in ecs.list_clusters()["clusterArns"])

    ecs.create_cluster(clusterName="tmp")
    inst = register_instance(ecs, "tmp")
    try:
        ecs.delete_cluster(cluster="tmp")
        raise AssertionError("expected ClusterContainsContainerInstancesException")
    except ecs.exceptions.ClusterContainsContainerInstancesException:
        pass
    ecs.deregister_container_instance(cluster="tmp", containerInstance=inst)
    d = ecs.delete_cluster(cluster="tmp")["cluster"]
    assert d["status"] == "INACTIVE"
    assert not any(a.endswith(":cluster/tmp") for a in ecs.list_clusters()["clusterArns"])
    try:
        ecs.run_task(cluster="tmp", taskDefinition="x")
        raise AssertionError("expected ClusterNotFoundException")
    except ecs.exceptions.ClusterNotFoundException:
        pass
    # The name can be used again.
    assert ecs.create_cluster(clusterName="tmp")["cluster"]["status"] == "ACTIVE"

    up = ecs.update_cluster_settings(cluster="tmp", settings=[{"name": "containerInsights", "value": "enhanced"}])
    assert up["cluster"]["settings"] == [{"name": "containerInsights", "value": "enhanced"}]


def test_task_definition_lifecycle(berth):
    ecs = berth.client()
    for _ in range(3):
        ecs.register_task_definition(family="app", containerDefinitions=[
            {"name": "a", "image": "busybox", "memoryReservation": 64}])
    assert ecs.describe_task_definition(taskDefinition="app")["taskDefinition"]["revision"] == 3
    ecs.deregister_task_definition(taskDefinition="app:3")
    assert ecs.describe_task_definition(taskDefinition="app")["taskDefinition"]["revision"] == 2
    d = ecs.describe_task_definition(taskDefinition="app:3")["taskDefinition"]
    assert d["status"] == "INACTIVE" and "deregisteredAt" in d
    # Deleting needs INACTIVE first.
    r = ecs.delete_task_definitions(taskDefinitions=["app:2", "app:3"])
    assert [t["revision"] for t in r["taskDefinitions"]] == [3]
    assert r["failures"][0]["arn"].endswith("app:2")
    assert ecs.describe_task_definition(taskDefinition="app:3")["taskDefinition"]["status"] == "DELETE_IN_PROGRESS"
    # Revisions are never reused.
    n = ecs.register_task_definition(family="app", containerDefinitions=[
        {"name": "a", "image": "busybox", "memoryReservation": 64}])
    assert n["taskDefinition"]["revision"] == 4
    fams = ecs.list_task_definition_families(familyPrefix="ap")["families"]
    assert fams == ["app"]
    inactive = ecs.list_task_definitions(familyPrefix="app", status="INACTIVE")["taskDefinitionArns"]
    assert inactive == []
    assert len(ecs.list_task_definitions(familyPrefix="app")["taskDefinitionArns"]) == 3
    desc = ecs.list_task_definitions(familyPrefix="app", sort="DESC")["taskDefinitionArns"]
    assert desc[0].endswith("app:4")

    # ClientException for what ECS refuses in a task definition.
    for bad in (
        [{"name": "a", "image": "busybox"}],                           # no memory
        [{"name": "a", "image": "busybox", "memory": 64, "essential": False}],
        [{"name": "a", "image": "busybox", "memory": 64,
          "dependsOn": [{"containerName": "b", "condition": "START"}]}],
    ):
        try:
            ecs.register_task_definition(family="bad", containerDefinitions=bad)
            raise AssertionError("expected ClientException for %r" % bad)
        except ecs.exceptions.ClientException:
            pass
    assert "bad" not in ecs.list_task_definition_families()["families"]


def test_tags_on_every_resource(berth):
    ecs = berth.client()
    c = ecs.create_cluster(clusterName="t")["cluster"]["clusterArn"]
    td = ecs.register_task_definition(family="t", containerDefinitions=[
        {"name": "a", "image": "busybox", "memory": 64}])["taskDefinition"]["taskDefinitionArn"]
    inst = register_instance(ecs, "t")
    task = ecs.run_task(cluster="t", taskDefinition="t")["tasks"][0]["taskArn"]
    for arn in (c, td, inst, task):
        ecs.tag_resource(resourceArn=arn, tags=[{"key": "k", "value": "v"}, {"key": "x", "value": "y"}])
        ecs.untag_resource(resourceArn=arn, tagKeys=["x"])
        assert ecs.list_tags_for_resource(resourceArn=arn)["tags"] == [{"key": "k", "value": "v"}]
    try:
        ecs.tag_resource(resourceArn=c, tags=[{"key": "aws:reserved", "value": "v"}])
        raise AssertionError("expected InvalidParameterException")
    except ecs.exceptions.InvalidParameterException:
        pass
    assert ecs.list_tags_for_resource(resourceArn=c)["tags"] == [{"key": "k", "value": "v"}]


def test_container_instances_and_attributes(berth):
    ecs = berth.client()
    ecs.create_cluster(clusterName="c")
    a = register_instance(ecs, "c", zone="zone-a")
    b = register_instance(ecs, "c", zone="zone-b")
    ecs.put_attributes(cluster="c", attributes=[
        {"name": "stack", "value": "prod", "targetType": "container-instance", "targetId": a}])
    got = ecs.list_container_instances(cluster="c", filter="attribute:stack == prod")
    assert got["containerInstanceArns"] == [a]
    got = ecs.list_container_instances(cluster="c", filter="attribute:ecs.availability-zone in [zone-b]")
    assert got["containerInstanceArns"] == [b]
    attrs = ecs.list_attributes(cluster="c", targetType="container-instance", attributeName="stack")
    assert attrs["attributes"] == [{"name": "stack", "value": "prod",
                                    "targetType": "container-instance", "targetId": a}]
    ecs.delete_attributes(cluster="c", attributes=[{"name": "stack", "targetId": a}])
    assert ecs.list_attributes(cluster="c", targetType="container-instance",
                               attributeName="stack")["attributes"] == []

    r = ecs.update_container_instances_state(cluster="c", containerInstances=[b], status="DRAINING")
    assert r["containerInstances"][0]["status"] == "DRAINING"
    assert ecs.list_container_instances(cluster="c", status="DRAINING")["containerInstanceArns"] == [b]
    ecs.register_task_definition(family="w", containerDefinitions=[
        {"name": "a", "image": "busybox", "memory": 64}])
    # A DRAINING instance gets no new tasks.
    for _ in range(3):
        t = ecs.run_task(cluster="c", taskDefinition="w")["tasks"][0]
        assert t["containerInstanceArn"] == a
    d = ecs.describe_container_instances(cluster="c", containerInstances=[a])["containerInstances"][0]
    assert d["pendingTasksCount"] == 3
    mem = next(r for r in d["remainingResources"] if r["name"] == "MEMORY")["integerValue"]
    assert mem == 8192 - 3 * 64
    try:
        ecs.list_container_instances(cluster="c", filter="attribute:stack ==")
        raise AssertionError("expected InvalidParameterException")
    except ecs.exceptions.InvalidParameterException:
        pass


def test_start_task_on_named_instances(berth):
    ecs = berth.client()
    ecs.create_cluster(clusterName="st")
    ecs.register_task_definition(family="big", containerDefinitions=[
        {"name": "a", "image": "busybox", "memory": 3000}])
    a = register_instance(ecs, "st", memory=4096)
    b = register_instance(ecs, "st", memory=1024)
    r = ecs.start_task(cluster="st", taskDefinition="big", containerInstances=[a, b], startedBy="ops")
    assert [t["containerInstanceArn"] for t in r["tasks"]] == [a]
    assert r["failures"] == [{"arn": b, "reason": "RESOURCE:MEMORY"}]
    assert r["tasks"][0]["startedBy"] == "ops"
    # The same instance twice: the second no longer fits.
    r = ecs.start_task(cluster="st", taskDefinition="big", containerInstances=[a])
    assert r["tasks"] == [] and r["failures"][0]["reason"] == "RESOURCE:MEMORY"
    r = ecs.start_task(cluster="st", taskDefinition="big", containerInstances=["nope"])
    assert r["failures"][0]["reason"] == "MISSING"
    with pytest.raises(ecs.exceptions.InvalidParameterException):
        ecs.start_task(cluster="st", taskDefinition="big", containerInstances=[])
