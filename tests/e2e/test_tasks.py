"""Tasks really run: `berth up` as root with its local node, images built from Debian's static
busybox and pushed with `berth push`, driven with the aws CLI and boto3, checked from outside
(the host port, the kernel's process table, the mounts, the host file system).

The fixture cleans up every container process, mount, network namespace, bridge and cgroup
the node created, even when a test fails."""

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tarfile
import io
import time
import urllib.request

import pytest

from conftest import BERTH, Berth, end_process
from images import make_layout

BRIDGE = "bthe2e0"
SUBNET = "10.215.0.0/24"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the local node needs root")


def _cleanup_node(data_dir, task_ids):
    # Container processes: every process in the cgroups of the test's tasks, by pid.
    for tid in task_ids:
        for root in ("/sys/fs/cgroup/pids", "/sys/fs/cgroup/memory", "/sys/fs/cgroup/unified",
                     "/sys/fs/cgroup"):
            base = os.path.join(root, "berth", tid)
            for dirpath, _, files in os.walk(base):
                if "cgroup.procs" in files:
                    for pid in open(os.path.join(dirpath, "cgroup.procs")).read().split():
                        try:
                            os.kill(int(pid), signal.SIGKILL)
                        except OSError:
                            pass
    # Shims of this data dir, by pid.
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        if b"shim" in args and any(data_dir.encode() in a for a in args):
            try:
                os.killpg(int(pid), signal.SIGKILL)
            except OSError:
                pass
            try:
                os.kill(int(pid), signal.SIGKILL)
            except OSError:
                pass
    time.sleep(0.2)
    # Mounts under the data dir (overlays, netns files), deepest first.
    with open("/proc/self/mountinfo") as f:
        points = [l.split()[4] for l in f if data_dir in l.split()[4]]
    for p in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", "-l", p], capture_output=True)
    subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True)
    remove_node_rules(BRIDGE)
    remove_cgroup_dirs([os.path.join("/sys/fs/cgroup", r) for r in os.listdir("/sys/fs/cgroup")],
                       task_ids)


def remove_node_rules(bridge):
    """The node's rules for `bridge` (masquerade, the credentials guard, the agent's DNAT of
    the credentials address): berth's nf_tables table of the bridge."""
    subprocess.run(["nft", "delete", "table", "ip", "berth-" + bridge], capture_output=True)


def remove_cgroup_dirs(roots, task_ids):
    """Remove the (empty) cgroup directories `<root>/berth/<task id>` and their children."""
    for root in roots:
        for tid in task_ids:
            d = os.path.join(root, "berth", tid)
            if not os.path.isdir(d):
                continue
            for sub in os.listdir(d):
                if os.path.isdir(os.path.join(d, sub)):
                    try:
                        os.rmdir(os.path.join(d, sub))
                    except OSError:
                        pass
            try:
                os.rmdir(d)
            except OSError:
                pass


class Node(Berth):
    def __init__(self, data_dir, extra_args=()):
        super().__init__(data_dir, node=True, extra_args=["--bridge-name", BRIDGE,
                                               "--bridge-subnet", SUBNET, "--zone", "local-a",
                                               "--container-stop-timeout", "3",
                                               *extra_args])

    def host(self):
        return self.endpoint.removeprefix("http://")

    def push_busybox(self, repo, tag="latest", extra_files=None, cmd=None):
        """An image with static busybox and all its applets, pushed with `berth push`."""
        try:
            self.client("ecr").create_repository(repositoryName=repo)
        except self.client("ecr").exceptions.RepositoryAlreadyExistsException:
            pass
        root = os.path.join(self.data_dir, "build-" + repo.replace("/", "_"))
        shutil.rmtree(root, ignore_errors=True)
        os.makedirs(os.path.join(root, "bin"))
        os.makedirs(os.path.join(root, "tmp"))
        os.makedirs(os.path.join(root, "etc"))
        shutil.copy("/bin/busybox", os.path.join(root, "bin", "busybox"))
        applets = subprocess.run(["/bin/busybox", "--list"], capture_output=True, text=True).stdout.split()
        for a in applets:
            if a != "busybox":
                os.symlink("busybox", os.path.join(root, "bin", a))
        with open(os.path.join(root, "etc", "passwd"), "w") as f:
            f.write("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n")
        with open(os.path.join(root, "etc", "group"), "w") as f:
            f.write("root:x:0:\nnogroup:x:65534:\n")
        for path, content in (extra_files or {}).items():
            p = os.path.join(root, path.lstrip("/"))
            os.makedirs(os.path.dirname(p), exist_ok=True)
            with open(p, "w") as f:
                f.write(content)
        ref = "%s/%s:%s" % (self.host(), repo, tag)
        args = [BERTH, "push", root, ref, "--data-dir", self.data_dir]
        if cmd:
            args += ["--cmd", cmd]
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        p = subprocess.run(args, capture_output=True, text=True, env=env)
        assert p.returncode == 0, p.stderr
        return ref

    def wait_task(self, arn, status, timeout=30.0, cluster="default"):
        ecs = self.client()
        deadline = time.time() + timeout
        t = None
        while time.time() < deadline:
            t = ecs.describe_tasks(cluster=cluster, tasks=[arn])["tasks"][0]
            if t["lastStatus"] == status:
                return t
            if t["lastStatus"] == "STOPPED" and status != "STOPPED":
                raise AssertionError("task stopped: %s" % json.dumps(t, default=str, indent=1))
            time.sleep(0.05)
        raise AssertionError("task not %s in %.0fs: %s\n%s" % (
            status, timeout, json.dumps(t, default=str, indent=1), self.log()))

    def run(self, family, containers, **kw):
        ecs = self.client()
        ecs.register_task_definition(family=family, containerDefinitions=containers, **kw)
        extra = {}
        if kw.get("networkMode") == "awsvpc":
            extra["networkConfiguration"] = {"awsvpcConfiguration": {"subnets": ["subnet-berth"]}}
        r = ecs.run_task(cluster="default", taskDefinition=family, **extra)
        assert not r["failures"], r["failures"]
        return r["tasks"][0]["taskArn"]

    def task_ids(self):
        ecs = self.client()
        ids = []
        for st in ("RUNNING", "STOPPED"):
            for a in ecs.list_tasks(cluster="default", desiredStatus=st)["taskArns"]:
                ids.append(a.rsplit("/", 1)[1])
        return ids


