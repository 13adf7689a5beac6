"""What a node leaves on its machine: its data dir is its owner's alone (0700, task state files
0600, an existing looser dir tightened), a graceful stop (SIGTERM) with no task left removes
what the node made (the bridge, its rules, the mount of the namespace files) so that the data
dir can be removed, and `berth agent` takes its token from a file or the environment instead
of the command line. Driven with the real `berth up` / `berth server` / `berth agent`.

Each test uses a bridge and subnet of its own; every process, mount, rule, bridge and cgroup it
made is removed at the end, even when it fails."""

import json
import os
import signal
import stat
import subprocess
import tempfile
import time

import pytest

import test_tasks
from conftest import BERTH, Berth, end_process
from test_tasks import Node

UP_BRIDGE, UP_SUBNET = "bthfil0", "10.223.0.0/24"
AGENT_BRIDGE, AGENT_SUBNET = "bthfil1", "10.224.0.0/24"

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="the node needs root")

STUBBORN = ["/bin/sh", "-c", "trap 'exit 143' TERM; while true; do sleep 0.1; done"]


class FilesNode(Node):
    """`berth up` with its local node on this module's own bridge."""

    def __init__(self, data_dir):
        Berth.__init__(self, data_dir, node=True, extra_args=[
            "--bridge-name", UP_BRIDGE, "--bridge-subnet", UP_SUBNET,
            "--container-stop-timeout", "1"])


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def mounts_under(d):
    with open("/proc/self/mountinfo") as f:
        return [l.split()[4] for l in f if l.split()[4].startswith(d.rstrip("/") + "/")]


def link_exists(name):
    return subprocess.run(["ip", "link", "show", name], capture_output=True).returncode == 0


