"""Chaos: `kill -9` of the server and of the agent at random points, with the real binary and
real clients, and what must hold afterwards.

- Pushes (`berth up`, no node): OCI layouts pushed with `berth push` by two clients at once,
  the server SIGKILLed at a random moment in each of three rounds and restarted on the same
  data dir. Every push that was acknowledged (the client exited 0) is still there under its
  tag with the same digest and pulls whole (`berth pull` checks every digest and size); the
  blob store holds only whole blobs (each file's SHA-256 is its name) and, once the
  upload-expiry pass has run, no upload file; every interrupted push succeeds when retried.
- RunTask bursts (`berth server` + `berth agent` on this machine, the agent with its own
  bridge): RunTask calls fired while the server, the agent or both are SIGKILLed at a random
  moment, then restarted. Every task whose RunTask was acknowledged exists afterwards and
  converges (RUNNING, or STOPPED with a reason); every RUNNING task has exactly one container
  on the node and nothing runs on the node for a task that is not RUNNING; after all tasks
  are stopped nothing of theirs is left: no shim or container process, cgroup, bundle,
  network namespace file, address, or veth on the agent's bridge ("no orphan container").
- A rolling deployment (same server and agent): a service of 3 updated to a new revision,
  the server SIGKILLed twice during the rollout; the deployment completes with exactly 3
  RUNNING tasks of the new revision (never more than maximumPercent desired-RUNNING tasks
  seen), the old revision's tasks all STOPPED, and the node runs exactly those 3 containers.

The kill points come from a seeded random generator; the seed is printed, and
BERTH_CHAOS_SEED=N replays a run. Every process a test starts is ended by PID in a finally;
data dirs, mounts, cgroups, the bridge and its nf_tables table are removed even on failure.
Traffic goes only to loopback and to the agent's own container bridge (10.241.0.0/24)."""

import hashlib
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

import botocore.config
import botocore.exceptions
import pytest

from conftest import BERTH, Berth, end_process
from images import make_layout
from test_tasks import _cleanup_node, remove_node_rules

BRIDGE = "bthchaos0"
SUBNET = "10.241.0.0/24"
CLUSTER = "chaos"
SEED = int(os.environ.get("BERTH_CHAOS_SEED", random.SystemRandom().randrange(1 << 31)))


def rng_for(name):
    """A generator of kill points for one test, from the run's seed (printed)."""
    print("\nchaos seed %d (replay: BERTH_CHAOS_SEED=%d)" % (SEED, SEED))
    return random.Random("%d:%s" % (SEED, name))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def clean_env():
    return {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}


def wait_for(what, fn, timeout, interval=0.2):
    deadline = time.time() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.time() > deadline:
            raise AssertionError(what() if callable(what) else what)
        time.sleep(interval)


class FixedBerth(Berth):
    """A berth on a fixed loopback port, so that clients (and agents) find it again after a
    restart. `role` is `up` or `server`."""

    def __init__(self, data_dir, role, args):
        super().__init__(data_dir)
        self.role = role
        self.listen = "127.0.0.1:%d" % free_port()
        self.extra_args = list(args)

    def process_env(self):
        return clean_env()

    def host(self):
        return self.endpoint.removeprefix("http://")

    def client(self, service="ecs", **overrides):
        overrides.setdefault("config", botocore.config.Config(
            retries={"max_attempts": 1}, connect_timeout=2, read_timeout=15))
        return super().client(service, **overrides)


# --- pushes --------------------------------------------------------------------------------

def push(b, layout, ref):
    """`berth push` of an OCI layout: (exit code, the digest it printed or None)."""
    try:
        p = subprocess.run([BERTH, "push", layout, ref, "--data-dir", b.data_dir],
                           capture_output=True, text=True, env=clean_env(), timeout=60)
    except subprocess.TimeoutExpired:
        return -1, None
    digest = None
    if p.returncode == 0 and "digest: " in p.stdout:
        digest = p.stdout.strip().split("digest: ")[-1].strip()
    return p.returncode, digest


