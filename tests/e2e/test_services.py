"""ECS services on the real kernel: one `berth server` and `berth agent`s in network namespaces
(hosts h1, h2, h3 in zones a/b/c on a test bridge, 10.219.0.0/24, container subnets
10.220.N.0/24; a fourth host, h4 in zone-d, joins later), built with test_cluster.py's
`Cluster` under names of this module's own (prefix `btsv`). The services run busybox http
servers (bridge networking, dynamic host ports) and are checked from outside: HTTP on each
task's host port at its host's address, the kernel's process table and cgroups.

What it covers:
- a service of 3 spreads one task on each host, every one answers HTTP, the services-stable
  waiter (boto3 and `aws ecs wait services-stable`) returns, the events say what happened;
- a container process SIGKILLed from outside: its task stops (EssentialContainerExited) and
  the service starts a replacement (the time it takes is printed);
- a task failing its health checks is stopped once the grace period is over, and replaced;
- a rolling update (max 200 %, min 100 %) under a probe sampling the service's tasks every
  ~50 ms and HTTP-probing each RUNNING one: never fewer than 3 answer, never more than 6 tasks;
  one with max 100 %, min 0 %: never more than 3 tasks PENDING or RUNNING;
- a broken image with the circuit breaker (enable + rollback): the deployment FAILS after its
  threshold of failed tasks, the service rolls back, the old tasks serve throughout;
- tasks that cannot be placed (a fixed host port, a constraint no host meets) are reported
  once in the events, the ones that fit run;
- a REPLICA task on a host set DRAINING moves to the other hosts, started before it stops;
- a DAEMON service follows a host joining and a host draining;
- scaling, forceNewDeployment, DeleteService with and without force, MISSING, ListServices
  paging, tags, refused input that changes nothing, a name used again after INACTIVE;
- a host's link cut (short heartbeat/timeout/grace): its task STOPS with TerminationNotice and
  is replaced on the other hosts; after the link is back nothing is doubled.

Traffic goes only to 10.219.0.0/24 (the test's bridge and namespaces). Every service a test
creates is deleted by the test's fixture, and the module fixture ends every process it started
(by pid) and removes every container process, shim, mount, cgroup, namespace, veth and bridge
it created, even when a test fails."""

import collections
import http.client
import os
import signal
import threading
import time
import urllib.request

import botocore.exceptions
import pytest

from test_cluster import (CLUSTER, GRACE, HEARTBEAT, TIMEOUT, Cluster, Net, pid_alive,
                          restart_server_with_liveness, sh, wait_for)
from test_tasks import http_get

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="agents and network namespaces need root")

NET = Net("btsv", "10.219", "10.220", hosts=4)
HEALTHY_AFTER = 1  # seconds (--service-task-healthy-after)
V1 = "hello from a berth host\n"   # what web:1 serves (test_cluster's image)
V2 = "v2\n"                        # what web:2 serves (once its health check passes)


# --- helpers -------------------------------------------------------------------------------

def list_arns(ecs, **kw):
    """Every task ARN ListTasks gives for these filters (all pages)."""
    arns, token = [], None
    while True:
        r = ecs.list_tasks(cluster=CLUSTER, **kw, **({"nextToken": token} if token else {}))
        arns += r["taskArns"]
        token = r.get("nextToken")
        if not token:
            return arns


def describe(ecs, arns):
    out = []
    for i in range(0, len(arns), 100):
        out += ecs.describe_tasks(cluster=CLUSTER, tasks=arns[i:i + 100])["tasks"]
    return out


def tid(arn):
    return arn.rsplit("/", 1)[1]