@contextlib.contextmanager
def running_node(data_dir, extra_args=()):
    """A started Node; at the end its tasks are stopped, it is stopped, and everything it
    made is cleaned up (even when the test fails)."""
    n = Node(data_dir, extra_args=extra_args).start()
    ids = []
    try:
        yield n
    finally:
        try:
            if n.proc is not None:
                ids = n.task_ids()
                ecs = n.client()
                for a in ecs.list_tasks(cluster="default")["taskArns"]:
                    ecs.stop_task(cluster="default", task=a)
                deadline = time.time() + 15
                while time.time() < deadline and ecs.list_tasks(cluster="default")["taskArns"]:
                    time.sleep(0.1)
                pending = [a for a in ecs.list_tasks(cluster="default", desiredStatus="STOPPED")["taskArns"]
                           if ecs.describe_tasks(cluster="default", tasks=[a])["tasks"][0]["lastStatus"] != "STOPPED"]
                deadline = time.time() + 15
                while pending and time.time() < deadline:
                    time.sleep(0.1)
                    pending = [a for a in pending
                               if ecs.describe_tasks(cluster="default", tasks=[a])["tasks"][0]["lastStatus"] != "STOPPED"]
        finally:
            n.stop()
            _cleanup_node(data_dir, ids)


@pytest.fixture
def node(data_dir):
    with running_node(data_dir) as n:
        yield n


def http_get(url, timeout=5.0):
    deadline = time.time() + timeout
    err = None
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return r.read().decode()
        except OSError as e:
            err = e
            time.sleep(0.1)
    raise AssertionError("GET %s failed: %s" % (url, err))


def test_local_node_registers_with_its_resources(node):
    ecs = node.client()
    arns = ecs.list_container_instances(cluster="default")["containerInstanceArns"]
    assert len(arns) == 1
    ci = ecs.describe_container_instances(cluster="default", containerInstances=arns)["containerInstances"][0]
    res = {r["name"]: r for r in ci["registeredResources"]}
    assert res["CPU"]["integerValue"] == 1024 * os.cpu_count()
    assert res["MEMORY"]["integerValue"] > 0
    assert "22" in res["PORTS"]["stringSetValue"]
    attrs = {a["name"]: a.get("value") for a in ci["attributes"]}
    assert attrs["ecs.os-type"] == "linux"
    assert attrs["ecs.availability-zone"] == "local-a"
    assert attrs["berth.runtime"] == "native"
    assert attrs["ecs.cpu-architecture"] in ("x86_64", "arm64")
    assert ci["agentConnected"] is True
    # A restart re-attaches to the same instance instead of registering another.
    node.stop()
    node.start()
    assert node.client().list_container_instances(cluster="default")["containerInstanceArns"] == arns


def test_bridge_task_reached_on_its_host_port_then_stopped(node):
    image = node.push_busybox("web", extra_files={"/www/index.html": "hello from berth\n"})
    arn = node.run("web", [{
        "name": "web", "image": image, "memory": 64, "essential": True,
        "entryPoint": ["/bin/httpd", "-f", "-p", "8080", "-h", "/www"],
        "portMappings": [{"containerPort": 8080, "hostPort": 0, "protocol": "tcp"}],
    }], networkMode="bridge")
    t = node.wait_task(arn, "RUNNING")
    c = t["containers"][0]
    assert c["lastStatus"] == "RUNNING"
    b = c["networkBindings"][0]
    assert b["containerPort"] == 8080 and 49153 <= b["hostPort"] <= 65535
    assert http_get("http://127.0.0.1:%d/index.html" % b["hostPort"]) == "hello from berth\n"
    assert t["pullStartedAt"] <= t["pullStoppedAt"] <= t["startedAt"]
    assert c["runtimeId"] and c["imageDigest"].startswith("sha256:")
    # berth ps shows it with its port and uptime; berth logs shows its output.
    ps = subprocess.run([BERTH, "ps", "--data-dir", node.data_dir], capture_output=True, text=True,
                        env={k: v for k, v in os.environ.items() if not k.startswith("AWS_")})
    assert ps.returncode == 0, ps.stderr
    line = [l for l in ps.stdout.splitlines() if arn.rsplit("/", 1)[1] in l][0]
    assert "RUNNING" in line and "->8080/tcp" in line and "web:1" in line
    node.client().stop_task(cluster="default", task=arn, reason="done here")
    t = node.wait_task(arn, "STOPPED", timeout=15)
    assert t["stopCode"] == "UserInitiated" and t["stoppedReason"] == "done here"
    assert t["startedAt"] <= t["stoppingAt"] <= t["executionStoppedAt"] <= t["stoppedAt"]
    c = t["containers"][0]
    # httpd as PID 1 has no SIGTERM handler, so it is killed after the stop timeout.
    assert c["exitCode"] in (0, 143, 137), c
    with pytest.raises(AssertionError):
        http_get("http://127.0.0.1:%d/" % b["hostPort"], timeout=0.5)


