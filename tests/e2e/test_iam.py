"""IAM roles, STS sessions and task roles, driven with the real aws CLI and boto3: roles and
their policies decide what a session may do; tasks get their role's credentials from the node's
credentials endpoint, as on ECS, and the AWS SDK's own container provider uses them."""

import base64
import json
import os
import subprocess
import time
import urllib.error
import urllib.request

import boto3
import botocore.config
import botocore.exceptions
import pytest

from conftest import BERTH

ACCOUNT = "000000000000"


def trust(*, aws=None, service=None, condition=None):
    principal = {}
    if aws:
        principal["AWS"] = aws
    if service:
        principal["Service"] = service
    st = {"Effect": "Allow", "Principal": principal, "Action": "sts:AssumeRole"}
    if condition:
        st["Condition"] = condition
    return json.dumps({"Version": "2012-10-17", "Statement": [st]})


def policy(*statements):
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def session_client(b, creds, service="ecs"):
    return boto3.client(
        service, endpoint_url=b.endpoint, region_name=b.env["AWS_REGION"],
        aws_access_key_id=creds["AccessKeyId"], aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds.get("SessionToken") or creds.get("Token"),
        config=botocore.config.Config(retries={"max_attempts": 1}))


def code(exc_info):
    return exc_info.value.response["Error"]["Code"]


