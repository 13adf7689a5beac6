#!/usr/bin/env python3
"""Write the seed inputs of every fuzz target into fuzz/corpus/<target>/seed-*.

Seeds are small real inputs: requests signed by botocore (the AWS SDK's signer) at the SigV4
target's fixed clock, request bodies as the AWS CLI sends them, manifests shaped like the
e2e images', layers built with Python's tarfile (symlinks, hard links, whiteouts, escapes),
agent protocol frames as ECS and berth send them. Run with the venv that has botocore:
    /work/venv/bin/python fuzz/seeds.py
bench/fuzz.sh grows the corpora from these; the replay test runs every file.
"""
import datetime
import gzip
import hashlib
import io
import json
import os
import sys
import tarfile

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")

# The SigV4 target's key and clock (fuzz/src/lib.rs: ACCESS_KEY, SECRET_KEY, NOW).
AKID = "AKIDEXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
NOW = datetime.datetime(2024, 5, 1, 12, 0, 0)


def put(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


def raw(method, url_path, headers, body=b""):
    head = "%s %s\n" % (method, url_path)
    head += "".join("%s: %s\n" % (k, v) for k, v in headers.items())
    return head.encode() + b"\n" + (body if isinstance(body, bytes) else body.encode())


def sigv4():
    import botocore.auth
    import botocore.awsrequest
    import botocore.credentials

    botocore.auth.get_current_datetime = lambda *a, **k: NOW
    creds = botocore.credentials.Credentials(AKID, SECRET)
    token_creds = botocore.credentials.Credentials(AKID, SECRET, "session-token-value")

    def signed(method, url, body, headers, service, creds=creds, presign=None):
        req = botocore.awsrequest.AWSRequest(method=method, url=url, data=body, headers=headers)
        if presign:
            botocore.auth.SigV4QueryAuth(creds, service, "us-east-1", expires=presign).add_auth(req)
        else:
            botocore.auth.SigV4Auth(creds, service, "us-east-1").add_auth(req)
        p = req.prepare()
        target = p.url.split("://", 1)[1]
        target = target[target.index("/"):]
        hs = {"host": "localhost:9400"}
        hs.update({k: v for k, v in p.headers.items()})
        return raw(method, target, hs, body or b"")

    ecs = {"X-Amz-Target": "AmazonEC2ContainerServiceV20141113.ListClusters",
           "Content-Type": "application/x-amz-json-1.1"}
    put("sigv4", "ecs-header", signed("POST", "http://localhost:9400/", b"{}", ecs, "ecs"))
    put("sigv4", "ecs-session-token",
        signed("POST", "http://localhost:9400/", b'{"cluster":"default"}', ecs, "ecs", token_creds))
    form = "Action=GetCallerIdentity&Version=2011-06-15"
    put("sigv4", "sts-form", signed("POST", "http://localhost:9400/", form.encode(),
                                    {"Content-Type": "application/x-www-form-urlencoded"}, "sts"))
    put("sigv4", "sts-presigned", signed(
        "GET", "http://localhost:9400/?Action=GetCallerIdentity&Version=2011-06-15", b"", {},
        "sts", presign=900))
    put("sigv4", "iam-query-encoded", signed(
        "GET", "http://localhost:9400/a%20b/c?Action=ListRoles&PathPrefix=%2Fx%2B&Version=2010-05-08",
        b"", {"X-Amz-Content-SHA256": hashlib.sha256(b"").hexdigest()}, "iam"))
    put("sigv4", "unsigned", raw("POST", "/", {"host": "localhost"}, "{}"))


def awsjson():
    bodies = {
        "ecs:ListClusters": {},
        "ecs:CreateCluster": {"clusterName": "prod", "tags": [{"key": "team", "value": "a"}],
                              "settings": [{"name": "containerInsights", "value": "enabled"}]},
        "ecs:RegisterTaskDefinition": {
            "family": "web", "networkMode": "bridge", "cpu": "0.25 vCPU", "memory": "512",
            "requiresCompatibilities": ["EC2"],
            "containerDefinitions": [{
                "name": "app", "image": "localhost:9400/app:latest", "essential": True,
                "cpu": 128, "memory": 256, "memoryReservation": 128,
                "command": ["sh", "-c", "sleep 1"], "environment": [{"name": "A", "value": "1"}],
                "portMappings": [{"containerPort": 80, "hostPort": 8080, "protocol": "tcp"}],
                "healthCheck": {"command": ["CMD", "true"], "interval": 5, "retries": 3},
                "dependsOn": [{"containerName": "side", "condition": "START"}],
                "ulimits": [{"name": "nofile", "softLimit": 1024, "hardLimit": 2048}],
                "resourceRequirements": [{"type": "GPU", "value": "1"}],
                "mountPoints": [{"sourceVolume": "data", "containerPath": "/data"}]},
                {"name": "side", "image": "busybox", "essential": False, "memory": 64}],
            "volumes": [{"name": "data", "host": {"sourcePath": "/srv/data"}}],
            "placementConstraints": [{"type": "memberOf", "expression": "attribute:stack == prod"}]},
        "ecs:RunTask": {"cluster": "default", "taskDefinition": "web:1", "count": 2,
                        "placementConstraints": [{"type": "memberOf",
                                                  "expression": "attribute:ecs.availability-zone == zone-b"}],
                        "placementStrategy": [{"type": "spread", "field": "instanceId"}],
                        "overrides": {"containerOverrides": [{"name": "app", "command": ["true"]}]}},
        "ecs:CreateService": {"serviceName": "web", "taskDefinition": "web", "desiredCount": 3,
                              "deploymentConfiguration": {"maximumPercent": 200,
                                                          "minimumHealthyPercent": 50}},
        "ecs:SubmitTaskStateChange": {"cluster": "default", "task": "arn:aws:ecs:us-east-1:000000000000:task/default/abc",
                                      "status": "RUNNING", "containers": [{"containerName": "app", "exitCode": 0}]},
        "ecs:RegisterContainerInstance": {"cluster": "default", "totalResources": [
            {"name": "CPU", "type": "INTEGER", "integerValue": 2048},
            {"name": "PORTS", "type": "STRINGSET", "stringSetValue": ["22"]}],
            "attributes": [{"name": "ecs.os-type", "value": "linux"}]},
        "ecs:ListContainerInstances": {"filter": "attribute:ecs.os-type == linux", "maxResults": 10},
        "ecs:TagResource": {"resourceArn": "arn:aws:ecs:us-east-1:000000000000:cluster/default",
                            "tags": [{"key": "k", "value": "v"}]},
        "ecr:CreateRepository": {"repositoryName": "app/web", "imageTagMutability": "IMMUTABLE"},
        "ecr:PutImage": {"repositoryName": "app", "imageManifest": "{}", "imageTag": "v1"},
        "ecr:BatchGetImage": {"repositoryName": "app", "imageIds": [{"imageTag": "latest"},
                                                                    {"imageDigest": "sha256:" + "ab" * 32}]},
        "ecr:PutLifecyclePolicy": {"repositoryName": "app", "lifecyclePolicyText": "{\"rules\":[]}"},
        "ecr:GetAuthorizationToken": {},
    }
    for op, body in bodies.items():
        put("awsjson", op.replace(":", "-"), op + "\n" + json.dumps(body))


def query():
    put("query", "create-role", "Action=CreateRole&Version=2010-05-08&RoleName=app&Path=%2F"
        "&AssumeRolePolicyDocument=%7B%22Version%22%3A%222012-10-17%22%2C%22Statement%22%3A%5B%7B"
        "%22Effect%22%3A%22Allow%22%2C%22Principal%22%3A%7B%22Service%22%3A%22ecs-tasks.amazonaws.com"
        "%22%7D%2C%22Action%22%3A%22sts%3AAssumeRole%22%7D%5D%7D"
        "&Tags.member.1.Key=team&Tags.member.1.Value=a+b&Tags.member.2.Key=x")
    put("query", "assume-role", "Action=AssumeRole&Version=2011-06-15&RoleArn=arn%3Aaws%3Aiam%3A%3A"
        "000000000000%3Arole%2Fapp&RoleSessionName=s1&DurationSeconds=900")
    put("query", "list", "Action=ListRoles&MaxItems=10&Marker=abc&PathPrefix=%2F")


def manifests():
    d = lambda s: "sha256:" + hashlib.sha256(s).hexdigest()
    oci = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                      "digest": d(b"config"), "size": 1469},
           "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                       "digest": d(b"layer"), "size": 2811478}],
           "annotations": {"org.opencontainers.image.created": "2024-05-01T12:00:00Z"}}
    put("manifest", "oci", "application/vnd.oci.image.manifest.v1+json\n" + json.dumps(oci))
    docker = dict(oci, mediaType="application/vnd.docker.distribution.manifest.v2+json")
    docker["config"] = dict(oci["config"], mediaType="application/vnd.docker.container.image.v1+json")
    put("manifest", "docker", "\n" + json.dumps(docker))
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
             "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                            "digest": d(b"m1"), "size": 525,
                            "platform": {"architecture": "amd64", "os": "linux"}},
                           {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                            "digest": d(b"m2"), "size": 525,
                            "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}}]}
    put("manifest", "index", "\n" + json.dumps(index))
    artifact = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "artifactType": "application/vnd.example.sbom",
                "config": {"mediaType": "application/vnd.oci.empty.v1+json",
                           "digest": d(b"{}"), "size": 2},
                "layers": [], "subject": {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                                          "digest": d(b"m1"), "size": 525}}
    put("manifest", "artifact", "application/vnd.oci.image.manifest.v1+json; charset=utf-8\n"
        + json.dumps(artifact))