def test_awsvpc_containers_share_localhost_and_an_address(node):
    image = node.push_busybox("pair", extra_files={"/www/index.html": "from the sidecar\n"})
    arn = node.run("pair", [
        {"name": "server", "image": image, "memory": 32, "essential": True,
         "entryPoint": ["/bin/httpd", "-f", "-p", "9000", "-h", "/www"]},
        {"name": "client", "image": image, "memory": 32, "essential": False,
         "dependsOn": [{"containerName": "server", "condition": "START"}],
         "entryPoint": ["/bin/sh", "-c",
                        "for i in 1 2 3 4 5 6 7 8 9 10; do wget -q -O- http://127.0.0.1:9000/index.html && exit 0; sleep 0.2; done; exit 1"]},
    ], networkMode="awsvpc")
    t = node.wait_task(arn, "RUNNING")
    deadline = time.time() + 15
    while time.time() < deadline:
        t = node.client().describe_tasks(cluster="default", tasks=[arn])["tasks"][0]
        client = [c for c in t["containers"] if c["name"] == "client"][0]
        if client["lastStatus"] == "STOPPED":
            break
        time.sleep(0.1)
    assert client["exitCode"] == 0, client
    assert t["lastStatus"] == "RUNNING", "a non-essential container exiting keeps the task"
    eni = t["attachments"][0]
    details = {d["name"]: d["value"] for d in eni["details"]}
    ip = details["privateIPv4Address"]
    assert ip.startswith("10.215.0.") and eni["status"] == "ATTACHED"
    assert t["containers"][0]["networkInterfaces"][0]["privateIpv4Address"] == ip
    # The task's address is reachable from the host over the bridge.
    assert http_get("http://%s:9000/index.html" % ip) == "from the sidecar\n"
    logs = subprocess.run([BERTH, "logs", arn, "--container", "client", "--data-dir", node.data_dir],
                          capture_output=True, text=True)
    assert "from the sidecar" in logs.stdout, logs


def test_essential_exit_stops_the_task_with_exit_codes(node):
    image = node.push_busybox("job")
    arn = node.run("job", [
        # It ends after a second, so that "side" has set its trap by then (under load a shell
        # that has not yet run `trap` ignores SIGTERM as PID 1, and gets SIGKILL: 137).
        {"name": "main", "image": image, "memory": 32, "essential": True,
         "command": ["/bin/sh", "-c", "sleep 1; echo working; exit 3"]},
        # PID 1 of a container gets SIGTERM only if it handles it: this one does.
        {"name": "side", "image": image, "memory": 32, "essential": False,
         "command": ["/bin/sh", "-c", "trap 'exit 143' TERM; while true; do sleep 0.1; done"]},
    ], networkMode="none")
    t = node.wait_task(arn, "STOPPED", timeout=20)
    by = {c["name"]: c for c in t["containers"]}
    assert by["main"]["exitCode"] == 3
    assert by["side"]["exitCode"] == 143, "the others get SIGTERM"
    assert t["stopCode"] == "EssentialContainerExited"
    assert t["stoppedReason"] == "Essential container in task exited"
    out = subprocess.run([BERTH, "logs", arn, "-c", "main", "--data-dir", node.data_dir],
                         capture_output=True, text=True).stdout
    assert out == "working\n"


def test_sigterm_ignored_then_sigkill_after_stop_timeout(node):
    image = node.push_busybox("stubborn")
    arn = node.run("stubborn", [{
        "name": "c", "image": image, "memory": 32, "stopTimeout": 2,
        "command": ["/bin/sh", "-c", "trap '' TERM; while true; do sleep 0.1; done"],
    }], networkMode="none")
    node.wait_task(arn, "RUNNING")
    t0 = time.time()
    node.client().stop_task(cluster="default", task=arn)
    t = node.wait_task(arn, "STOPPED", timeout=15)
    took = time.time() - t0
    assert 1.8 <= took < 8, took
    assert t["containers"][0]["exitCode"] == 137


