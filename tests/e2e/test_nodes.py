"""Nodes joining from elsewhere: join tokens (scoped, expiring, revocable), node liveness
(agentConnected follows the session; a node that stays away has its tasks stopped) and the
reconciliation when it comes back. Driven with the real aws CLI / boto3 and `berth agent`."""

import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request

import botocore.exceptions
import pytest

from conftest import BERTH, Berth, end_process, register_instance
from test_tasks import Node, _cleanup_node, remove_node_rules

BRIDGE = "bthn0"
SUBNET = "10.219.0.0/24"


def _token(server, *args):
    r = subprocess.run([BERTH, "token", *args], capture_output=True, text=True, env=server.env,
                       timeout=20)
    return r


def _client_with(server, token, service="ecs"):
    akid, secret = token.split(":", 1)
    return server.client(service, aws_access_key_id=akid, aws_secret_access_key=secret)


def test_join_tokens_are_scoped_expiring_and_revocable(data_dir):
    server = Berth(data_dir).start()
    try:
        ecs = server.client()
        ecs.create_cluster(clusterName="prod")
        r = _token(server, "create", "--cluster", "prod", "--expires-in", "1h",
                   "--description", "rack-1")
        assert r.returncode == 0, r.stderr
        tok = r.stdout.strip()
        assert ":" in tok and "berth agent" in r.stderr
        listed = _token(server, "list")
        assert tok.split(":")[0] in listed.stdout and "rack-1" in listed.stdout
        assert tok.split(":")[1] not in listed.stdout, "list never shows secrets"

        agent = _client_with(server, tok)
        # What an agent does is allowed, in its own cluster…
        ci = register_instance(agent, "prod")
        assert ecs.describe_container_instances(cluster="prod", containerInstances=[ci])[
            "containerInstances"][0]["status"] == "ACTIVE"
        assert agent.discover_poll_endpoint(cluster="prod")["endpoint"] == server.endpoint
        assert _client_with(server, tok, "ecr").get_authorization_token()["authorizationData"]
        # A node may drain itself (in its own cluster).
        d = agent.update_container_instances_state(cluster="prod", containerInstances=[ci],
                                                   status="DRAINING")
        assert d["containerInstances"][0]["status"] == "DRAINING"
        with pytest.raises(botocore.exceptions.ClientError) as e:
            agent.update_container_instances_state(cluster="default", containerInstances=[ci],
                                                   status="ACTIVE")
        assert e.value.response["Error"]["Code"] == "AccessDeniedException"
        # …nothing else, and nowhere else.
        for call in (lambda: agent.list_clusters(),
                     lambda: agent.run_task(cluster="prod", taskDefinition="x"),
                     lambda: agent.discover_poll_endpoint(cluster="default")):
            with pytest.raises(botocore.exceptions.ClientError) as e:
                call()
            assert e.value.response["Error"]["Code"] == "AccessDeniedException"
        # A token cannot make tokens.
        env = dict(server.env, AWS_ACCESS_KEY_ID=tok.split(":")[0],
                   AWS_SECRET_ACCESS_KEY=tok.split(":")[1])
        r = subprocess.run([BERTH, "token", "create", "--cluster", "prod"], capture_output=True,
                           text=True, env=env, timeout=20)
        assert r.returncode != 0 and "AccessDenied" in r.stderr

        # Revoked: refused from then on.
        assert _token(server, "revoke", tok).returncode == 0
        with pytest.raises(botocore.exceptions.ClientError) as e:
            agent.discover_poll_endpoint(cluster="prod")
        assert e.value.response["Error"]["Code"] == "UnrecognizedClientException"
        assert tok.split(":")[0] not in _token(server, "list").stdout

        # Expired: refused.
        short = _token(server, "create", "--cluster", "prod", "--expires-in", "2s").stdout.strip()
        assert _client_with(server, short).discover_poll_endpoint(cluster="prod")
        time.sleep(2.5)
        with pytest.raises(botocore.exceptions.ClientError) as e:
            _client_with(server, short).discover_poll_endpoint(cluster="prod")
        assert e.value.response["Error"]["Code"] == "UnrecognizedClientException"

        # Bad input changes nothing.
        before = _token(server, "list").stdout
        for args in (["--expires-in", "0"], ["--expires-in", "soon"], ["--cluster", "no/slash"]):
            r = _token(server, "create", *args)
            assert r.returncode != 0, args
        assert _token(server, "list").stdout == before
        assert _token(server, "revoke", "AKIANOSUCHKEY").returncode != 0
    finally:
        server.stop()


