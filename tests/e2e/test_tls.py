"""HTTPS on the front door: `berth server --tls-cert --tls-key` (and `--tls-self-signed`)
driven by the real aws CLI (`--ca-bundle`), boto3 (`verify=`) and berth's own clients
(`berth push`/`pull`/`ps`, `berth agent --ca-file`).

Certificates are made by each test with `openssl`. Every process a test starts is ended by
the test, by PID; the node tests clean up containers, cgroups, mounts and bridges."""

import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

import pytest

from conftest import BERTH, end_process
from test_tasks import Node, _cleanup_node, BRIDGE, SUBNET

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="a node needs root")
pytestmark = pytest.mark.skipif(not shutil.which("openssl"), reason="openssl makes the test certificates")


def self_signed(d, name="berth-test"):
    """A self-signed certificate for 127.0.0.1 and localhost (not a CA: rustls refuses a CA
    certificate as a server's own), and its key."""
    cert, key = os.path.join(d, "%s.pem" % name), os.path.join(d, "%s.key" % name)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=" + name,
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                    "-addext", "basicConstraints=critical,CA:FALSE"],
                   check=True, capture_output=True)
    return cert, key


def clean_env(**extra):
    """The environment without AWS_* and SSL_* settings (this machine sets AWS_CA_BUNDLE)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("AWS_") and not k.startswith("SSL_CERT")}
    env.update(extra)
    return env


class TlsBerth(Node):
    """`berth server` (or `berth up` with its node) serving HTTPS."""

    def __init__(self, data_dir, cert=None, key=None, role="server", extra_args=()):
        tls = ["--tls-cert", cert, "--tls-key", key] if cert else ["--tls-self-signed", "true"]
        super().__init__(data_dir, extra_args=[*tls, *extra_args])
        self.role = role
        self.ca = cert
        if role == "server":
            self.extra_args[1] = "false"  # --local-node

    def process_env(self):
        return clean_env()

    def start(self, timeout=20.0):
        super().start(timeout)
        if self.ca is None:
            self.ca = self.env["AWS_CA_BUNDLE"]
        return self

    def host(self):
        return self.endpoint.split("://", 1)[1]

    def client(self, service="ecs", **overrides):
        return super().client(service, **{"verify": self.ca, **overrides})

    def aws_cli(self, *args, ca_bundle=None):
        env = clean_env(**{k: v for k, v in self.env.items() if k != "AWS_CA_BUNDLE"},
                        AWS_CONFIG_FILE="/dev/null", AWS_SHARED_CREDENTIALS_FILE="/dev/null",
                        AWS_MAX_ATTEMPTS="1")
        extra = ["--ca-bundle", ca_bundle] if ca_bundle else []
        return subprocess.run(["aws", *args, *extra, "--output", "json"], capture_output=True,
                              text=True, env=env)


@pytest.fixture
def cert(tmp_path):
    return self_signed(str(tmp_path))


def test_aws_cli_and_boto3_over_https(data_dir, cert):
    b = TlsBerth(data_dir, *cert).start()
    try:
        assert b.endpoint.startswith("https://127.0.0.1:")
        with open(os.path.join(data_dir, "endpoint.json")) as f:
            assert json.load(f)["endpoint"] == b.endpoint
        assert b.endpoint in b.log() and "serving HTTPS only" in b.log()
        # The aws CLI, trusting the certificate with --ca-bundle.
        p = b.aws_cli("ecs", "create-cluster", "--cluster-name", "tls-cli", ca_bundle=cert[0])
        assert p.returncode == 0, p.stderr
        p = b.aws_cli("ecs", "list-clusters", ca_bundle=cert[0])
        assert p.returncode == 0, p.stderr
        assert json.loads(p.stdout)["clusterArns"] == ["arn:aws:ecs:us-east-1:000000000000:cluster/tls-cli"]
        # … and refusing it without.
        p = b.aws_cli("ecs", "list-clusters")
        assert p.returncode != 0 and "CERTIFICATE_VERIFY_FAILED" in p.stderr, p.stderr
        # boto3 with verify=.
        ecs = b.client()
        ecs.create_cluster(clusterName="tls-boto")
        assert len(ecs.list_clusters()["clusterArns"]) == 2
        # Answers that name an endpoint name it https://.
        ci = ecs.register_container_instance(
            cluster="tls-boto",
            totalResources=[{"name": "CPU", "type": "INTEGER", "integerValue": 1024},
                            {"name": "MEMORY", "type": "INTEGER", "integerValue": 1024}],
            versionInfo={"agentVersion": "1.80.0"})["containerInstance"]["containerInstanceArn"]
        poll = ecs.discover_poll_endpoint(cluster="tls-boto", containerInstance=ci)
        assert poll["endpoint"] == b.endpoint, poll
        ecr = b.client("ecr")
        tok = ecr.get_authorization_token()["authorizationData"][0]
        assert tok["proxyEndpoint"] == b.endpoint
        # The registry's challenge names an https:// realm.
        req = urllib.request.Request(b.endpoint + "/v2/")
        import ssl
        ctx = ssl.create_default_context(cafile=cert[0])
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, context=ctx, timeout=5)
        assert e.value.code == 401
        assert 'realm="https://' in e.value.headers["WWW-Authenticate"]
        # Plain HTTP to the TLS port is refused, and says why.
        plain = "http://" + b.host() + "/healthz"
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(plain, timeout=5)
        assert e.value.code == 400 and b"HTTPS" in e.value.read()
        p = subprocess.run(["aws", "ecs", "list-clusters", "--endpoint-url", "http://" + b.host(),
                            "--output", "json"], capture_output=True, text=True,
                           env=clean_env(**{k: v for k, v in b.env.items() if k != "AWS_ENDPOINT_URL"},
                                         AWS_CONFIG_FILE="/dev/null",
                                         AWS_SHARED_CREDENTIALS_FILE="/dev/null",
                                         AWS_MAX_ATTEMPTS="1"))
        assert p.returncode != 0 and "This port speaks HTTPS" in p.stderr, p.stderr
        # ALPN: h2 for clients that offer it, HTTP/1.1 for the others.
        if shutil.which("curl"):
            for flag, version in (("--http2", "2"), ("--http1.1", "1.1")):
                p = subprocess.run(["curl", "-sS", flag, "--cacert", cert[0], "-o", "/dev/null",
                                    "-w", "%{http_version}", b.endpoint + "/healthz"],
                                   capture_output=True, text=True)
                assert p.stdout == version, (flag, p.stdout, p.stderr)
        # The server is fine after all that.
        with urllib.request.urlopen(b.endpoint + "/healthz", context=ctx, timeout=5) as r:
            assert r.read() == b"ok\n"
    finally:
        assert b.stop() == 0, b.log()


def test_bad_certificate_or_key_stops_the_start(tmp_path):
    d = str(tmp_path)
    cert, key = self_signed(d)
    _, other_key = self_signed(d, "other")
    garbage = os.path.join(d, "garbage.pem")
    with open(garbage, "w") as f:
        f.write("this is not PEM\n")
    cases = [
        (["--tls-cert", os.path.join(d, "missing.pem"), "--tls-key", key], "missing.pem"),
        (["--tls-cert", garbage, "--tls-key", key], "no PEM certificate"),
        (["--tls-cert", cert, "--tls-key", garbage], "no PEM private key"),
        (["--tls-cert", cert, "--tls-key", other_key], "other.key"),
        (["--tls-cert", cert], "--tls-cert needs --tls-key"),
    ]
    for i, (args, message) in enumerate(cases):
        data = os.path.join(d, "data%d" % i)
        p = subprocess.Popen([BERTH, "server", "--listen", "127.0.0.1:0", "--data-dir", data, *args],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=clean_env(RUST_BACKTRACE="0"))
        try:
            out, err = p.communicate(timeout=20)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        assert p.returncode != 0, (args, err)
        assert message in err, (args, err)
        assert not os.path.exists(os.path.join(data, "endpoint.json"))


def test_berth_push_pull_and_ps_over_https(data_dir, cert, tmp_path):
    b = TlsBerth(data_dir, *cert).start()
    try:
        b.client("ecr").create_repository(repositoryName="tls/app")
        src = os.path.join(str(tmp_path), "root")
        os.makedirs(src)
        with open(os.path.join(src, "hello.txt"), "w") as f:
            f.write("over tls\n")
        ref = b.host() + "/tls/app:1"
        # With the data dir: the certificate the local berth serves is trusted as it is.
        p = subprocess.run([BERTH, "push", src, ref, "--data-dir", data_dir], capture_output=True,
                           text=True, env=clean_env())
        assert p.returncode == 0, p.stderr
        # With the aws CLI's variables and AWS_CA_BUNDLE.
        env = clean_env(**{k: v for k, v in b.env.items()}, AWS_CA_BUNDLE=cert[0], RUST_BACKTRACE="0")
        out = os.path.join(str(tmp_path), "layout")
        p = subprocess.run([BERTH, "pull", ref, out], capture_output=True, text=True, env=env)
        assert p.returncode == 0, p.stderr
        assert os.path.exists(os.path.join(out, "index.json"))
        p = subprocess.run([BERTH, "ps"], capture_output=True, text=True, env=env)
        assert p.returncode == 0 and p.stdout.startswith("TASK"), p.stderr
        # Without a trusted certificate: refused, and the error says why.
        env.pop("AWS_CA_BUNDLE")
        p = subprocess.run([BERTH, "push", src, b.host() + "/tls/app:2"], capture_output=True,
                           text=True, env=env)
        assert p.returncode != 0
        assert "not trusted" in p.stderr and "UnknownIssuer" in p.stderr, p.stderr
        p = subprocess.run([BERTH, "ps"], capture_output=True, text=True, env=env)
        assert p.returncode != 0 and "not trusted" in p.stderr, p.stderr
        assert b.client("ecr").describe_images(repositoryName="tls/app")["imageDetails"][0]["imageTags"] == ["1"]
    finally:
        b.stop()


@pytest.mark.skipif(not shutil.which("skopeo"), reason="skopeo not installed")
@pytest.mark.parametrize("bearer", [False, True])
def test_skopeo_pushes_and_pulls_with_verified_tls(data_dir, cert, tmp_path, bearer):
    """A registry client of its own (skopeo) verifies the certificate (--cert-dir) and follows
    the https:// realm of the Basic or Bearer challenge."""
    from images import busybox_image
    b = TlsBerth(data_dir, *cert, extra_args=["--registry-bearer", "true" if bearer else "false"]).start()
    try:
        b.client("ecr").create_repository(repositoryName="tls/sk")
        tok = b.client("ecr").get_authorization_token()["authorizationData"][0]["authorizationToken"]
        import base64
        creds = base64.b64decode(tok).decode()
        certs = os.path.join(str(tmp_path), "certs")
        os.makedirs(certs)
        shutil.copy(cert[0], os.path.join(certs, "berth.crt"))
        layout = os.path.join(str(tmp_path), "layout")
        busybox_image(layout, tag="1")
        ref = "docker://%s/tls/sk:1" % b.host()
        p = subprocess.run(["skopeo", "--insecure-policy", "copy", "--dest-cert-dir", certs,
                            "--dest-creds", creds, "oci:%s:1" % layout, ref],
                           capture_output=True, text=True, env=clean_env())
        assert p.returncode == 0, p.stderr
        p = subprocess.run(["skopeo", "--insecure-policy", "copy", "--src-cert-dir", certs,
                            "--src-creds", creds, ref, "oci:%s/back:1" % str(tmp_path)],
                           capture_output=True, text=True, env=clean_env())
        assert p.returncode == 0, p.stderr
        # Without the certificate skopeo refuses the server.
        p = subprocess.run(["skopeo", "inspect", "--creds", creds, ref], capture_output=True,
                           text=True, env=clean_env())
        assert p.returncode != 0 and "certificate" in p.stderr, p.stderr
    finally:
        b.stop()