def test_out_of_memory_is_reported_as_ecs_does(node):
    image = node.push_busybox("hog")
    arn = node.run("hog", [{
        "name": "hog", "image": image, "memory": 16,
        "command": ["/bin/sh", "-c", "x=a; while true; do x=$x$x; done"],
    }], networkMode="none")
    t = node.wait_task(arn, "STOPPED", timeout=40)
    c = t["containers"][0]
    assert c["exitCode"] == 137
    assert c["reason"] == "OutOfMemoryError: Container killed due to memory usage"
    assert t["stopCode"] == "EssentialContainerExited"


def test_depends_on_healthy_and_health_status(node):
    image = node.push_busybox("ordered")
    arn = node.run("ordered", [
        {"name": "db", "image": image, "memory": 32,
         "command": ["/bin/sh", "-c", "sleep 1; touch /shared/ready; sleep 600"],
         "mountPoints": [{"sourceVolume": "shared", "containerPath": "/shared"}],
         "healthCheck": {"command": ["CMD-SHELL", "test -f /shared/ready"], "interval": 5,
                         "timeout": 2, "retries": 2}},
        {"name": "app", "image": image, "memory": 32, "essential": False,
         "dependsOn": [{"containerName": "db", "condition": "HEALTHY"}],
         "mountPoints": [{"sourceVolume": "shared", "containerPath": "/data", "readOnly": True}],
         "command": ["/bin/sh", "-c", "test -f /data/ready && echo saw-ready; touch /data/x 2>/dev/null && exit 9; sleep 600"]},
    ], networkMode="none", volumes=[{"name": "shared"}])
    t = node.wait_task(arn, "RUNNING", timeout=30)
    by = {c["name"]: c for c in t["containers"]}
    assert by["db"]["healthStatus"] == "HEALTHY"
    assert t["healthStatus"] == "HEALTHY"
    time.sleep(0.5)
    out = subprocess.run([BERTH, "logs", arn, "-c", "app", "--data-dir", node.data_dir],
                         capture_output=True, text=True).stdout
    assert out == "saw-ready\n", "app started after db was healthy, and its mount is read-only"


def test_failures_are_reported_as_ecs_does(node):
    ecs = node.client()
    image = node.push_busybox("tools")
    bad_image = "%s/does-not-exist:nope" % node.host()
    arn = node.run("missing", [{"name": "c", "image": bad_image, "memory": 16}])
    t = node.wait_task(arn, "STOPPED", timeout=20)
    assert t["stopCode"] == "TaskFailedToStart"
    assert t["stoppedReason"].startswith("CannotPullContainerError:"), t["stoppedReason"]
    assert t["containers"][0]["reason"].startswith("CannotPullContainerError:")
    arn = node.run("badcmd", [{"name": "c", "image": image, "memory": 16,
                               "command": ["/no/such/binary"]}], networkMode="none")
    t = node.wait_task(arn, "STOPPED", timeout=20)
    assert t["stopCode"] == "TaskFailedToStart"
    assert t["stoppedReason"].startswith("CannotStartContainerError:"), t["stoppedReason"]
    # No capacity: RunTask answers failures and starts nothing.
    ecs.register_task_definition(family="huge", containerDefinitions=[
        {"name": "c", "image": image, "memory": 10_000_000}])
    r = ecs.run_task(cluster="default", taskDefinition="huge")
    assert r["tasks"] == [] and r["failures"][0]["reason"] == "RESOURCE:MEMORY"


