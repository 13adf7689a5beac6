"""Several hosts on the real kernel: one `berth server` and three `berth agent`s, each agent in
a network namespace of its own (a "host": h1, h2, h3 on a test bridge, 10.217.0.0/24), tasks
placed across them and checked from outside (their host ports on each host's address, their
awsvpc addresses from inside the host, the kernel's process table), then an agent restarted,
the server restarted, an instance drained, and a host's link cut and restored.

Each host is a network namespace only: the agents run under `nsenter --net`, not
`ip netns exec`, because the latter also gives each command a fresh mount namespace with a new
/sys (and no /sys/fs/cgroup): an agent restarted that way would not see the overlay and
namespace mounts of the agent before it, which no real host restart does to an agent.

Traffic goes only to 10.217.0.0/24 (the test's bridge and namespaces) and to the container
bridges inside those namespaces. The module fixture ends every process it started (by pid),
and removes every container process, shim, mount, cgroup, namespace, veth and bridge it
created, even when a test fails."""

import base64
import collections
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from conftest import BERTH, Berth, end_process
from test_tasks import http_get, remove_cgroup_dirs

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="agents and network namespaces need root")

CLUSTER = "prod"


class Net:
    """The names and addresses of a cluster's hosts. Each module that builds a `Cluster` has
    its own (name prefix, host LAN `<lan>.0.0/24`, container subnets `<containers>.N.0/24`), so
    that no two can collide; `hosts` may exceed the agents started at first (`Cluster(start=)`)."""

    ZONES = (("zone-a", "large.x"), ("zone-b", "small.x"), ("zone-c", "large.y"), ("zone-d", "small.y"))

    def __init__(self, prefix, lan, containers, hosts=3):
        self.prefix = prefix
        self.bridge = prefix + "-br"
        self.server_ip = lan + ".0.1"
        # name, netns, bridge-side veth, address, zone, container bridge, container subnet,
        # instance type
        self.hosts = [
            ("h%d" % n, "%s-h%d" % (prefix, n), "%s-v%d" % (prefix, n), "%s.0.1%d" % (lan, n), zone,
             "%s%d" % (prefix, n), "%s.%d.0/24" % (containers, n), itype)
            for n, (zone, itype) in enumerate(self.ZONES[:hosts], start=1)
        ]


NET = Net("bthm", "10.217", "10.218")
HOST_BRIDGE, SERVER_IP, HOSTS = NET.bridge, NET.server_ip, NET.hosts
# Liveness settings for the link-cut scenarios (seconds).
HEARTBEAT, TIMEOUT, GRACE = 1, 3, 5
# A grace long enough for an agent to come back within it, for the short cut.
FLAP_GRACE = 12


def sh(*args, check=True):
    p = subprocess.run(args, capture_output=True, text=True)
    if check and p.returncode != 0:
        raise AssertionError("%s failed (%d): %s" % (" ".join(args), p.returncode, p.stderr))
    return p


def clean_env():
    return {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}


def wait_for(what, fn, timeout, interval=0.1):
    """Poll `fn` until it returns something truthy; fail with `what` (a string or a callable
    giving one) after `timeout` seconds."""
    deadline = time.time() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.time() > deadline:
            raise AssertionError(what() if callable(what) else what)
        time.sleep(interval)


def refuses(ip, port):
    """Whether a TCP connection to ip:port is refused (nothing listens there any more)."""
    s = socket.socket()
    s.settimeout(2)
    try:
        s.connect((ip, port))
        return False
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    finally:
        s.close()


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped) is not running.
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class Server(Berth):
    """`berth server` on the test bridge's address (a fixed port, kept across restarts)."""

    role = "server"

    def __init__(self, data_dir, listen):
        super().__init__(data_dir)
        self.listen = listen
        self.args = []

    def process_env(self):
        return clean_env()

    def start(self, timeout=20.0, args=()):
        self.args = list(args)
        self.extra_args = self.args
        return super().start(timeout)

    def host(self):
        return self.endpoint.removeprefix("http://")

    def log_from(self, offset):
        with open(self.log_path, errors="replace") as f:
            f.seek(offset)
            return f.read()

    def log_size(self):
        return os.path.getsize(self.log_path)


class Agent:
    """`berth agent` in one host's network namespace, with its own data dir."""

    def __init__(self, cluster, spec):
        (self.name, self.netns, self.veth, self.ip, self.zone, self.bridge, self.subnet,
         self.itype) = spec
        self.cluster = cluster
        self.dir = tempfile.mkdtemp(prefix="%s-%s-" % (cluster.net.prefix, self.name))
        self.log_path = os.path.join(self.dir, "agent.log")
        self.proc = None
        self.arn = None

    def start(self):
        s = self.cluster.server
        log = open(self.log_path, "ab")
        # nsenter execs the agent itself: self.proc.pid is the agent's pid.
        self.proc = subprocess.Popen(
            ["nsenter", "--net=/run/netns/" + self.netns, BERTH, "agent",
             "--server", s.endpoint, "--cluster", CLUSTER, "--data-dir", self.dir,
             "--zone", self.zone, "--bridge-name", self.bridge, "--bridge-subnet", self.subnet,
             "--container-stop-timeout", "2", "--token", self.cluster.join_token],
            stdout=log, stderr=log, env={**clean_env(), "BERTH_LOG": "info"})
        log.close()

    def stop(self, sig=signal.SIGTERM):
        end_process(self.proc, sig)
        self.proc = None

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()[-5000:]
        except OSError:
            return ""

    def instance_arn_file(self):
        try:
            with open(os.path.join(self.dir, "node", "instance-arn")) as f:
                return f.read().strip()
        except OSError:
            return None

    def task_state(self, arn):
        tid = arn.rsplit("/", 1)[1]
        try:
            with open(os.path.join(self.dir, "node", "state", tid + ".json")) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def pids(self, arn):
        """Pids of the task's containers as the agent recorded them."""
        st = self.task_state(arn)
        return [c["pid"] for c in (st or {}).get("containers", []) if c.get("pid")]

    def in_netns(self, *args, timeout=20):
        return subprocess.run(["nsenter", "--net=/run/netns/" + self.netns, *args],
                              capture_output=True, text=True, timeout=timeout)