def test_acknowledged_pushes_survive_kill_9_and_no_partial_blob_remains(data_dir, tmp_path):
    rng = rng_for("pushes")
    b = FixedBerth(data_dir, "up", ["--local-node", "false", "--registry-upload-timeout", "1"])
    b.start()
    try:
        ecr = b.client("ecr")
        ecr.create_repository(repositoryName="chaos")
        # Each push is a new image: one layer shared by all (busybox, identical bytes) and one
        # of its own of 0.5-2 MiB of random bytes, so that a kill lands mid-blob as often as
        # between calls. Two clients push new images until the kill.
        with open("/bin/busybox", "rb") as f:
            bb = f.read()
        images = []       # (layout, tag, digest), in the order they were made
        acked = {}        # tag → digest the client was told
        interrupted = set()
        lock = threading.Lock()

        def new_image():
            with lock:
                k = len(images)
                images.append(None)
            r = random.Random("%d:push:%d" % (SEED, k))
            own = r.randbytes(r.randrange(1 << 19, 2 << 20))
            layout = str(tmp_path / ("img%d" % k))
            digest = make_layout(layout, [{"bin/busybox": bb}, {"data/own": (own, 0o644)}],
                                 tag="t%d" % k)
            images[k] = (layout, "t%d" % k, digest)
            return images[k]

        for rnd in range(3):
            stop = threading.Event()

            def pusher():
                while not stop.is_set():
                    layout, tag, digest = new_image()
                    rc, got = push(b, layout, "%s/chaos:%s" % (b.host(), tag))
                    with lock:
                        if rc == 0:
                            assert got == digest, (tag, got, digest)
                            acked[tag] = got
                        else:
                            interrupted.add(tag)

            threads = [threading.Thread(target=pusher) for _ in range(2)]
            for t in threads:
                t.start()
            delay = rng.uniform(0.5, 3.0)
            time.sleep(delay)
            b.kill()
            stop.set()
            for t in threads:
                t.join(timeout=90)
            print("round %d: SIGKILL after %.2f s; %d of %d pushes acknowledged so far"
                  % (rnd, delay, len(acked), len(images)))
            b.start()

        # Every acknowledged push is there, under its tag, with its digest, and pulls whole.
        ecr = b.client("ecr")
        for tag, digest in sorted(acked.items()):
            got = ecr.batch_get_image(repositoryName="chaos", imageIds=[{"imageTag": tag}])
            assert got["failures"] == [], (tag, got["failures"])
            assert got["images"][0]["imageId"]["imageDigest"] == digest, tag
            dest = str(tmp_path / ("pull-" + tag))
            p = subprocess.run([BERTH, "pull", "%s/chaos:%s" % (b.host(), tag), dest,
                                "--data-dir", b.data_dir], capture_output=True, text=True,
                               env=clean_env(), timeout=60)
            assert p.returncode == 0, (tag, p.stderr)
            assert json.load(open(os.path.join(dest, "index.json")))["manifests"][0]["digest"] == digest

        # Only whole blobs, and no upload file once the expiry pass has run (idle 1 s).
        reg = os.path.join(data_dir, "registry")

        def check_blobs():
            n = 0
            for root, _, files in os.walk(os.path.join(reg, "blobs")):
                for f in files:
                    with open(os.path.join(root, f), "rb") as fh:
                        assert hashlib.sha256(fh.read()).hexdigest() == f, \
                            "partial or stray file in the blob store: %s" % os.path.join(root, f)
                    assert os.path.basename(root) == f[:2], os.path.join(root, f)
                    n += 1
            return n

        check_blobs()
        uploads = os.path.join(reg, "uploads")
        wait_for(lambda: "upload files left after the expiry pass: %s" % os.listdir(uploads),
                 lambda: os.listdir(uploads) == [], timeout=15)
        assert sorted(os.listdir(reg)) == ["blobs", "uploads"], os.listdir(reg)

        # Every push that was not acknowledged succeeds when simply retried.
        for layout, tag, digest in images:
            if tag not in acked:
                rc, got = push(b, layout, "%s/chaos:%s" % (b.host(), tag))
                assert (rc, got) == (0, digest), (tag, rc, got, b.log())
        details = ecr.describe_images(repositoryName="chaos")["imageDetails"]
        assert sorted((d["imageTags"][0], d["imageDigest"]) for d in details) == \
            sorted((tag, digest) for _, tag, digest in images)
        # Its own layer and config per image, and the shared layer (manifests live in the
        # state store).
        assert check_blobs() == 2 * len(images) + 1
        print("acknowledged before the retries: %d of %d; interrupted: %d"
              % (len(acked), len(images), len(interrupted - set(acked))))
        assert interrupted, "no push was interrupted: the kills did not land"
    finally:
        b.stop()


