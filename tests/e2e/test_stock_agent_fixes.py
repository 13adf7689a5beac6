"""What running the stock amazon-ecs-agent against berth showed, each checked with real
clients: an agent session that ends makes its instance disconnected at once (raw websocket sessions signed as the
agent signs them, and `berth agent --simulate` stopped with SIGTERM), the versions the agent
puts in its session URL become `versionInfo`, and every session end is logged with its
reason.

Every process a test starts is ended by the test, by PID."""

import base64
import os
import shutil
import signal
import socket
import struct
import subprocess
import time
import urllib.parse

import pytest

from conftest import BERTH, Berth, end_process, register_instance
from test_nodes import _client_with, _token
from test_tls import TlsBerth, clean_env, self_signed

CLUSTER = "prod"


class Session:
    """An ACS session as the ECS agent opens one: a SigV4-signed websocket upgrade of
    `GET /ws?clusterArn=…&containerInstanceArn=…` (plain HTTP), then RFC 6455 frames."""

    def __init__(self, server, token, instance, **extra):
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials
        akid, secret = token.split(":", 1)
        query = {"clusterArn": CLUSTER, "containerInstanceArn": instance, **extra}
        # Spaces as %20: botocore signs the query as written, where a `+` (how Go writes a
        # space, and berth reads it) would not match.
        url = server.endpoint + "/ws?" + urllib.parse.urlencode(
            query, quote_via=lambda v, *_: urllib.parse.quote(v, safe=""))
        key = base64.b64encode(os.urandom(16)).decode()
        req = AWSRequest(method="GET", url=url, headers={
            "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": key})
        SigV4Auth(Credentials(akid, secret), "ecs", server.env["AWS_DEFAULT_REGION"]).add_auth(req)
        u = urllib.parse.urlsplit(url)
        self.sock = socket.create_connection((u.hostname, u.port), timeout=10)
        head = ["GET %s?%s HTTP/1.1" % (u.path, u.query), "Host: %s" % u.netloc]
        head += ["%s: %s" % kv for kv in req.headers.items()]
        self.sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        response = b""
        while b"\r\n\r\n" not in response:
            chunk = self.sock.recv(4096)
            assert chunk, "connection closed during the upgrade: %r" % response
            response += chunk
        status = response.split(b"\r\n", 1)[0]
        assert b" 101 " in status, response

    def send_close(self):
        """A close frame (status 1000), masked as a client's frames are; then the socket."""
        payload = struct.pack(">H", 1000)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(bytes([0x88, 0x80 | len(payload)]) + mask + masked)
        time.sleep(0.05)
        self.sock.close()

    def drop(self):
        """The connection just ends, as when the agent's process dies: no close frame."""
        self.sock.close()


def connected(ecs, arn):
    return ecs.describe_container_instances(cluster=CLUSTER, containerInstances=[arn])[
        "containerInstances"][0]["agentConnected"]


def wait_disconnected(ecs, arn, timeout):
    """Seconds until `arn` is agentConnected false; fails after `timeout`."""
    start = time.time()
    while time.time() < start + timeout:
        if connected(ecs, arn) is False:
            return time.time() - start
        time.sleep(0.05)
    raise AssertionError("still agentConnected %.1f s after its session ended" % timeout)


def setup_cluster(server):
    """A cluster, a join token for it, one instance registered with the token, and a task
    definition; (ecs, token, instance ARN)."""
    ecs = server.client()
    ecs.create_cluster(clusterName=CLUSTER)
    ecs.register_task_definition(family="sleeper", containerDefinitions=[
        {"name": "s", "image": "busybox", "memory": 16}])
    tok = _token(server, "create", "--cluster", CLUSTER, "--expires-in", "1h").stdout.strip()
    assert ":" in tok
    return ecs, tok, register_instance(_client_with(server, tok), CLUSTER)


def run_on_connected(ecs):
    """RunTask that asks for a connected agent: the failure reasons."""
    r = ecs.run_task(cluster=CLUSTER, taskDefinition="sleeper", placementConstraints=[
        {"type": "memberOf", "expression": "agentConnected == true"}])
    return [f["reason"] for f in r["failures"]]


def test_a_session_that_ends_disconnects_its_instance_at_once(data_dir):
    """With a 60 s agent timeout, an instance whose session ends (a close frame, or the
    connection just ending) is agentConnected false within a second, and RunTask that wants
    a connected agent places nothing there; a second session that overtook the first's close
    keeps it connected."""
    server = Berth(data_dir, extra_args=["--agent-heartbeat-interval", "20", "--agent-timeout", "60",
                                         "--lost-instance-grace", "600"]).start()
    try:
        ecs, tok, arn = setup_cluster(server)
        first = Session(server, tok, arn)
        again = Session(server, tok, arn)  # a reconnect that overtook the close
        assert connected(ecs, arn) is True
        first.send_close()
        time.sleep(1.0)
        assert connected(ecs, arn) is True, "another session of the instance is open"
        assert run_on_connected(ecs) == []
        again.send_close()
        took = wait_disconnected(ecs, arn, 5)
        assert took <= 1.0, took
        assert run_on_connected(ecs) == ["AGENT"]

        # The connection ends without a close frame (the agent's process died).
        Session(server, tok, arn).drop()
        assert wait_disconnected(ecs, arn, 5) <= 1.0
        deadline = time.time() + 5  # the log is written off the request path
        while True:
            closed = [l for l in server.log().splitlines() if "agent session closed" in l]
            if len(closed) >= 3 or time.time() > deadline:
                break
            time.sleep(0.05)
        assert len(closed) == 3, closed
        assert all("closed by the agent" in l for l in closed[:2]), closed
        # Reset or FIN, depending on what the socket held unread.
        assert "the agent's connection" in closed[2], closed
    finally:
        server.stop()


