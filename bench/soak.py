"""The soak's driver (run by bench/soak.sh, which starts `berth up` with its local node and
pushes the busybox image): churns TASKS tasks over MINUTES minutes and checks that what berth
holds on the machine is flat at the end.

The churn, each kind in turn over the network modes none, bridge (a dynamic host port) and
awsvpc: tasks whose container exits by itself after 1-4 s; long-lived tasks stopped with
StopTask after 2-20 s; tasks whose container health check fails (stopped with StopTask once
ECS says UNHEALTHY); tasks that run out of their 8 MiB memory limit (the kernel's OOM killer;
ECS's OutOfMemoryError). At most LIVE tasks at once, started at an even pace.

Sampled before the churn (after a warm-up of one task of each kind and mode), every few
minutes, and after the churn has quiesced (every task STOPPED, then a settle time): the open
files, resident memory and threads of the `berth up` process; its shim and port-forwarder
processes; mounts (all, and those under the data dir), cgroups (berth's, in every v1 and the
v2 hierarchy: all of them, and those of this run's tasks), network namespaces (`ip netns`,
and berth's namespace files and nsfs mounts), veths (all, and those on berth's bridge),
iptables and nft rules (all, and those naming berth's bridge or subnet), and the node's
per-task files (state files, bundles, address allocations).

Exit 1 if anything that berth holds grew beyond its tolerance by the end. Machine-wide
counts (all mounts, all veths, all rules…) are shown but only checked with STRICT_GLOBAL=1:
other users of a shared machine change them."""

import argparse
import os
import random
import subprocess
import sys
import time

import boto3
import botocore.config

KINDS = ("exit", "stop", "unhealthy", "oom")
MODES = ("none", "bridge", "awsvpc")
MiB = 1024 * 1024


def sh(*args):
    return subprocess.run(args, capture_output=True, text=True).stdout


def proc_status(pid, key):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def node_procs(work):
    """Pids of berth's shims and port forwarders for this data dir."""
    shims, fwds = [], []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % p, "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        if len(args) > 1 and any(work.encode() in a for a in args):
            if args[1] == b"shim":
                shims.append(int(p))
            elif args[1] == b"port-forward":
                fwds.append(int(p))
    return shims, fwds


def berth_cgroups():
    """Every cgroup directory under `berth/` in every hierarchy, as (hierarchy, path)."""
    out = []
    roots = [os.path.join("/sys/fs/cgroup", r) for r in os.listdir("/sys/fs/cgroup")]
    for root in roots + ["/sys/fs/cgroup"]:
        base = os.path.join(root, "berth")
        if not os.path.isdir(base):
            continue
        for dirpath, dirs, _ in os.walk(base):
            for d in dirs:
                out.append(os.path.relpath(os.path.join(dirpath, d), "/sys/fs/cgroup"))
    return out


def count_dir(path):
    try:
        return len([n for n in os.listdir(path) if not n.startswith(".")])
    except OSError:
        return 0


def nft_rules(*table):
    """Rules of the whole ruleset, or of one table (`ip`, `berth-BRIDGE`): berth's node rules
    live in a table of their own."""
    n = 0
    what = ["table", *table] if table else ["ruleset"]
    for line in sh("nft", "-a", "list", *what).splitlines():
        s = line.strip()
        if "# handle" in s and not s.startswith(("table ", "chain ", "set ", "map ")):
            n += 1
    return n


def sample(a, task_ids):
    """What berth holds now: {name: value}."""
    m = {}
    m["berth: open files"] = len(os.listdir("/proc/%d/fd" % a.pid))
    m["berth: resident memory (MiB)"] = round(proc_status(a.pid, "VmRSS") / 1024, 1)
    m["berth: threads"] = proc_status(a.pid, "Threads")
    shims, fwds = node_procs(a.work)
    m["shim processes"] = len(shims)
    m["port-forward processes"] = len(fwds)
    with open("/proc/self/mountinfo") as f:
        mounts = [l.split() for l in f]
    m["mounts under the data dir"] = sum(1 for l in mounts if l[4].startswith(a.work))
    m["nsfs mounts under the data dir"] = sum(
        1 for l in mounts if l[4].startswith(a.work) and l[l.index("-") + 1] == "nsfs")
    m["mounts (machine)"] = len(mounts)
    cgs = berth_cgroups()
    m["cgroups of this run's tasks"] = sum(1 for c in cgs if c.split("/berth/", 1)[-1].split("/")[0] in task_ids)
    m["cgroups under berth/ (machine)"] = len(cgs)
    m["netns files of the node"] = count_dir(os.path.join(a.work, "node", "net", "netns"))
    m["ip netns (machine)"] = len(sh("ip", "netns", "list").splitlines())
    m["veths on the node's bridge"] = len(sh("ip", "-o", "link", "show", "master", a.bridge).splitlines())
    m["veths (machine)"] = len(sh("ip", "-o", "link", "show", "type", "veth").splitlines())
    rules = [l for l in sh("iptables-save").splitlines() if l.startswith("-A ")]
    m["iptables rules naming the node's bridge/subnet"] = sum(
        1 for l in rules if a.bridge in l.split() or a.subnet in l)
    m["iptables rules (machine)"] = len(rules)
    m["nft rules (machine)"] = nft_rules()
    m["nft rules in the node's table"] = nft_rules("ip", "berth-" + a.bridge)
    m["task state files"] = count_dir(os.path.join(a.work, "node", "state"))
    m["container bundles"] = count_dir(os.path.join(a.work, "node", "runtime", "bundles"))
    m["address allocations"] = count_dir(os.path.join(a.work, "node", "net", "ipam"))
    m["endpoint records"] = count_dir(os.path.join(a.work, "node", "net", "endpoints"))
    m["task dirs"] = count_dir(os.path.join(a.work, "node", "tasks"))
    # Kept by design (`berth logs` after the task; the store keeps stopped tasks an hour):
    # shown, not checked.
    m["container log files (kept)"] = count_dir(os.path.join(a.work, "node", "runtime", "logs"))
    m["state.redb (MiB, kept)"] = round(os.path.getsize(os.path.join(a.work, "state.redb")) / MiB, 1)
    return m


