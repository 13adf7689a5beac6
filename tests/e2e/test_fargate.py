"""Fargate, the API side, against a real `berth up` (no local node) with boto3: Fargate's rules
refused with ECS's messages and nothing created; the built-in FARGATE/FARGATE_SPOT capacity
providers listed on clusters and described; a cluster's default strategy applied to RunTask
and CreateService; what DescribeTasks shows for a Fargate task. Fargate tasks wait
PROVISIONING (no platform capacity exists yet in this part of berth); each test stops the
tasks it started and deletes the services it created."""

import botocore.exceptions
import pytest

FARGATE_TD = dict(
    family="fg",
    networkMode="awsvpc",
    requiresCompatibilities=["FARGATE"],
    cpu="256",
    memory="512",
    containerDefinitions=[{"name": "app", "image": "busybox", "essential": True}],
)
NET = {"awsvpcConfiguration": {"subnets": ["subnet-0abc"], "securityGroups": ["sg-1"],
                               "assignPublicIp": "ENABLED"}}


def refused(call, code, words, **kw):
    with pytest.raises(botocore.exceptions.ClientError) as e:
        call(**kw)
    err = e.value.response["Error"]
    assert err["Code"] == code, err
    assert words in err["Message"], err
    return err["Message"]


def td(**changes):
    d = {**FARGATE_TD, **changes}
    return {k: v for k, v in d.items() if v is not None}


def families(ecs):
    return ecs.list_task_definition_families()["families"]


def test_task_definition_rules_refused_and_nothing_registered(berth):
    ecs = berth.client("ecs")
    c = FARGATE_TD["containerDefinitions"][0]
    cases = [
        (td(networkMode="bridge"), "Fargate only supports network mode 'awsvpc'."),
        (td(cpu=None), "Fargate requires that 'cpu' be defined at the task level."),
        (td(memory=None), "Fargate requires that 'memory' be defined at the task level."),
        (td(memory="4096"), "No Fargate configuration exists for given values: 256 CPU, 4096 memory."),
        (td(cpu="8192", memory="18432"), "No Fargate configuration exists for given values"),
        (td(volumes=[{"name": "h", "host": {"sourcePath": "/etc"}}]),
         "Fargate compatible task definitions do not support sourcePath"),
        (td(containerDefinitions=[{**c, "privileged": True}]), "do not support privileged"),
        (td(containerDefinitions=[{**c, "links": ["db"]}]), "Links are only supported"),
        (td(containerDefinitions=[{**c, "linuxParameters": {"capabilities": {"add": ["NET_ADMIN"]}}}]),
         "only support adding the SYS_PTRACE"),
        (td(ephemeralStorage={"sizeInGiB": 201}), "between 21 and 200 GiB"),
        (td(runtimePlatform={"operatingSystemFamily": "WINDOWS_SERVER_2022_CORE"}), "LINUX"),
    ]
    for body, words in cases:
        refused(ecs.register_task_definition, "ClientException", words, **body)
    assert "fg" not in families(ecs)
    # The edges of the size table and the allowed capability register.
    for cpu, mem in (("256", "2048"), ("4096", "30720"), ("16384", "122880"), ("1 vCPU", "2 GB")):
        ecs.register_task_definition(**td(cpu=cpu, memory=mem))
    r = ecs.register_task_definition(**td(
        containerDefinitions=[{**c, "linuxParameters": {"capabilities": {"add": ["SYS_PTRACE"]}}}],
        ephemeralStorage={"sizeInGiB": 21},
        runtimePlatform={"operatingSystemFamily": "LINUX", "cpuArchitecture": "ARM64"}))
    d = r["taskDefinition"]
    assert "FARGATE" in d["compatibilities"]
    assert d["runtimePlatform"] == {"operatingSystemFamily": "LINUX", "cpuArchitecture": "ARM64"}