def get_once(url, timeout=0.5):
    """The body at `url`, or None if nothing answers (one try)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.read().decode()
    except (OSError, http.client.HTTPException):
        return None


def error_of(fn, *args, **kw):
    """The AWS error a call is refused with: (code, HTTP status, message)."""
    with pytest.raises(botocore.exceptions.ClientError) as e:
        fn(*args, **kw)
    r = e.value.response
    return r["Error"]["Code"], r["ResponseMetadata"]["HTTPStatusCode"], r["Error"]["Message"]


class Services:
    """What the tests look at, through the API (and the hosts' addresses)."""

    def __init__(self, cl):
        self.cl = cl

    @property
    def ecs(self):
        return self.cl.ecs  # (a new client after a server restart)

    def describe(self, name):
        r = self.ecs.describe_services(cluster=CLUSTER, services=[name])
        assert r["failures"] == [], r["failures"]
        return r["services"][0]

    def tasks(self, name, desired="RUNNING"):
        ts = describe(self.ecs, list_arns(self.ecs, serviceName=name, desiredStatus=desired))
        self.cl.task_ids |= {tid(t["taskArn"]) for t in ts}
        return ts

    def running(self, name):
        return [t for t in self.tasks(name) if t["lastStatus"] == "RUNNING"]

    def url(self, t):
        port = t["containers"][0]["networkBindings"][0]["hostPort"]
        return "http://%s:%d/index.html" % (self.cl.agent_of(t).ip, port)

    def state(self, name):
        """What a failure message shows of a service and its tasks."""
        s = self.describe(name)
        tasks = [(tid(t["taskArn"]), t["lastStatus"], t["desiredStatus"], t.get("stopCode"),
                  t["taskDefinitionArn"].rsplit("/", 1)[1])
                 for t in self.tasks(name) + self.tasks(name, "STOPPED")]
        return "\n".join(["counts running %s pending %s desired %s" % (
            s["runningCount"], s["pendingCount"], s["desiredCount"])]
            + ["deployment %s" % {k: d.get(k) for k in ("id", "status", "taskDefinition", "rolloutState",
                                                          "runningCount", "failedTasks")}
               for d in s["deployments"]]
            + ["task %s" % (t,) for t in tasks]
            + ["event %s %s" % (e["createdAt"], e["message"]) for e in s["events"][:15]])

    def messages(self, name):
        return [e["message"] for e in self.describe(name)["events"]]

    def wait_stable(self, name, timeout=60, revision=None):
        """One COMPLETED deployment, runningCount == desiredCount, no task pending or stopping."""
        last = {}

        def stable():
            s = last["s"] = self.describe(name)
            deps = s["deployments"]
            return (len(deps) == 1 and deps[0]["rolloutState"] == "COMPLETED"
                    and s["runningCount"] == s["desiredCount"] and s["pendingCount"] == 0
                    and (revision is None or s["taskDefinition"].endswith(":%d" % revision))
                    and len(list_arns(self.ecs, serviceName=name, desiredStatus="RUNNING")) == s["desiredCount"]
                    and all(t["lastStatus"] == "STOPPED" for t in self.tasks(name, "STOPPED")))
        wait_for(lambda: "service %s not stable in %d s:\n%s\n%s" % (
            name, timeout, self.state(name), self.cl.logs()),
            stable, timeout, interval=0.2)
        return last["s"]


# One look of the probe: when, how many of the service's tasks were not STOPPED, how many were
# PENDING or RUNNING (what maximumPercent limits), how many of those the service still wanted
# (desiredStatus RUNNING: not yet asked to stop), and the bodies that answered (task ARN → body).
Sample = collections.namedtuple("Sample", "t unfinished active wanted answered")
ACTIVE = ("PROVISIONING", "PENDING", "ACTIVATING", "RUNNING")


class Probe(threading.Thread):
    """Samples a service's tasks every `interval` seconds and sends one HTTP request to each
    RUNNING one (one that is being stopped too: it may still serve). A task that became
    RUNNING after the listing is probed in a second look when the first finds fewer than
    `expect` answering (old tasks are only stopped once new ones are RUNNING: without it, the
    sample would miss the new ones and count the stopped old ones)."""

    def __init__(self, cl, name, expect, interval=0.05):
        super().__init__(daemon=True)
        self.ecs = cl.server.client()
        self.cl, self.name, self.expect, self.interval = cl, name, expect, interval
        self.samples = []   # (time, tasks not STOPPED, bodies answered)
        self.errors = []
        self.second_looks = 0
        self.seen = {}      # task arn → task definition arn
        self.statuses = collections.Counter()  # (lastStatus, desiredStatus) → samples
        self.halt = threading.Event()

    def look(self):
        arns = list_arns(self.ecs, serviceName=self.name, desiredStatus="RUNNING")
        # (A task asked to stop between the two listings is in both: once is enough.)
        arns += list_arns(self.ecs, serviceName=self.name, desiredStatus="STOPPED")
        tasks = list({t["taskArn"]: t for t in describe(self.ecs, list(dict.fromkeys(arns)))}.values())
        for t in tasks:
            self.seen[t["taskArn"]] = t["taskDefinitionArn"]
            self.statuses[(t["lastStatus"], t["desiredStatus"])] += 1
        return tasks

    def probe(self, tasks, skip=()):
        out = {}
        for t in tasks:
            if t["lastStatus"] == "RUNNING" and t["taskArn"] not in skip:
                body = get_once("http://%s:%d/index.html" % (
                    self.cl.agent_of(t).ip, t["containers"][0]["networkBindings"][0]["hostPort"]))
                if body is not None:
                    out[t["taskArn"]] = body
        return out

    def sample(self):
        t0 = time.time()
        tasks = self.look()
        answered = self.probe(tasks)
        if len(answered) < self.expect:
            self.second_looks += 1
            answered.update(self.probe(self.look(), skip={t["taskArn"] for t in tasks}))
        self.samples.append(Sample(t0, sum(t["lastStatus"] != "STOPPED" for t in tasks),
                                   sum(t["lastStatus"] in ACTIVE for t in tasks),
                                   sum(t["lastStatus"] in ACTIVE and t["desiredStatus"] == "RUNNING"
                                       for t in tasks), answered))

    def run(self):
        while not self.halt.is_set():
            t0 = time.time()
            try:
                self.sample()
            except Exception as e:  # noqa: BLE001 - reported by the test
                self.errors.append(repr(e))
            self.halt.wait(max(0.0, self.interval - (time.time() - t0)))

    def stop(self):
        self.halt.set()
        self.join(10)

    def short(self, since, n):
        """(seconds since `since`, bodies) of the samples where fewer than n tasks answered."""
        return [(round(x.t - since, 2), sorted(set(x.answered.values())))
                for x in self.samples if len(x.answered) < n]

    def most_active(self):
        return max(x.active for x in self.samples)

    def most_wanted(self):
        return max(x.wanted for x in self.samples)

    def summary(self):
        answering = [len(x.answered) for x in self.samples]
        return "%d samples over %.1f s, answering min %d max %d, tasks PENDING or RUNNING max %d " \
               "(desired RUNNING %d), not STOPPED max %d, second looks %d" % (
                   len(self.samples), self.samples[-1].t - self.samples[0].t, min(answering),
                   max(answering), self.most_active(), self.most_wanted(),
                   max(x.unfinished for x in self.samples), self.second_looks)


def container_pids(task_id, cmd):
    """Pids of the processes in the task's cgroups whose command line starts with `cmd`,
    from the kernel (the cgroup hierarchy and /proc), not from berth."""
    pids = set()
    for root in os.listdir("/sys/fs/cgroup"):
        for dirpath, _, files in os.walk(os.path.join("/sys/fs/cgroup", root, "berth", task_id)):
            if "cgroup.procs" in files:
                try:
                    with open(os.path.join(dirpath, "cgroup.procs")) as f:
                        pids |= {int(p) for p in f.read().split()}
                except OSError:
                    pass
    out = []
    for pid in sorted(pids):
        try:
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        if args[0].decode(errors="replace") == cmd:
            out.append(pid)
    return out


# --- fixtures ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cl():
    # A task without health checks counts as healthy after 1 s RUNNING, not ECS's 40 s.
    c = Cluster(NET, start=3, server_args=["--service-task-healthy-after", str(HEALTHY_AFTER)])
    try:
        c.up()  # registers web:1 (busybox httpd serving V1 on 8080, dynamic host port)
        # web:2 serves V2, and has a container health check: its tasks count as healthy (for
        # minimumHealthyPercent) once they answer, not as soon as their process runs (a task
        # RUNNING whose server does not listen yet is not serving).
        c.register("web", [{
            "name": "web", "image": c.image, "memory": 32,
            "entryPoint": ["/bin/sh", "-c", "echo v2 > /tmp/index.html && exec /bin/httpd -f -p 8080 -h /tmp"],
            "portMappings": [{"containerPort": 8080, "hostPort": 0}],
            "healthCheck": {"command": ["CMD-SHELL", "wget -q -O /dev/null http://127.0.0.1:8080/index.html"],
                            "interval": 5, "timeout": 2, "retries": 2}}], networkMode="bridge")
        c.register("web", [{
            "name": "web", "image": "%s/btsv-missing:1" % c.server.host(), "memory": 32,
            "portMappings": [{"containerPort": 8080, "hostPort": 0}]}], networkMode="bridge")
        revs = c.ecs.list_task_definitions(familyPrefix="web")["taskDefinitionArns"]
        assert [a.rsplit(":", 1)[1] for a in revs] == ["1", "2", "3"], revs
        c.sleeper("idle")
        yield c
    finally:
        c.down()


@pytest.fixture
def sv(cl):
    """`Services` for one test; every service created through `sv.create` is deleted (force)
    at the end of the test and its tasks waited for until STOPPED, even if the test failed."""
    s = Services(cl)
    made = []

    def create(name, **kw):
        kw.setdefault("cluster", CLUSTER)
        r = s.ecs.create_service(serviceName=name, **kw)
        made.append(name)
        return r["service"]

    s.create = create
    yield s
    errors = []
    for name in made:
        try:
            s.ecs.delete_service(cluster=CLUSTER, service=name, force=True)
        except botocore.exceptions.ClientError as e:
            if e.response["Error"]["Code"] != "ServiceNotActiveException":
                errors.append(e)
    for name in made:
        try:
            wait_for("service %s's tasks did not stop after its deletion" % name,
                     lambda: not s.tasks(name) and all(
                         t["lastStatus"] == "STOPPED" for t in s.tasks(name, "STOPPED")), 30, interval=0.2)
        except AssertionError as e:
            errors.append(e)
    if errors:
        raise errors[0]


# --- the tests -----------------------------------------------------------------------------

def test_service_of_three_spreads_over_the_hosts_and_becomes_stable(cl, sv):
    t0 = time.time()
    svc = sv.create("web", taskDefinition="web:1", desiredCount=3)
    assert svc["status"] == "ACTIVE" and svc["desiredCount"] == 3 and svc["schedulingStrategy"] == "REPLICA"
    assert svc["serviceArn"] == "arn:aws:ecs:us-east-1:000000000000:service/%s/web" % CLUSTER
    assert svc["taskDefinition"].endswith(":task-definition/web:1") and svc["launchType"] == "EC2"
    cfg = svc["deploymentConfiguration"]
    assert (cfg["maximumPercent"], cfg["minimumHealthyPercent"]) == (200, 100), cfg
    (dep,) = svc["deployments"]
    assert dep["status"] == "PRIMARY" and dep["rolloutState"] == "IN_PROGRESS" and dep["desiredCount"] == 3
    assert dep["id"].startswith("ecs-svc/") and len(dep["id"]) == len("ecs-svc/") + 19
    # boto3's waiter (polling every second instead of its default 15).
    cl.ecs.get_waiter("services_stable").wait(cluster=CLUSTER, services=["web"],
                                              WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    t_stable = time.time() - t0
    # The aws CLI's waiter, on the stable service: returns at its first look.
    t1 = time.time()
    assert cl.server.aws("ecs", "wait", "services-stable", "--cluster", CLUSTER, "--services", "web") is None
    assert time.time() - t1 < 10
    # … and gives up on a service that does not exist.
    p = cl.server.aws("ecs", "wait", "services-stable", "--cluster", CLUSTER, "--services", "nope", check=False)
    assert p.returncode != 0 and "MISSING" in p.stderr, p.stderr
    arns = cl.server.aws("ecs", "list-tasks", "--cluster", CLUSTER, "--service-name", "web")["taskArns"]
    assert len(arns) == 3
    tasks = sv.running("web")
    assert {t["taskArn"] for t in tasks} == set(arns)
    assert all(t["group"] == "service:web" and t["startedBy"] == dep["id"] for t in tasks)
    assert all(t["taskDefinitionArn"].endswith("web:1") for t in tasks)
    # The default strategy (spread over zones, then instances): one task on each host.
    assert cl.per_host(tasks) == {"h1": 1, "h2": 1, "h3": 1, "h4": 0}
    for t in tasks:
        assert http_get(sv.url(t)) == V1
    s = sv.describe("web")
    assert (s["runningCount"], s["pendingCount"], s["desiredCount"]) == (3, 0, 3)
    (d,) = s["deployments"]
    assert d["id"] == dep["id"] and d["rolloutState"] == "COMPLETED" and d["runningCount"] == 3
    assert d["failedTasks"] == 0
    msgs = [e["message"] for e in s["events"]]
    started = set()
    for m in msgs:
        if m.startswith("(service web) has started "):
            started |= {w.strip("().") for w in m.split(": ", 1)[1].split() if w.strip("().") != "task"}
    assert started == {tid(a) for a in arns}, msgs
    assert msgs[0] == "(service web) has reached a steady state.", msgs
    assert "(service web) (deployment %s) deployment completed." % dep["id"] in msgs
    created = [e["createdAt"] for e in s["events"]]
    assert created == sorted(created, reverse=True), "events newest first"
    print("\nservice of 3 created → stable (3 RUNNING on 3 hosts): %.1f s" % t_stable)


def test_killed_container_is_replaced(cl, sv):
    sv.create("heal", taskDefinition="web:1", desiredCount=3)
    sv.wait_stable("heal")
    before = {t["taskArn"]: t for t in sv.running("heal")}
    victim = next(t for t in before.values() if cl.agent_of(t).name == "h2")
    host = cl.agent_of(victim)
    # The container's process, found from outside: the task's cgroups and the process table.
    pids = container_pids(tid(victim["taskArn"]), "/bin/httpd")
    assert len(pids) == 1, pids
    assert pids == host.pids(victim["taskArn"]), (pids, host.pids(victim["taskArn"]))
    assert http_get(sv.url(victim)) == V1
    os.kill(pids[0], signal.SIGKILL)
    t_kill = time.time()
    t = cl.wait_tasks([victim["taskArn"]], "STOPPED", timeout=20)[0]
    t_stopped = time.time() - t_kill
    assert t["stopCode"] == "EssentialContainerExited", t
    assert t["stoppedReason"] == "Essential container in task exited"
    assert t["containers"][0]["exitCode"] == 137
    assert t["desiredStatus"] == "STOPPED", "a stopped task's desiredStatus: %s" % t["desiredStatus"]
    new = wait_for(lambda: "no replacement RUNNING: %s\n%s" % (sv.state("heal"), cl.logs()),
                   lambda: [x for x in sv.running("heal") if x["taskArn"] not in before], 30, interval=0.05)
    t_running = time.time() - t_kill
    assert len(new) == 1
    new = new[0]
    assert http_get(sv.url(new)) == V1
    t_serving = time.time() - t_kill
    # Spread put it where the service lacked a task: on h2 again.
    assert cl.agent_of(new) is host
    s = sv.wait_stable("heal")
    assert s["runningCount"] == 3 and s["deployments"][0]["failedTasks"] == 1
    msgs = [e["message"] for e in s["events"]]
    assert "(service heal) has started 1 tasks: (task %s)." % tid(new["taskArn"]) in msgs, msgs
    # The other two were not touched.
    assert {x["taskArn"] for x in sv.running("heal")} == (set(before) - {victim["taskArn"]}) | {new["taskArn"]}
    assert not pid_alive(pids[0])
    print("\ncontainer SIGKILLed → task STOPPED %.2f s, replacement RUNNING %.2f s, answering HTTP %.2f s"
          % (t_stopped, t_running, t_serving))


def test_unhealthy_task_is_replaced_after_the_grace_period(cl, sv):
    grace = 6
    cl.register("sick", [{
        "name": "web", "image": cl.image, "memory": 32,
        "entryPoint": ["/bin/httpd", "-f", "-p", "8080", "-h", "/www"],
        "portMappings": [{"containerPort": 8080, "hostPort": 0}],
        "healthCheck": {"command": ["CMD-SHELL", "exit 1"], "interval": 5, "timeout": 2, "retries": 1}}],
        networkMode="bridge")
    sv.create("sick", taskDefinition="sick", desiredCount=1, healthCheckGracePeriodSeconds=grace)
    (first,) = wait_for(lambda: "no sick task RUNNING:\n" + sv.state("sick"),
                        lambda: sv.running("sick"), 30, interval=0.1)
    wait_for(lambda: "the task did not become UNHEALTHY:\n" + sv.state("sick"),
             lambda: cl.describe([first["taskArn"]])[0].get("healthStatus") == "UNHEALTHY", 20, interval=0.1)
    t = cl.wait_tasks([first["taskArn"]], "STOPPED", timeout=30)[0]
    assert t["stopCode"] == "ServiceSchedulerInitiated", t
    assert t["stoppedReason"].startswith("Task failed container health checks"), t["stoppedReason"]
    waited = (t["stoppingAt"] - t["startedAt"]).total_seconds()
    assert waited >= grace - 0.2, "stopped %.1f s after it started, within the %d s grace" % (waited, grace)
    # Its replacement follows (and will fail the same way).
    new = wait_for(lambda: "no replacement:\n" + sv.state("sick"),
                   lambda: [x for x in sv.tasks("sick") if x["taskArn"] != first["taskArn"]], 20, interval=0.1)
    assert len(new) == 1 and new[0]["startedBy"] == first["startedBy"]
    s = sv.describe("sick")
    msgs = [e["message"] for e in s["events"]]
    assert "(service sick) (task %s) failed container health checks." % tid(first["taskArn"]) in msgs, msgs
    assert "(service sick) has stopped 1 running tasks: (task %s)." % tid(first["taskArn"]) in msgs, msgs
    assert s["deployments"][0]["rolloutState"] == "IN_PROGRESS" and s["deployments"][0]["failedTasks"] >= 1
    assert "(service sick) has reached a steady state." not in msgs
    print("\nunhealthy task: stopped %.1f s after it started (grace %d s)" % (waited, grace))


def test_rolling_update_keeps_the_minimum_healthy(cl, sv):
    sv.create("roll", taskDefinition="web:1", desiredCount=3,
              deploymentConfiguration={"maximumPercent": 200, "minimumHealthyPercent": 100})
    sv.wait_stable("roll")
    old = {t["taskArn"] for t in sv.running("roll")}
    probe = Probe(cl, "roll", expect=3)
    probe.start()
    try:
        wait_for("the probe took no sample", lambda: len(probe.samples) >= 3, 10, interval=0.05)
        t0 = time.time()
        r = cl.ecs.update_service(cluster=CLUSTER, service="roll", taskDefinition="web:2")["service"]
        assert r["taskDefinition"].endswith("web:2")
        new_dep, old_dep = r["deployments"]
        assert new_dep["status"] == "PRIMARY" and new_dep["rolloutState"] == "IN_PROGRESS"
        assert old_dep["status"] == "ACTIVE" and new_dep["taskDefinition"].endswith("web:2")
        s = sv.wait_stable("roll", revision=2)
        took = time.time() - t0
        time.sleep(0.5)  # a few samples of the end state
    finally:
        probe.stop()
    assert not probe.errors, probe.errors[:3]
    during = [x for x in probe.samples if x.t >= t0]
    assert len(during) >= 10, len(during)
    short = probe.short(t0, 3)
    assert not short, "samples with fewer than 3 tasks answering: %s" % short[:10]
    assert probe.most_active() <= 6, "more than maximumPercent (200 %) of 3 tasks"
    tasks = sv.running("roll")
    assert len(tasks) == 3 and not old & {t["taskArn"] for t in tasks}
    assert all(t["taskDefinitionArn"].endswith("web:2") and t["startedBy"] == new_dep["id"] for t in tasks)
    assert all(t["healthStatus"] == "HEALTHY" for t in tasks)
    assert [http_get(sv.url(t)) for t in tasks] == [V2] * 3
    assert set(probe.samples[-1].answered.values()) == {V2}
    # The old tasks were stopped only once new ones were healthy (web:2 is health-checked).
    first_stop = min(t["stoppingAt"] for t in describe(cl.ecs, sorted(old)))
    assert first_stop.timestamp() - t0 >= 4.5, "an old task stopped %.1f s after the update, before a " \
        "new one could pass its first health check (5 s)" % (first_stop.timestamp() - t0)
    (d,) = s["deployments"]
    assert d["id"] == new_dep["id"] and d["rolloutState"] == "COMPLETED"
    assert "(service roll) (deployment %s) deployment completed." % new_dep["id"] in sv.messages("roll")
    for t in describe(cl.ecs, sorted(old)):
        assert t["lastStatus"] == "STOPPED" and t["stopCode"] == "ServiceSchedulerInitiated", t
        assert t["stoppedReason"] == "Scaling activity initiated by (deployment %s)" % new_dep["id"]
    # Both versions answered during the update, never anything else.
    bodies = collections.Counter(b for x in probe.samples for b in x.answered.values())
    assert set(bodies) == {V1, V2}, bodies
    print("\nrolling update web:1 → web:2 of 3 tasks: COMPLETED in %.1f s; probe: %s"
          % (took, probe.summary()))


def test_rolling_update_within_maximum_100_never_has_more_than_desired_pending_or_running(cl, sv):
    sv.create("swap", taskDefinition="web:1", desiredCount=3,
              deploymentConfiguration={"maximumPercent": 100, "minimumHealthyPercent": 0})
    sv.wait_stable("swap")
    probe = Probe(cl, "swap", expect=0)
    probe.start()
    try:
        wait_for("the probe took no sample", lambda: len(probe.samples) >= 3, 10, interval=0.05)
        t0 = time.time()
        cl.ecs.update_service(cluster=CLUSTER, service="swap", taskDefinition="web:2")
        sv.wait_stable("swap", revision=2)
        took = time.time() - t0
    finally:
        probe.stop()
    assert not probe.errors, probe.errors[:3]
    print("\nrolling update with maximumPercent 100: COMPLETED in %.1f s; probe: %s; statuses seen %s"
          % (took, probe.summary(), dict(probe.statuses)))
    assert [http_get(sv.url(t)) for t in sv.running("swap")] == [V2] * 3
    # "An upper limit on the number of your service's tasks that are allowed in the RUNNING or
    # PENDING state during a deployment": 3 × 100 %.
    crowded = [(round(x.t - t0, 2), x.wanted) for x in probe.samples if x.wanted > 3]
    assert not crowded, "samples with more than 3 tasks PENDING or RUNNING: %s" % crowded[:10]
    # Stop first, then start: every new task was created after every old one was asked to stop.
    # (An old task may still show RUNNING for the moment its agent takes to say it is stopping:
    # the samples count only the tasks the service still wants.)
    new, old = [], []
    for t in sv.tasks("swap") + sv.tasks("swap", "STOPPED"):
        (new if t["taskDefinitionArn"].endswith("web:2") else old).append(t)
    assert len(new) == 3 and len(old) == 3
    assert min(t["createdAt"] for t in new) >= max(t["stoppingAt"] for t in old)


def test_broken_image_trips_the_circuit_breaker_and_rolls_back(cl, sv):
    sv.create("cb", taskDefinition="web:1", desiredCount=3, deploymentConfiguration={
        "maximumPercent": 200, "minimumHealthyPercent": 100,
        "deploymentCircuitBreaker": {"enable": True, "rollback": True}})
    first = sv.wait_stable("cb")["deployments"][0]["id"]
    old = {t["taskArn"] for t in sv.running("cb")}
    probe = Probe(cl, "cb", expect=3)
    probe.start()
    try:
        wait_for("the probe took no sample", lambda: len(probe.samples) >= 3, 10, interval=0.05)
        t0 = time.time()
        r = cl.ecs.update_service(cluster=CLUSTER, service="cb", taskDefinition="web:3")["service"]
        broken = r["deployments"][0]["id"]
        # The first tasks of the broken deployment fail to start, and are done with.
        first_failed = wait_for(lambda: "no web:3 task STOPPED in 30 s:\n" + sv.state("cb"),
                                lambda: [t for t in sv.tasks("cb") + sv.tasks("cb", "STOPPED")
                                         if t["taskDefinitionArn"].endswith("web:3")
                                         and t["lastStatus"] == "STOPPED"], 30, interval=0.1)
        assert all(t["desiredStatus"] == "STOPPED" for t in first_failed), \
            "failed tasks' desiredStatus: %s" % [t["desiredStatus"] for t in first_failed]
        # The rollback: a new PRIMARY deployment of web:1.
        back = wait_for(lambda: "no rollback in 90 s: %s\n%s" % (sv.messages("cb")[:12], cl.logs()),
                        lambda: (lambda s: s["deployments"][0]["id"] not in (first, broken)
                                 and s["deployments"][0])(sv.describe("cb")), 90, interval=0.1)
        t_failed = time.time() - t0
        assert back["taskDefinition"].endswith("web:1"), back
        s = sv.wait_stable("cb", revision=1)
        t_back = time.time() - t0
        time.sleep(0.3)
    finally:
        probe.stop()
    assert not probe.errors, probe.errors[:3]
    short = probe.short(t0, 3)
    assert not short, "samples with fewer than 3 tasks answering: %s" % short[:10]
    assert probe.most_wanted() <= 6
    assert s["taskDefinition"].endswith("web:1")
    (d,) = s["deployments"]
    assert d["id"] == back["id"] and d["rolloutState"] == "COMPLETED"
    assert back["rolloutStateReason"] == "ECS deployment circuit breaker: rolling back to deploymentId %s." % first
    # The broken deployment's tasks: none ever ran; they failed to start (at least the
    # threshold, clamp(ceil(3 / 2), 10, 200), of them), or were still pulling when the rollback
    # stopped them.
    assert all(t["taskDefinitionArn"].endswith("web:1") for t in sv.tasks("cb"))
    tried = [t for t in sv.tasks("cb", "STOPPED") if t["taskDefinitionArn"].endswith("web:3")]
    failed = [t for t in tried if t["stopCode"] == "TaskFailedToStart"]
    assert len(failed) >= 10, [(t["stopCode"], t["stoppedReason"]) for t in tried]
    for t in failed:
        assert "CannotPullContainerError" in t["stoppedReason"], t["stoppedReason"]
    for t in tried:
        assert t["lastStatus"] == "STOPPED" and t["startedBy"] == broken and "startedAt" not in t, t
        assert t["stopCode"] in ("TaskFailedToStart", "ServiceSchedulerInitiated"), t
    msgs = sv.messages("cb")
    for m in ("(service cb) is unable to consistently start tasks successfully. For more information, "
              "see the Troubleshooting section of the Amazon ECS Developer Guide.",
              "(service cb) (deployment %s) deployment failed: tasks failed to start." % broken,
              "(service cb) (deployment %s) deployment rolling back to (deployment %s)." % (back["id"], first),
              "(service cb) (deployment %s) deployment completed." % back["id"],
              "(service cb) has reached a steady state."):
        assert m in msgs, (m, msgs)
    assert msgs.index("(service cb) (deployment %s) deployment failed: tasks failed to start." % broken) > \
        msgs.index("(service cb) (deployment %s) deployment completed." % back["id"])
    tasks = sv.running("cb")
    assert len(tasks) == 3 and all(t["taskDefinitionArn"].endswith("web:1") for t in tasks)
    assert [http_get(sv.url(t)) for t in tasks] == [V1] * 3
    kept = old & {t["taskArn"] for t in tasks}
    print("\nbroken image, circuit breaker: %d tasks failed to start; deployment FAILED and rollback started "
          "%.1f s after the update, rollback COMPLETED %.1f s after it (old tasks %s); probe: %s"
          % (len(failed), t_failed, t_back, "kept" if len(kept) == 3 else "replaced (%d kept)" % len(kept),
             probe.summary()))


def test_replica_tasks_leave_a_draining_host_within_the_minimum_healthy(cl, sv):
    h1 = cl.agents[0]
    sv.create("move", taskDefinition="web:2", desiredCount=3)  # (health-checked)
    sv.wait_stable("move")
    before = sv.running("move")
    assert cl.per_host(before) == {"h1": 1, "h2": 1, "h3": 1, "h4": 0}
    (leaving,) = [t for t in before if cl.agent_of(t) is h1]
    probe = Probe(cl, "move", expect=3)
    probe.start()
    try:
        wait_for("the probe took no sample", lambda: len(probe.samples) >= 3, 10, interval=0.05)
        t0 = time.time()
        r = cl.ecs.update_container_instances_state(cluster=CLUSTER, containerInstances=[h1.arn],
                                                    status="DRAINING")
        assert r["failures"] == []
        t = cl.wait_tasks([leaving["taskArn"]], "STOPPED", timeout=30)[0]
        s = sv.wait_stable("move")
        took = time.time() - t0
    finally:
        probe.stop()
        cl.ecs.update_container_instances_state(cluster=CLUSTER, containerInstances=[h1.arn], status="ACTIVE")
    assert not probe.errors, probe.errors[:3]
    assert t["stopCode"] == "ServiceSchedulerInitiated", t
    short = probe.short(t0, 3)
    assert not short, "samples with fewer than 3 tasks answering: %s" % short[:10]
    assert probe.most_active() <= 6
    after = sv.running("move")
    assert s["runningCount"] == 3 and len(s["deployments"]) == 1
    assert cl.per_host(after)["h1"] == 0 and len(after) == 3
    # The other two stayed; one new task, started before the old one was stopped.
    assert {x["taskArn"] for x in before} - {leaving["taskArn"]} < {x["taskArn"] for x in after}
    (moved,) = [x for x in after if x["taskArn"] not in {y["taskArn"] for y in before}]
    assert moved["startedAt"] < t["stoppingAt"], (moved["startedAt"], t["stoppingAt"])
    assert [http_get(sv.url(x)) for x in after] == [V2] * 3
    print("\nREPLICA task on a DRAINING host: moved in %.1f s; probe: %s" % (took, probe.summary()))


def test_tasks_that_cannot_be_placed_are_reported_and_placed_once_they_fit(cl, sv):
    # A fixed host port: one task per host at most.
    cl.register("fixed", [{
        "name": "web", "image": cl.image, "memory": 32,
        "entryPoint": ["/bin/httpd", "-f", "-p", "8080", "-h", "/www"],
        "portMappings": [{"containerPort": 8080, "hostPort": 8088}]}], networkMode="bridge")
    sv.create("fixed", taskDefinition="fixed", desiredCount=4)
    msg = wait_for(lambda: "no placement event:\n" + sv.state("fixed"),
                   lambda: [m for m in sv.messages("fixed") if "was unable to place a task" in m], 20, interval=0.1)
    assert msg[0].startswith("(service fixed) was unable to place a task because no container instance met all "
                             "of its requirements. The closest matching (container-instance "), msg
    assert "is already using a port required by your task" in msg[0], msg
    wait_for(lambda: "the 3 that fit are not RUNNING:\n" + sv.state("fixed"),
             lambda: len(sv.running("fixed")) == 3, 20, interval=0.1)
    tasks = sv.running("fixed")
    assert cl.per_host(tasks) == {"h1": 1, "h2": 1, "h3": 1, "h4": 0}
    for t in tasks:
        assert t["containers"][0]["networkBindings"][0]["hostPort"] == 8088
        assert http_get("http://%s:8088/index.html" % cl.agent_of(t).ip) == V1
    s = sv.describe("fixed")
    assert (s["desiredCount"], s["runningCount"]) == (4, 3)
    assert s["deployments"][0]["rolloutState"] == "IN_PROGRESS"
    # Said once, not at every retry.
    time.sleep(6)  # (the controller retries a placement every 5 s)
    assert sum("was unable to place a task" in m for m in sv.messages("fixed")) == 1, sv.messages("fixed")
    assert len(sv.tasks("fixed")) == 3
    # With a desired count that fits, the service becomes stable.
    cl.ecs.update_service(cluster=CLUSTER, service="fixed", desiredCount=3)
    s = sv.wait_stable("fixed")
    assert s["events"][0]["message"] == "(service fixed) has reached a steady state."
    # A constraint no instance meets: nothing placed, the reason said.
    sv.create("nowhere", taskDefinition="idle", desiredCount=1, placementConstraints=[
        {"type": "memberOf", "expression": "attribute:ecs.availability-zone == zone-z"}])
    msg = wait_for(lambda: "no placement event:\n" + sv.state("nowhere"),
                   lambda: [m for m in sv.messages("nowhere") if "was unable to place a task" in m], 20, interval=0.1)
    assert "MemberOf placement constraint unsatisfied" in msg[0], msg
    assert sv.tasks("nowhere") == [] and sv.describe("nowhere")["runningCount"] == 0


def test_daemon_service_follows_hosts_joining_and_draining(cl, sv):
    h1, h2, h3, h4 = cl.agents
    svc = sv.create("agentd", taskDefinition="idle", schedulingStrategy="DAEMON")
    assert svc["schedulingStrategy"] == "DAEMON"
    assert (svc["deploymentConfiguration"]["maximumPercent"],
            svc["deploymentConfiguration"]["minimumHealthyPercent"]) == (100, 0)
    # Only on zone-d's hosts: none yet.
    sv.create("zoned", taskDefinition="idle", schedulingStrategy="DAEMON", placementConstraints=[
        {"type": "memberOf", "expression": "attribute:ecs.availability-zone == zone-d"}])
    s = sv.wait_stable("agentd")
    assert s["desiredCount"] == 3 and s["runningCount"] == 3
    three = sv.running("agentd")
    assert cl.per_host(three) == {"h1": 1, "h2": 1, "h3": 1, "h4": 0}
    z = sv.wait_stable("zoned")
    assert (z["desiredCount"], z["runningCount"]) == (0, 0) and sv.tasks("zoned") == []
    # A host joins: each daemon gets a task there.
    t0 = time.time()
    cl.join([h4])
    try:
        wait_for(lambda: "no daemon task on h4:\n" + cl.logs(),
                 lambda: cl.per_host(sv.running("agentd"))["h4"] == 1
                 and cl.per_host(sv.running("zoned"))["h4"] == 1, 30, interval=0.1)
        t_join = time.time() - t0
        s = sv.wait_stable("agentd")
        assert (s["desiredCount"], s["runningCount"]) == (4, 4)
        assert cl.per_host(sv.running("agentd")) == {"h1": 1, "h2": 1, "h3": 1, "h4": 1}
        assert {t["taskArn"] for t in three} < {t["taskArn"] for t in sv.running("agentd")}
        z = sv.wait_stable("zoned")
        assert (z["desiredCount"], z["runningCount"]) == (1, 1)
        on_h4 = [t for t in sv.running("agentd") + sv.running("zoned") if cl.agent_of(t) is h4]
        assert len(on_h4) == 2
        # It drains: the daemons' tasks there stop, their desired counts drop.
        t1 = time.time()
        r = cl.ecs.update_container_instances_state(cluster=CLUSTER, containerInstances=[h4.arn],
                                                    status="DRAINING")
        assert r["failures"] == []
        stopped = cl.wait_tasks([t["taskArn"] for t in on_h4], "STOPPED", timeout=30)
        t_drain = time.time() - t1
        for t in stopped:
            assert t["stopCode"] == "ServiceSchedulerInitiated", t
        s = sv.wait_stable("agentd")
        assert (s["desiredCount"], s["runningCount"]) == (3, 3)
        assert {t["taskArn"] for t in sv.running("agentd")} == {t["taskArn"] for t in three}
        z = sv.wait_stable("zoned")
        assert (z["desiredCount"], z["runningCount"]) == (0, 0)
        msgs = [e["message"] for e in s["events"]]
        mine = next(t for t in on_h4 if t["group"] == "service:agentd")
        assert "(service agentd) has stopped 1 running tasks: (task %s)." % tid(mine["taskArn"]) in msgs, msgs
        assert "(service agentd) has started 1 tasks: (task %s)." % tid(mine["taskArn"]) in msgs, msgs
        print("\nDAEMON: a host joined → its daemon tasks RUNNING %.1f s; drained → stopped %.1f s"
              % (t_join, t_drain))
        # A DAEMON service is deleted without force (it has no desired count to scale down).
        d = cl.ecs.delete_service(cluster=CLUSTER, service="agentd")["service"]
        assert d["status"] == "DRAINING"
        wait_for("agentd not INACTIVE", lambda: sv.describe("agentd")["status"] == "INACTIVE", 30, interval=0.2)
        assert sv.tasks("agentd") == []
    finally:
        # h4 leaves the cluster for the tests after this one.
        h4.stop()
        if h4.arn:
            cl.ecs.deregister_container_instance(cluster=CLUSTER, containerInstance=h4.arn, force=True)


def test_scaling_deletion_listing_and_refused_input(cl, sv):
    ecs = cl.ecs
    sv.create("scale", taskDefinition="idle", desiredCount=1, tags=[{"key": "team", "value": "blue"}])
    sv.wait_stable("scale")
    one = sv.running("scale")
    t0 = time.time()
    ecs.update_service(cluster=CLUSTER, service="scale", desiredCount=3)
    s = sv.wait_stable("scale")
    t_up = time.time() - t0
    assert (s["desiredCount"], s["runningCount"], len(s["deployments"])) == (3, 3, 1)
    three = sv.running("scale")
    assert cl.per_host(three) == {"h1": 1, "h2": 1, "h3": 1, "h4": 0}
    assert {t["taskArn"] for t in one} < {t["taskArn"] for t in three}
    t0 = time.time()
    ecs.update_service(cluster=CLUSTER, service="scale", desiredCount=1)
    s = sv.wait_stable("scale")
    t_down = time.time() - t0
    (left,) = sv.running("scale")
    gone = [t["taskArn"] for t in three if t["taskArn"] != left["taskArn"]]
    for t in describe(ecs, gone):
        assert t["lastStatus"] == "STOPPED" and t["stopCode"] == "ServiceSchedulerInitiated"
    stops = [m for m in sv.messages("scale") if m.startswith("(service scale) has stopped ")]
    assert sum(int(m.split()[4]) for m in stops) == 2, stops
    print("\nscale 1 → 3: stable in %.1f s; 3 → 1: stable in %.1f s" % (t_up, t_down))
    # Tags.
    arn = s["serviceArn"]
    assert ecs.list_tags_for_resource(resourceArn=arn)["tags"] == [{"key": "team", "value": "blue"}]
    ecs.tag_resource(resourceArn=arn, tags=[{"key": "tier", "value": "web"}])
    ecs.untag_resource(resourceArn=arn, tagKeys=["team"])
    got = ecs.describe_services(cluster=CLUSTER, services=["scale"], include=["TAGS"])["services"][0]
    assert got["tags"] == [{"key": "tier", "value": "web"}]
    assert "tags" not in sv.describe("scale") or sv.describe("scale")["tags"] in ([], None)

    # DeleteService of a service scaled above 0: refused, nothing changes.
    code, status, msg = error_of(ecs.delete_service, cluster=CLUSTER, service="scale")
    assert (code, status) == ("InvalidParameterException", 400), (code, status, msg)
    assert msg == "The service cannot be stopped while it is scaled above 0."
    p = cl.server.aws("ecs", "delete-service", "--cluster", CLUSTER, "--service", "scale", check=False)
    assert p.returncode != 0 and "(InvalidParameterException)" in p.stderr and "scaled above 0" in p.stderr
    s = sv.describe("scale")
    assert (s["status"], s["desiredCount"], s["runningCount"]) == ("ACTIVE", 1, 1)
    assert [t["taskArn"] for t in sv.running("scale")] == [left["taskArn"]]

    # Many services: ListServices pages through them.
    names = ["page-%d" % i for i in range(5)]
    for n in names:
        sv.create(n, taskDefinition="idle", desiredCount=0)
    everyone = {"arn:aws:ecs:us-east-1:000000000000:service/%s/%s" % (CLUSTER, n) for n in names + ["scale"]}
    pages, token = [], None
    while True:
        r = ecs.list_services(cluster=CLUSTER, maxResults=2, **({"nextToken": token} if token else {}))
        pages.append(r["serviceArns"])
        token = r.get("nextToken")
        if not token:
            break
    assert [len(p) for p in pages] == [2, 2, 2], pages
    listed = [a for p in pages for a in p]
    assert len(listed) == len(set(listed)) and set(listed) == everyone, listed
    assert set(cl.server.aws("ecs", "list-services", "--cluster", CLUSTER, "--page-size", "2")["serviceArns"]) == everyone
    assert ecs.list_services(cluster=CLUSTER, schedulingStrategy="DAEMON")["serviceArns"] == []
    assert set(ecs.list_services(cluster=CLUSTER, launchType="EC2", maxResults=100)["serviceArns"]) == everyone
    code, _, _ = error_of(ecs.list_services, cluster=CLUSTER, nextToken="garbage")
    assert code == "InvalidParameterException"

    # Refused input changes nothing.
    def snapshot():
        svcs = ecs.describe_services(cluster=CLUSTER, services=["scale", "page-0"])["services"]
        return (sorted(ecs.list_services(cluster=CLUSTER, maxResults=100)["serviceArns"]),
                sorted(list_arns(ecs, desiredStatus="RUNNING")),
                [(x["taskDefinition"], x["desiredCount"], x["status"], [d["id"] for d in x["deployments"]],
                  x["deploymentConfiguration"]) for x in svcs])
    before = snapshot()
    refusals = [
        ("unknown task definition", ecs.create_service, dict(serviceName="x1", taskDefinition="nope:7", desiredCount=1),
         "InvalidParameterException"),
        ("bad service name", ecs.create_service, dict(serviceName="bad name!", taskDefinition="idle", desiredCount=1),
         "InvalidParameterException"),
        ("DAEMON with a desired count", ecs.create_service,
         dict(serviceName="x2", taskDefinition="idle", schedulingStrategy="DAEMON", desiredCount=2),
         "InvalidParameterException"),
        ("REPLICA without a desired count", ecs.create_service, dict(serviceName="x3", taskDefinition="idle"),
         "InvalidParameterException"),
        ("minimumHealthyPercent above 100", ecs.create_service,
         dict(serviceName="x4", taskDefinition="idle", desiredCount=1,
              deploymentConfiguration={"minimumHealthyPercent": 150}), "InvalidParameterException"),
        ("a name in use", ecs.create_service, dict(serviceName="page-0", taskDefinition="idle", desiredCount=1),
         "InvalidParameterException"),
        ("a cluster that does not exist", ecs.create_service,
         dict(serviceName="x5", taskDefinition="idle", desiredCount=1, cluster="nocluster"),
         "ClusterNotFoundException"),
        ("update of a missing service", ecs.update_service, dict(service="nope", desiredCount=2),
         "ServiceNotFoundException"),
        ("update to an unknown task definition", ecs.update_service, dict(service="page-0", taskDefinition="nope"),
         "InvalidParameterException"),
        ("update with a negative desired count", ecs.update_service, dict(service="scale", desiredCount=-1),
         "InvalidParameterException"),
        ("update with maximumPercent below minimumHealthyPercent", ecs.update_service,
         dict(service="scale", deploymentConfiguration={"maximumPercent": 50}), "InvalidParameterException"),
        ("delete of a missing service", ecs.delete_service, dict(service="nope"), "ServiceNotFoundException"),
    ]
    wrong = []
    for what, fn, kw, want in refusals:
        kw.setdefault("cluster", CLUSTER)
        code, status, msg = error_of(fn, **kw)
        if code != want or status != 400 or not msg:
            wrong.append((what, want, code, status, msg))
    assert not wrong, wrong
    assert snapshot() == before
    assert len(ecs.describe_services(cluster=CLUSTER, services=["x1", "x2", "x3", "x4", "x5"])["failures"]) == 5

    # DescribeServices: MISSING for names and ARNs that are not there.
    r = ecs.describe_services(cluster=CLUSTER, services=[
        "scale", "nope", "arn:aws:ecs:us-east-1:000000000000:service/%s/gone" % CLUSTER])
    assert [x["serviceName"] for x in r["services"]] == ["scale"]
    assert r["failures"] == [
        {"arn": "arn:aws:ecs:us-east-1:000000000000:service/%s/nope" % CLUSTER, "reason": "MISSING"},
        {"arn": "arn:aws:ecs:us-east-1:000000000000:service/%s/gone" % CLUSTER, "reason": "MISSING"}], r["failures"]
    code, _, _ = error_of(ecs.describe_services, cluster=CLUSTER, services=["s%d" % i for i in range(11)])
    assert code == "InvalidParameterException"

    # forceNewDeployment: the same configuration deployed again, its task replaced.
    r = ecs.update_service(cluster=CLUSTER, service="scale", forceNewDeployment=True)["service"]
    assert len(r["deployments"]) == 2 and r["taskDefinition"] == s["taskDefinition"]
    s = sv.wait_stable("scale")
    assert s["deployments"][0]["id"] == r["deployments"][0]["id"]
    replaced, (left,) = left, sv.running("scale")
    assert left["startedBy"] == r["deployments"][0]["id"] and left["taskArn"] != replaced["taskArn"]
    replaced = cl.describe([replaced["taskArn"]])[0]
    assert replaced["stopCode"] == "ServiceSchedulerInitiated"
    # (No health check: the new task counted as healthy, and the old one was stopped, only once
    # it had been RUNNING for --service-task-healthy-after.)
    ran = (replaced["stoppingAt"] - left["startedAt"]).total_seconds()
    assert ran >= HEALTHY_AFTER - 0.05, "old task stopped %.2f s after its replacement started" % ran

    # DeleteService --force: DRAINING at once, its task stops, then INACTIVE.
    d = cl.server.aws("ecs", "delete-service", "--cluster", CLUSTER, "--service", "scale", "--force")["service"]
    assert d["status"] == "DRAINING" and d["desiredCount"] == 0
    t = cl.wait_tasks([left["taskArn"]], "STOPPED", timeout=20)[0]
    assert t["stopCode"] == "ServiceSchedulerInitiated"
    wait_for("scale not INACTIVE", lambda: sv.describe("scale")["status"] == "INACTIVE", 20, interval=0.2)
    assert arn not in ecs.list_services(cluster=CLUSTER, maxResults=100)["serviceArns"]
    code, _, _ = error_of(ecs.update_service, cluster=CLUSTER, service="scale", desiredCount=1)
    assert code == "ServiceNotActiveException"
    # Services scaled to 0 are deleted without force.
    for n in names:
        assert ecs.delete_service(cluster=CLUSTER, service=n)["service"]["status"] in ("DRAINING", "INACTIVE")
    wait_for("page services not INACTIVE",
             lambda: all(sv.describe(n)["status"] == "INACTIVE" for n in names), 20, interval=0.2)
    assert ecs.list_services(cluster=CLUSTER)["serviceArns"] == []
    # An INACTIVE service's name can be used again.
    again = sv.create("scale", taskDefinition="idle", desiredCount=0)
    assert again["status"] == "ACTIVE" and len(again["deployments"]) == 1 and again["events"] == []
    assert ecs.list_services(cluster=CLUSTER)["serviceArns"] == [arn]


def test_lost_host_tasks_are_replaced_and_nothing_doubles_when_it_returns(cl, sv):
    h1, h2, h3 = cl.agents[:3]
    restart_server_with_liveness(cl, GRACE)
    sv.create("lost", taskDefinition="web:1", desiredCount=3)
    sv.wait_stable("lost")
    tasks = sv.running("lost")
    assert cl.per_host(tasks) == {"h1": 1, "h2": 1, "h3": 1, "h4": 0}
    (victim,) = [t for t in tasks if cl.agent_of(t) is h3]
    pids = h3.pids(victim["taskArn"])
    assert pids and all(pid_alive(p) for p in pids)
    # The agent knows the heartbeat interval by now and notices a silent server by itself.
    time.sleep(3 * HEARTBEAT)
    t0 = time.time()
    sh("ip", "link", "set", h3.veth, "down")
    cut = True
    try:
        wait_for(lambda: "h3's task not STOPPED %.0f s after the cut:\n%s" % (time.time() - t0, cl.logs()),
                 lambda: cl.describe([victim["taskArn"]])[0]["lastStatus"] == "STOPPED",
                 TIMEOUT + GRACE + 10, interval=0.2)
        t_stopped = time.time() - t0
        t = cl.describe([victim["taskArn"]])[0]
        assert t["stopCode"] == "TerminationNotice", t
        new = wait_for(lambda: "no replacement RUNNING:\n" + cl.logs(),
                       lambda: [x for x in sv.running("lost") if x["taskArn"] not in {y["taskArn"] for y in tasks}],
                       30, interval=0.1)
        t_replaced = time.time() - t0
        assert len(new) == 1 and cl.agent_of(new[0]) in (h1, h2)
        assert http_get(sv.url(new[0])) == V1
        s = sv.wait_stable("lost")
        assert s["runningCount"] == 3
        # (The server could not reach h3: its container still runs there.)
        assert all(pid_alive(p) for p in pids)
        t_restore = time.time()
        sh("ip", "link", "set", h3.veth, "up")
        cut = False
        wait_for(lambda: "h3 not reconnected:\n" + cl.logs(),
                 lambda: cl.instances()[h3.arn]["agentConnected"] is True, 30, interval=0.2)
        wait_for(lambda: "the lost task's container still runs after h3 came back:\n" + h3.log(),
                 lambda: not any(pid_alive(p) for p in pids), 20, interval=0.2)
        t_reconciled = time.time() - t_restore
    finally:
        if cut:
            sh("ip", "link", "set", h3.veth, "up", check=False)
    # Let whatever would happen after the return happen, then: exactly 3, nothing doubled.
    time.sleep(2)
    s = sv.wait_stable("lost")
    assert (s["desiredCount"], s["runningCount"], s["pendingCount"]) == (3, 3, 0)
    now = sv.running("lost")
    assert {t["taskArn"] for t in now} == ({t["taskArn"] for t in tasks} - {victim["taskArn"]}) | {new[0]["taskArn"]}
    assert len(sv.tasks("lost")) == 3
    assert cl.describe([victim["taskArn"]])[0]["stopCode"] == "TerminationNotice"
    for t in now:
        assert http_get(sv.url(t)) == V1
    started = [m for m in sv.messages("lost") if m.startswith("(service lost) has started ")]
    assert sum(int(m.split()[4]) for m in started) == 4, started
    print("\nlink cut → lost task STOPPED %.1f s, replacement RUNNING %.1f s (heartbeat %d s, timeout %d s, "
          "grace %d s); link restored → stale container stopped %.1f s; still exactly 3 tasks"
          % (t_stopped, t_replaced, HEARTBEAT, TIMEOUT, GRACE, t_reconciled))