class Cluster:
    """A server and an agent per host of `net`; `start` of them (all by default) join at `up`,
    the others when a test calls `join`. `server_args` are given to every start of the server."""

    def __init__(self, net=NET, start=None, server_args=()):
        self.net = net
        self.server_args = list(server_args)
        self.start_count = len(net.hosts) if start is None else start
        self.server_dir = tempfile.mkdtemp(prefix="%s-server-" % net.prefix)
        self.server = None
        self.agents = [Agent(self, spec) for spec in net.hosts]
        self.task_ids = set()
        self.images = {}

    # --- topology ------------------------------------------------------------------------
    def remove_topology(self):
        for _, netns, veth, *_ in self.net.hosts:
            sh("ip", "link", "del", veth, check=False)
            sh("ip", "netns", "del", netns, check=False)
        sh("ip", "link", "del", self.net.bridge, check=False)

    def make_topology(self):
        self.remove_topology()  # leftovers of an interrupted run (names are this test's own)
        sh("ip", "link", "add", self.net.bridge, "type", "bridge")
        sh("ip", "addr", "add", self.net.server_ip + "/24", "dev", self.net.bridge)
        sh("ip", "link", "set", self.net.bridge, "up")
        for a in self.agents:
            sh("ip", "netns", "add", a.netns)
            sh("ip", "link", "add", a.veth, "type", "veth", "peer", "name", "eth0", "netns", a.netns)
            sh("ip", "link", "set", a.veth, "master", self.net.bridge)
            sh("ip", "link", "set", a.veth, "up")
            sh("ip", "-n", a.netns, "addr", "add", a.ip + "/24", "dev", "eth0")
            sh("ip", "-n", a.netns, "link", "set", "eth0", "up")
            sh("ip", "-n", a.netns, "link", "set", "lo", "up")

    # --- the cluster -------------------------------------------------------------------
    def up(self):
        self.make_topology()
        s = socket.socket()
        s.bind((self.net.server_ip, 0))
        port = s.getsockname()[1]
        s.close()
        self.server = Server(self.server_dir, "%s:%d" % (self.net.server_ip, port))
        self.server.start(args=self.server_args)
        self.ecs = self.server.client()
        self.ecs.create_cluster(clusterName=CLUSTER)
        # The agents join with a join token scoped to the cluster, as an operator would hand out.
        env = {**clean_env(), **self.server.env}
        p = subprocess.run([BERTH, "token", "create", "--cluster", CLUSTER, "--expires-in", "1h",
                            "--description", "%s test hosts" % self.net.prefix], capture_output=True,
                           text=True, env=env, timeout=20)
        assert p.returncode == 0, p.stderr
        self.join_token = p.stdout.strip()
        self.join(self.agents[:self.start_count])
        self.push_busybox("%s-busybox" % self.net.prefix, {"/www/index.html": "hello from a berth host\n"})
        self.register("web", [{
            "name": "web", "image": self.image, "memory": 32,
            "entryPoint": ["/bin/httpd", "-f", "-p", "8080", "-h", "/www"],
            "portMappings": [{"containerPort": 8080, "hostPort": 0}]}], networkMode="bridge")

    def join(self, agents):
        """Start the agents of these hosts; wait until they are registered instances of the
        cluster (beside those already there) and give them their instance type."""
        before = len(self.ecs.list_container_instances(cluster=CLUSTER)["containerInstanceArns"])
        for a in agents:
            a.start()
        wait_for(lambda: "agents did not register:\n" + self.logs(),
                 lambda: all(a.instance_arn_file() for a in agents)
                 and len(self.ecs.list_container_instances(cluster=CLUSTER)["containerInstanceArns"])
                 == before + len(agents),
                 timeout=30)
        for a in agents:
            assert a.proc.poll() is None, a.log()
            a.arn = a.instance_arn_file()
        self.ecs.put_attributes(cluster=CLUSTER, attributes=[
            {"name": "ecs.instance-type", "value": a.itype, "targetType": "container-instance",
             "targetId": a.arn} for a in agents])

    def push_busybox(self, repo, extra_files):
        ecr = self.server.client("ecr")
        ecr.create_repository(repositoryName=repo)
        root = os.path.join(self.server_dir, "build")
        os.makedirs(os.path.join(root, "bin"))
        for d in ("tmp", "etc"):
            os.makedirs(os.path.join(root, d))
        shutil.copy("/bin/busybox", os.path.join(root, "bin", "busybox"))
        for applet in sh("/bin/busybox", "--list").stdout.split():
            if applet != "busybox":
                os.symlink("busybox", os.path.join(root, "bin", applet))
        with open(os.path.join(root, "etc", "passwd"), "w") as f:
            f.write("root:x:0:0:root:/root:/bin/sh\n")
        with open(os.path.join(root, "etc", "group"), "w") as f:
            f.write("root:x:0:\n")
        for path, content in extra_files.items():
            p = os.path.join(root, path.lstrip("/"))
            os.makedirs(os.path.dirname(p), exist_ok=True)
            with open(p, "w") as f:
                f.write(content)
        self.image = "%s/%s:1" % (self.server.host(), repo)
        p = subprocess.run([BERTH, "push", root, self.image, "--data-dir", self.server_dir],
                           capture_output=True, text=True, env=clean_env())
        assert p.returncode == 0, "berth push to %s: %s" % (self.image, p.stderr)

    def register(self, family, containers, **kw):
        self.ecs.register_task_definition(family=family, containerDefinitions=containers, **kw)

    def sleeper(self, family, memory=16, reservation=None):
        c = {"name": "c", "image": self.image,
             "command": ["/bin/sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]}
        if reservation is not None:
            c["memoryReservation"] = reservation
        else:
            c["memory"] = memory
        self.register(family, [c], networkMode="none")

    def run(self, family, count=1, **kw):
        r = self.ecs.run_task(cluster=CLUSTER, taskDefinition=family, count=count, **kw)
        for t in r["tasks"]:
            self.task_ids.add(t["taskArn"].rsplit("/", 1)[1])
        return r["tasks"], r["failures"]

    def describe(self, arns):
        out = []
        arns = list(arns)
        for i in range(0, len(arns), 100):
            out += self.ecs.describe_tasks(cluster=CLUSTER, tasks=arns[i:i + 100])["tasks"]
        return out

    def wait_tasks(self, arns, status, timeout=40):
        arns = list(arns)
        last = []

        def check():
            nonlocal last
            last = self.describe(arns)
            if status != "STOPPED":
                dead = [t for t in last if t["lastStatus"] == "STOPPED"]
                if dead:
                    raise AssertionError("task stopped: %s\n%s" % (
                        json.dumps(dead[0], default=str, indent=1), self.logs()))
            return len(last) == len(arns) and all(t["lastStatus"] == status for t in last)

        wait_for(lambda: "tasks not %s in %ss: %s\n%s" % (
            status, timeout, [(t["taskArn"].rsplit("/", 1)[1], t["lastStatus"]) for t in last],
            self.logs()), check, timeout, interval=0.2)
        return last

    def stop_and_wait(self, arns, timeout=30):
        for a in arns:
            self.ecs.stop_task(cluster=CLUSTER, task=a)
        return self.wait_tasks(arns, "STOPPED", timeout)

    def instances(self):
        arns = [a.arn for a in self.agents if a.arn]
        cis = self.ecs.describe_container_instances(cluster=CLUSTER, containerInstances=arns)
        return {ci["containerInstanceArn"]: ci for ci in cis["containerInstances"]}

    def agent_of(self, task):
        return next(a for a in self.agents if a.arn == task["containerInstanceArn"])

    def per_host(self, tasks):
        c = collections.Counter(self.agent_of(t).name for t in tasks)
        return {a.name: c.get(a.name, 0) for a in self.agents}

    def running(self, family=None):
        kw = {"family": family} if family else {}
        arns = self.ecs.list_tasks(cluster=CLUSTER, desiredStatus="RUNNING", **kw)["taskArns"]
        return self.describe(arns) if arns else []

    def all_task_arns(self):
        arns = set()
        for st in ("RUNNING", "STOPPED"):
            arns |= set(self.ecs.list_tasks(cluster=CLUSTER, desiredStatus=st)["taskArns"])
        return arns

    def sessions_opened(self, offset):
        """Instance ARNs whose agent opened a session since `offset` in the server's log."""
        text = self.server.log_from(offset)
        return {a.arn for a in self.agents
                if a.arn and any("agent session opened" in l and a.arn in l for l in text.splitlines())}

    def logs(self):
        out = "--- server:\n" + (self.server.log() if self.server else "")
        for a in self.agents:
            out += "\n--- agent %s:\n%s" % (a.name, a.log())
        return out

    # --- teardown ----------------------------------------------------------------------
    def down(self):
        try:
            try:
                if self.server is not None and self.server.proc is not None:
                    self.task_ids |= {a.rsplit("/", 1)[1] for a in self.all_task_arns()}
            except Exception:
                pass
            for a in self.agents:
                a.stop(signal.SIGKILL)
            if self.server is not None:
                self.server.stop()
        finally:
            self.cleanup()

    def cleanup(self):
        """Every step runs even if one before it failed; the first error is raised at the end."""
        errors = []
        for step in (self._kill_containers, self._kill_leftovers, self._unmount, self._remove_cgroups,
                     self.remove_topology, self._remove_dirs):
            try:
                step()
            except Exception as e:  # noqa: BLE001 - reported after the other steps ran
                errors.append(e)
        if errors:
            raise errors[0]

    def _dirs(self):
        return [a.dir for a in self.agents]

    @staticmethod
    def _cgroup_roots():
        return [os.path.join("/sys/fs/cgroup", r) for r in os.listdir("/sys/fs/cgroup")] + ["/sys/fs/cgroup"]

    def _kill_containers(self):
        for d in self._dirs():
            st = os.path.join(d, "node", "state")
            for f in os.listdir(st) if os.path.isdir(st) else []:
                if f.endswith(".json"):
                    self.task_ids.add(f[:-5])
        # Every process in the cgroups of the test's tasks.
        for tid in self.task_ids:
            for root in self._cgroup_roots():
                for dirpath, _, files in os.walk(os.path.join(root, "berth", tid)):
                    if "cgroup.procs" not in files:
                        continue
                    try:
                        with open(os.path.join(dirpath, "cgroup.procs")) as f:
                            procs = f.read().split()
                    except OSError:  # removed meanwhile
                        continue
                    for pid in procs:
                        try:
                            os.kill(int(pid), signal.SIGKILL)
                        except OSError:
                            pass

    def _kill_leftovers(self):
        """Shims of the agents' data dirs, and anything left in the hosts' namespaces."""
        dirs = [d.encode() for d in self._dirs()]
        netns_inodes = set()
        for _, netns, *_ in self.net.hosts:
            try:
                netns_inodes.add(os.stat("/run/netns/" + netns).st_ino)
            except OSError:
                pass
        for pid in os.listdir("/proc"):
            if not pid.isdigit() or int(pid) == os.getpid():
                continue
            try:
                with open("/proc/%s/cmdline" % pid, "rb") as f:
                    args = f.read().split(b"\0")
                ours = any(d in a for d in dirs for a in args)
                if not ours and netns_inodes:
                    ours = os.stat("/proc/%s/ns/net" % pid).st_ino in netns_inodes
            except OSError:
                continue
            if ours:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except OSError:
                    pass
        time.sleep(0.3)

    def _unmount(self):
        """Overlays and namespace files under the agents' dirs, deepest first."""
        dirs = self._dirs()
        with open("/proc/self/mountinfo") as f:
            points = [l.split()[4] for l in f if any(l.split()[4].startswith(d) for d in dirs)]
        for p in sorted(points, key=len, reverse=True):
            sh("umount", "-l", p, check=False)

    def _remove_cgroups(self):
        remove_cgroup_dirs(self._cgroup_roots(), self.task_ids)

    def _remove_dirs(self):
        # (The container bridges, veths and masquerade rules live in the hosts' namespaces and
        # went with them.)
        for d in self._dirs() + [self.server_dir]:
            shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def cl():
    c = Cluster()
    try:
        c.up()
        yield c
    finally:
        c.down()


def test_three_agents_register_with_their_zones(cl):
    cis = cl.instances()
    assert len(cl.ecs.list_container_instances(cluster=CLUSTER)["containerInstanceArns"]) == 3
    for a in cl.agents:
        ci = cis[a.arn]
        attrs = {x["name"]: x.get("value") for x in ci["attributes"]}
        assert ci["agentConnected"] is True, ci
        assert ci["status"] == "ACTIVE"
        assert attrs["ecs.availability-zone"] == a.zone
        assert attrs["ecs.instance-type"] == a.itype
        assert attrs["berth.runtime"] == "native"
        res = {r["name"]: r for r in ci["registeredResources"]}
        assert res["MEMORY"]["integerValue"] > 0


def test_spread_over_zones_puts_two_tasks_on_each_host(cl):
    tasks, failures = cl.run("web", count=6, placementStrategy=[
        {"type": "spread", "field": "attribute:ecs.availability-zone"}])
    assert failures == [] and len(tasks) == 6
    assert cl.per_host(tasks) == {"h1": 2, "h2": 2, "h3": 2}
    t0 = time.time()
    tasks = cl.wait_tasks([t["taskArn"] for t in tasks], "RUNNING")
    print("\nRunTask of 6 over 3 hosts (first pull of the image on each) → all RUNNING: %.1f s"
          % (time.time() - t0))
    for t in tasks:
        # The agent of that host, and only it, runs the task's container.
        a = cl.agent_of(t)
        assert a.pids(t["taskArn"]) and all(pid_alive(p) for p in a.pids(t["taskArn"]))
        assert all(b.task_state(t["taskArn"]) is None for b in cl.agents if b is not a)


def test_http_tasks_answer_on_their_own_host(cl):
    web = cl.running("web")
    assert len(web) == 6
    for t in web:
        a = cl.agent_of(t)
        port = t["containers"][0]["networkBindings"][0]["hostPort"]
        assert http_get("http://%s:%d/index.html" % (a.ip, port)) == "hello from a berth host\n"
    # An awsvpc task has an address on its host's container bridge, reachable only there.
    cl.register("vpcweb", [{
        "name": "web", "image": cl.image, "memory": 32,
        "entryPoint": ["/bin/httpd", "-f", "-p", "9000", "-h", "/www"]}], networkMode="awsvpc")
    tasks, failures = cl.run("vpcweb", placementConstraints=[
        {"type": "memberOf", "expression": "attribute:ecs.availability-zone == zone-b"}],
        networkConfiguration={"awsvpcConfiguration": {"subnets": ["subnet-bthm"]}})
    assert failures == [] and cl.per_host(tasks)["h2"] == 1
    t = cl.wait_tasks([tasks[0]["taskArn"]], "RUNNING")[0]
    ip = {d["name"]: d["value"] for d in t["attachments"][0]["details"]}["privateIPv4Address"]
    assert ip.startswith("10.218.2."), ip
    probe = ("import sys, time, urllib.request\n"
             "for _ in range(50):\n"
             "    try:\n"
             "        print(urllib.request.urlopen(sys.argv[1], timeout=2).read().decode(), end=''); break\n"
             "    except OSError as e:\n"
             "        err = e; time.sleep(0.1)\n"
             "else:\n"
             "    sys.exit('unreachable: %s' % err)\n")
    url = "http://%s:9000/index.html" % ip
    h1, h2 = cl.agents[0], cl.agents[1]
    r = h2.in_netns(sys.executable, "-c", probe, url)
    assert r.returncode == 0 and r.stdout == "hello from a berth host\n", r
    # h1 has no route to h2's container bridge (no default route either: nothing leaves).
    r = h1.in_netns(sys.executable, "-c", "import socket; socket.create_connection((%r, 9000), timeout=2)" % ip)
    assert r.returncode != 0 and "unreachable" in r.stderr.lower(), r
    cl.stop_and_wait([t["taskArn"]])


def test_binpack_on_memory_fills_one_host_before_the_next(cl):
    remaining = [{r["name"]: r for r in ci["remainingResources"]}["MEMORY"]["integerValue"]
                 for ci in cl.instances().values()]
    # Two fit on a host, a third does not.
    big = min(remaining) * 2 // 5
    cl.sleeper("big", reservation=big)
    binpack = [{"type": "binpack", "field": "memory"}]
    tasks, failures = cl.run("big", count=4, placementStrategy=binpack)
    assert failures == [] and len(tasks) == 4
    counts = cl.per_host(tasks)
    assert sorted(counts.values()) == [0, 2, 2], counts
    empty = [h for h, n in counts.items() if n == 0][0]
    more, failures = cl.run("big", count=3, placementStrategy=binpack)
    assert len(more) == 2 and cl.per_host(more)[empty] == 2, cl.per_host(more)
    assert failures and {f["reason"] for f in failures} == {"RESOURCE:MEMORY"}, failures
    arns = [t["taskArn"] for t in tasks + more]
    cl.wait_tasks(arns, "RUNNING")
    cl.stop_and_wait(arns)


def test_member_of_constraints_and_distinct_instance(cl):
    cl.sleeper("pinned")
    cl.sleeper("typed")
    cl.sleeper("nowhere")
    cl.sleeper("distinct3")
    cl.sleeper("distinct4")
    zone_b, f = cl.run("pinned", count=2, placementConstraints=[
        {"type": "memberOf", "expression": "attribute:ecs.availability-zone == zone-b"}])
    assert f == [] and cl.per_host(zone_b) == {"h1": 0, "h2": 2, "h3": 0}
    large, f = cl.run("typed", count=4, placementConstraints=[
        {"type": "memberOf", "expression": "attribute:ecs.instance-type =~ large.*"}])
    assert f == [] and len(large) == 4 and cl.per_host(large)["h2"] == 0, cl.per_host(large)
    none, f = cl.run("nowhere", count=2, placementConstraints=[
        {"type": "memberOf", "expression": "attribute:ecs.availability-zone == zone-z"}])
    assert none == []
    assert {x["reason"] for x in f} == {"MemberOf placement constraint unsatisfied."}, f
    assert {x["arn"] for x in f} == {a.arn for a in cl.agents}
    three, f = cl.run("distinct3", count=3, placementConstraints=[{"type": "distinctInstance"}])
    assert f == [] and cl.per_host(three) == {"h1": 1, "h2": 1, "h3": 1}
    again, f = cl.run("distinct3", count=1, placementConstraints=[{"type": "distinctInstance"}])
    assert again == [] and {x["reason"] for x in f} == {"DistinctInstance placement constraint unsatisfied."}, f
    four, f = cl.run("distinct4", count=4, placementConstraints=[{"type": "distinctInstance"}])
    assert len(four) == 3 and cl.per_host(four) == {"h1": 1, "h2": 1, "h3": 1}
    assert f and {x["reason"] for x in f} == {"DistinctInstance placement constraint unsatisfied."}, f
    arns = [t["taskArn"] for t in zone_b + large + three + four]
    cl.wait_tasks(arns, "RUNNING")
    cl.stop_and_wait(arns)


def test_agent_killed_and_restarted_keeps_its_tasks(cl):
    h1 = cl.agents[0]
    mine = [t for t in cl.running("web") if cl.agent_of(t) is h1]
    assert len(mine) == 2
    # And a task that is stopped while its agent is away.
    cl.sleeper("away")
    (away,), f = cl.run("away", placementConstraints=[
        {"type": "memberOf", "expression": "attribute:ecs.availability-zone == zone-a"}])
    assert f == []
    away = away["taskArn"]
    cl.wait_tasks([away], "RUNNING")
    pids = {t["taskArn"]: h1.pids(t["taskArn"]) for t in mine}
    pids[away] = h1.pids(away)
    ports = {t["taskArn"]: t["containers"][0]["networkBindings"][0]["hostPort"] for t in mine}
    versions = {t["taskArn"]: t["version"] for t in mine}
    h1.stop(signal.SIGKILL)  # no chance to clean up
    t_killed = time.time()
    assert all(pid_alive(p) for ps in pids.values() for p in ps), "containers outlive their agent"
    # The host ports are forwarded by the agent process itself: nothing answers meanwhile.
    dark = all(refuses(h1.ip, p) for p in ports.values())
    cl.ecs.stop_task(cluster=CLUSTER, task=away, reason="stopped while the agent was away")
    offset = cl.server.log_size()
    h1.start()
    wait_for(lambda: "h1 did not reconnect:\n" + cl.logs(), lambda: h1.arn in cl.sessions_opened(offset), 20)
    assert h1.instance_arn_file() == h1.arn
    assert len(cl.ecs.list_container_instances(cluster=CLUSTER)["containerInstanceArns"]) == 3
    wait_for("h1 not agentConnected after its restart",
             lambda: cl.instances()[h1.arn]["agentConnected"] is True, 15)
    for arn, port in ports.items():
        # The host ports are bound again by the new agent, to the same containers.
        assert http_get("http://%s:%d/index.html" % (h1.ip, port), timeout=15) == "hello from a berth host\n"
        assert h1.pids(arn) == pids[arn]
    print("\nagent SIGKILLed and restarted: its host ports answered nothing meanwhile: %s; "
          "answering again %.1f s after the kill" % (dark, time.time() - t_killed))
    now = {t["taskArn"]: t for t in cl.describe(list(ports))}
    assert all(t["lastStatus"] == "RUNNING" and t["version"] == versions[a] for a, t in now.items())
    # The StopTask given while the agent was dead reaches the container through the new one.
    t = cl.wait_tasks([away], "STOPPED", timeout=20)[0]
    assert t["stopCode"] == "UserInitiated" and t["stoppedReason"] == "stopped while the agent was away"
    wait_for("the task stopped while its agent was away still runs",
             lambda: not any(pid_alive(p) for p in pids[away]), 10)
    # Still reported: a StopTask reaches the container through the new agent.
    victim = mine[0]["taskArn"]
    cl.ecs.stop_task(cluster=CLUSTER, task=victim)
    t = cl.wait_tasks([victim], "STOPPED", timeout=20)[0]
    assert t["stopCode"] == "UserInitiated"
    wait_for("the stopped task's container is still running",
             lambda: not any(pid_alive(p) for p in pids[victim]), 10)
    other = mine[1]["taskArn"]
    assert cl.describe([other])[0]["lastStatus"] == "RUNNING"
    assert http_get("http://%s:%d/index.html" % (h1.ip, ports[other])) == "hello from a berth host\n"


def test_agent_started_while_the_server_is_out_of_reach_joins_when_it_is_back(cl):
    h3 = cl.agents[2]
    mine = [t for t in cl.running() if cl.agent_of(t) is h3]
    pids = {t["taskArn"]: h3.pids(t["taskArn"]) for t in mine}
    ports = [t["containers"][0]["networkBindings"][0]["hostPort"] for t in mine]
    assert len(mine) == 2
    h3.stop(signal.SIGKILL)
    offset = cl.server.log_size()
    sh("ip", "link", "set", h3.veth, "down")
    try:
        h3.start()
        # (No route to h3's server: each attempt fails once ARP gives up, after ~3 s.)
        wait_for(lambda: "the agent did not retry:\n" + h3.log(),
                 lambda: h3.proc.poll() is not None or "retrying in" in h3.log(), 15)
        assert h3.proc.poll() is None, "the agent gave up on an unreachable server:\n" + h3.log()
    finally:
        sh("ip", "link", "set", h3.veth, "up")
    t_restore = time.time()
    wait_for(lambda: "h3 did not join after its link came back:\n" + cl.logs(),
             lambda: h3.arn in cl.sessions_opened(offset), 30)
    print("\nagent started with its server out of reach: joined %.1f s after the link came back"
          % (time.time() - t_restore))
    assert h3.instance_arn_file() == h3.arn
    for t in cl.describe(pids):
        assert t["lastStatus"] == "RUNNING"
        assert h3.pids(t["taskArn"]) == pids[t["taskArn"]]
    for port in ports:
        assert http_get("http://%s:%d/index.html" % (h3.ip, port), timeout=15) == "hello from a berth host\n"


def test_server_restart_keeps_tasks_and_agents_reconnect(cl):
    before = {t["taskArn"]: t for t in cl.running()}
    assert len(before) == 5
    cl.server.stop()
    time.sleep(1.5)  # the agents notice and start retrying
    offset = cl.server.log_size()
    t0 = time.time()
    cl.server.start(args=cl.server.args)
    cl.ecs = cl.server.client()
    wait_for(lambda: "agents did not reconnect to the restarted server:\n" + cl.logs(),
             lambda: cl.sessions_opened(offset) == {a.arn for a in cl.agents}, 15)
    wait_for("agentConnected not true on every instance after the server restart",
             lambda: all(ci["agentConnected"] is True for ci in cl.instances().values()), 15)
    took = time.time() - t0
    print("\nserver restart: 3 agent sessions open again, agentConnected true, %.1f s after the "
          "server started" % took)
    after = {t["taskArn"]: t for t in cl.running()}
    assert set(after) == set(before)
    assert all(t["lastStatus"] == "RUNNING" for t in after.values())
    assert all(after[a]["containerInstanceArn"] == before[a]["containerInstanceArn"] for a in before)
    tasks, failures = cl.run("web")
    assert failures == [] and len(tasks) == 1
    t = cl.wait_tasks([tasks[0]["taskArn"]], "RUNNING")[0]
    port = t["containers"][0]["networkBindings"][0]["hostPort"]
    assert http_get("http://%s:%d/index.html" % (cl.agent_of(t).ip, port)) == "hello from a berth host\n"
    cl.stop_and_wait([t["taskArn"]])


def test_draining_instance_gets_no_new_tasks(cl):
    h2 = cl.agents[1]
    r = cl.ecs.update_container_instances_state(cluster=CLUSTER, containerInstances=[h2.arn],
                                                status="DRAINING")
    assert r["failures"] == [] and r["containerInstances"][0]["status"] == "DRAINING"
    try:
        # Its agent restarting (re-registering) does not make it ACTIVE again.
        h2.stop(signal.SIGKILL)
        offset = cl.server.log_size()
        h2.start()
        wait_for(lambda: "h2 did not reconnect:\n" + cl.logs(), lambda: h2.arn in cl.sessions_opened(offset), 20)
        assert cl.instances()[h2.arn]["status"] == "DRAINING"
        cl.sleeper("drain")
        tasks, failures = cl.run("drain", count=4, placementStrategy=[{"type": "spread", "field": "instanceId"}])
        assert failures == [] and cl.per_host(tasks) == {"h1": 2, "h2": 0, "h3": 2}
        none, failures = cl.run("drain", placementConstraints=[
            {"type": "memberOf", "expression": "attribute:ecs.availability-zone == zone-b"}])
        assert none == [] and failures, failures
        cl.wait_tasks([t["taskArn"] for t in tasks], "RUNNING")
        cl.stop_and_wait([t["taskArn"] for t in tasks])
    finally:
        cl.ecs.update_container_instances_state(cluster=CLUSTER, containerInstances=[h2.arn],
                                                status="ACTIVE")
    # Running web tasks on a draining instance are not standalone-drained (no service).
    assert cl.per_host(cl.running("web"))["h2"] == 2


def restart_server_with_liveness(cl, grace):
    """Restart the server with short liveness settings and wait for the three agents."""
    cl.server.stop()
    offset = cl.server.log_size()
    cl.server.start(args=[*cl.server_args, "--agent-heartbeat-interval", str(HEARTBEAT),
                          "--agent-timeout", str(TIMEOUT), "--lost-instance-grace", str(grace)])
    cl.ecs = cl.server.client()
    up = [a for a in cl.agents if a.proc is not None]
    wait_for(lambda: "agents did not reconnect:\n" + cl.logs(),
             lambda: cl.sessions_opened(offset) == {a.arn for a in up}, 15)
    wait_for("agentConnected not true on every instance",
             lambda: all(cl.instances()[a.arn]["agentConnected"] is True for a in up), 15)


def test_short_link_cut_within_the_grace_keeps_the_tasks(cl):
    h1, h2, h3 = cl.agents
    restart_server_with_liveness(cl, FLAP_GRACE)
    mine = [t for t in cl.running() if cl.agent_of(t) is h2]
    assert len(mine) == 2
    pids = {t["taskArn"]: h2.pids(t["taskArn"]) for t in mine}
    versions = {t["taskArn"]: t["version"] for t in mine}
    ports = [t["containers"][0]["networkBindings"][0]["hostPort"] for t in mine]
    t0 = time.time()
    sh("ip", "link", "set", h2.veth, "down")
    try:
        wait_for(lambda: "agentConnected still true %.0f s after h2's link was cut (timeout %d s)"
                 % (time.time() - t0, TIMEOUT),
                 lambda: cl.instances()[h2.arn]["agentConnected"] is False, TIMEOUT + 4, interval=0.2)
        t_disconnected = time.time() - t0
    finally:
        sh("ip", "link", "set", h2.veth, "up")
    t_restore = time.time()
    wait_for(lambda: "h2 not reconnected %.0f s after its link came back:\n%s" % (
                 time.time() - t_restore, cl.logs()),
             lambda: cl.instances()[h2.arn]["agentConnected"] is True, FLAP_GRACE, interval=0.2)
    t_reconnected = time.time() - t_restore
    print("\nshort cut: agentConnected false %.1f s after the cut; true again %.1f s after the "
          "link came back" % (t_disconnected, t_reconnected))
    # Past the moment the grace would have ended had h2 stayed away: nothing was stopped.
    time.sleep(max(0, t0 + t_disconnected + FLAP_GRACE + 2 - time.time()))
    for t in cl.describe(pids):
        assert t["lastStatus"] == "RUNNING" and t["desiredStatus"] == "RUNNING", t
        assert t["version"] == versions[t["taskArn"]]
    assert all(pid_alive(p) for ps in pids.values() for p in ps)
    for port in ports:
        assert http_get("http://%s:%d/index.html" % (h2.ip, port)) == "hello from a berth host\n"


def test_cut_link_marks_the_host_lost_and_reconciles_when_it_returns(cl):
    h1, h2, h3 = cl.agents
    restart_server_with_liveness(cl, GRACE)
    cl.sleeper("lost")
    extra, f = cl.run("lost", placementConstraints=[
        {"type": "memberOf", "expression": "attribute:ecs.availability-zone == zone-c"}])
    assert f == [] and cl.per_host(extra)["h3"] == 1
    cl.wait_tasks([extra[0]["taskArn"]], "RUNNING")
    running = cl.running()
    on_h3 = [t for t in running if cl.agent_of(t) is h3]
    elsewhere = [t for t in running if cl.agent_of(t) is not h3]
    assert len(on_h3) == 3 and len(elsewhere) == 3
    pids = {t["taskArn"]: h3.pids(t["taskArn"]) for t in on_h3}
    assert all(pids.values())
    ports = [t["containers"][0]["networkBindings"][0]["hostPort"]
             for t in on_h3 if t["containers"][0].get("networkBindings")]
    assert len(ports) == 2
    known = cl.all_task_arns()
    h3_id = h3.arn.rsplit("/", 1)[1]
    # Steady state: the agent has seen heartbeats enough to know their interval, and so
    # notices a silent server by itself (before that it waits for TCP to tell it).
    time.sleep(3 * HEARTBEAT)

    t0 = time.time()
    sh("ip", "link", "set", h3.veth, "down")
    cut = True
    try:
        wait_for(lambda: "agentConnected still true %.0f s after h3's link was cut (timeout %d s)"
                 % (time.time() - t0, TIMEOUT),
                 lambda: cl.instances()[h3.arn]["agentConnected"] is False, TIMEOUT + 4, interval=0.2)
        t_disconnected = time.time() - t0
        # While h3 is away: nothing new goes there.
        none, f = cl.run("lost", placementConstraints=[
            {"type": "memberOf", "expression": "attribute:ecs.availability-zone == zone-c"}])
        assert none == [] and {x["reason"] for x in f if x.get("arn") == h3.arn} == {"AGENT"}, f
        placed, f = cl.run("lost", count=2)
        assert f == [] and cl.per_host(placed)["h3"] == 0
        new_arns = {t["taskArn"] for t in placed}
        cl.wait_tasks(new_arns, "RUNNING")
        # After the grace period its tasks are given up on.
        wait_for(lambda: "h3's tasks not STOPPED %.0f s after the cut: %s" % (
                     time.time() - t0, [(t["lastStatus"], t["desiredStatus"]) for t in cl.describe(pids)]),
                 lambda: all(t["lastStatus"] == "STOPPED" for t in cl.describe(pids)),
                 TIMEOUT + GRACE + 8, interval=0.2)
        t_stopped = time.time() - t0
        for t in cl.describe(pids):
            assert t["desiredStatus"] == "STOPPED" and t["stopCode"] == "TerminationNotice", t
            reason = t.get("stoppedReason", "")
            assert h3_id in reason or "container instance" in reason.lower(), reason
        # The server cannot reach h3: its containers still run there.
        assert all(pid_alive(p) for ps in pids.values() for p in ps)
        t_restore = time.time()
        sh("ip", "link", "set", h3.veth, "up")
        cut = False
        wait_for(lambda: "h3 not reconnected %.0f s after its link came back:\n%s" % (
                     time.time() - t_restore, cl.logs()),
                 lambda: cl.instances()[h3.arn]["agentConnected"] is True, 30, interval=0.2)
        t_reconnected = time.time() - t_restore
        # Reconciliation: the agent stops what the server stopped meanwhile.
        wait_for(lambda: "containers of tasks stopped while h3 was away still run %.0f s after it returned:\n%s"
                 % (time.time() - t_restore, h3.log()),
                 lambda: not any(pid_alive(p) for ps in pids.values() for p in ps), 20, interval=0.2)
        t_reconciled = time.time() - t_restore
        for port in ports:
            assert wait_for("h3 still serves port %d" % port, lambda: refuses(h3.ip, port), 5)
        print("\nlink cut → agentConnected false: %.1f s; → tasks STOPPED: %.1f s "
              "(heartbeat %d s, timeout %d s, grace %d s); link restored → agentConnected true: %.1f s; "
              "→ containers stopped: %.1f s" % (t_disconnected, t_stopped, HEARTBEAT, TIMEOUT, GRACE,
                                                t_reconnected, t_reconciled))
        # Nothing started twice, the other hosts untouched; what the server decided stays.
        assert cl.all_task_arns() == known | new_arns
        for t in cl.describe(pids):
            assert t["lastStatus"] == "STOPPED" and t["stopCode"] == "TerminationNotice", t
        assert {t["taskArn"] for t in cl.running()} == {t["taskArn"] for t in elsewhere} | new_arns
        assert all(t["lastStatus"] == "RUNNING" for t in cl.describe([t["taskArn"] for t in elsewhere]))
        # h3 takes tasks again.
        back, f = cl.run("lost", placementConstraints=[
            {"type": "memberOf", "expression": "attribute:ecs.availability-zone == zone-c"}])
        assert f == [] and cl.per_host(back)["h3"] == 1
        cl.wait_tasks([back[0]["taskArn"]], "RUNNING")
        cl.stop_and_wait([back[0]["taskArn"]] + sorted(new_arns))
    finally:
        if cut:
            sh("ip", "link", "set", h3.veth, "up", check=False)


def test_metrics_from_another_address_need_credentials(cl):
    """`/metrics` answers loopback freely (`--metrics auth`, the default); from a node's
    network namespace it needs credentials allowed berth:GetMetrics: the registry's token as
    Prometheus sends it (Basic AWS:<token>), or nothing gets out."""
    a = cl.agents[0]
    url = cl.server.endpoint + "/metrics"
    r = a.in_netns("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", url)
    assert r.stdout == "401", (r.stdout, r.stderr)
    token = base64.b64decode(
        cl.server.client("ecr").get_authorization_token()["authorizationData"][0][
            "authorizationToken"]).decode().split(":", 1)[1]
    r = a.in_netns("curl", "-s", "-u", "AWS:" + token, url)
    assert "berth_api_requests_total" in r.stdout, r.stdout[:300]
    r = a.in_netns("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-u",
                   "AWS:not-a-token", url)
    assert r.stdout == "401", r.stdout