def rules_of(bridge):
    """Every packet filter rule that names `bridge`, and berth's table of it: the nf_tables
    ruleset holds iptables-nft's rules too."""
    r = subprocess.run(["nft", "-j", "list", "ruleset"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    out = []
    for o in json.loads(r.stdout)["nftables"]:
        if o.get("table", {}).get("name") == "berth-" + bridge:
            out.append(o)
        elif "rule" in o and json.dumps(bridge) in json.dumps(o["rule"]["expr"]):
            out.append(o)
    return out


def assert_private(data_dir):
    state = os.path.join(data_dir, "node", "state")
    files = [os.path.join(state, f) for f in os.listdir(state)]
    assert files, "no task state file"
    assert mode(data_dir) == 0o700, oct(mode(data_dir))
    assert mode(state) == 0o700, oct(mode(state))
    for f in files:
        assert mode(f) == 0o600, (f, oct(mode(f)))


def assert_node_gone(data_dir, bridge, log):
    assert mounts_under(data_dir) == [], (mounts_under(data_dir), log())
    assert not link_exists(bridge), log()
    assert rules_of(bridge) == [], (rules_of(bridge), log())
    r = subprocess.run(["rm", "-rf", data_dir], capture_output=True, text=True)
    assert r.returncode == 0 and not os.path.exists(data_dir), r.stderr


def cleanup(monkeypatch, data_dir, ids, bridge, subnet):
    """What test_tasks' cleanup does, for this test's bridge."""
    monkeypatch.setattr(test_tasks, "BRIDGE", bridge)
    monkeypatch.setattr(test_tasks, "SUBNET", subnet)
    test_tasks._cleanup_node(data_dir, ids)


def wait_stopped(ecs, cluster, arn, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        t = ecs.describe_tasks(cluster=cluster, tasks=[arn])["tasks"][0]
        if t["lastStatus"] == "STOPPED":
            return t
        time.sleep(0.1)
    raise AssertionError("task not STOPPED: %s" % t)


@root_only
def test_up_keeps_its_files_private_and_a_graceful_stop_cleans_up(data_dir, monkeypatch):
    os.chmod(data_dir, 0o755)  # an existing data dir others may read: tightened at start
    n = FilesNode(data_dir)
    ids = []
    try:
        n.start()
        image = n.push_busybox("files")
        arn = n.run("files", [{"name": "c", "image": image, "memory": 32, "command": STUBBORN,
                               "environment": [{"name": "SOME_SETTING", "value": "x"}]}],
                    networkMode="awsvpc")
        tid = arn.rsplit("/", 1)[1]
        ids.append(tid)
        n.wait_task(arn, "RUNNING")
        assert_private(data_dir)
        netns = os.path.join(data_dir, "node", "net", "netns")
        assert os.path.join(netns, tid) in mounts_under(data_dir)
        assert link_exists(UP_BRIDGE)
        assert rules_of(UP_BRIDGE), "the bridge's rules are not there while it runs"

        # A task still runs: SIGTERM leaves it, its namespace and the bridge, and says so.
        pid = json.load(open(os.path.join(data_dir, "node", "state", tid + ".json")))[
            "containers"][0]["pid"]
        assert n.stop() == 0
        os.kill(pid, 0)
        assert os.path.join(netns, tid) in mounts_under(data_dir)
        assert link_exists(UP_BRIDGE)
        assert "1 task(s) still running" in n.log(), n.log()

        # Picked up again, stopped; then SIGTERM with nothing running cleans up.
        n.start()
        assert n.client().describe_tasks(cluster="default", tasks=[arn])["tasks"][0][
            "lastStatus"] == "RUNNING"
        n.client().stop_task(cluster="default", task=arn)
        n.wait_task(arn, "STOPPED", timeout=20)
        assert n.stop() == 0
        assert "removed the node's network" in n.log(), n.log()
        log = n.log()
        assert_node_gone(data_dir, UP_BRIDGE, lambda: log)
    finally:
        n.stop()
        cleanup(monkeypatch, data_dir, ids, UP_BRIDGE, UP_SUBNET)


def _agent_env():
    return {k: v for k, v in os.environ.items()
            if not k.startswith("AWS_") and not k.startswith("BERTH_")}


def _token(server, cluster):
    r = subprocess.run([BERTH, "token", "create", "--cluster", cluster, "--expires-in", "1h"],
                       capture_output=True, text=True, env=server.env, timeout=20)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def _wait_instances(ecs, cluster, proc, log, n=1, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, log()
        arns = ecs.list_container_instances(cluster=cluster)["containerInstanceArns"]
        if len(arns) >= n:
            return arns
        time.sleep(0.1)
    raise AssertionError("no instance registered:\n" + log())


WARNING = "visible to every user of this machine"


def test_agent_token_from_a_file_or_the_environment(data_dir, tmp_path):
    """--token-file and BERTH_TOKEN work without a warning; --token on the command line works
    and warns; a bad token file stops the agent with an error naming it. (Simulated nodes: no
    root needed; the token is read the same way.)"""
    server = Berth(data_dir).start()
    procs = []
    try:
        ecs = server.client()
        ecs.create_cluster(clusterName="tok")
        tok = _token(server, "tok")
        tok_file = tmp_path / "token"
        tok_file.write_text(tok + "\n")
        os.chmod(tok_file, 0o600)
        base = [BERTH, "agent", "--server", server.endpoint, "--cluster", "tok", "--simulate", "1"]
        ways = [("file", ["--token-file", str(tok_file)], {}),
                ("env", [], {"BERTH_TOKEN": tok}),
                ("env-file", [], {"BERTH_TOKEN_FILE": str(tok_file)}),
                ("argv", ["--token", tok], {})]
        for i, (name, args, env) in enumerate(ways):
            log_path = tmp_path / ("agent-%s.log" % name)
            with open(log_path, "ab") as log:
                p = subprocess.Popen(base + args, stdout=log, stderr=log,
                                     env={**_agent_env(), **env})
            procs.append(p)

            def log():
                return log_path.read_text(errors="replace")

            _wait_instances(ecs, "tok", p, log, n=i + 1)
            end_process(p)
            assert (WARNING in log()) == (name == "argv"), (name, log())
            assert tok.split(":")[1] not in log(), "the secret is never logged"

        def run(*args, env=None):
            return subprocess.run(base + list(args), capture_output=True, text=True, timeout=20,
                                  env={**_agent_env(), **(env or {})})

        r = run("--token-file", str(tmp_path / "missing"))
        assert r.returncode != 0 and "--token-file %s" % (tmp_path / "missing") in r.stderr, r.stderr
        bad = tmp_path / "bad"
        bad.write_text("no-colon-here\n")
        r = run("--token-file", str(bad))
        assert r.returncode != 0 and "must be ACCESS_KEY_ID:SECRET_ACCESS_KEY" in r.stderr, r.stderr
        r = run("--token-file", str(tmp_path))
        assert r.returncode != 0 and "not a regular file" in r.stderr, r.stderr
        r = run("--token-file", str(tok_file), "--token", tok)
        assert r.returncode != 0 and "cannot be used with" in r.stderr, r.stderr
        # The environment's token is not shown by --help.
        r = run("--help", env={"BERTH_TOKEN": tok})
        assert r.returncode == 0 and tok.split(":")[1] not in r.stdout, r.stdout
        assert "--token-file" in r.stdout
    finally:
        for p in procs:
            end_process(p)
        server.stop()


@root_only
def test_agent_data_dir_private_and_a_graceful_stop_cleans_up(data_dir, tmp_path, monkeypatch):
    server = Berth(data_dir).start()
    node_dir = tempfile.mkdtemp(prefix="berth-files-agent-")
    os.chmod(node_dir, 0o755)
    agent = None
    ids = []
    log_path = tmp_path / "agent.log"

    def log():
        return log_path.read_text(errors="replace")[-6000:]

    try:
        ecs = server.client()
        ecs.create_cluster(clusterName="files")
        tok_file = tmp_path / "token"
        tok_file.write_text(_token(server, "files"))
        os.chmod(tok_file, 0o600)
        with open(log_path, "ab") as f:
            agent = subprocess.Popen(
                [BERTH, "agent", "--server", server.endpoint, "--cluster", "files", "--data-dir",
                 node_dir, "--bridge-name", AGENT_BRIDGE, "--bridge-subnet", AGENT_SUBNET,
                 "--container-stop-timeout", "1", "--token-file", str(tok_file)],
                stdout=f, stderr=f, env=_agent_env())
        _wait_instances(ecs, "files", agent, log)
        pusher = Node.__new__(Node)
        pusher.__dict__.update(server.__dict__)
        image = pusher.push_busybox("files-agent")
        ecs.register_task_definition(family="files", networkMode="awsvpc", containerDefinitions=[
            {"name": "c", "image": image, "memory": 32, "command": STUBBORN}])
        arn = ecs.run_task(cluster="files", taskDefinition="files", networkConfiguration={
            "awsvpcConfiguration": {"subnets": ["subnet-berth"]}})["tasks"][0]["taskArn"]
        ids.append(arn.rsplit("/", 1)[1])
        pusher.wait_task(arn, "RUNNING", cluster="files")
        assert_private(node_dir)
        assert mounts_under(node_dir) and link_exists(AGENT_BRIDGE)
        assert rules_of(AGENT_BRIDGE), "the bridge's rules are not there while it runs"
        ecs.stop_task(cluster="files", task=arn)
        wait_stopped(ecs, "files", arn)
        # The final report is through: no unfinished task state is left.
        deadline = time.time() + 10
        state = os.path.join(node_dir, "node", "state")
        while time.time() < deadline and os.listdir(state):
            time.sleep(0.1)
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=20) == 0, log()
        assert "removed the node's network" in log(), log()
        assert WARNING not in log()
        assert_node_gone(node_dir, AGENT_BRIDGE, log)
    finally:
        end_process(agent)
        server.stop()
        cleanup(monkeypatch, node_dir, ids, AGENT_BRIDGE, AGENT_SUBNET)
        subprocess.run(["rm", "-rf", node_dir], capture_output=True)