def test_capacity_providers_described_and_checked_on_clusters(berth):
    ecs = berth.client("ecs")
    r = ecs.describe_capacity_providers()
    got = {p["name"]: p for p in r["capacityProviders"]}
    assert set(got) == {"FARGATE", "FARGATE_SPOT"}
    for name, p in got.items():
        assert p["status"] == "ACTIVE"
        assert p["capacityProviderArn"].endswith(":capacity-provider/" + name)
        assert p["capacityProviderArn"].startswith("arn:aws:ecs:")
        assert "autoScalingGroupProvider" not in p
    r = ecs.describe_capacity_providers(capacityProviders=["FARGATE_SPOT", "my-asg"])
    assert [p["name"] for p in r["capacityProviders"]] == ["FARGATE_SPOT"]
    assert r["failures"][0]["reason"] == "MISSING"

    # Refused: unknown provider, a default strategy naming a provider the cluster lacks,
    # out-of-range weight/base, base on two providers — and the cluster is not created.
    bad = [
        (dict(capacityProviders=["my-asg"]), "The specified capacity provider was not found."),
        (dict(capacityProviders=["FARGATE"],
              defaultCapacityProviderStrategy=[{"capacityProvider": "FARGATE_SPOT", "weight": 1}]),
         "not associated with the cluster"),
        (dict(capacityProviders=["FARGATE"],
              defaultCapacityProviderStrategy=[{"capacityProvider": "FARGATE", "weight": 1001}]),
         "between 0 and 1000"),
        (dict(capacityProviders=["FARGATE", "FARGATE_SPOT"],
              defaultCapacityProviderStrategy=[
                  {"capacityProvider": "FARGATE", "weight": 1, "base": 1},
                  {"capacityProvider": "FARGATE_SPOT", "weight": 1, "base": 1}]),
         "Only one capacity provider"),
    ]
    for kw, words in bad:
        refused(ecs.create_cluster, "InvalidParameterException", words, clusterName="fgbad", **kw)
    assert not any(a.endswith("/fgbad") for a in ecs.list_clusters()["clusterArns"])

    ecs.create_cluster(clusterName="fgc")
    for kw, words in bad:
        refused(ecs.put_cluster_capacity_providers, "InvalidParameterException", words,
                cluster="fgc", **{"defaultCapacityProviderStrategy": [], **kw})
    c = ecs.describe_clusters(clusters=["fgc"])["clusters"][0]
    assert c.get("capacityProviders", []) == []
    ecs.put_cluster_capacity_providers(
        cluster="fgc", capacityProviders=["FARGATE", "FARGATE_SPOT"],
        defaultCapacityProviderStrategy=[{"capacityProvider": "FARGATE_SPOT", "weight": 1}])
    c = ecs.describe_clusters(clusters=["fgc"])["clusters"][0]
    assert c["capacityProviders"] == ["FARGATE", "FARGATE_SPOT"]
    assert c["defaultCapacityProviderStrategy"][0]["capacityProvider"] == "FARGATE_SPOT"


def _tasks(ecs, cluster):
    return ecs.list_tasks(cluster=cluster, desiredStatus="RUNNING")["taskArns"]


def test_launch_rules_refused_and_nothing_started(berth):
    ecs = berth.client("ecs")
    ecs.create_cluster(clusterName="fgl", capacityProviders=["FARGATE"])
    ecs.register_task_definition(**FARGATE_TD)
    ecs.register_task_definition(family="ec2only", containerDefinitions=[
        {"name": "app", "image": "busybox", "memory": 64}])
    run = dict(cluster="fgl", taskDefinition="fg", networkConfiguration=NET)
    cases = [
        (dict(run, launchType="FARGATE",
              capacityProviderStrategy=[{"capacityProvider": "FARGATE", "weight": 1}]),
         "Specifying both a launch type and capacity provider strategy is not supported."),
        (dict(run, launchType="FARGATE", networkConfiguration=None),
         "Network Configuration must be provided"),
        (dict(run, launchType="FARGATE", taskDefinition="ec2only", networkConfiguration=None),
         "Task definition does not support launch_type FARGATE."),
        (dict(run, launchType="FARGATE",
              placementConstraints=[{"type": "distinctInstance"}]),
         "Placement constraints are not supported with FARGATE launch type."),
        (dict(run, launchType="FARGATE", placementStrategy=[{"type": "random"}]),
         "Placement strategies are not supported with FARGATE launch type."),
        (dict(run, launchType="FARGATE", platformVersion="1.3.0"), "1.3.0"),
        (dict(run, launchType="FARGATE", platformVersion="7.0.0"),
         "The specified platform version does not exist."),
        (dict(run, launchType="FARGATE", overrides={"memory": "4096"}),
         "No Fargate configuration exists"),
        (dict(run, capacityProviderStrategy=[{"capacityProvider": "FARGATE_SPOT", "weight": 1}]),
         "not associated with the cluster"),
        (dict(run, capacityProviderStrategy=[{"capacityProvider": "FARGATE", "weight": 0}]),
         "weight greater than zero"),
    ]
    for kw, words in cases:
        kw = {k: v for k, v in kw.items() if v is not None}
        refused(ecs.run_task, "InvalidParameterException", words, **kw)
        svc = {k: v for k, v in kw.items() if k not in ("overrides",)}
        if "overrides" in kw:
            continue
        svc["serviceName"] = "fgs"
        svc["desiredCount"] = 1
        refused(ecs.create_service, "InvalidParameterException", words, **svc)
    assert _tasks(ecs, "fgl") == []
    assert ecs.list_services(cluster="fgl")["serviceArns"] == []
    refused(ecs.run_task, "InvalidParameterException", "The platform version must be null",
            cluster="fgl", taskDefinition="ec2only", launchType="EC2", platformVersion="LATEST")