def layers():
    def tar(entries, gz=False):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as t:
            for kind, name, arg in entries:
                ti = tarfile.TarInfo(name)
                ti.mtime = 1714564800
                data = None
                if kind == "dir":
                    ti.type, ti.mode = tarfile.DIRTYPE, 0o755
                elif kind == "file":
                    data = arg
                    ti.size, ti.mode = len(data), 0o644
                elif kind == "sym":
                    ti.type, ti.linkname = tarfile.SYMTYPE, arg
                elif kind == "hard":
                    ti.type, ti.linkname = tarfile.LNKTYPE, arg
                elif kind == "fifo":
                    ti.type = tarfile.FIFOTYPE
                elif kind == "dev":
                    ti.type, ti.devmajor, ti.devminor = tarfile.CHRTYPE, 1, 3
                t.addfile(ti, io.BytesIO(data) if data is not None else None)
        out = buf.getvalue()
        return gzip.compress(out, mtime=0) if gz else out

    base = [("dir", "etc", None), ("file", "etc/hostname", b"box\n"), ("dir", "bin", None),
            ("file", "bin/sh", b"#!\n"), ("sym", "bin/ash", "sh"), ("hard", "bin/hush", "bin/sh"),
            ("fifo", "run.fifo", None)]
    put("layer", "base.tar", tar(base))
    put("layer", "base.tar.gz", tar(base, gz=True))
    put("layer", "whiteouts.tar", tar([("dir", "etc", None), ("file", "etc/.wh.hostname", b""),
                                       ("file", "bin/.wh..wh..opq", b""), ("file", "new", b"x"),
                                       ("file", ".wh..wh.plnk", b"")]))
    put("layer", "escapes.tar", tar([("file", "../outside/canary", b"pwned"),
                                     ("sym", "up", "../outside"), ("file", "up/x", b"pwned"),
                                     ("file", "escape/y", b"pwned"),
                                     ("hard", "h", "../outside/canary"),
                                     ("file", "/abs", b"absolute"), ("dev", "null", None),
                                     ("file", ".wh...", b"")]))
    put("layer", "replace.tar", tar([("file", "a", b"1"), ("dir", "a", None), ("file", "a/b", b"2"),
                                     ("sym", "a", "/etc"), ("file", "a/c", b"3")]))