def test_roles_policies_and_sessions(berth):
    iam, sts, ecs = berth.client("iam"), berth.client("sts"), berth.client("ecs")
    ecs.create_cluster(clusterName="prod")
    role = berth.aws("iam", "create-role", "--role-name", "deployer", "--description", "CI",
                     "--assume-role-policy-document", trust(aws="arn:aws:iam::%s:root" % ACCOUNT),
                     "--tags", "Key=team,Value=platform")["Role"]
    assert role["Arn"] == "arn:aws:iam::%s:role/deployer" % role["Arn"].split(":")[4]
    assert role["RoleId"].startswith("AROA") and role["Path"] == "/"
    got = iam.get_role(RoleName="DEPLOYER")["Role"]  # names are case-insensitive
    assert got["AssumeRolePolicyDocument"]["Statement"][0]["Action"] == "sts:AssumeRole"
    assert got["Tags"] == [{"Key": "team", "Value": "platform"}]
    iam.put_role_policy(RoleName="deployer", PolicyName="tasks", PolicyDocument=policy(
        # As on AWS: RunTask acts on the task definition, ListTasks on `*`; the cluster is the
        # ecs:cluster condition.
        {"Effect": "Allow", "Action": ["ecs:ListTasks", "ecs:RunTask"], "Resource": "*",
         "Condition": {"ArnLike": {"ecs:cluster": "arn:aws:ecs:*:*:cluster/prod"}}},
        {"Effect": "Allow", "Action": ["ecs:ListClusters", "ecs:RegisterTaskDefinition"],
         "Resource": "*"}))
    assert iam.list_role_policies(RoleName="deployer")["PolicyNames"] == ["tasks"]

    # Bad input changes nothing and says why.
    with pytest.raises(botocore.exceptions.ClientError) as e:
        iam.put_role_policy(RoleName="deployer", PolicyName="bad",
                            PolicyDocument='{"Statement": [{"Effect": "Allow", "Resource": "*"}]}')
    assert code(e) == "MalformedPolicyDocument"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        iam.put_role_policy(RoleName="deployer", PolicyName="p", PolicyDocument="{not json")
    assert code(e) == "MalformedPolicyDocument"
    assert iam.list_role_policies(RoleName="deployer")["PolicyNames"] == ["tasks"]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        iam.create_role(RoleName="deployer", AssumeRolePolicyDocument=trust(aws=ACCOUNT))
    assert code(e) == "EntityAlreadyExists"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        iam.create_role(RoleName="bad name", AssumeRolePolicyDocument=trust(aws=ACCOUNT))
    assert code(e) == "ValidationError"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        iam.delete_role(RoleName="deployer")
    assert code(e) == "DeleteConflict"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        iam.get_role(RoleName="nobody")
    assert code(e) == "NoSuchEntity"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sts.assume_role(RoleArn=role["Arn"], RoleSessionName="s1", DurationSeconds=7200)
    assert code(e) == "ValidationError"

    # A session does what the role's policies allow, nothing else.
    r = sts.assume_role(RoleArn=role["Arn"], RoleSessionName="ci-run-1")
    creds, user = r["Credentials"], r["AssumedRoleUser"]
    assert creds["AccessKeyId"].startswith("ASIA") and creds["SessionToken"]
    assert user["Arn"] == "arn:aws:sts::%s:assumed-role/deployer/ci-run-1" % ACCOUNT
    me = session_client(berth, creds, "sts").get_caller_identity()
    assert me["Arn"] == user["Arn"] and me["UserId"] == role["RoleId"] + ":ci-run-1"
    s_ecs = session_client(berth, creds)
    assert s_ecs.list_clusters()["clusterArns"]
    s_ecs.list_tasks(cluster="prod")
    td = s_ecs.register_task_definition(family="by-session", containerDefinitions=[
        {"name": "t", "image": "busybox", "memory": 16}])["taskDefinition"]
    assert td["registeredBy"] == user["Arn"]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s_ecs.describe_clusters(clusters=["prod"])
    assert code(e) == "AccessDeniedException"
    assert "assumed-role/deployer/ci-run-1" in e.value.response["Error"]["Message"]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s_ecs.create_cluster(clusterName="sneaky")
    assert code(e) == "AccessDeniedException"
    assert "sneaky" not in str(ecs.list_clusters()["clusterArns"])
    with pytest.raises(botocore.exceptions.ClientError) as e:
        session_client(berth, creds, "iam").create_role(
            RoleName="escalate", AssumeRolePolicyDocument=trust(aws=ACCOUNT))
    assert code(e) == "AccessDenied"
    # The same CLI call through the aws CLI with the session's credentials.
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(berth.env, AWS_ACCESS_KEY_ID=creds["AccessKeyId"],
               AWS_SECRET_ACCESS_KEY=creds["SecretAccessKey"], AWS_SESSION_TOKEN=creds["SessionToken"],
               AWS_CONFIG_FILE="/dev/null", AWS_SHARED_CREDENTIALS_FILE="/dev/null")
    p = subprocess.run(["aws", "ecs", "list-tasks", "--cluster", "prod", "--output", "json"],
                       capture_output=True, text=True, env=env)
    assert p.returncode == 0, p.stderr

    # Launching tasks that run as a role needs iam:PassRole on it.
    task_role = iam.create_role(RoleName="app-task", AssumeRolePolicyDocument=trust(
        service="ecs-tasks.amazonaws.com"))["Role"]["Arn"]
    ecs.register_task_definition(family="tool", taskRoleArn=task_role, containerDefinitions=[
        {"name": "t", "image": "busybox", "memory": 16}])
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s_ecs.run_task(cluster="prod", taskDefinition="tool")
    assert code(e) == "AccessDeniedException" and "iam:PassRole" in e.value.response["Error"]["Message"]
    iam.put_role_policy(RoleName="deployer", PolicyName="pass", PolicyDocument=policy(
        {"Effect": "Allow", "Action": "iam:PassRole", "Resource": task_role}))
    r = s_ecs.run_task(cluster="prod", taskDefinition="tool")
    assert r["failures"][0]["reason"].startswith("No Container Instances"), r
    iam.delete_role_policy(RoleName="deployer", PolicyName="pass")

    # A session in another cluster is refused by the condition.
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s_ecs.list_tasks(cluster="default")
    assert code(e) == "AccessDeniedException"

    # An explicit Deny wins over the Allow, on the resource AWS checks: RunTask's is the task
    # definition.
    iam.put_role_policy(RoleName="deployer", PolicyName="pass", PolicyDocument=policy(
        {"Effect": "Allow", "Action": "iam:PassRole", "Resource": task_role}))
    iam.put_role_policy(RoleName="deployer", PolicyName="deny", PolicyDocument=policy(
        {"Effect": "Deny", "Action": "ecs:*", "Resource": "arn:aws:ecs:*:*:task-definition/tool:*"}))
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s_ecs.run_task(cluster="prod", taskDefinition="tool")
    assert code(e) == "AccessDeniedException" and "explicit deny" in e.value.response["Error"]["Message"]
    assert "task-definition/tool:1" in e.value.response["Error"]["Message"]
    iam.delete_role_policy(RoleName="deployer", PolicyName="pass")
    # … and only there: operations on other resources are not refused.
    s_ecs.list_tasks(cluster="prod")
    assert s_ecs.list_clusters()["clusterArns"]
    s_ecs.register_task_definition(family="by-session", containerDefinitions=[
        {"name": "t", "image": "busybox", "memory": 16}])
    # … also when it names the cluster in a condition (ecs:cluster).
    prod = "arn:aws:ecs:%s:%s:cluster/prod" % (berth.env["AWS_REGION"], ACCOUNT)
    iam.put_role_policy(RoleName="deployer", PolicyName="deny", PolicyDocument=policy(
        {"Effect": "Deny", "Action": "ecs:*", "Resource": "*",
         "Condition": {"ArnEquals": {"ecs:cluster": prod}}}))
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s_ecs.list_tasks(cluster="prod")
    assert code(e) == "AccessDeniedException"
    assert s_ecs.list_clusters()["clusterArns"]
    iam.delete_role_policy(RoleName="deployer", PolicyName="deny")
    s_ecs.list_tasks(cluster="prod")

    # A tampered token is refused; the session survives a restart of the server.
    forged = dict(creds, SessionToken=creds["SessionToken"][:-2] + "AA")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        session_client(berth, forged).list_clusters()
    assert code(e) == "UnrecognizedClientException"
    berth.stop()
    berth.start()
    session_client(berth, creds).list_tasks(cluster="prod")
    iam = berth.client("iam")

    # A trust policy that does not name the caller refuses it.
    iam.create_role(RoleName="elsewhere", AssumeRolePolicyDocument=trust(aws="arn:aws:iam::111122223333:root"))
    with pytest.raises(botocore.exceptions.ClientError) as e:
        berth.client("sts").assume_role(RoleArn="arn:aws:iam::%s:role/elsewhere" % ACCOUNT,
                                        RoleSessionName="x1")
    assert code(e) == "AccessDenied"

    # Deleting the role ends its sessions.
    iam.delete_role_policy(RoleName="deployer", PolicyName="tasks")
    iam.delete_role(RoleName="deployer")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        session_client(berth, creds).list_tasks(cluster="prod")
    assert code(e) == "UnrecognizedClientException"
    listed = [r["RoleName"] for r in iam.list_roles()["Roles"]]
    assert listed == ["app-task", "elsewhere"]