def test_self_signed_certificate_is_made_once_and_named_by_berth_env(data_dir):
    b = TlsBerth(data_dir).start()
    try:
        ca = b.env["AWS_CA_BUNDLE"]
        assert ca == os.path.join(data_dir, "tls", "cert.pem")
        with open(ca) as f:
            first = f.read()
        p = b.aws_cli("ecs", "create-cluster", "--cluster-name", "ss", ca_bundle=ca)
        assert p.returncode == 0, p.stderr
        assert b.client().list_clusters()["clusterArns"]
        assert b.stop() == 0
        b.start()
        with open(ca) as f:
            assert f.read() == first, "the certificate is kept across restarts"
        assert b.client().list_clusters()["clusterArns"]
    finally:
        b.stop()


def _wait_for(pred, timeout, what, log=lambda: ""):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError("%s did not happen in %.0fs\n%s" % (what, timeout, log()))


def _start_agent(server, node_dir, ca_file=None):
    log = open(os.path.join(node_dir, "agent.log"), "ab")
    args = [BERTH, "agent", "--server", server.endpoint, "--cluster", "tls", "--data-dir", node_dir,
            "--bridge-name", BRIDGE, "--bridge-subnet", SUBNET, "--container-stop-timeout", "2",
            "--token", server.env["AWS_ACCESS_KEY_ID"] + ":" + server.env["AWS_SECRET_ACCESS_KEY"]]
    if ca_file:
        args += ["--ca-file", ca_file]
    return subprocess.Popen(args, stdout=log, stderr=log, env=clean_env(RUST_BACKTRACE="0"))