def allowed(name, base, strict_global):
    """The most `name` may read at the end, from its baseline `base` (None: not checked)."""
    if "(machine)" in name and not strict_global:
        return None
    if name == "berth: resident memory (MiB)":
        return base + max(8.0, base * 0.2)
    if name == "berth: open files":
        return base + 4
    if name == "berth: threads" or "kept)" in name:
        return None  # tokio's blocking pool comes and goes
    return base


class Soak:
    def __init__(self, a):
        self.a = a
        self.rng = random.Random(a.seed)
        cfg = botocore.config.Config(retries={"max_attempts": 3, "mode": "standard"})
        self.ecs = boto3.client("ecs", config=cfg)
        self.live = {}      # arn → (kind, stop_at or None)
        self.ids = set()
        self.outcomes = {}  # (kind, how it ended) → count
        self.churned = 0
        self.unhealthy_seen = 0

    def register(self):
        image = self.a.image
        sleeper = "trap 'exit 0' TERM; while true; do sleep 1; done"
        for mode in MODES:
            ports = [{"containerPort": 8080, "hostPort": 0}] if mode == "bridge" else []
            base = {"name": "c", "image": image, "memory": 16, "portMappings": ports}
            defs = {
                "exit": dict(base, command=["/bin/sh", "-c", "sleep $RANDOM_SECS"],
                             environment=[{"name": "RANDOM_SECS", "value": "1"}]),
                "stop": dict(base, command=["/bin/sh", "-c", sleeper]),
                "unhealthy": dict(base, command=["/bin/sh", "-c", sleeper], healthCheck={
                    "command": ["CMD-SHELL", "exit 1"], "interval": 5, "timeout": 2,
                    "retries": 1, "startPeriod": 0}),
                "oom": dict(base, memory=8, command=["/bin/sh", "-c", "x=a; while true; do x=$x$x; done"]),
            }
            for kind, d in defs.items():
                self.ecs.register_task_definition(family="soak-%s-%s" % (kind, mode),
                                                  networkMode=mode, containerDefinitions=[d])

    def run(self, kind, mode):
        extra = {}
        if mode == "awsvpc":
            extra["networkConfiguration"] = {"awsvpcConfiguration": {"subnets": ["subnet-soak"]}}
        overrides = {}
        if kind == "exit":
            overrides = {"containerOverrides": [{"name": "c", "environment": [
                {"name": "RANDOM_SECS", "value": str(self.rng.randint(1, 4))}]}]}
        r = self.ecs.run_task(cluster="default", taskDefinition="soak-%s-%s" % (kind, mode),
                              overrides=overrides, **extra)
        if r["failures"]:
            return None
        arn = r["tasks"][0]["taskArn"]
        stop_at = None
        if kind == "stop":
            stop_at = time.time() + self.rng.uniform(2, 20)
        elif kind == "unhealthy":
            stop_at = time.time() + 60  # at the latest; sooner once UNHEALTHY
        self.live[arn] = (kind, stop_at)
        self.ids.add(arn.rsplit("/", 1)[1])
        return arn

    def poll(self):
        """Stop what is due; count what has stopped."""
        now = time.time()
        arns = list(self.live)
        for i in range(0, len(arns), 100):
            for t in self.ecs.describe_tasks(cluster="default", tasks=arns[i:i + 100])["tasks"]:
                arn = t["taskArn"]
                kind, stop_at = self.live[arn]
                if t["lastStatus"] == "STOPPED":
                    del self.live[arn]
                    self.churned += 1
                    how = t.get("stopCode", "?")
                    if any("OutOfMemoryError" in (c.get("reason") or "") for c in t["containers"]):
                        how = "OutOfMemoryError"
                    key = (kind, how)
                    self.outcomes[key] = self.outcomes.get(key, 0) + 1
                    continue
                sick = kind == "unhealthy" and t.get("healthStatus") == "UNHEALTHY"
                if t["desiredStatus"] == "RUNNING" and ((stop_at and now >= stop_at) or sick):
                    if sick:
                        self.unhealthy_seen += 1
                    self.ecs.stop_task(cluster="default", task=arn, reason="soak")
                    self.live[arn] = (kind, None)

    def drain(self, timeout=180):
        for arn, (kind, _) in list(self.live.items()):
            self.live[arn] = (kind, time.time())
        deadline = time.time() + timeout
        while self.live and time.time() < deadline:
            self.poll()
            time.sleep(1)
        return not self.live


