"""Commands berth runs inside a container — here health checks, run through `berth nsexec` —
get exactly the container's confinement: escapes a root container's command might try fail,
and the command's capability sets, no_new_privs, seccomp state, ids, groups, rlimits, cgroups
and namespaces are those of the container's init (PID 1 inside), checked from inside by the
health check itself; a health check that passes proves the harmless part still runs.

Needs root (the local node); `berth up` with its node, images built from static busybox."""

import os
import subprocess
import time

import pytest

from conftest import BERTH
from test_tasks import node  # noqa: F401  (the fixture: a running node, cleaned up after)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the local node needs root")

# What a process in the container has, compared with the init's (PID 1 in the container).
COMPARE = r"""
note() { echo "$*" >> /tmp/report.new; fail=1; }
for k in CapInh CapPrm CapEff CapBnd CapAmb NoNewPrivs Seccomp Seccomp_filters Uid Gid Groups; do
  a=$(grep "^$k:" /proc/self/status); b=$(grep "^$k:" /proc/1/status)
  [ "$a" = "$b" ] || note "differs: $a / init: $b"
done
grep -q "^NoNewPrivs:.1$" /proc/self/status || note "differs: no_new_privs not set"
grep -q "^Seccomp:.2$" /proc/self/status || note "differs: no seccomp filter"
[ "$(cat /proc/self/limits)" = "$(cat /proc/1/limits)" ] || note "differs: limits"
[ "$(cat /proc/self/cgroup)" = "$(cat /proc/1/cgroup)" ] || note "differs: cgroups"
for n in mnt pid net ipc uts cgroup; do
  [ "$(readlink /proc/self/ns/$n)" = "$(readlink /proc/1/ns/$n)" ] || note "differs: $n namespace"
done
"""

ROOT_PROBE = r"""#!/bin/sh
# The root container's health check: try to get out, compare with the init, report once.
fail=0
: > /tmp/report.new
""" + COMPARE + r"""
mount -t tmpfs x /mnt 2>/dev/null && note "escaped: mount"
unshare -m true 2>/dev/null && note "escaped: unshare"
echo '|/tmp/x' > /proc/sys/kernel/core_pattern 2>/dev/null && note "escaped: core_pattern"
insmod /etc/bogus.ko 2>&1 | grep -q "Operation not permitted" || note "escaped: insmod not refused"
[ "$(id -u)" = 0 ] || note "differs: uid $(id -u)"
echo "probe done" >> /tmp/report.new
[ -f /tmp/report ] || mv /tmp/report.new /tmp/report
exit $fail
"""

# The non-root container cannot write anywhere: its verdict is its exit status.
USER_PROBE = r"""#!/bin/sh
fail=0
""" + COMPARE.replace('echo "$*" >> /tmp/report.new', 'echo "$*" >&2') + r"""
[ "$(id -u):$(id -g)" = 1234:1235 ] || note "differs: ids"
grep -q "^Max open files *512 *777 " /proc/self/limits || note "differs: nofile"
exit $fail
"""


def test_health_check_commands_get_the_containers_confinement(node):
    core_pattern = open("/proc/sys/kernel/core_pattern").read()
    image = node.push_busybox("probe", extra_files={
        "probe-root.sh": ROOT_PROBE, "probe-user.sh": USER_PROBE,
        "etc/bogus.ko": "Z" * 4096, "mnt/.keep": ""})
    health = lambda script: {"command": ["CMD-SHELL", "sh " + script], "interval": 5,
                             "timeout": 10, "retries": 1}
    arn = node.run("probe", [
        {"name": "root", "image": image, "memory": 32, "healthCheck": health("/probe-root.sh"),
         "command": ["/bin/sh", "-c",
                     "while [ ! -f /tmp/report ]; do sleep 0.2; done; cat /tmp/report; sleep 600"]},
        {"name": "user", "image": image, "memory": 32, "user": "1234:1235",
         "ulimits": [{"name": "nofile", "softLimit": 512, "hardLimit": 777}],
         "healthCheck": health("/probe-user.sh"), "command": ["/bin/sleep", "600"]},
    ], networkMode="none")
    node.wait_task(arn, "RUNNING", timeout=30)
    ecs = node.client()
    deadline = time.time() + 40
    while time.time() < deadline:
        t = ecs.describe_tasks(cluster="default", tasks=[arn])["tasks"][0]
        health = {c["name"]: c.get("healthStatus") for c in t["containers"]}
        if all(h in ("HEALTHY", "UNHEALTHY") for h in health.values()):
            break
        time.sleep(0.2)
    report = ""
    deadline = time.time() + 10
    while time.time() < deadline and "probe done" not in report:
        report = subprocess.run([BERTH, "logs", arn, "-c", "root", "--data-dir", node.data_dir],
                                capture_output=True, text=True).stdout
        time.sleep(0.2)
    assert "probe done" in report, (report, health, node.log())
    problems = [l for l in report.splitlines() if l.startswith(("escaped", "differs"))]
    assert not problems, "\n".join(problems)
    assert health == {"root": "HEALTHY", "user": "HEALTHY"}, (health, report)
    assert open("/proc/sys/kernel/core_pattern").read() == core_pattern