def test_managed_policies_attach_to_roles(berth):
    iam, sts = berth.client("iam"), berth.client("sts")
    doc = policy({"Effect": "Allow", "Action": "ecs:ListClusters", "Resource": "*"})
    pol = berth.aws("iam", "create-policy", "--policy-name", "list-clusters", "--path", "/team/",
                    "--policy-document", doc, "--description", "read")["Policy"]
    arn = pol["Arn"]
    assert arn == "arn:aws:iam::%s:policy/team/list-clusters" % ACCOUNT
    assert pol["PolicyId"].startswith("ANPA") and pol["DefaultVersionId"] == "v1"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        iam.create_policy(PolicyName="list-clusters", PolicyDocument=doc)
    assert code(e) == "EntityAlreadyExists"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        iam.create_policy(PolicyName="broken", PolicyDocument='{"Statement": []')
    assert code(e) == "MalformedPolicyDocument"
    got = iam.get_policy_version(PolicyArn=arn, VersionId="v1")["PolicyVersion"]
    assert got["Document"]["Statement"][0]["Action"] == "ecs:ListClusters"

    iam.create_role(RoleName="reader", AssumeRolePolicyDocument=trust(aws=ACCOUNT))
    with pytest.raises(botocore.exceptions.ClientError) as e:
        iam.attach_role_policy(RoleName="reader",
                               PolicyArn="arn:aws:iam::aws:policy/NoSuchPolicyAnywhere")
    assert code(e) == "NoSuchEntity"
    iam.attach_role_policy(RoleName="reader", PolicyArn=arn)
    assert iam.list_attached_role_policies(RoleName="reader")["AttachedPolicies"] == [
        {"PolicyName": "list-clusters", "PolicyArn": arn}]
    assert iam.get_policy(PolicyArn=arn)["Policy"]["AttachmentCount"] == 1
    assert [p["Arn"] for p in iam.list_policies(Scope="Local", OnlyAttached=True)["Policies"]] == [arn]
    creds = sts.assume_role(RoleArn="arn:aws:iam::%s:role/reader" % ACCOUNT,
                            RoleSessionName="r1")["Credentials"]
    s_ecs = session_client(berth, creds)
    s_ecs.list_clusters()
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s_ecs.create_cluster(clusterName="x")
    assert code(e) == "AccessDeniedException"

    # Nothing attached can be deleted; detaching takes the permission away at once.
    with pytest.raises(botocore.exceptions.ClientError) as e:
        iam.delete_policy(PolicyArn=arn)
    assert code(e) == "DeleteConflict"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        iam.delete_role(RoleName="reader")
    assert code(e) == "DeleteConflict"
    iam.detach_role_policy(RoleName="reader", PolicyArn=arn)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s_ecs.list_clusters()
    assert code(e) == "AccessDeniedException"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        iam.detach_role_policy(RoleName="reader", PolicyArn=arn)
    assert code(e) == "NoSuchEntity"
    iam.delete_policy(PolicyArn=arn)

    # The AWS managed policies ECS set-ups attach by name are there, read-only.
    aws_names = {p["PolicyName"] for p in iam.list_policies(Scope="AWS")["Policies"]}
    assert {"AdministratorAccess", "ReadOnlyAccess", "AmazonECSTaskExecutionRolePolicy",
            "AmazonEC2ContainerRegistryReadOnly"} <= aws_names
    ro = "arn:aws:iam::aws:policy/ReadOnlyAccess"
    berth.aws("iam", "attach-role-policy", "--role-name", "reader", "--policy-arn",
              "arn:aws:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy")
    iam.attach_role_policy(RoleName="reader", PolicyArn=ro)
    s_ecs.list_clusters()
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s_ecs.create_cluster(clusterName="x")
    assert code(e) == "AccessDeniedException"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        iam.delete_policy(PolicyArn=ro)
    assert code(e) == "InvalidInput"
    for a in iam.list_attached_role_policies(RoleName="reader")["AttachedPolicies"]:
        iam.detach_role_policy(RoleName="reader", PolicyArn=a["PolicyArn"])
    iam.delete_role(RoleName="reader")
    assert iam.list_policies(Scope="Local")["Policies"] == []