def _end(proc):
    end_process(proc)


@needs_root
def test_agent_joins_an_https_server_with_its_ca_and_runs_a_task(data_dir, cert):
    """ECS calls over https://, the session over wss://, the image pulled from the server's
    registry over TLS — all trusting the server through `--ca-file`."""
    server = TlsBerth(data_dir, *cert).start()
    node_dir = tempfile.mkdtemp(prefix="berth-tls-agent-")
    agent = None
    ids = []
    agent_log = lambda: open(os.path.join(node_dir, "agent.log"), errors="replace").read()[-4000:]
    try:
        ecs = server.client()
        ecs.create_cluster(clusterName="tls")
        image = server.push_busybox("tls-sleep")
        agent = _start_agent(server, node_dir, ca_file=cert[0])

        def registered():
            assert agent.poll() is None, agent_log()
            return ecs.list_container_instances(cluster="tls")["containerInstanceArns"]
        arns = _wait_for(registered, 20, "registration", agent_log)
        assert len(arns) == 1
        ecs.register_task_definition(family="tls-sleep", networkMode="none", containerDefinitions=[{
            "name": "c", "image": image, "memory": 16, "command": ["/bin/sleep", "300"]}])
        r = ecs.run_task(cluster="tls", taskDefinition="tls-sleep")
        assert not r["failures"], r
        arn = r["tasks"][0]["taskArn"]
        ids.append(arn.rsplit("/", 1)[1])
        t = server.wait_task(arn, "RUNNING", cluster="tls")
        assert t["containers"][0]["lastStatus"] == "RUNNING"
        ecs.stop_task(cluster="tls", task=arn)
        t = server.wait_task(arn, "STOPPED", timeout=20, cluster="tls")
        assert t["stopCode"] == "UserInitiated"
        assert "agent session opened" in server.log(), "the session went over wss://"
    finally:
        _end(agent)
        server.stop()
        _cleanup_node(node_dir, ids)
        shutil.rmtree(node_dir, ignore_errors=True)