# --- a server and an agent -----------------------------------------------------------------

class Node:
    """`berth server` on a fixed loopback port and `berth agent` on this machine (its own data
    dir and container bridge), both restartable; every process is ended by PID."""

    def __init__(self):
        self.server_dir = tempfile.mkdtemp(prefix="berth-chaos-server-")
        self.node_dir = tempfile.mkdtemp(prefix="berth-chaos-node-")
        self.server = FixedBerth(self.server_dir, "server", ["--service-task-healthy-after", "1"])
        self.agent = None
        self.task_ids = set()

    def start_server(self):
        self.server.start()
        self.ecs = self.server.client()

    def start_agent(self):
        log = open(os.path.join(self.node_dir, "agent.log"), "ab")
        env = self.server.env
        self.agent = subprocess.Popen(
            [BERTH, "agent", "--server", self.server.endpoint, "--cluster", CLUSTER,
             "--data-dir", self.node_dir, "--bridge-name", BRIDGE, "--bridge-subnet", SUBNET,
             "--container-stop-timeout", "2", "--token",
             env["AWS_ACCESS_KEY_ID"] + ":" + env["AWS_SECRET_ACCESS_KEY"]],
            stdout=log, stderr=log, env={**clean_env(), "BERTH_LOG": "info"})
        log.close()

    def kill_agent(self):
        end_process(self.agent, signal.SIGKILL)
        self.agent = None

    def wait_connected(self, timeout=30):
        def connected():
            arns = self.ecs.list_container_instances(cluster=CLUSTER)["containerInstanceArns"]
            if len(arns) != 1:
                return False
            ci = self.ecs.describe_container_instances(cluster=CLUSTER, containerInstances=arns)
            return ci["containerInstances"][0]["agentConnected"]
        wait_for(lambda: "the agent did not (re)connect:\n" + self.logs(), connected, timeout)

    def logs(self):
        try:
            agent = open(os.path.join(self.node_dir, "agent.log"), errors="replace").read()[-4000:]
        except OSError:
            agent = ""
        return "--- server:\n%s\n--- agent:\n%s" % (self.server.log(), agent)

    def push_busybox(self):
        self.server.client("ecr").create_repository(repositoryName="chaos-bb")
        root = os.path.join(self.server_dir, "build")
        for d in ("bin", "tmp", "etc"):
            os.makedirs(os.path.join(root, d))
        shutil.copy("/bin/busybox", os.path.join(root, "bin", "busybox"))
        for a in subprocess.run(["/bin/busybox", "--list"], capture_output=True,
                                text=True).stdout.split():
            if a != "busybox":
                os.symlink("busybox", os.path.join(root, "bin", a))
        ref = "%s/chaos-bb:1" % self.server.host()
        p = subprocess.run([BERTH, "push", root, ref, "--data-dir", self.server_dir],
                           capture_output=True, text=True, env=clean_env())
        assert p.returncode == 0, p.stderr
        return ref

    # What is on the node, seen from outside.
    def describe(self, arns):
        out, failures = [], []
        arns = list(arns)
        for i in range(0, len(arns), 100):
            r = self.ecs.describe_tasks(cluster=CLUSTER, tasks=arns[i:i + 100])
            out += r["tasks"]
            failures += r["failures"]
        return out, failures

    def all_tasks(self, **kw):
        arns = []
        for st in ("RUNNING", "STOPPED"):
            token = None
            while True:
                extra = {"nextToken": token} if token else {}
                r = self.ecs.list_tasks(cluster=CLUSTER, desiredStatus=st, **kw, **extra)
                arns += r["taskArns"]
                token = r.get("nextToken")
                if not token:
                    break
        tasks, failures = self.describe(arns)
        assert not failures, failures
        self.task_ids |= {t["taskArn"].rsplit("/", 1)[1] for t in tasks}
        return tasks

    def containers_of(self, tid):
        """The container cgroups of a task that hold a process (pids hierarchy)."""
        base = os.path.join("/sys/fs/cgroup/pids/berth", tid)
        live = []
        for dirpath, _, files in os.walk(base):
            if dirpath != base and "cgroup.procs" in files:
                try:
                    if open(os.path.join(dirpath, "cgroup.procs")).read().split():
                        live.append(os.path.basename(dirpath))
                except OSError:
                    pass
        return live

    def explain(self, tid):
        """The processes in a task's cgroups and what the logs say about it (for failures)."""
        out = []
        for dirpath, _, files in os.walk(os.path.join("/sys/fs/cgroup/pids/berth", tid)):
            if "cgroup.procs" in files:
                for pid in open(os.path.join(dirpath, "cgroup.procs")).read().split():
                    try:
                        st = open("/proc/%s/stat" % pid).read().rsplit(")", 1)[1].split()
                        cmd = open("/proc/%s/cmdline" % pid, "rb").read().replace(b"\0", b" ")
                        pcmd = open("/proc/%s/cmdline" % st[1], "rb").read().replace(b"\0", b" ")
                        out.append("%s pid %s (%s) %s parent %s: %s" % (
                            dirpath, pid, st[0], cmd[:80], st[1], pcmd[:160]))
                    except OSError as e:
                        out.append("%s pid %s: %s" % (dirpath, pid, e))
        for path in (os.path.join(self.node_dir, "agent.log"), self.server.log_path):
            try:
                out += ["%s: %s" % (os.path.basename(path), re.sub("\x1b\\[[0-9;]*m", "", line).rstrip()[:300])
                        for line in open(path, errors="replace") if tid in line]
            except OSError:
                pass
        return "\n".join(out)

    def shims(self):
        """Pids of `berth shim` processes (and port forwarders) of the agent's data dir."""
        out = []
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                args = open("/proc/%s/cmdline" % pid, "rb").read().split(b"\0")
            except OSError:
                continue
            if len(args) > 1 and args[1] in (b"shim", b"port-forward") and \
                    any(self.node_dir.encode() in a for a in args):
                out.append(int(pid))
        return out

    def leftovers(self):
        """What the node still holds for tasks: empty when every task has ended cleanly."""
        left = {}
        ids = set(self.task_ids)
        state = os.path.join(self.node_dir, "node", "state")
        if os.path.isdir(state):
            ids |= {f[:-5] for f in os.listdir(state) if f.endswith(".json")}
        cg = [os.path.join(root, "berth", tid) for root in os.listdir("/sys/fs/cgroup")
              for tid in ids if os.path.isdir(os.path.join("/sys/fs/cgroup", root, "berth", tid))]
        if cg:
            left["cgroups"] = cg
        if self.shims():
            left["shims"] = self.shims()
        for sub in ("runtime/bundles", "net/netns", "net/ipam", "net/endpoints"):
            d = os.path.join(self.node_dir, "node", sub)
            names = [n for n in os.listdir(d) if not n.startswith(".")] if os.path.isdir(d) else []
            if sub == "net/ipam":
                # The gateway's own address is the bridge's, not a task's.
                names = [n for n in names if n != "10.241.0.1"]
            if names:
                left[sub] = names
        veths = subprocess.run(["ip", "-o", "link", "show", "master", BRIDGE], capture_output=True,
                               text=True).stdout.strip()
        if veths:
            left["veths"] = veths.splitlines()
        return left

    def down(self):
        try:
            try:
                if self.server.proc is not None:
                    self.all_tasks()
            except Exception:  # noqa: BLE001 - the server may be the thing that broke
                pass
            end_process(self.agent, signal.SIGKILL)
            self.server.stop()
        finally:
            _cleanup_node(self.node_dir, sorted(self.task_ids))
            subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True)
            remove_node_rules(BRIDGE)
            shutil.rmtree(self.node_dir, ignore_errors=True)
            shutil.rmtree(self.server_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def node():
    if os.geteuid() != 0:
        pytest.skip("the agent needs root")
    n = Node()
    try:
        n.start_server()
        n.ecs.create_cluster(clusterName=CLUSTER)
        n.start_agent()
        n.wait_connected()
        n.image = n.push_busybox()
        sleeper = {"name": "c", "image": n.image, "memory": 16,
                   "command": ["/bin/sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]}
        n.ecs.register_task_definition(family="sleeper", networkMode="none",
                                       containerDefinitions=[sleeper])
        n.ecs.register_task_definition(family="sleeper-vpc", networkMode="awsvpc",
                                       containerDefinitions=[sleeper])
        n.ecs.register_task_definition(family="brief", networkMode="none", containerDefinitions=[
            {"name": "c", "image": n.image, "memory": 16, "command": ["/bin/sleep", "1"]}])
        yield n
    finally:
        n.down()


def restart(n, which):
    if which in ("server", "both"):
        n.start_server()
    if which in ("agent", "both"):
        n.start_agent()
    n.wait_connected()


def stop_all_and_check_nothing_is_left(n):
    for t in n.all_tasks():
        if t["desiredStatus"] == "RUNNING":
            n.ecs.stop_task(cluster=CLUSTER, task=t["taskArn"], reason="chaos: cleanup")
    wait_for(lambda: "tasks not STOPPED: %s\n%s" % (
        [(t["taskArn"][-8:], t["lastStatus"]) for t in n.all_tasks() if t["lastStatus"] != "STOPPED"],
        n.logs()), lambda: all(t["lastStatus"] == "STOPPED" for t in n.all_tasks()), 60)
    # A settle time for the node's cleanup after its STOPPED reports.
    wait_for(lambda: "left on the node after every task stopped: %s\n%s" % (n.leftovers(), n.logs()),
             lambda: not n.leftovers(), 20, interval=0.5)


def test_run_task_bursts_survive_kill_9_of_server_and_agent(node):
    n = node
    rng = rng_for("runtask")
    kinds = ["server", "agent", "both"]
    rng.shuffle(kinds)
    acked = []
    calls = {"ok": 0, "refused": 0}
    for which in kinds:
        stop = threading.Event()

        def burst():
            ecs = n.server.client()
            while not stop.is_set():
                family = rng.choice(["sleeper", "sleeper", "sleeper-vpc", "brief"])
                extra = {}
                if family == "sleeper-vpc":
                    extra["networkConfiguration"] = {"awsvpcConfiguration": {"subnets": ["subnet-chaos"]}}
                try:
                    r = ecs.run_task(cluster=CLUSTER, taskDefinition=family, count=rng.choice([1, 2]),
                                     **extra)
                except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
                    calls["refused"] += 1
                    time.sleep(0.1)
                    continue
                calls["ok"] += 1
                acked.extend(t["taskArn"] for t in r["tasks"])
                time.sleep(0.15)

        th = threading.Thread(target=burst)
        th.start()
        try:
            delay = rng.uniform(0.5, 2.5)
            time.sleep(delay)
            if which in ("agent", "both"):
                n.kill_agent()
            if which in ("server", "both"):
                n.server.kill()
            # The burst goes on against the dead process a little (refused calls).
            time.sleep(rng.uniform(0.0, 0.5))
        finally:
            stop.set()
            th.join(timeout=60)
        print("SIGKILL of %s after %.2f s; %d tasks acknowledged so far" % (which, delay, len(acked)))
        restart(n, which)
    assert acked, "no RunTask was acknowledged"

    # Every acknowledged task exists and converges: RUNNING, or STOPPED with a reason.
    def converged():
        tasks, failures = n.describe(acked)
        assert not failures, "acknowledged tasks lost: %s" % failures
        return all(t["lastStatus"] == "RUNNING" or (t["lastStatus"] == "STOPPED" and t.get("stoppedReason"))
                   for t in tasks) and tasks
    tasks = wait_for(lambda: "tasks did not converge: %s\n%s" % (
        [(t["taskArn"][-8:], t["lastStatus"], t["desiredStatus"]) for t in n.describe(acked)[0]
         if t["lastStatus"] not in ("RUNNING", "STOPPED")], n.logs()), converged, 60, interval=0.5)
    assert len(tasks) == len(set(acked))
    # What runs on the node matches what the control plane says: one container per RUNNING
    # task, none for any other (including tasks whose RunTask was never acknowledged).
    everything = n.all_tasks()
    for t in everything:
        tid = t["taskArn"].rsplit("/", 1)[1]
        live = n.containers_of(tid)
        brief = t["taskDefinitionArn"].endswith("/brief:1")  # may have exited meanwhile
        if t["lastStatus"] == "RUNNING" and t["desiredStatus"] == "RUNNING" and not brief:
            assert live == ["c"], (tid, t["taskDefinitionArn"], live, n.explain(tid))
        elif t["lastStatus"] == "STOPPED":
            assert live == [], (tid, t["taskDefinitionArn"], t["stoppedReason"], live, n.explain(tid))
    stopped = [t for t in tasks if t["lastStatus"] == "STOPPED"]
    print("RunTask: %d acknowledged (%d calls ok, %d refused), %d tasks in the cluster; "
          "%d acknowledged ones stopped: %s" % (
              len(acked), calls["ok"], calls["refused"], len(everything), len(stopped),
              sorted({(t["taskDefinitionArn"].rsplit("/", 1)[1], t.get("stopCode"),
                       t["stoppedReason"][:60]) for t in stopped})))
    for t in stopped:
        if t["taskDefinitionArn"].rsplit("/", 1)[1].split(":")[0] != "brief":
            # A sleeper only stops for a reason the chaos gave it, never silently.
            assert t.get("stopCode"), t
    stop_all_and_check_nothing_is_left(n)


def test_rolling_deployment_survives_kill_9_of_the_server(node):
    n = node
    rng = rng_for("rollout")
    ecs = n.ecs
    ecs.create_service(cluster=CLUSTER, serviceName="roll", taskDefinition="sleeper", desiredCount=3,
                       deploymentConfiguration={"maximumPercent": 200, "minimumHealthyPercent": 100})

    def service():
        return n.ecs.describe_services(cluster=CLUSTER, services=["roll"])["services"][0]

    def stable(td_suffix):
        s = service()
        d = s["deployments"]
        return (len(d) == 1 and d[0]["taskDefinition"].endswith(td_suffix)
                and d[0].get("rolloutState") == "COMPLETED" and s["runningCount"] == 3
                and d[0]["runningCount"] == 3)

    wait_for(lambda: "service not stable: %s\n%s" % (json.dumps(service(), default=str)[:3000], n.logs()),
             lambda: stable("sleeper:1"), 60)
    old = {t["taskArn"] for t in n.all_tasks(serviceName="roll") if t["desiredStatus"] == "RUNNING"}
    assert len(old) == 3
    rev = ecs.register_task_definition(family="sleeper", networkMode="none", containerDefinitions=[
        {"name": "c", "image": n.image, "memory": 16, "environment": [{"name": "REV", "value": "2"}],
         "command": ["/bin/sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]}])
    new_td = rev["taskDefinition"]["taskDefinitionArn"]
    suffix = new_td.rsplit("/", 1)[1]
    ecs.update_service(cluster=CLUSTER, service="roll", taskDefinition=suffix)

    most = 0

    def sample():
        nonlocal most
        try:
            ts = n.all_tasks(serviceName="roll")
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
            return  # the server is down
        desired_running = [t for t in ts if t["desiredStatus"] == "RUNNING"]
        most = max(most, len(desired_running))

    for k in range(2):
        delay = rng.uniform(0.2, 3.0)
        end = time.time() + delay
        while time.time() < end:
            sample()
            time.sleep(0.1)
        n.server.kill()
        time.sleep(rng.uniform(0.0, 1.0))
        print("rollout: server SIGKILLed %.2f s into phase %d" % (delay, k))
        n.start_server()
    wait_for(lambda: "the rollout did not complete: %s\n%s" % (
        json.dumps(service(), default=str)[:3000], n.logs()),
        lambda: (sample(), stable(suffix))[1], 90, interval=0.3)
    sample()

    tasks = n.all_tasks(serviceName="roll")
    running = [t for t in tasks if t["desiredStatus"] == "RUNNING"]
    assert len(running) == 3, [(t["taskArn"][-8:], t["lastStatus"]) for t in running]
    assert all(t["lastStatus"] == "RUNNING" and t["taskDefinitionArn"] == new_td for t in running)
    assert most <= 6, "more desired-RUNNING tasks than maximumPercent allows: %d" % most
    wait_for(lambda: "old tasks not stopped: %s" % [
        (t["taskArn"][-8:], t["lastStatus"]) for t in n.describe(old)[0]],
        lambda: all(t["lastStatus"] == "STOPPED" for t in n.describe(old)[0]), 30)
    # The node runs exactly the service's three new containers.
    keep = {t["taskArn"] for t in running}
    for t in n.all_tasks(serviceName="roll"):
        live = n.containers_of(t["taskArn"].rsplit("/", 1)[1])
        assert live == (["c"] if t["taskArn"] in keep else []), (t["taskArn"], t["lastStatus"], live)
    print("rollout: %d tasks in all, at most %d desired RUNNING at once" % (len(tasks), most))
    ecs = n.ecs
    ecs.update_service(cluster=CLUSTER, service="roll", desiredCount=0)
    ecs.delete_service(cluster=CLUSTER, service="roll")
    stop_all_and_check_nothing_is_left(n)
