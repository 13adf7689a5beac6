"""What must hold whatever clients do: restarts and kills lose nothing acknowledged, bad
signatures are refused, malformed input gets AWS's error and changes nothing, pagination
walks everything exactly once."""

import json
import os
import urllib.error
import urllib.request

import botocore.auth
import botocore.awsrequest
import botocore.credentials
import pytest

from conftest import Berth, register_instance

TARGET = "AmazonEC2ContainerServiceV20141113."


def raw(berth, op, body, sign=True, secret=None, headers=None, service="ecs", region=None,
        target=None):
    """Send one request by hand; returns (status, headers, parsed body)."""
    data = body if isinstance(body, (bytes, bytearray)) else body.encode()
    h = {"Content-Type": "application/x-amz-json-1.1",
         "X-Amz-Target": target if target is not None else TARGET + op}
    h.update(headers or {})
    req = botocore.awsrequest.AWSRequest(method="POST", url=berth.endpoint + "/", data=data, headers=h)
    if sign:
        creds = botocore.credentials.Credentials(berth.env["AWS_ACCESS_KEY_ID"],
                                                 secret or berth.env["AWS_SECRET_ACCESS_KEY"])
        botocore.auth.SigV4Auth(creds, service, region or berth.env["AWS_REGION"]).add_auth(req)
    prepared = req.prepare()
    r = urllib.request.Request(prepared.url, data=prepared.body, method="POST",
                               headers=dict(prepared.headers))
    try:
        with urllib.request.urlopen(r, timeout=10) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as e:
        payload = e.read()
        try:
            parsed = json.loads(payload)
        except ValueError:
            parsed = payload.decode(errors="replace")
        return e.code, {k.lower(): v for k, v in e.headers.items()}, parsed


def snapshot(ecs):
    """Everything a user can list, to compare before/after."""
    out = {"clusters": sorted(ecs.list_clusters()["clusterArns"])}
    out["families"] = ecs.list_task_definition_families(status="ALL")["families"]
    out["taskdefs"] = ecs.list_task_definitions()["taskDefinitionArns"]
    tasks = []
    insts = []
    for c in out["clusters"]:
        for st in ("RUNNING", "STOPPED"):
            tasks += ecs.list_tasks(cluster=c, desiredStatus=st)["taskArns"]
        insts += ecs.list_container_instances(cluster=c)["containerInstanceArns"]
    out["tasks"] = sorted(tasks)
    out["instances"] = sorted(insts)
    return out


def populate(ecs):
    ecs.create_cluster(clusterName="keep", tags=[{"key": "a", "value": "b"}])
    ecs.register_task_definition(family="keep", containerDefinitions=[
        {"name": "a", "image": "busybox", "memory": 64}])
    register_instance(ecs, "keep")
    ecs.run_task(cluster="keep", taskDefinition="keep", count=3)


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_restart_keeps_every_object(data_dir, how):
    b = Berth(data_dir).start()
    try:
        ecs = b.client()
        populate(ecs)
        before = snapshot(ecs)
        t = ecs.list_tasks(cluster="keep")["taskArns"][0]
        detail_before = ecs.describe_tasks(cluster="keep", tasks=[t], include=["TAGS"])["tasks"][0]
        creds_before = dict(b.env)
        if how == "sigterm":
            assert b.stop() == 0
        else:
            b.kill()
        b.start()
        assert b.env["AWS_ACCESS_KEY_ID"] == creds_before["AWS_ACCESS_KEY_ID"], "root key kept"
        ecs = b.client()
        assert snapshot(ecs) == before
        detail_after = ecs.describe_tasks(cluster="keep", tasks=[t], include=["TAGS"])["tasks"][0]
        assert detail_after == detail_before
        c = ecs.describe_clusters(clusters=["keep"], include=["TAGS"])["clusters"][0]
        assert c["pendingTasksCount"] == 3 and c["registeredContainerInstancesCount"] == 1
        assert c["tags"] == [{"key": "a", "value": "b"}]
        # Revisions continue after a restart.
        r = ecs.register_task_definition(family="keep", containerDefinitions=[
            {"name": "a", "image": "busybox", "memory": 64}])
        assert r["taskDefinition"]["revision"] == 2
    finally:
        b.stop()