def test_join_tokens_and_registry_pulls_follow_policies(berth):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    out = subprocess.run([BERTH, "token", "create", "--cluster", "default"], capture_output=True,
                         text=True, env={**env, **berth.env})
    assert out.returncode == 0, out.stderr
    key, secret = out.stdout.strip().split(":", 1)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        berth.client("iam", aws_access_key_id=key, aws_secret_access_key=secret).list_roles()
    assert code(e) == "AccessDenied"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        berth.client("sts", aws_access_key_id=key, aws_secret_access_key=secret).assume_role(
            RoleArn="arn:aws:iam::%s:role/any" % ACCOUNT, RoleSessionName="x1")
    assert code(e) == "AccessDenied"

    ecr, iam = berth.client("ecr"), berth.client("iam")
    for repo in ("team-a/app", "team-b/app"):
        ecr.create_repository(repositoryName=repo)
    iam.create_role(RoleName="puller", AssumeRolePolicyDocument=trust(aws=ACCOUNT))
    iam.put_role_policy(RoleName="puller", PolicyName="pull", PolicyDocument=policy(
        {"Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"},
        {"Effect": "Allow", "Action": ["ecr:ListImages", "ecr:BatchGetImage"],
         "Resource": "arn:aws:ecr:*:*:repository/team-a/*"}))
    creds = berth.client("sts").assume_role(
        RoleArn="arn:aws:iam::%s:role/puller" % ACCOUNT, RoleSessionName="ci")["Credentials"]
    s_ecr = session_client(berth, creds, "ecr")
    token = s_ecr.get_authorization_token()["authorizationData"][0]["authorizationToken"]
    s_ecr.list_images(repositoryName="team-a/app")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s_ecr.list_images(repositoryName="team-b/app")
    assert code(e) == "AccessDeniedException"

    def tags(repo, auth):
        req = urllib.request.Request("%s/v2/%s/tags/list" % (berth.endpoint, repo),
                                     headers={"Authorization": "Basic " + auth})
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status
        except urllib.error.HTTPError as err:
            return err.code
    # docker/podman's view: the registry password of the session pulls where the role may.
    assert tags("team-a/app", token) == 200
    assert tags("team-b/app", token) == 403
    iam.delete_role_policy(RoleName="puller", PolicyName="pull")
    iam.delete_role(RoleName="puller")
    assert tags("team-a/app", token) == 401
    # A join token's registry password pulls, but may not push.
    t_ecr = berth.client("ecr", aws_access_key_id=key, aws_secret_access_key=secret)
    ttoken = t_ecr.get_authorization_token()["authorizationData"][0]["authorizationToken"]
    assert tags("team-b/app", ttoken) == 403  # ecr:ListImages is not an agent operation
    req = urllib.request.Request("%s/v2/team-b/app/blobs/uploads/" % berth.endpoint, method="POST",
                                 headers={"Authorization": "Basic " + ttoken})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=5)
    assert e.value.code == 403
    assert base64.b64decode(ttoken).startswith(b"AWS:")


