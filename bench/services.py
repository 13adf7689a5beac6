"""Measurements for bench/services.sh, through boto3 against a running berth (AWS_* from
`berth env`). Subcommands:

  steady N RUNS            create RUNS services of N tasks, one after another: time from
                           CreateService to stable (one deployment, COMPLETED, running ==
                           desired); then roll each to web:2 and time the rollout the same way.
  many S T                 create S services of T tasks (16 in flight), wait until all are
                           stable, print how long it took.
  replace SVC RUNS MARK    a service of 3 real tasks running `sleep MARK`: SIGKILL one task's
                           process (found in the kernel's process table by MARK), time until a
                           new task of the service is RUNNING; RUNS times.
  restart RUNS -- CMD…     the peer: CMD prints the pid of a container under a restart policy;
                           SIGKILL it, time until CMD prints another live pid.
"""

import concurrent.futures
import os
import signal
import subprocess
import sys
import time

import boto3

CLUSTER = os.environ.get("BENCH_CLUSTER", "bench")
POLL = 0.005


def ecs():
    return boto3.client("ecs")


def stable(c, name):
    s = c.describe_services(cluster=CLUSTER, services=[name])["services"][0]
    d = s["deployments"]
    return (len(d) == 1 and d[0].get("rolloutState") == "COMPLETED"
            and s["runningCount"] == s["desiredCount"])


def wait_stable(c, name, timeout=120):
    t0 = time.perf_counter()
    while not stable(c, name):
        if time.perf_counter() - t0 > timeout:
            raise SystemExit("service %s not stable after %d s" % (name, timeout))
        time.sleep(POLL)


def stats(label, xs):
    xs = sorted(xs)
    print("%s: runs %d  p50 %.0f ms  max %.0f ms  min %.0f ms" % (
        label, len(xs), xs[len(xs) // 2] * 1000, xs[-1] * 1000, xs[0] * 1000), flush=True)


def steady(n, runs):
    c = ecs()
    ups, rolls = [], []
    for i in range(runs):
        name = "steady-%d" % i
        t0 = time.perf_counter()
        c.create_service(cluster=CLUSTER, serviceName=name, taskDefinition="web:1",
                         desiredCount=n)
        wait_stable(c, name)
        ups.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        c.update_service(cluster=CLUSTER, service=name, taskDefinition="web:2",
                         deploymentConfiguration={"maximumPercent": 200,
                                                  "minimumHealthyPercent": 100})
        wait_stable(c, name)
        rolls.append(time.perf_counter() - t0)
        c.delete_service(cluster=CLUSTER, service=name, force=True)
    stats("CreateService (%d tasks) → steady state" % n, ups)
    stats("rolling update of %d tasks (max 200%%, min 100%%) → COMPLETED" % n, rolls)


def many(services, tasks):
    c = ecs()
    names = ["many-%04d" % i for i in range(services)]
    t0 = time.perf_counter()

    def one(name):
        c.create_service(cluster=CLUSTER, serviceName=name, taskDefinition="web:1",
                         desiredCount=tasks)

    with concurrent.futures.ThreadPoolExecutor(16) as ex:
        list(ex.map(one, names))
    created = time.perf_counter() - t0
    pending = set(names)
    while pending:
        for chunk in [sorted(pending)[i:i + 10] for i in range(0, len(pending), 10)]:
            for s in c.describe_services(cluster=CLUSTER, services=chunk)["services"]:
                d = s["deployments"]
                if len(d) == 1 and d[0].get("rolloutState") == "COMPLETED" and \
                        s["runningCount"] == s["desiredCount"]:
                    pending.discard(s["serviceName"])
        if time.perf_counter() - t0 > 600:
            raise SystemExit("%d services not stable after 600 s" % len(pending))
        time.sleep(0.2)
    print("%d services × %d tasks: created in %.1f s, all steady after %.1f s" % (
        services, tasks, created, time.perf_counter() - t0), flush=True)


def pids_of(mark):
    out = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % p, "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if argv[:2] == [b"sleep", mark.encode()]:
            out.append(int(p))
    return out


def running_tasks(c, svc):
    arns = c.list_tasks(cluster=CLUSTER, serviceName=svc)["taskArns"]
    if not arns:
        return set()
    ts = c.describe_tasks(cluster=CLUSTER, tasks=arns)["tasks"]
    return {t["taskArn"] for t in ts if t["lastStatus"] == "RUNNING"}


def replace(svc, runs, mark):
    c = ecs()
    lat = []
    for _ in range(runs):
        wait_stable(c, svc)
        before = running_tasks(c, svc)
        pids = pids_of(mark)
        if len(pids) != len(before):
            time.sleep(0.2)
            continue
        t0 = time.perf_counter()
        os.kill(pids[0], signal.SIGKILL)
        while True:
            now = running_tasks(c, svc)
            if now - before:
                break
            if time.perf_counter() - t0 > 60:
                raise SystemExit("no replacement after 60 s")
            time.sleep(POLL)
        lat.append(time.perf_counter() - t0)
    stats("berth service: task killed → new task RUNNING", lat)


def restart(runs, cmd):
    lat = []
    for _ in range(runs):
        pid = int(subprocess.run(cmd, capture_output=True, text=True).stdout.strip() or 0)
        if pid <= 0:
            time.sleep(0.2)
            continue
        t0 = time.perf_counter()
        os.kill(pid, signal.SIGKILL)
        while True:
            out = subprocess.run(cmd, capture_output=True, text=True).stdout.strip()
            if out.isdigit() and int(out) not in (0, pid):
                break
            if time.perf_counter() - t0 > 60:
                raise SystemExit("no restart after 60 s")
        lat.append(time.perf_counter() - t0)
        # Docker doubles its restart delay unless the container ran 10 s: let it.
        time.sleep(float(os.environ.get("PEER_PAUSE", "11")))
    return lat


if __name__ == "__main__":
    what = sys.argv[1]
    if what == "steady":
        steady(int(sys.argv[2]), int(sys.argv[3]))
    elif what == "many":
        many(int(sys.argv[2]), int(sys.argv[3]))
    elif what == "replace":
        replace(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    elif what == "restart":
        label = sys.argv[2]
        lat = restart(int(sys.argv[3]), sys.argv[sys.argv.index("--") + 1:])
        stats(label, lat)