def test_fargate_task_as_describe_tasks_shows_it(berth):
    ecs = berth.client("ecs")
    ecs.create_cluster(clusterName="fgt", capacityProviders=["FARGATE", "FARGATE_SPOT"],
                       defaultCapacityProviderStrategy=[
                           {"capacityProvider": "FARGATE", "weight": 1, "base": 1},
                           {"capacityProvider": "FARGATE_SPOT", "weight": 1}])
    ecs.register_task_definition(**td(ephemeralStorage={"sizeInGiB": 40}))
    arns = []
    try:
        # launchType FARGATE: no capacity provider.
        r = ecs.run_task(cluster="fgt", taskDefinition="fg", launchType="FARGATE",
                         networkConfiguration=NET, platformVersion="LATEST")
        assert r["failures"] == []
        t = r["tasks"][0]
        arns.append(t["taskArn"])
        d = ecs.describe_tasks(cluster="fgt", tasks=[t["taskArn"]])["tasks"][0]
        assert d["launchType"] == "FARGATE"
        assert "capacityProviderName" not in d
        assert d["platformVersion"] == "1.4.0"
        assert d["platformFamily"] == "Linux"
        assert d["ephemeralStorage"] == {"sizeInGiB": 40}
        assert d["lastStatus"] == "PROVISIONING"
        assert "containerInstanceArn" not in d
        eni = d["attachments"][0]
        assert eni["type"] == "ElasticNetworkInterface"
        assert eni["status"] == "PRECREATED"
        details = {kv["name"]: kv["value"] for kv in eni["details"]}
        assert details["subnetId"] == "subnet-0abc"
        assert details["networkInterfaceId"].startswith("eni-")

        # Neither launch type nor strategy: the cluster's default strategy, base then weight.
        r = ecs.run_task(cluster="fgt", taskDefinition="fg", networkConfiguration=NET, count=3)
        got = [t["capacityProviderName"] for t in r["tasks"]]
        arns += [t["taskArn"] for t in r["tasks"]]
        assert got == ["FARGATE", "FARGATE_SPOT", "FARGATE"], got
        assert all(t["launchType"] == "FARGATE" for t in r["tasks"])
        listed = ecs.list_tasks(cluster="fgt", launchType="FARGATE")["taskArns"]
        assert set(arns) <= set(listed)

        # A service with the default strategy: it keeps the strategy; its tasks get providers.
        s = ecs.create_service(cluster="fgt", serviceName="web", taskDefinition="fg",
                               desiredCount=2, networkConfiguration=NET)["service"]
        assert "launchType" not in s
        assert s["capacityProviderStrategy"][0]["capacityProvider"] == "FARGATE"
        assert s["platformVersion"] == "LATEST" and s["platformFamily"] == "Linux"
        dep = s["deployments"][0]["id"]
        # Switching the strategy makes a new deployment, as on ECS.
        s = ecs.update_service(cluster="fgt", service="web", capacityProviderStrategy=[
            {"capacityProvider": "FARGATE_SPOT", "weight": 1}])["service"]
        assert s["deployments"][0]["id"] != dep
        assert s["capacityProviderStrategy"] == [
            {"capacityProvider": "FARGATE_SPOT", "weight": 1, "base": 0}]
        refused(ecs.update_service, "InvalidParameterException", "does not support launch_type FARGATE",
                cluster="fgt", service="web",
                taskDefinition=ecs.register_task_definition(**td(family="notfg", containerDefinitions=[
                    {"name": "app", "image": "busybox", "privileged": True}],
                    requiresCompatibilities=None))["taskDefinition"]["taskDefinitionArn"])
        s = ecs.describe_services(cluster="fgt", services=["web"])["services"][0]
        assert s["taskDefinition"].split("/")[-1].startswith("fg:")
    finally:
        try:
            ecs.delete_service(cluster="fgt", service="web", force=True)
        except botocore.exceptions.ClientError:
            pass
        for a in arns:
            ecs.stop_task(cluster="fgt", task=a)
    for a in arns:
        assert ecs.describe_tasks(cluster="fgt", tasks=[a])["tasks"][0]["lastStatus"] == "STOPPED"