def _creds_in_logs(node, arn):
    """The credentials documents a task's container printed, in order, and the URIs it used."""
    p = subprocess.run([BERTH, "logs", arn, "--data-dir", node.data_dir], capture_output=True,
                       text=True, env={k: v for k, v in os.environ.items() if not k.startswith("AWS_")})
    docs, uris = [], set()
    for line in p.stdout.splitlines():
        line = line.strip()
        if line.startswith("URI="):
            uris.add(line[4:])
        elif line.startswith("{"):
            try:
                docs.append(json.loads(line))
            except ValueError:
                pass
    return docs, uris


@pytest.mark.skipif(os.geteuid() != 0, reason="the local node needs root")
def test_task_role_credentials_reach_containers_and_renew(data_dir):
    from test_tasks import running_node
    with running_node(data_dir, ["--task-credentials-ttl", "20"]) as node:
        iam = node.client("iam")
        role = iam.create_role(RoleName="app", AssumeRolePolicyDocument=trust(
            service="ecs-tasks.amazonaws.com",
            condition={"StringEquals": {"aws:SourceAccount": ACCOUNT}}))["Role"]["Arn"]
        iam.put_role_policy(RoleName="app", PolicyName="list", PolicyDocument=policy(
            {"Effect": "Allow", "Action": "ecs:ListClusters", "Resource": "*"}))
        image = node.push_busybox("creds")

        # bridge: the relative URI on 169.254.170.2, as ECS sets it.
        fetch = ('while true; do echo "URI=$AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"; '
                 'wget -q -O- "http://169.254.170.2$AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"; echo; '
                 'sleep 1; done')
        arn = node.run("creds", [{"name": "c", "image": image, "memory": 32, "essential": True,
                                  "entryPoint": ["/bin/sh", "-c", fetch]}],
                       networkMode="bridge", taskRoleArn=role)
        node.wait_task(arn, "RUNNING")
        deadline = time.time() + 40
        docs, uris = [], set()
        while time.time() < deadline:
            docs, uris = _creds_in_logs(node, arn)
            if len({d["AccessKeyId"] for d in docs}) >= 2:
                break
            time.sleep(1)
        keys = [d["AccessKeyId"] for d in docs]
        assert len(set(keys)) >= 2, "renewed within 40 s: %s\n%s" % (docs[:1], node.log())
        assert len(uris) == 1 and next(iter(uris)).startswith("/v2/credentials/"), uris
        latest = docs[-1]
        assert latest["RoleArn"] == role and latest["Expiration"].endswith("Z")
        # They are the role's: allowed what it allows, nothing more.
        assert session_client(node, latest).list_clusters()["clusterArns"]
        with pytest.raises(botocore.exceptions.ClientError) as e:
            session_client(node, latest).create_cluster(clusterName="nope")
        assert code(e) == "AccessDeniedException"
        me = session_client(node, latest, "sts").get_caller_identity()
        assert me["Arn"] == "arn:aws:sts::%s:assumed-role/app/%s" % (ACCOUNT, arn.rsplit("/", 1)[1])
        node.client().stop_task(cluster="default", task=arn)
        node.wait_task(arn, "STOPPED", timeout=15)

        # host: the full URI on loopback, which the aws CLI's own container provider reads.
        show = 'echo "URI=$AWS_CONTAINER_CREDENTIALS_FULL_URI"; sleep 300'
        arn = node.run("creds-host", [{"name": "c", "image": image, "memory": 32, "essential": True,
                                       "entryPoint": ["/bin/sh", "-c", show]}],
                       networkMode="host", taskRoleArn=role)
        node.wait_task(arn, "RUNNING")
        deadline = time.time() + 10
        uris = set()
        while time.time() < deadline and not uris:
            uris = _creds_in_logs(node, arn)[1]
            time.sleep(0.2)
        (uri,) = uris
        assert uri.startswith("http://127.0.0.1:") and "/v2/credentials/" in uri, uri
        env = {"PATH": os.environ["PATH"], "AWS_CONTAINER_CREDENTIALS_FULL_URI": uri,
               "AWS_ENDPOINT_URL": node.endpoint, "AWS_REGION": node.env["AWS_REGION"],
               "AWS_DEFAULT_REGION": node.env["AWS_REGION"],
               "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
               "AWS_EC2_METADATA_DISABLED": "true"}
        p = subprocess.run(["aws", "sts", "get-caller-identity", "--output", "json"],
                           capture_output=True, text=True, env=env)
        assert p.returncode == 0, p.stderr
        assert json.loads(p.stdout)["Arn"].startswith("arn:aws:sts::%s:assumed-role/app/" % ACCOUNT)
        node.client().stop_task(cluster="default", task=arn)
        node.wait_task(arn, "STOPPED", timeout=15)
        # A stopped task's credentials are no longer served.
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(uri, timeout=5)
        assert e.value.code == 400

        # A role that does not trust ECS tasks is refused at RunTask; nothing is placed.
        iam.update_assume_role_policy(RoleName="app", PolicyDocument=trust(aws=ACCOUNT))
        ecs = node.client()
        with pytest.raises(botocore.exceptions.ClientError) as e:
            ecs.run_task(cluster="default", taskDefinition="creds")
        assert code(e) == "ClientException" and "unable to assume the role" in str(e.value)


