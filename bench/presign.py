#!/usr/bin/env python3
"""Set up a berth for the API benchmark and write wrk scripts that replay signed requests.

A SigV4 signature stays valid for 15 minutes, so one signed request can be replayed by wrk;
berth still verifies every signature in full on every request (only the derived signing key
is cached, as the AWS SDKs do).

usage: presign.py OUT_DIR   (reads AWS_ENDPOINT_URL etc. from the environment, see `berth env`)
"""
import json
import os
import sys

import boto3
import botocore.auth
import botocore.awsrequest
import botocore.credentials

out = sys.argv[1]
endpoint = os.environ["AWS_ENDPOINT_URL"]
region = os.environ["AWS_REGION"]
creds = botocore.credentials.Credentials(os.environ["AWS_ACCESS_KEY_ID"],
                                         os.environ["AWS_SECRET_ACCESS_KEY"])
ecs = boto3.client("ecs", endpoint_url=endpoint, region_name=region,
                   aws_access_key_id=creds.access_key, aws_secret_access_key=creds.secret_key)

# A cluster with some life in it: 10 instances, 100 tasks.
ecs.create_cluster(clusterName="bench")
ecs.register_task_definition(family="bench", containerDefinitions=[
    {"name": "a", "image": "busybox", "memory": 32, "cpu": 10}])
for i in range(10):
    ecs.register_container_instance(cluster="bench", totalResources=[
        {"name": "CPU", "type": "INTEGER", "integerValue": 4096},
        {"name": "MEMORY", "type": "INTEGER", "integerValue": 16384}],
        attributes=[{"name": "ecs.availability-zone", "value": "zone-%d" % (i % 3)}])
tasks = []
for _ in range(10):
    tasks += [t["taskArn"] for t in ecs.run_task(cluster="bench", taskDefinition="bench", count=10)["tasks"]]


def lua(name, op, body, creds=creds):
    data = json.dumps(body)
    req = botocore.awsrequest.AWSRequest(
        method="POST", url=endpoint + "/", data=data,
        headers={"Content-Type": "application/x-amz-json-1.1",
                 "X-Amz-Target": "AmazonEC2ContainerServiceV20141113." + op})
    botocore.auth.SigV4Auth(creds, "ecs", region).add_auth(req)
    lines = ['wrk.method = "POST"', "wrk.body = %s" % json.dumps(data)]
    for k, v in req.headers.items():
        lines.append("wrk.headers[%s] = %s" % (json.dumps(k), json.dumps(v)))
    # Fail loudly if berth refuses: a benchmark of error answers would be meaningless.
    lines.append("response = function(status, headers, body) "
                 "if status ~= 200 then io.stderr:write('HTTP ' .. status .. ' ' .. body .. '\\n'); os.exit(1) end end")
    with open(os.path.join(out, name + ".lua"), "w") as f:
        f.write("\n".join(lines) + "\n")
    # The answer, for the static-file peer.
    resp = getattr(ecs, {"DescribeClusters": "describe_clusters",
                         "DescribeTasks": "describe_tasks"}[op])(**body)
    resp.pop("ResponseMetadata", None)
    with open(os.path.join(out, name + ".json"), "w") as f:
        f.write(json.dumps(resp, default=str))


lua("describe_clusters", "DescribeClusters", {"clusters": ["bench"], "include": ["STATISTICS"]})
lua("describe_tasks", "DescribeTasks", {"cluster": "bench", "tasks": tasks[:1]})

# The same DescribeClusters signed by a role session: every request also checks the session
# token and evaluates the role's policies.
iam = boto3.client("iam", endpoint_url=endpoint, region_name=region,
                   aws_access_key_id=creds.access_key, aws_secret_access_key=creds.secret_key)
sts = boto3.client("sts", endpoint_url=endpoint, region_name=region,
                   aws_access_key_id=creds.access_key, aws_secret_access_key=creds.secret_key)
account = sts.get_caller_identity()["Account"]
iam.create_role(RoleName="bench", AssumeRolePolicyDocument=json.dumps({
    "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"AWS": account},
                                            "Action": "sts:AssumeRole"}]}))
iam.put_role_policy(RoleName="bench", PolicyName="read", PolicyDocument=json.dumps({
    "Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["ecs:Describe*", "ecs:List*"], "Resource": "*"},
        {"Effect": "Deny", "Action": "ecs:*", "Resource": "arn:aws:ecs:*:*:cluster/secret"}]}))
s_creds = sts.assume_role(RoleArn="arn:aws:iam::%s:role/bench" % account,
                          RoleSessionName="bench")["Credentials"]
lua("describe_clusters_session", "DescribeClusters",
    {"clusters": ["bench"], "include": ["STATISTICS"]},
    creds=botocore.credentials.Credentials(s_creds["AccessKeyId"], s_creds["SecretAccessKey"],
                                           s_creds["SessionToken"]))
print("ok")