def test_credentials_file_is_private(berth):
    import os
    import stat
    mode = stat.S_IMODE(os.stat(os.path.join(berth.data_dir, "credentials")).st_mode)
    assert mode == 0o600


def test_bad_signatures_are_refused_and_change_nothing(berth):
    ecs = berth.client()
    before = snapshot(ecs)
    body = json.dumps({"clusterName": "evil"})
    st, _, err = raw(berth, "CreateCluster", body, secret="x" * 40)
    assert st == 400 and err["__type"] == "InvalidSignatureException"
    st, _, err = raw(berth, "CreateCluster", body, sign=False)
    assert st in (400, 403) and err["__type"] == "MissingAuthenticationTokenException"
    other = berth.client(aws_access_key_id="AKIAIOSFODNN7EXAMPLE")
    with pytest.raises(other.exceptions.ClientError) as e:
        other.create_cluster(clusterName="evil")
    assert e.value.response["Error"]["Code"] == "UnrecognizedClientException"
    # Signed for another service or region.
    st, _, err = raw(berth, "CreateCluster", body, service="ecr")
    assert err["__type"] == "InvalidSignatureException"
    st, _, err = raw(berth, "CreateCluster", body, region="eu-west-1")
    assert err["__type"] == "InvalidSignatureException"
    # A request whose signed date is far in the past.
    st, _, err = raw(berth, "CreateCluster", body, sign=False, headers={
        "X-Amz-Date": "20200101T000000Z",
        "Authorization": "AWS4-HMAC-SHA256 Credential=%s/20200101/us-east-1/ecs/aws4_request, "
                         "SignedHeaders=host;x-amz-date, Signature=%s" % (
                             berth.env["AWS_ACCESS_KEY_ID"], "0" * 64)})
    assert err["__type"] in ("InvalidSignatureException",)
    assert snapshot(ecs) == before


def test_malformed_input_gets_aws_errors_and_changes_nothing(berth):
    ecs = berth.client()
    populate(ecs)
    before = snapshot(ecs)
    cases = [
        ("CreateCluster", "{not json", 400, "SerializationException"),
        ("CreateCluster", json.dumps({"clusterName": 5}), 400, "SerializationException"),
        ("RunTask", json.dumps({"cluster": "keep", "count": "two", "taskDefinition": "keep"}), 400,
         "SerializationException"),
        ("RunTask", json.dumps({"cluster": "keep"}), 400, "InvalidParameterException"),
        ("RunTask", json.dumps({"cluster": "keep", "taskDefinition": "keep", "count": 11}), 400,
         "InvalidParameterException"),
        ("RunTask", json.dumps({"cluster": "keep", "taskDefinition": "keep",
                                "launchType": "SPACESHIP"}), 400, "InvalidParameterException"),
        ("RegisterTaskDefinition", json.dumps({"family": "x"}), 400, "InvalidParameterException"),
        ("RegisterTaskDefinition", json.dumps({"family": "bad name!", "containerDefinitions": [
            {"name": "a", "image": "b", "memory": 8}]}), 400, "ClientException"),
        ("RegisterTaskDefinition", json.dumps({"family": "x", "networkMode": "wormhole",
                                               "containerDefinitions": []}), 400,
         "InvalidParameterException"),
        ("CreateCluster", json.dumps({"clusterName": "no spaces allowed"}), 400,
         "InvalidParameterException"),
        ("DescribeTasks", json.dumps({"cluster": "keep", "tasks": []}), 400,
         "InvalidParameterException"),
        ("StopTask", json.dumps({"cluster": "nope", "task": "x"}), 400, "ClusterNotFoundException"),
        ("ListTasks", json.dumps({"cluster": "keep", "nextToken": "!!!"}), 400,
         "InvalidParameterException"),
        ("ListTasks", json.dumps({"cluster": "keep", "maxResults": 1000}), 400,
         "InvalidParameterException"),
        ("FlyToTheMoon", "{}", 400, "UnknownOperationException"),
    ]
    for op, body, status, code in cases:
        st, headers, err = raw(berth, op, body)
        assert (st, err["__type"]) == (status, code), (op, body, err)
        assert headers.get("x-amzn-errortype") == code
        assert err["message"], (op, body)
        assert headers.get("x-amzn-requestid")
    # Unknown target prefix.
    st, _, err = raw(berth, "", "{}", target="NoSuchService_20200101.Op")
    assert err["__type"] == "UnknownOperationException"
    # Oversized body: 413, refused before it is read (so the client may not even finish
    # sending it).
    import http.client
    import urllib.parse
    u = urllib.parse.urlparse(berth.endpoint)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    conn.putrequest("POST", "/")
    conn.putheader("Content-Type", "application/x-amz-json-1.1")
    conn.putheader("X-Amz-Target", TARGET + "CreateCluster")
    conn.putheader("Content-Length", str(2 * 1024 * 1024))
    conn.endheaders()
    try:
        conn.send(b"{" + b" " * 65536)
    except OSError:
        pass
    resp = conn.getresponse()
    assert resp.status == 413
    assert json.loads(resp.read())["__type"] == "RequestEntityTooLargeException"
    conn.close()
    assert snapshot(ecs) == before