def test_conditions_on_the_connection(berth):
    """aws:SecureTransport and aws:SourceIp come from the connection the request came on (it
    was a known key never supplied, so `Deny … SecureTransport false` never applied)."""
    iam = berth.client("iam")
    iam.create_role(RoleName="net", AssumeRolePolicyDocument=trust(aws=ACCOUNT))
    iam.put_role_policy(RoleName="net", PolicyName="p", PolicyDocument=policy(
        {"Effect": "Allow", "Action": "ecs:List*", "Resource": "*",
         "Condition": {"IpAddress": {"aws:SourceIp": "127.0.0.0/8"}}}))
    creds = berth.client("sts").assume_role(
        RoleArn="arn:aws:iam::%s:role/net" % ACCOUNT, RoleSessionName="s1")["Credentials"]
    s_ecs = session_client(berth, creds)
    assert "clusterArns" in s_ecs.list_clusters()
    iam.put_role_policy(RoleName="net", PolicyName="tls", PolicyDocument=policy(
        {"Effect": "Deny", "Action": "*", "Resource": "*",
         "Condition": {"Bool": {"aws:SecureTransport": "false"}}}))
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s_ecs.list_clusters()
    assert code(e) == "AccessDeniedException" and "explicit deny" in str(e.value)
    iam.delete_role_policy(RoleName="net", PolicyName="tls")
    iam.put_role_policy(RoleName="net", PolicyName="p", PolicyDocument=policy(
        {"Effect": "Allow", "Action": "ecs:List*", "Resource": "*",
         "Condition": {"IpAddress": {"aws:SourceIp": "192.0.2.0/24"}}}))
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s_ecs.list_clusters()
    assert code(e) == "AccessDeniedException"