@needs_root
def test_agent_without_the_ca_refuses_to_connect(data_dir, cert):
    server = TlsBerth(data_dir, *cert).start()
    node_dir = tempfile.mkdtemp(prefix="berth-tls-agent-")
    agent = None
    try:
        server.client().create_cluster(clusterName="tls")
        agent = _start_agent(server, node_dir)
        code = agent.wait(timeout=30)
        log = open(os.path.join(node_dir, "agent.log"), errors="replace").read()
        assert code != 0, log
        assert "not trusted" in log and "UnknownIssuer" in log, log
        assert server.client().list_container_instances(cluster="tls")["containerInstanceArns"] == []
        # A CA file that is not there is an error of its own.
        agent = _start_agent(server, node_dir, ca_file=os.path.join(node_dir, "nope.pem"))
        assert agent.wait(timeout=30) != 0
        log = open(os.path.join(node_dir, "agent.log"), errors="replace").read()
        assert "nope.pem" in log, log
    finally:
        _end(agent)
        server.stop()
        _cleanup_node(node_dir, [])
        shutil.rmtree(node_dir, ignore_errors=True)


@needs_root
def test_up_with_a_self_signed_certificate_runs_tasks_from_its_own_registry(data_dir):
    """`berth up --tls-self-signed`: the local node pulls from the registry of its own process
    over TLS."""
    n = TlsBerth(data_dir, role="up").start()
    ids = []
    try:
        image = n.push_busybox("tls-local")
        arn = n.run("tls-local", [{"name": "c", "image": image, "memory": 16,
                                   "command": ["/bin/sh", "-c", "echo pulled over tls"]}],
                    networkMode="none")
        ids.append(arn.rsplit("/", 1)[1])
        t = n.wait_task(arn, "STOPPED", timeout=30)
        assert t["containers"][0].get("exitCode") == 0, t
    finally:
        n.stop()
        _cleanup_node(data_dir, ids)