def test_pagination_walks_250_task_definitions(berth):
    ecs = berth.client()
    expected = []
    for fam in ("aa", "bb", "cc"):
        n = 84 if fam != "cc" else 82
        for _ in range(n):
            r = ecs.register_task_definition(family=fam, containerDefinitions=[
                {"name": "a", "image": "busybox", "memory": 8}])
            expected.append(r["taskDefinition"]["taskDefinitionArn"])
    assert len(expected) == 250
    got = []
    for page in ecs.get_paginator("list_task_definitions").paginate(PaginationConfig={"PageSize": 7}):
        assert len(page["taskDefinitionArns"]) <= 7
        got += page["taskDefinitionArns"]
    assert got == expected, "ascending order: family, then revision"
    # The aws CLI follows nextToken itself.
    cli = berth.aws("ecs", "list-task-definitions", "--page-size", "30")["taskDefinitionArns"]
    assert cli == expected
    desc = []
    for page in ecs.get_paginator("list_task_definitions").paginate(
            sort="DESC", PaginationConfig={"PageSize": 40}):
        desc += page["taskDefinitionArns"]
    assert desc == list(reversed(expected))
    fams = []
    for page in ecs.get_paginator("list_task_definition_families").paginate(
            PaginationConfig={"PageSize": 1}):
        fams += page["families"]
    assert fams == ["aa", "bb", "cc"]


def test_ops_endpoints(berth):
    with urllib.request.urlopen(berth.endpoint + "/healthz", timeout=5) as r:
        assert r.status == 200
    berth.client().list_clusters()
    with urllib.request.urlopen(berth.endpoint + "/metrics", timeout=5) as r:
        text = r.read().decode()
    assert 'berth_api_requests_total{service="ecs",operation="ListClusters",code="OK"}' in text
    assert "berth_api_request_duration_seconds_bucket" in text
    assert "berth_store_commit_duration_seconds" in text


def test_slow_and_idle_connections_are_closed(data_dir):
    """A client that opens connections and never finishes a request's headers (or holds a
    keep-alive connection idle) loses them after --http-header-timeout; meanwhile, and after,
    everyone else is served. Before, such connections were held forever: a few hundred of
    them used up berth's file descriptors."""
    import socket
    import time
    from urllib.parse import urlparse

    b = Berth(data_dir, extra_args=["--http-header-timeout", "2"]).start()
    try:
        u = urlparse(b.endpoint)
        addr = (u.hostname, u.port)
        slow = []
        for i in range(300):
            s = socket.create_connection(addr, timeout=10)
            if i % 2:
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never finished
            slow.append(s)
        idle = socket.create_connection(addr, timeout=10)
        idle.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert idle.recv(4096).startswith(b"HTTP/1.1 200")
        # Others are served while the slow ones wait.
        assert b.client().list_clusters()["clusterArns"] is not None
        time.sleep(3.5)
        for s in slow + [idle]:
            s.settimeout(5)
            try:
                data = s.recv(4096)
            except ConnectionResetError:
                data = b""
            # Closed: end of stream, or at most a 408 and then the end.
            assert data == b"" or data.startswith(b"HTTP/1.1 408"), data[:80]
            s.close()
        fds = len(os.listdir("/proc/%d/fd" % b.proc.pid))
        assert fds < 100, "berth still holds %d file descriptors" % fds
        assert b.client().list_clusters()["clusterArns"] is not None
    finally:
        b.stop()