def test_a_node_whose_agent_stops_is_disconnected_at_once(data_dir):
    """`berth agent` (simulated node: real registration and ACS session) stopped with
    SIGTERM: its instance is agentConnected false within a second, not after the timeout."""
    server = Berth(data_dir, extra_args=["--agent-heartbeat-interval", "20", "--agent-timeout", "60",
                                         "--lost-instance-grace", "600"]).start()
    agent = None
    try:
        ecs = server.client()
        ecs.create_cluster(clusterName=CLUSTER)
        ecs.register_task_definition(family="sleeper", containerDefinitions=[
            {"name": "s", "image": "busybox", "memory": 16}])
        tok = _token(server, "create", "--cluster", CLUSTER, "--expires-in", "1h").stdout.strip()
        log = open(os.path.join(data_dir, "agent.log"), "ab")
        agent = subprocess.Popen([BERTH, "agent", "--server", server.endpoint, "--token", tok,
                                  "--cluster", CLUSTER, "--simulate", "1"],
                                 stdout=log, stderr=log,
                                 env={k: v for k, v in os.environ.items() if not k.startswith("AWS_")})
        deadline = time.time() + 20
        arns = []
        while time.time() < deadline and not arns:
            assert agent.poll() is None, open(os.path.join(data_dir, "agent.log")).read()
            arns = ecs.list_container_instances(cluster=CLUSTER)["containerInstanceArns"]
            time.sleep(0.1)
        assert arns
        while time.time() < deadline and "agent session opened" not in server.log():
            time.sleep(0.1)
        assert connected(ecs, arns[0]) is True
        end_process(agent, signal.SIGTERM)
        stopped = time.time()
        took = wait_disconnected(ecs, arns[0], 10)
        print("\nagent stopped → agentConnected false after %.2f s (timeout 60 s)" % took)
        assert time.time() - stopped <= 1.5 and took <= 1.5, took
        assert run_on_connected(ecs) == ["AGENT"]
    finally:
        end_process(agent)
        server.stop()


def test_versions_in_the_session_url_become_version_info(data_dir):
    """The stock agent registers without versionInfo and names its versions only in the
    session URL, with the rest of its query; DescribeContainerInstances shows them."""
    server = Berth(data_dir).start()
    try:
        ecs, tok, arn = setup_cluster(server)
        before = server.aws("ecs", "describe-container-instances", "--cluster", CLUSTER,
                            "--container-instances", arn)["containerInstances"][0]
        assert before["versionInfo"] == {"agentVersion": "1.80.0"}  # register_instance's
        s = Session(server, tok, arn, agentHash="5e3ea8a2", agentVersion="1.97.1", seqNum="1",
                    protocolVersion="2", dockerVersion="DockerVersion: 25.0.5",
                    sendCredentials="true")
        try:
            ci = server.aws("ecs", "describe-container-instances", "--cluster", CLUSTER,
                            "--container-instances", arn)["containerInstances"][0]
            assert ci["versionInfo"] == {"agentVersion": "1.97.1", "agentHash": "5e3ea8a2",
                                         "dockerVersion": "DockerVersion: 25.0.5"}, ci
            # ECS's constraint on it works with what the session said.
            r = ecs.run_task(cluster=CLUSTER, taskDefinition="sleeper", placementConstraints=[
                {"type": "memberOf", "expression": "agentVersion >= 1.97.0"}])
            assert r["failures"] == [], r
        finally:
            s.send_close()
    finally:
        server.stop()


def test_sessions_berth_ends_are_logged_with_the_reason(data_dir):
    """A session berth closes (its join token revoked, then its instance deregistered) is
    logged as closed with why, and its instance is disconnected."""
    server = Berth(data_dir, extra_args=["--agent-heartbeat-interval", "1", "--agent-timeout", "60",
                                         "--lost-instance-grace", "600"]).start()
    try:
        ecs, tok, arn = setup_cluster(server)
        sessions = [Session(server, tok, arn)]  # held open: berth is to end it
        assert _token(server, "revoke", tok).returncode == 0
        deadline = time.time() + 10

        def closed_lines():
            return [l for l in server.log().splitlines() if "agent session closed" in l]

        while time.time() < deadline and not closed_lines():
            time.sleep(0.1)
        assert any("credentials are no longer valid" in l for l in closed_lines()), server.log()
        assert wait_disconnected(ecs, arn, 5) <= 1.0

        # A second node, with a token of its own.
        tok2 = _token(server, "create", "--cluster", CLUSTER, "--expires-in", "1h").stdout.strip()
        arn2 = register_instance(_client_with(server, tok2), CLUSTER)
        sessions.append(Session(server, tok2, arn2))
        assert connected(ecs, arn2) is True
        seen = len(closed_lines())
        ecs.deregister_container_instance(cluster=CLUSTER, containerInstance=arn2, force=True)
        while time.time() < deadline + 10 and len(closed_lines()) == seen:
            time.sleep(0.1)
        assert any("deregistered" in l for l in closed_lines()[seen:]), server.log()
    finally:
        server.stop()
