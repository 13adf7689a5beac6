"""End-to-end harness: start the real `berth` binary on an ephemeral port with a temporary
data dir, and drive it with the real aws CLI and boto3 — exactly as a user would.

Every process a test starts is ended by the test (by PID), even when the test fails.
"""

import json
import os
import signal
import subprocess
import tempfile
import time
import shutil

import boto3
import botocore.config
import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BERTH = os.environ.get("BERTH_BIN", os.path.join(ROOT, "target", "debug", "berth"))


class Berth:
    """One running `berth up` process and what it takes to talk to it."""

    def __init__(self, data_dir, extra_args=(), node=False):
        self.data_dir = data_dir
        # Tests of the API alone run without the local node (an empty default cluster);
        # test_tasks.py turns it on.
        self.extra_args = ["--local-node", "true" if node else "false", *extra_args]
        self.proc = None
        self.env = None
        self.log_path = os.path.join(data_dir, "berth.log")

    # What runs: `berth ROLE --listen LISTEN` (subclasses run `berth server`, a fixed address).
    role = "up"
    listen = "127.0.0.1:0"

    def process_env(self):
        """The environment berth and `berth env` run in."""
        return dict(os.environ)

    def start(self, timeout=20.0):
        os.makedirs(self.data_dir, exist_ok=True)
        endpoint_file = os.path.join(self.data_dir, "endpoint.json")
        if os.path.exists(endpoint_file):
            os.remove(endpoint_file)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [BERTH, self.role, "--listen", self.listen, "--data-dir", self.data_dir,
                 *self.extra_args],
                stdout=log,
                stderr=log,
                env={**self.process_env(), "BERTH_LOG": os.environ.get("BERTH_LOG", "info")},
            )
        wait_started(self.proc, self.data_dir, timeout, self.log)
        out = subprocess.run([BERTH, "env", "--data-dir", self.data_dir], capture_output=True,
                             text=True, check=True, env=self.process_env()).stdout
        self.env = dict(line.removeprefix("export ").split("=", 1) for line in out.splitlines())
        return self

    @property
    def endpoint(self):
        return self.env["AWS_ENDPOINT_URL"]

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()[-8000:]
        except OSError:
            return ""

    def stop(self, sig=signal.SIGTERM, timeout=10.0):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode if self.proc else None
        self.proc = None
        return code

    def kill(self):
        return self.stop(signal.SIGKILL)

    def client(self, service="ecs", **overrides):
        kw = dict(
            endpoint_url=self.endpoint,
            region_name=self.env["AWS_REGION"],
            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"],
            config=botocore.config.Config(retries={"max_attempts": 1}),
        )
        kw.update(overrides)
        return boto3.client(service, **kw)

    def aws(self, *args, check=True, input_text=None):
        """Run the real aws CLI against this berth; returns parsed JSON (or None)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(self.env)
        env["AWS_CONFIG_FILE"] = "/dev/null"
        env["AWS_SHARED_CREDENTIALS_FILE"] = "/dev/null"
        p = subprocess.run(["aws", *args, "--output", "json"], capture_output=True, text=True,
                           env=env, input=input_text)
        if check and p.returncode != 0:
            raise AssertionError("aws %s failed (%d): %s" % (" ".join(args), p.returncode, p.stderr))
        if p.returncode != 0:
            return p
        return json.loads(p.stdout) if p.stdout.strip() else None


def wait_started(proc, data_dir, timeout, log):
    """Wait until the berth `proc` serves: its data dir's endpoint.json names its pid. On
    failure the process is killed and the error carries `log()`."""
    endpoint_file = os.path.join(data_dir, "endpoint.json")
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("berth exited early:\n" + log())
        try:
            with open(endpoint_file) as f:
                if json.load(f).get("pid") == proc.pid:
                    return
        except (ValueError, OSError):
            pass
        time.sleep(0.02)
    end_process(proc, signal.SIGKILL)
    raise RuntimeError("berth did not start in time:\n" + log())


def end_process(proc, sig=signal.SIGTERM, timeout=10):
    """End a process the test started (by its PID): `sig`, then SIGKILL after `timeout`.
    A stopped process is continued first so that it can act on the signal."""
    if proc is None or proc.poll() is not None:
        return
    try:
        proc.send_signal(signal.SIGCONT)
    except OSError:
        pass
    proc.send_signal(sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture
def data_dir():
    d = tempfile.mkdtemp(prefix="berth-e2e-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def berth(data_dir):
    b = Berth(data_dir).start()
    try:
        yield b
    finally:
        b.stop()


def register_instance(ecs, cluster, cpu=4096, memory=8192, zone="zone-a", ports=("22",), arn=None):
    """Register a container instance the way an agent does (no containers really run); with
    `arn`, re-register that instance, as a restarting agent does."""
    extra = {"containerInstanceArn": arn} if arn else {}
    r = ecs.register_container_instance(
        cluster=cluster, **extra,
        totalResources=[
            {"name": "CPU", "type": "INTEGER", "integerValue": cpu},
            {"name": "MEMORY", "type": "INTEGER", "integerValue": memory},
            {"name": "PORTS", "type": "STRINGSET", "stringSetValue": list(ports)},
            {"name": "PORTS_UDP", "type": "STRINGSET", "stringSetValue": []},
        ],
        # The capabilities a berth agent registers (task definitions' requiresAttributes).
        attributes=[{"name": "ecs.availability-zone", "value": zone},
                    {"name": "ecs.os-type", "value": "linux"},
                    {"name": "ecs.capability.task-eni"},
                    {"name": "berth.capability.task-network"},
                    {"name": "ecs.capability.container-health-check"},
                    {"name": "ecs.capability.container-ordering"}],
        versionInfo={"agentVersion": "1.80.0"},
    )
    return r["containerInstance"]["containerInstanceArn"]