def _open_session(server, token, query):
    """A SigV4-signed websocket upgrade of GET /ws, as the ECS agent sends it: (status, body)."""
    import http.client
    import urllib.parse
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials
    akid, secret = token.split(":", 1)
    url = server.endpoint + "/ws?" + urllib.parse.urlencode(query)
    req = AWSRequest(method="GET", url=url, headers={
        "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
    SigV4Auth(Credentials(akid, secret), "ecs", server.env["AWS_DEFAULT_REGION"]).add_auth(req)
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    try:
        conn.request("GET", u.path + "?" + u.query, headers=dict(req.headers.items()))
        r = conn.getresponse()
        return r.status, (r.read().decode() if r.status != 101 else "")
    finally:
        conn.close()


def test_agent_sessions_are_refused_in_acs_terms(data_dir):
    """An agent session for an unknown or deregistered instance is refused before the upgrade
    with ACS's own error types, in the framing the ECS agent's websocket client reads."""
    import json
    server = Berth(data_dir).start()
    try:
        ecs = server.client()
        ecs.create_cluster(clusterName="prod")
        tok = _token(server, "create", "--cluster", "prod").stdout.strip()
        ci = register_instance(_client_with(server, tok), "prod")
        status, _ = _open_session(server, tok, {"clusterArn": "prod", "containerInstanceArn": ci})
        assert status == 101
        # Another node's token of the same cluster cannot speak for this node: no session
        # (whose first payload would carry this node's tasks and their role credentials), no
        # telemetry, no draining it, no re-registering it.
        other = _token(server, "create", "--cluster", "prod").stdout.strip()
        register_instance(_client_with(server, other), "prod")
        for query in ({"clusterArn": "prod", "containerInstanceArn": ci},
                      {"cluster": "prod", "containerInstance": ci}):
            status, body = _open_session(server, other, query)
            assert status == 400 and "AccessDeniedException" in body and "another credential" in body, (status, body)
        with pytest.raises(botocore.exceptions.ClientError) as e:
            _client_with(server, other).update_container_instances_state(
                cluster="prod", containerInstances=[ci], status="DRAINING")
        assert e.value.response["Error"]["Code"] == "AccessDeniedException"
        with pytest.raises(botocore.exceptions.ClientError) as e:
            register_instance(_client_with(server, other), "prod", arn=ci)
        assert e.value.response["Error"]["Code"] == "AccessDeniedException"
        assert ecs.describe_container_instances(cluster="prod", containerInstances=[ci])[
            "containerInstances"][0]["status"] == "ACTIVE"
        for query, kind in (
                ({"clusterArn": "prod", "containerInstanceArn": ci[:-4] + "0000"}, "InvalidInstanceException"),
                ({"cluster": "prod", "containerInstance": ci[:-4] + "0000"}, "InvalidInstanceException")):
            status, body = _open_session(server, tok, query)
            assert status == 400 and json.loads(body)["type"] == kind, (status, body)
        ecs.deregister_container_instance(cluster="prod", containerInstance=ci, force=True)
        status, body = _open_session(server, tok, {"clusterArn": "prod", "containerInstanceArn": ci})
        b = json.loads(body)
        assert status == 400 and b["type"] == "InactiveInstanceException", body
        assert "deregistered" in b["message"]["message"]
        d = ecs.describe_container_instances(cluster="prod", containerInstances=[ci])["containerInstances"][0]
        assert d["status"] == "INACTIVE" and d["agentConnected"] is False
    finally:
        server.stop()


def test_agents_can_be_sent_to_a_named_session_endpoint(data_dir):
    """--agent-endpoint: DiscoverPollEndpoint names that URL (a TLS proxy on 443 for the
    stock ECS agent, say); a value that is no http(s) URL stops the start with a message."""
    bad = subprocess.run([BERTH, "up", "--local-node", "false", "--listen", "127.0.0.1:0",
                          "--data-dir", os.path.join(data_dir, "bad"), "--agent-endpoint", "berth:443"],
                         capture_output=True, text=True, timeout=20)
    assert bad.returncode != 0 and "agent endpoint" in bad.stderr, bad.stderr
    server = Berth(data_dir, extra_args=["--agent-endpoint", "https://berth.example/"]).start()
    try:
        ecs = server.client()
        ecs.create_cluster(clusterName="prod")
        tok = _token(server, "create", "--cluster", "prod").stdout.strip()
        r = _client_with(server, tok).discover_poll_endpoint(cluster="prod")
        assert (r["endpoint"], r["telemetryEndpoint"]) == ("https://berth.example",) * 2
    finally:
        server.stop()


def _cgroup_exists(tid):
    return any(os.path.isdir(os.path.join("/sys/fs/cgroup", root, "berth", tid))
               for root in os.listdir("/sys/fs/cgroup"))


@pytest.mark.skipif(os.geteuid() != 0, reason="the node needs root")
def test_lost_node_tasks_stop_and_the_node_reconciles_when_back(data_dir):
    """An agent that stops answering (SIGSTOP: the socket stays open, nothing is said) is
    disconnected within the timeout, its tasks are STOPPED (TerminationNotice) after the
    grace period, nothing is placed on it meanwhile; when it answers again it reconnects and
    stops the containers of those tasks, and nothing is started twice."""
    server = Berth(data_dir, extra_args=["--agent-heartbeat-interval", "1", "--agent-timeout", "3",
                                         "--lost-instance-grace", "3"]).start()
    node_dir = tempfile.mkdtemp(prefix="berth-lost-")
    agent = None
    ids = []

    def agent_log():
        return open(os.path.join(node_dir, "agent.log"), errors="replace").read()[-4000:]

    try:
        ecs = server.client()
        ecs.create_cluster(clusterName="edge")
        tok = _token(server, "create", "--cluster", "edge", "--expires-in", "1h").stdout.strip()
        log = open(os.path.join(node_dir, "agent.log"), "ab")
        agent = subprocess.Popen(
            [BERTH, "agent", "--server", server.endpoint, "--cluster", "edge", "--data-dir",
             node_dir, "--bridge-name", BRIDGE, "--bridge-subnet", SUBNET,
             "--container-stop-timeout", "1", "--telemetry-interval", "1", "--token", tok],
            stdout=log, stderr=log, env={k: v for k, v in os.environ.items() if not k.startswith("AWS_")})
        deadline = time.time() + 20
        arns = []
        while time.time() < deadline and not arns:
            assert agent.poll() is None, agent_log()
            arns = ecs.list_container_instances(cluster="edge")["containerInstanceArns"]
            time.sleep(0.1)
        assert arns, agent_log()
        node = Node.__new__(Node)
        node.__dict__.update(server.__dict__)
        image = node.push_busybox("lost-sleep")
        ecs.register_task_definition(family="sleeper", containerDefinitions=[{
            "name": "s", "image": image, "memory": 16, "entryPoint": ["/bin/sleep", "3600"]}])
        tasks = ecs.run_task(cluster="edge", taskDefinition="sleeper", count=2)["tasks"]
        task_arns = [t["taskArn"] for t in tasks]
        ids.extend(a.rsplit("/", 1)[1] for a in task_arns)
        for a in task_arns:
            node.wait_task(a, "RUNNING", cluster="edge")
        assert all(_cgroup_exists(i) for i in ids)
        # The node's telemetry session reports each running container's CPU and memory.
        deadline = time.time() + 10
        while time.time() < deadline:
            with urllib.request.urlopen(server.endpoint + "/metrics", timeout=5) as r:
                text = r.read().decode()
            gauges = [l for l in text.splitlines()
                      if l.startswith("berth_container_memory_mib{") and 'cluster="edge"' in l]
            if len(gauges) == 2:
                break
            time.sleep(0.2)
        assert sorted(i for i in ids if any('task="%s"' % i in g for g in gauges)) == sorted(ids), gauges
        assert all(float(g.rsplit(" ", 1)[1]) > 0 for g in gauges), gauges

        def instance():
            return ecs.describe_container_instances(cluster="edge", containerInstances=arns)[
                "containerInstances"][0]

        assert instance()["agentConnected"] is True
        # The node goes silent.
        agent.send_signal(signal.SIGSTOP)
        cut = time.time()
        while time.time() < cut + 15 and instance()["agentConnected"]:
            time.sleep(0.2)
        disconnected_after = time.time() - cut
        assert not instance()["agentConnected"]
        assert disconnected_after <= 3 + 2, disconnected_after
        r = ecs.run_task(cluster="edge", taskDefinition="sleeper")
        assert r["tasks"] == [] and r["failures"][0]["reason"] == "AGENT", r["failures"]
        while time.time() < cut + 20:
            ts = ecs.describe_tasks(cluster="edge", tasks=task_arns)["tasks"]
            if all(t["lastStatus"] == "STOPPED" for t in ts):
                break
            time.sleep(0.2)
        stopped_after = time.time() - cut
        for t in ts:
            assert t["lastStatus"] == "STOPPED" and t["desiredStatus"] == "STOPPED", t
            assert t["stopCode"] == "TerminationNotice", t
            assert arns[0].rsplit("/", 1)[1] in t["stoppedReason"], t["stoppedReason"]
        assert stopped_after <= 3 + 3 + 3, stopped_after
        print("disconnected after %.1f s, tasks stopped after %.1f s" % (disconnected_after,
                                                                         stopped_after))
        # Its containers still run: the node could not be told.
        assert all(_cgroup_exists(i) for i in ids)

        # Back: reconnected, the stopped tasks' containers are stopped, nothing restarted.
        agent.send_signal(signal.SIGCONT)
        back = time.time()
        while time.time() < back + 20 and not instance()["agentConnected"]:
            time.sleep(0.2)
        assert instance()["agentConnected"], agent_log()
        while time.time() < back + 20 and any(_cgroup_exists(i) for i in ids):
            time.sleep(0.2)
        assert not any(_cgroup_exists(i) for i in ids), agent_log()
        listed = ecs.list_tasks(cluster="edge", desiredStatus="STOPPED")["taskArns"]
        assert sorted(listed) == sorted(task_arns)
        assert ecs.list_tasks(cluster="edge")["taskArns"] == []
        ts = ecs.describe_tasks(cluster="edge", tasks=task_arns)["tasks"]
        assert all(t["stopCode"] == "TerminationNotice" for t in ts), "the agent's report keeps the reason"
        # And it takes work again.
        r = ecs.run_task(cluster="edge", taskDefinition="sleeper")
        assert r["failures"] == [], r
        ids.append(r["tasks"][0]["taskArn"].rsplit("/", 1)[1])
        node.wait_task(r["tasks"][0]["taskArn"], "RUNNING", cluster="edge")
        ecs.stop_task(cluster="edge", task=r["tasks"][0]["taskArn"])
        node.wait_task(r["tasks"][0]["taskArn"], "STOPPED", cluster="edge", timeout=20)
    finally:
        end_process(agent)
        server.stop()
        _cleanup_node(node_dir, ids)
        subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True)
        remove_node_rules(BRIDGE)
        shutil.rmtree(node_dir, ignore_errors=True)
