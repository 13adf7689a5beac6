"""docker (through a dockerd this test starts) and podman push and pull against berth, logged
in with `aws ecr get-login-password` exactly as the ECR docs tell users."""

import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time

import pytest

from conftest import BERTH  # noqa: F401  (the binary under test)


def rootfs_tar(path, marker):
    root = tempfile.mkdtemp(prefix="berth-rootfs-")
    try:
        os.makedirs(os.path.join(root, "bin"))
        shutil.copy("/bin/busybox", os.path.join(root, "bin", "busybox"))
        with open(os.path.join(root, "marker"), "w") as f:
            f.write(marker)
        with tarfile.open(path, "w") as t:
            t.add(root, arcname=".")
    finally:
        shutil.rmtree(root)
    return path


def login_password(berth):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(berth.env)
    env["AWS_CONFIG_FILE"] = env["AWS_SHARED_CREDENTIALS_FILE"] = "/dev/null"
    return subprocess.run(["aws", "ecr", "get-login-password"], env=env, capture_output=True,
                          text=True, check=True).stdout.strip()


@pytest.fixture
def dockerd():
    if not shutil.which("dockerd"):
        pytest.skip("dockerd not installed (apt-get install docker.io)")
    d = tempfile.mkdtemp(prefix="berth-dockerd-")
    sock = os.path.join(d, "docker.sock")
    log = open(os.path.join(d, "log"), "wb")
    p = subprocess.Popen(["dockerd", "--data-root", os.path.join(d, "data"),
                          "--exec-root", os.path.join(d, "exec"), "--pidfile", os.path.join(d, "pid"),
                          "-H", "unix://" + sock, "--iptables=false", "--ip6tables=false",
                          "--bridge=none"], stdout=log, stderr=log)
    env = {**os.environ, "DOCKER_HOST": "unix://" + sock, "DOCKER_CONFIG": os.path.join(d, "cfg")}
    try:
        for _ in range(200):
            if subprocess.run(["docker", "version"], env=env, capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
        else:
            raise RuntimeError("dockerd did not start")
        yield env
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        subprocess.run(["umount", "-R", os.path.join(d, "data")], capture_output=True)
        shutil.rmtree(d, ignore_errors=True)


def run(args, env=None, input_text=None, check=True):
    p = subprocess.run(args, env=env, input=input_text, capture_output=True, text=True)
    if check and p.returncode != 0:
        raise AssertionError("%s failed: %s %s" % (" ".join(args), p.stdout, p.stderr))
    return p


def test_docker_login_push_pull_and_immutable_tag(berth, dockerd, tmp_path):
    host = berth.endpoint.removeprefix("http://")
    berth.aws("ecr", "create-repository", "--repository-name", "web", "--image-tag-mutability", "IMMUTABLE")
    env = dockerd
    run(["docker", "login", "--username", "AWS", "--password-stdin", host], env, login_password(berth))
    run(["docker", "import", rootfs_tar(str(tmp_path / "a.tar"), "one"), host + "/web:1"], env)
    out = run(["docker", "push", host + "/web:1"], env).stdout
    pushed = out.strip().splitlines()[-1].split("digest: ")[1].split()[0]
    images = berth.aws("ecr", "describe-images", "--repository-name", "web")["imageDetails"]
    assert images[0]["imageDigest"] == pushed
    assert images[0]["imageManifestMediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    run(["docker", "rmi", host + "/web:1"], env)
    out = run(["docker", "pull", host + "/web:1"], env).stdout
    assert pushed in out
    # Overwriting the immutable tag is refused, and docker says why.
    run(["docker", "import", rootfs_tar(str(tmp_path / "b.tar"), "two"), host + "/web:1"], env)
    p = run(["docker", "push", host + "/web:1"], env, check=False)
    assert p.returncode != 0
    assert "cannot be overwritten because the repository is immutable" in p.stdout + p.stderr
    assert [i["imageDigest"] for i in
            berth.aws("ecr", "describe-images", "--repository-name", "web")["imageDetails"]] == [pushed]


def test_podman_push_pull(berth, tmp_path):
    if not shutil.which("podman"):
        pytest.skip("podman not installed")
    host = berth.endpoint.removeprefix("http://")
    berth.aws("ecr", "create-repository", "--repository-name", "pod")
    # podman wants a short runroot.
    short = tempfile.mkdtemp(prefix="bp-", dir="/tmp")
    base = ["podman", "--root", str(tmp_path / "s"), "--runroot", short,
            "--storage-driver", "vfs"]
    try:
        _podman_flow(berth, base, host, tmp_path)
    finally:
        subprocess.run(base + ["system", "reset", "--force"], capture_output=True)
        shutil.rmtree(short, ignore_errors=True)


def _podman_flow(berth, base, host, tmp_path):
    pw = login_password(berth)
    run(base + ["import", rootfs_tar(str(tmp_path / "a.tar"), "pod"), host + "/pod:v1"])
    run(base + ["push", "--tls-verify=false", "--creds", "AWS:" + pw, host + "/pod:v1"])
    ids = berth.aws("ecr", "list-images", "--repository-name", "pod")["imageIds"]
    assert [i["imageTag"] for i in ids] == ["v1"]
    run(base + ["rmi", host + "/pod:v1"])
    run(base + ["pull", "--tls-verify=false", "--creds", "AWS:" + pw, host + "/pod:v1"])
    out = run(base + ["images", "--format", "{{.Repository}}:{{.Tag}}"]).stdout
    assert host + "/pod:v1" in out
    # Wrong password: refused.
    p = run(base + ["pull", "--tls-verify=false", "--creds", "AWS:wrong", host + "/pod:v1"], check=False)
    assert p.returncode != 0