def _evil_layout(path):
    """A layer that climbs out with `..` and writes through a symlink to an absolute path."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as t:
        data = b"pwned\n"
        for name in ("../../../../tmp/berth-escape-dotdot",):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("etc")
        link.type = tarfile.SYMTYPE
        link.linkname = "/tmp/berth-escape-dir"
        t.addfile(link)
        info = tarfile.TarInfo("etc/berth-escape-link")
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    return raw.getvalue()


def test_malicious_layer_is_refused_and_the_host_untouched(node, tmp_path):
    os.makedirs("/tmp/berth-escape-dir", exist_ok=True)
    for p in ("/tmp/berth-escape-dotdot", "/tmp/berth-escape-dir/berth-escape-link"):
        if os.path.exists(p):
            os.remove(p)
    layout = str(tmp_path / "evil")
    os.makedirs(os.path.join(layout, "blobs", "sha256"))
    import gzip
    import hashlib
    tar = _evil_layout(layout)
    gz = gzip.compress(tar, mtime=0)
    def blob(b):
        d = hashlib.sha256(b).hexdigest()
        with open(os.path.join(layout, "blobs", "sha256", d), "wb") as f:
            f.write(b)
        return "sha256:" + d
    cfg = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/sh"]},
                      "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(tar).hexdigest()]}}).encode()
    man = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                      "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": blob(cfg), "size": len(cfg)},
                      "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": blob(gz), "size": len(gz)}]}).encode()
    md = blob(man)
    with open(os.path.join(layout, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    with open(os.path.join(layout, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                                                       "digest": md, "size": len(man)}]}, f)
    node.client("ecr").create_repository(repositoryName="evil")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    p = subprocess.run([BERTH, "push", layout, node.host() + "/evil:1", "--data-dir", node.data_dir],
                       capture_output=True, text=True, env=env)
    assert p.returncode == 0, p.stderr
    arn = node.run("evil", [{"name": "c", "image": node.host() + "/evil:1", "memory": 16}],
                   networkMode="none")
    t = node.wait_task(arn, "STOPPED", timeout=20)
    assert t["stopCode"] == "TaskFailedToStart"
    assert t["stoppedReason"].startswith("CannotPullContainerError:"), t["stoppedReason"]
    assert not os.path.exists("/tmp/berth-escape-dotdot")
    assert not os.path.exists("/tmp/berth-escape-dir/berth-escape-link")
    os.rmdir("/tmp/berth-escape-dir")


def test_agent_restart_keeps_tasks_running_and_reported(node):
    image = node.push_busybox("longrun")
    arn = node.run("longrun", [{
        "name": "c", "image": image, "memory": 32,
        "command": ["/bin/sh", "-c", "trap 'exit 143' TERM; echo started; while true; do sleep 0.1; done"],
    }], networkMode="none")
    t = node.wait_task(arn, "RUNNING")
    tid = arn.rsplit("/", 1)[1]
    state = json.load(open(os.path.join(node.data_dir, "node", "state", tid + ".json")))
    pid = state["containers"][0]["pid"]
    os.kill(pid, 0)
    node.kill()  # SIGKILL: no chance to clean up
    os.kill(pid, 0)  # the container survived its agent
    node.start()
    t2 = node.client().describe_tasks(cluster="default", tasks=[arn])["tasks"][0]
    assert t2["lastStatus"] == "RUNNING" and t2["version"] == t["version"]
    node.client().stop_task(cluster="default", task=arn)
    t = node.wait_task(arn, "STOPPED", timeout=15)
    assert t["containers"][0]["exitCode"] == 143
    with pytest.raises(OSError):
        os.kill(pid, 0)


def test_bridge_ports_answer_while_the_agent_is_away(node):
    """A bridge container's host port is served by a forwarder process of its own: it keeps
    answering while berth is killed, the restarted agent keeps that same forwarder, and the
    forwarder ends with the container."""
    image = node.push_busybox("keep", extra_files={"/www/index.html": "still here\n"})
    arn = node.run("keep", [{
        "name": "web", "image": image, "memory": 64,
        "entryPoint": ["/bin/httpd", "-f", "-p", "8080", "-h", "/www"],
        "portMappings": [{"containerPort": 8080, "hostPort": 0, "protocol": "tcp"}],
    }], networkMode="bridge")
    t = node.wait_task(arn, "RUNNING")
    url = "http://127.0.0.1:%d/index.html" % t["containers"][0]["networkBindings"][0]["hostPort"]
    state_file = os.path.join(node.data_dir, "node", "state", arn.rsplit("/", 1)[1] + ".json")
    c = json.load(open(state_file))["containers"][0]
    fwd = c["forwarders"][0]
    argv = open("/proc/%d/cmdline" % fwd).read().split("\0")
    assert argv[1] == "port-forward" and argv[argv.index("--watch-pid") + 1] == str(c["pid"])
    assert http_get(url) == "still here\n"
    node.kill()  # SIGKILL: berth (server and agent) is gone
    for _ in range(5):
        assert http_get(url, timeout=2) == "still here\n"
    node.start()
    assert http_get(url) == "still here\n"
    assert json.load(open(state_file))["containers"][0]["forwarders"] == [fwd], "kept, not replaced"
    os.kill(fwd, 0)
    node.client().stop_task(cluster="default", task=arn)
    node.wait_task(arn, "STOPPED", timeout=15)
    def alive(pid):  # an exited process its parent has not reaped yet counts as gone
        try:
            return open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False
    deadline = time.time() + 5
    while time.time() < deadline and alive(fwd):
        time.sleep(0.05)
    assert not alive(fwd), "the forwarder ends with its container"
    with pytest.raises(AssertionError):
        http_get(url, timeout=0.5)


def test_seccomp_default_policy_and_unconfined(node):
    image = node.push_busybox("sec")
    cmd = ["/bin/sh", "-c", "unshare -U true && echo made-userns || echo refused"]
    arn = node.run("confined", [{"name": "c", "image": image, "memory": 32, "command": cmd}],
                   networkMode="none")
    node.wait_task(arn, "STOPPED", timeout=20)
    out = subprocess.run([BERTH, "logs", arn, "--data-dir", node.data_dir], capture_output=True, text=True).stdout
    assert "refused" in out and "Operation not permitted" in out, out
    arn = node.run("unconfined", [{"name": "c", "image": image, "memory": 32, "command": cmd,
                                   "dockerSecurityOptions": ["seccomp=unconfined"]}],
                   networkMode="none")
    node.wait_task(arn, "STOPPED", timeout=20)
    out = subprocess.run([BERTH, "logs", arn, "--data-dir", node.data_dir], capture_output=True, text=True).stdout
    assert "made-userns" in out, out


def test_log_rotation_and_image_collection(data_dir):
    n = Node(data_dir, extra_args=["--image-cleanup-interval", "1", "--image-minimum-cleanup-age", "0",
                                   "--log-max-size-mib", "1", "--log-max-files", "2"]).start()
    ids = []
    try:
        image = n.push_busybox("chatty")
        arn = n.run("chatty", [{"name": "c", "image": image, "memory": 32, "command": [
            "/bin/sh", "-c",
            "trap 'exit 0' TERM; head -c 1500000 /dev/zero | tr '\\0' x; echo; sleep 3; echo after; "
            "while true; do sleep 0.1; done"]}], networkMode="none")
        ids.append(arn.rsplit("/", 1)[1])
        n.wait_task(arn, "RUNNING")
        logs = os.path.join(data_dir, "node", "runtime", "logs", ids[0] + "-c.log")
        deadline = time.time() + 15
        while time.time() < deadline and not os.path.exists(logs + ".1"):
            time.sleep(0.2)
        assert os.path.getsize(logs + ".1") >= 1_500_000, "rotated beyond 1 MiB"
        deadline = time.time() + 10
        out = ""
        while time.time() < deadline and "after" not in out:
            out = subprocess.run([BERTH, "logs", arn, "--data-dir", data_dir], capture_output=True,
                                 text=True).stdout
            time.sleep(0.3)
        assert out.startswith("x" * 1000) and out.endswith("after\n"), out[-100:]
        assert os.path.getsize(logs) < 1000
        images = os.path.join(data_dir, "node", "images", "images")
        assert len(os.listdir(images)) == 1, "in use: kept"
        n.client().stop_task(cluster="default", task=arn)
        n.wait_task(arn, "STOPPED", timeout=15)
        deadline = time.time() + 10
        while time.time() < deadline and os.listdir(images):
            time.sleep(0.2)
        assert os.listdir(images) == [], "unused for longer than the minimum age: collected"
        # The blobs go in the same pass, just after the image directories.
        blobs = os.path.join(data_dir, "node", "images", "blobs", "sha256")
        deadline = time.time() + 5
        while time.time() < deadline and os.listdir(blobs):
            time.sleep(0.1)
        assert os.listdir(blobs) == []
    finally:
        n.stop()
        _cleanup_node(data_dir, ids)


def test_task_level_cpu_and_memory_limits(node):
    image = node.push_busybox("limited")
    arn = node.run("limited", [{"name": "c", "image": image, "memoryReservation": 16,
                                "command": ["/bin/sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.1; done"]}],
                   networkMode="none", cpu="256", memory="64")
    node.wait_task(arn, "RUNNING")
    tid = arn.rsplit("/", 1)[1]
    if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        assert open("/sys/fs/cgroup/berth/%s/cpu.max" % tid).read().split() == ["25000", "100000"]
        assert int(open("/sys/fs/cgroup/berth/%s/memory.max" % tid).read()) == 64 << 20
    else:
        assert int(open("/sys/fs/cgroup/cpu/berth/%s/cpu.cfs_quota_us" % tid).read()) == 25000
        assert int(open("/sys/fs/cgroup/memory/berth/%s/memory.limit_in_bytes" % tid).read()) == 64 << 20
    node.client().stop_task(cluster="default", task=arn)
    node.wait_task(arn, "STOPPED", timeout=15)
    time.sleep(0.3)
    assert not os.path.exists("/sys/fs/cgroup/memory/berth/%s" % tid), "the task's cgroup is removed"
    assert not os.path.exists("/sys/fs/cgroup/cpu/berth/%s" % tid)


def test_init_process_forwards_sigterm(node):
    image = node.push_busybox("inited")
    arn = node.run("inited", [{"name": "c", "image": image, "memory": 32, "stopTimeout": 20,
                               "linuxParameters": {"initProcessEnabled": True},
                               "command": ["/bin/sleep", "600"]}], networkMode="none")
    node.wait_task(arn, "RUNNING")
    t0 = time.time()
    node.client().stop_task(cluster="default", task=arn)
    t = node.wait_task(arn, "STOPPED", timeout=15)
    assert time.time() - t0 < 5, "SIGTERM reached sleep through the init (no 20 s SIGKILL wait)"
    assert t["containers"][0]["exitCode"] == 143


def test_without_root_the_api_runs_and_the_log_says_why_there_is_no_node():
    import pathlib
    import tempfile
    d = pathlib.Path(tempfile.mkdtemp(prefix="berth-nobody-"))
    os.chmod(d, 0o755)
    os.chown(d, 65534, 65534)
    log = open(d / "berth.log", "wb")
    os.chown(d / "berth.log", 65534, 65534)
    p = subprocess.Popen([BERTH, "up", "--listen", "127.0.0.1:0", "--data-dir", str(d)],
                         stdout=log, stderr=log, user=65534, group=65534, extra_groups=[],
                         env={"PATH": os.environ["PATH"], "HOME": str(d)})
    try:
        deadline = time.time() + 20
        while time.time() < deadline and not (d / "endpoint.json").exists():
            assert p.poll() is None, (d / "berth.log").read_text()
            time.sleep(0.05)
        time.sleep(0.3)
        text = (d / "berth.log").read_text()
        assert "the local node is not available" in text and "needs root" in text, text
        info = json.loads((d / "endpoint.json").read_text())
        creds = (d / "credentials").read_text()
        akid = creds.split("aws_access_key_id = ")[1].split()[0]
        secret = creds.split("aws_secret_access_key = ")[1].split()[0]
        import boto3
        ecs = boto3.client("ecs", endpoint_url=info["endpoint"], region_name="us-east-1",
                           aws_access_key_id=akid, aws_secret_access_key=secret)
        assert ecs.list_clusters()["clusterArns"] == [], "no node registered a default cluster"
        ecs.create_cluster(clusterName="default")
        assert ecs.list_container_instances(cluster="default")["containerInstanceArns"] == []
    finally:
        p.terminate()
        p.wait(timeout=10)
        shutil.rmtree(d, ignore_errors=True)


def test_standalone_agent_joins_a_server_over_the_network(data_dir):
    """`berth server` (no node) and a `berth agent` with its own data dir: registration, the
    ACS session (DiscoverPollEndpoint + signed websocket), tasks run and reported over HTTP,
    health and awsvpc address reports, an agent restart with tasks still running."""
    import tempfile
    server = Berth(data_dir).start()
    node_dir = tempfile.mkdtemp(prefix="berth-agent-")
    agent = None
    ids = []

    def start_agent():
        log = open(os.path.join(node_dir, "agent.log"), "ab")
        return subprocess.Popen(
            [BERTH, "agent", "--server", server.endpoint, "--cluster", "remote", "--data-dir", node_dir,
             "--zone", "zone-r", "--bridge-name", BRIDGE, "--bridge-subnet", SUBNET,
             "--container-stop-timeout", "2",
             "--token", server.env["AWS_ACCESS_KEY_ID"] + ":" + server.env["AWS_SECRET_ACCESS_KEY"]],
            stdout=log, stderr=log, env={k: v for k, v in os.environ.items() if not k.startswith("AWS_")})

    def agent_log():
        return open(os.path.join(node_dir, "agent.log"), errors="replace").read()[-4000:]

    try:
        ecs = server.client()
        ecs.create_cluster(clusterName="remote")
        agent = start_agent()
        deadline = time.time() + 20
        arns = []
        while time.time() < deadline and not arns:
            assert agent.poll() is None, agent_log()
            arns = ecs.list_container_instances(cluster="remote")["containerInstanceArns"]
            time.sleep(0.1)
        assert len(arns) == 1, agent_log()
        ci = ecs.describe_container_instances(cluster="remote", containerInstances=arns)["containerInstances"][0]
        attrs = {a["name"]: a.get("value") for a in ci["attributes"]}
        assert attrs["ecs.availability-zone"] == "zone-r" and attrs["berth.runtime"] == "native"
        node = Node.__new__(Node)
        node.__dict__.update(server.__dict__)
        image = node.push_busybox("remote-web", extra_files={"/www/index.html": "remote\n"})
        ecs.register_task_definition(family="rweb", networkMode="awsvpc", containerDefinitions=[{
            "name": "web", "image": image, "memory": 32,
            "entryPoint": ["/bin/httpd", "-f", "-p", "8080", "-h", "/www"],
            "healthCheck": {"command": ["CMD-SHELL", "wget -q -O- http://127.0.0.1:8080/ || exit 1"],
                            "interval": 5, "retries": 2}}])
        r = ecs.run_task(cluster="remote", taskDefinition="rweb",
                         networkConfiguration={"awsvpcConfiguration": {"subnets": ["subnet-r"]}})
        arn = r["tasks"][0]["taskArn"]
        ids.append(arn.rsplit("/", 1)[1])
        t = node.wait_task(arn, "RUNNING", cluster="remote")
        ip = {d["name"]: d["value"] for d in t["attachments"][0]["details"]}["privateIPv4Address"]
        assert http_get("http://%s:8080/index.html" % ip) == "remote\n"
        deadline = time.time() + 20
        while time.time() < deadline and t.get("healthStatus") != "HEALTHY":
            time.sleep(0.3)
            t = ecs.describe_tasks(cluster="remote", tasks=[arn])["tasks"][0]
        assert t["healthStatus"] == "HEALTHY", "health reported over the session"
        # The agent dies; its container does not. A new agent re-attaches and still answers.
        agent.kill()
        agent.wait()
        assert http_get("http://%s:8080/index.html" % ip) == "remote\n"
        agent = start_agent()
        time.sleep(1.5)
        assert ecs.list_container_instances(cluster="remote")["containerInstanceArns"] == arns
        ecs.stop_task(cluster="remote", task=arn)
        t = node.wait_task(arn, "STOPPED", timeout=20, cluster="remote")
        assert t["stopCode"] == "UserInitiated"
    finally:
        end_process(agent)
        server.stop()
        _cleanup_node(node_dir, ids)
        shutil.rmtree(node_dir, ignore_errors=True)


def test_fixed_host_port_conflict_is_a_placement_failure(node):
    image = node.push_busybox("fixed", extra_files={"/www/index.html": "fixed\n"})
    port = 18000 + os.getpid() % 1000
    arn = node.run("fixed", [{
        "name": "web", "image": image, "memory": 32,
        "entryPoint": ["/bin/httpd", "-f", "-p", "80", "-h", "/www"],
        "portMappings": [{"containerPort": 80, "hostPort": port}]}], networkMode="bridge")
    t = node.wait_task(arn, "RUNNING")
    assert t["containers"][0]["networkBindings"][0]["hostPort"] == port
    assert http_get("http://127.0.0.1:%d/index.html" % port) == "fixed\n"
    r = node.client().run_task(cluster="default", taskDefinition="fixed")
    assert r["tasks"] == [] and r["failures"][0]["reason"] == "RESOURCE:PORTS", r


def test_pull_from_a_tls_registry(data_dir, tmp_path):
    """An image in the CNCF registry served over HTTPS (a certificate from a test CA, trusted
    through SSL_CERT_FILE): the node pulls it over TLS, anonymously."""
    if not shutil.which("docker-registry") or not shutil.which("openssl"):
        pytest.skip("docker-registry and openssl are needed")
    d = str(tmp_path)
    sh = lambda *a: subprocess.run(a, check=True, capture_output=True, cwd=d)
    sh("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
       "-days", "1", "-subj", "/CN=berth-test-ca")
    sh("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "leaf.key", "-out", "leaf.csr",
       "-subj", "/CN=127.0.0.1")
    with open(os.path.join(d, "ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n")
    sh("openssl", "x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
       "-out", "leaf.pem", "-days", "1", "-extfile", "ext")
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with open(os.path.join(d, "config.yml"), "w") as f:
        f.write("version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: %s/data\n"
                "http:\n  addr: 127.0.0.1:%d\n  tls:\n    certificate: %s/leaf.pem\n    key: %s/leaf.key\n"
                % (d, port, d, d))
    reg = subprocess.Popen(["docker-registry", "serve", os.path.join(d, "config.yml")],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    n = None
    ids = []
    old = os.environ.get("SSL_CERT_FILE")
    try:
        layout = os.path.join(d, "layout")
        from images import busybox_image
        busybox_image(layout, tag="1")
        deadline = time.time() + 10
        while True:
            p = subprocess.run(["skopeo", "copy", "--dest-tls-verify=false",
                                "oci:%s:1" % layout, "docker://127.0.0.1:%d/tls/busybox:1" % port],
                               capture_output=True, text=True)
            if p.returncode == 0 or time.time() > deadline:
                break
            time.sleep(0.2)
        assert p.returncode == 0, p.stderr
        os.environ["SSL_CERT_FILE"] = os.path.join(d, "ca.pem")
        n = Node(data_dir).start()
        arn = n.run("tls", [{"name": "c", "image": "127.0.0.1:%d/tls/busybox:1" % port, "memory": 16,
                             "command": ["/bin/sh", "-c", "echo pulled over tls"]}], networkMode="none")
        ids.append(arn.rsplit("/", 1)[1])
        t = n.wait_task(arn, "STOPPED", timeout=20)
        assert t["containers"][0]["exitCode"] == 0, t
        out = subprocess.run([BERTH, "logs", arn, "--data-dir", data_dir], capture_output=True, text=True).stdout
        assert out == "pulled over tls\n"
    finally:
        if old is None:
            os.environ.pop("SSL_CERT_FILE", None)
        else:
            os.environ["SSL_CERT_FILE"] = old
        if n is not None:
            n.stop()
            _cleanup_node(data_dir, ids)
        reg.terminate()
        reg.wait(timeout=10)


def test_operator_guard_rails_refuse_what_they_name(data_dir, tmp_path):
    """--disable-privileged, --disable-host-network, --disable-added-capabilities and
    --host-volume-allow: the node refuses such tasks before pulling anything, with a reason
    that names the rule; everything else still runs."""
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    with running_node(data_dir, extra_args=["--disable-privileged", "true",
                                            "--disable-host-network", "true",
                                            "--disable-added-capabilities", "true",
                                            "--host-volume-allow", str(allowed)]) as node:
        image = node.push_busybox("guarded")
        sleep = {"image": image, "memory": 16, "command": ["sleep", "30"]}
        for family, containers, kw, words in (
                ("priv", [dict(sleep, name="c", privileged=True)], {"networkMode": "none"},
                 "privileged containers are disabled"),
                ("hostnet", [dict(sleep, name="c")], {"networkMode": "host"}, "host network mode is disabled"),
                ("caps", [dict(sleep, name="c", linuxParameters={"capabilities": {"add": ["SYS_ADMIN"]}})],
                 {"networkMode": "none"}, "added capabilities are disabled"),
                ("etc", [dict(sleep, name="c", mountPoints=[{"sourceVolume": "etc", "containerPath": "/h"}])],
                 {"networkMode": "none", "volumes": [{"name": "etc", "host": {"sourcePath": "/etc"}}]},
                 "outside the host paths this node allows")):
            arn = node.run(family, containers, **kw)
            t = node.wait_task(arn, "STOPPED", timeout=20)
            assert t["stopCode"] == "TaskFailedToStart", t
            assert t["stoppedReason"].startswith("CannotStartContainerError:") and words in t["stoppedReason"], t
        # Within the rails: runs.
        arn = node.run("ok", [dict(sleep, name="c", mountPoints=[{"sourceVolume": "d", "containerPath": "/d"}])],
                       networkMode="none", volumes=[{"name": "d", "host": {"sourcePath": str(allowed)}}])
        node.wait_task(arn, "RUNNING", timeout=20)