def test_typed_requests_refuse_what_berth_does_not_honour(berth):
    """IAM and STS decode into the models' typed requests: a member berth does not honour is
    refused (it used to be dropped silently), constraints read as IAM words, and ExternalId
    reaches the trust policy's sts:ExternalId condition."""
    iam, sts = berth.client("iam"), berth.client("sts")
    doc = trust(aws=ACCOUNT, condition={"StringEquals": {"sts:ExternalId": "x-123"}})
    with pytest.raises(botocore.exceptions.ClientError) as e:
        iam.create_role(RoleName="bounded", AssumeRolePolicyDocument=doc,
                        PermissionsBoundary="arn:aws:iam::aws:policy/ReadOnlyAccess")
    assert code(e) == "ValidationError" and "PermissionsBoundary" in str(e.value)
    with pytest.raises(botocore.exceptions.ClientError):
        iam.get_role(RoleName="bounded")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        iam.get_role(RoleName="x" * 65)
    assert code(e) == "ValidationError" and "roleName" in str(e.value)

    arn = iam.create_role(RoleName="partner", AssumeRolePolicyDocument=doc)["Role"]["Arn"]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sts.assume_role(RoleArn=arn, RoleSessionName="s1", ExternalId="wrong")
    assert code(e) == "AccessDenied"
    creds = sts.assume_role(RoleArn=arn, RoleSessionName="s1", ExternalId="x-123")["Credentials"]
    assert creds["AccessKeyId"].startswith("ASIA")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sts.assume_role(RoleArn=arn, RoleSessionName="s1", ExternalId="x-123",
                        Policy=policy({"Effect": "Allow", "Action": "*", "Resource": "*"}))
    assert code(e) == "ValidationError" and "session policies" in str(e.value)
    # Paging of attached policies, with the marker IAM hands out.
    for name in ("ReadOnlyAccess", "AmazonECS_FullAccess"):
        iam.attach_role_policy(RoleName="partner", PolicyArn="arn:aws:iam::aws:policy/" + name)
    page = iam.list_attached_role_policies(RoleName="partner", MaxItems=1)
    assert page["IsTruncated"] and len(page["AttachedPolicies"]) == 1
    rest = iam.list_attached_role_policies(RoleName="partner", Marker=page["Marker"])
    assert not rest["IsTruncated"]
    assert {p["PolicyName"] for p in page["AttachedPolicies"] + rest["AttachedPolicies"]} == {
        "ReadOnlyAccess", "AmazonECS_FullAccess"}