def table(rows, samples):
    names = list(samples[0][1])
    head = ["measure"] + [label for label, _ in samples] + ["allowed", "verdict"]
    lines = [head]
    for n in names:
        lines.append([n] + [str(s[n]) for _, s in samples] + list(rows[n]))
    widths = [max(len(l[i]) for l in lines) for i in range(len(head))]
    out = []
    for k, l in enumerate(lines):
        out.append("| " + " | ".join(c.ljust(widths[i]) for i, c in enumerate(l)) + " |")
        if k == 0:
            out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(out)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--minutes", type=float, required=True)
    p.add_argument("--tasks", type=int, required=True)
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--work", required=True, help="berth's data dir")
    p.add_argument("--bridge", required=True)
    p.add_argument("--subnet", required=True)
    p.add_argument("--image", required=True)
    p.add_argument("--live", type=int, default=int(os.environ.get("LIVE", "12")))
    p.add_argument("--seed", type=int, default=int(os.environ.get("SEED", "1")))
    a = p.parse_args()
    strict_global = os.environ.get("STRICT_GLOBAL") == "1"
    s = Soak(a)
    s.register()

    # Warm-up: one task of each kind in each mode (the bridge, its rules, the image unpacked,
    # the namespace mount: what a node keeps while it runs), then the baseline.
    for kind in KINDS:
        for mode in MODES:
            s.run(kind, mode)
    if not s.drain():
        sys.exit("warm-up tasks did not stop")
    time.sleep(10)
    samples = [("start", sample(a, s.ids))]
    warm = s.churned
    t0 = time.time()
    duration = a.minutes * 60
    every = max(60.0, duration / 6)
    next_sample = t0 + every
    launched = 0
    order = [(k, m) for k in KINDS for m in MODES]
    while launched < a.tasks:
        now = time.time()
        due = t0 + duration * launched / a.tasks
        if now >= due and len(s.live) < a.live:
            kind, mode = order[launched % len(order)]
            if s.run(kind, mode):
                launched += 1
        s.poll()
        if time.time() >= next_sample:
            samples.append(("%.0f min" % ((time.time() - t0) / 60), sample(a, s.ids)))
            next_sample += every
            print("%.1f min: %d started, %d stopped, %d live" % (
                (time.time() - t0) / 60, launched, s.churned - warm, len(s.live)), flush=True)
        time.sleep(0.2)
    if not s.drain():
        print("tasks still not STOPPED: %s" % list(s.live), file=sys.stderr)
    churn_minutes = (time.time() - t0) / 60
    # Quiesce: berth releases some things after the STOPPED report (veths are deleted on a
    # thread of their own). Wait up to a minute for the counts to settle, then sample.
    base = samples[0][1]
    deadline = time.time() + 60
    while True:
        end = sample(a, s.ids)
        over = [n for n, v in end.items()
                if allowed(n, base[n], strict_global) is not None and v > allowed(n, base[n], strict_global)]
        if not over or time.time() > deadline:
            break
        time.sleep(5)
    samples.append(("end (quiesced)", end))

    rows = {}
    for n, b in base.items():
        lim = allowed(n, b, strict_global)
        if lim is None:
            rows[n] = ("-", "info")
        else:
            rows[n] = (("%.1f" % lim) if isinstance(lim, float) else str(lim),
                       "ok" if end[n] <= lim else "GREW")
    print()
    print("soak: %d tasks churned (+%d warm-up) in %.1f min, at most %d at once, seed %d" % (
        s.churned - warm, warm, churn_minutes, a.live, a.seed))
    print("how they ended: " + ", ".join("%s/%s %d" % (k, h, c) for (k, h), c in sorted(s.outcomes.items())))
    print("UNHEALTHY seen on %d tasks" % s.unhealthy_seen)
    print()
    print(table(rows, samples))
    grew = [n for n, (_, v) in rows.items() if v == "GREW"]
    oom = sum(c for (k, h), c in s.outcomes.items() if h == "OutOfMemoryError")
    failed = False
    if grew:
        print("\nFAIL: grew: %s" % ", ".join(grew))
        failed = True
    if s.live:
        print("\nFAIL: %d tasks never stopped" % len(s.live))
        failed = True
    if s.churned - warm < a.tasks:
        print("\nFAIL: only %d of %d tasks churned" % (s.churned - warm, a.tasks))
        failed = True
    if not oom or not s.unhealthy_seen:
        print("\nFAIL: the churn did not exercise OOM (%d) and failing health checks (%d)" % (
            oom, s.unhealthy_seen))
        failed = True
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