def cql():
    for i, e in enumerate([
        "attribute:ecs.availability-zone == zone-b",
        "attribute:ecs.instance-type =~ large.*",
        "agentConnected == true and agentVersion >= 1.97.0",
        "not(task:group == service:web) || runningTasksCount < 3",
        "attribute:stack in [prod, 'stage', \"dev\"] && attribute:flag exists",
        "registeredAt > 2018-06-18T22:28:28+00:00 and ec2InstanceId !in ['i-1']",
        "!(attribute:version not_matches '1\\..*')",
        "2018-06-18T22:28:28Z",
    ]):
        put("cql", str(i), e)


def policies():
    docs = [
        {"Version": "2012-10-17", "Statement": [
            {"Sid": "a", "Effect": "Allow", "Action": ["ecs:Run*", "ecs:Describe?asks"],
             "Resource": "arn:aws:ecs:*:*:task-definition/${aws:username}*",
             "Condition": {"StringEquals": {"aws:SourceAccount": "000000000000"},
                           "ArnLike": {"ecs:cluster": "arn:aws:ecs:*:*:cluster/def*"}}},
            {"Sid": "b", "Effect": "Deny", "NotAction": "iam:*", "NotResource": "*",
             "Condition": {"NumericLessThan": {"aws:EpochTime": "1"},
                           "Bool": {"aws:SecureTransport": "false"}}}]},
        {"Version": "2012-10-17", "Statement": {
            "Effect": "Allow", "Principal": {"Service": ["ecs-tasks.amazonaws.com"],
                                             "AWS": "arn:aws:iam::000000000000:root"},
            "Action": "sts:AssumeRole",
            "Condition": {"StringLike": {"sts:RoleSessionName": "${aws:username}-*"}}}},
        {"Version": "2008-10-17", "Statement": [{"Effect": "Allow", "Principal": "*",
                                                 "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]}]},
        {"rules": [{"rulePriority": 1, "description": "keep two prod images",
                    "selection": {"tagStatus": "tagged", "tagPrefixList": ["prod"],
                                  "countType": "imageCountMoreThan", "countNumber": 2},
                    "action": {"type": "expire"}},
                   {"rulePriority": 2, "selection": {"tagStatus": "untagged", "countType": "sinceImagePushed",
                                                     "countUnit": "days", "countNumber": 14},
                    "action": {"type": "expire"}},
                   {"rulePriority": 3, "selection": {"tagStatus": "tagged", "tagPatternList": ["v*-rc?"],
                                                     "countType": "imageCountMoreThan", "countNumber": 1},
                    "action": {"type": "expire"}}]},
    ]
    for i, doc in enumerate(docs):
        put("policy", str(i), json.dumps(doc))


def frames():
    task = {"arn": "arn:aws:ecs:us-east-1:000000000000:task/default/abc", "family": "web",
            "version": "1", "desiredStatus": "RUNNING", "taskDefinitionAccessPolicy": "",
            "containers": [{
                "name": "app", "image": "busybox", "cpu": 128, "memory": 256, "essential": True,
                "command": ["sleep", "60"], "environment": {"A": "1"},
                "portMappings": [{"containerPort": 80, "hostPort": 0, "protocol": "tcp"}],
                "mountPoints": [{"sourceVolume": "data", "containerPath": "/data", "readOnly": True}],
                "dependsOn": [{"containerName": "side", "condition": "HEALTHY"}],
                "dockerConfig": {
                    "config": json.dumps({"User": "1000", "WorkingDir": "/app", "Labels": {"a": "b"},
                                          "Healthcheck": {"Test": ["CMD", "true"], "Interval": 5000000000,
                                                          "Retries": 3, "StartPeriod": 0}}),
                    "hostConfig": json.dumps({"Ulimits": [{"Name": "nofile", "Soft": 1024, "Hard": 2048}],
                                              "MemoryReservation": 134217728, "ReadonlyRootfs": True})}}],
            "volumes": [{"name": "data", "type": "host", "host": {"sourcePath": "/srv"}}],
            "roleCredentials": {"credentialsId": "c1", "accessKeyId": "ASIA", "roleArn": "arn:aws:iam::000000000000:role/app"}}
    out = {
        "payload": {"type": "PayloadMessage", "message": {"messageId": "p1", "clusterArn": "c",
                                                          "containerInstanceArn": "i", "tasks": [task],
                                                          "seqNum": 1}},
        "credentials": {"type": "IAMRoleCredentialsMessage", "message": {
            "messageId": "m1", "taskArn": "t", "roleType": "TaskApplication",
            "roleCredentials": {"credentialsId": "c1", "accessKeyId": "AK", "secretAccessKey": "SK",
                                "sessionToken": "TK", "expiration": "2026-11-23T21:00:00Z"}}},
        "health": {"type": "PublishHealthRequest", "message": {
            "cluster": "default", "containerInstance": "i", "timestamp": "2024-05-01T12:00:00Z",
            "tasks": [{"taskArn": "t", "containers": [{"containerName": "app", "healthStatus": "HEALTHY",
                                                        "statusSince": "2024-05-01T12:00:00Z"}]}]}},
        "metrics": {"type": "PublishMetricsRequest", "message": {
            "instanceMetrics": {"storage": {"readSizeBytes": {"min": 0, "max": 1, "sampleCount": 1, "sum": 1}}},
            "metadata": {"cluster": "default", "containerInstance": "i", "idle": False, "fin": True,
                         "messageId": "x"},
            "taskMetrics": [{"taskArn": "t", "containerMetrics": [{"containerName": "app",
                "cpuStatsSet": {"min": 0.5, "max": 1.5, "sampleCount": 2, "sum": 2.0},
                "memoryStatsSet": {"min": 1, "max": 2, "sampleCount": 2, "sum": 3}}]}]}},
        "stop-verification": {"type": "TaskStopVerificationMessage", "message": {
            "messageId": "v1", "stopCandidates": [{"taskArn": "t"}]}},
        "network": {"type": "BerthTaskNetwork", "message": {"taskArn": "t", "privateIpv4": "10.0.0.2",
                                                            "mac": "02:00:00:00:00:01", "subnet": "10.0.0.0/24"}},
    }
    for name, f in out.items():
        put("frames", name, json.dumps(f))
    put("frames", "tcs-signed-headers", "Authorization: AWS4-HMAC-SHA256 x\r\nX-Amz-Date: 20240501T120000Z\r\n\r\n"
        + json.dumps(out["health"]))


def ranges():
    for i, v in enumerate(["0-1023", "bytes 1024-2047/4096", "bytes=0-", "bytes=-100", "bytes=5-9",
                           "bytes=0-0,5-9", "a%2Fb%zz+c%e9", "%a\u00e9"]):
        put("ranges", str(i), v)


def refs():
    h = hashlib.sha256(b"x").hexdigest()
    for i, r in enumerate([
        "sha256:" + h, "sha512:" + "ab" * 64, "v1.0_rc-1", "app/web", "a__b.c--d/e",
        "localhost:9400/app/web:latest", "registry.example.com/app@sha256:" + h,
        "repository:app/web:pull,push", "registry:catalog:*", "0.25 vCPU", "2 GB", "512MiB",
    ]):
        put("refs", str(i), r)


def tokens():
    put("tokens", "basic", "Basic QVdTOnNlY3JldA==")
    put("tokens", "bearer", "YjEuMTcxNDU2ODQwMC5jbVZ3YjNOcGRHOXllVHBoY0hBNmNIVnNiQS5BS0lEODg4LmFi")
    put("tokens", "session", "ASIAEXAMPLE\nYjF8QVNJQXxyfHJpZHxzfDF8Mg.c2VhbA")


if __name__ == "__main__":
    for f in (sigv4, awsjson, query, manifests, layers, cql, policies, frames, ranges, refs, tokens):
        f()
    print("seeds written to", CORPUS, file=sys.stderr)
