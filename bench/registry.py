#!/usr/bin/env python3
"""Registry benchmark: berth's registry against the CNCF registry (Debian's docker-registry,
distribution 2.8) in the same run, same machine, same disk, loopback only.

  - single-stream blob push (1 GiB, monolithic POST with digest) and pull, with curl;
  - manifest GET by tag, wrk -t1 -c16;
  - push of an image with 50 small layers, with skopeo (same client for both);
  - berth's resident memory while serving 64 concurrent pulls of a 1 GiB blob.

usage: bench/registry.py [--quick]   (run from the repository root after `cargo build --release`)
"""
import base64
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "e2e"))
from images import make_layout  # noqa: E402

QUICK = "--quick" in sys.argv
BERTH = os.path.abspath("target/release/berth")
BLOB_MIB = 256 if QUICK else 1024
WORK = tempfile.mkdtemp(prefix="berth-regbench-")
procs = []


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def start_berth():
    d = os.path.join(WORK, "berth")
    p = subprocess.Popen([BERTH, "up", "--listen", "127.0.0.1:0", "--data-dir", d, "--log", "warn", "--local-node", "false"])
    procs.append(p)
    for _ in range(200):
        if os.path.exists(os.path.join(d, "endpoint.json")):
            break
        time.sleep(0.05)
    env = {}
    for line in subprocess.run([BERTH, "env", "--data-dir", d], capture_output=True, text=True,
                               check=True).stdout.splitlines():
        k, _, v = line.removeprefix("export ").partition("=")
        env[k] = v
    import boto3
    ecr = boto3.client("ecr", endpoint_url=env["AWS_ENDPOINT_URL"], region_name=env["AWS_REGION"],
                       aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                       aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])
    for r in ("bench", "layers"):
        ecr.create_repository(repositoryName=r)
    tok = ecr.get_authorization_token()["authorizationData"][0]["authorizationToken"]
    pw = base64.b64decode(tok).decode().split(":", 1)[1]
    return p, env["AWS_ENDPOINT_URL"], pw


def start_cncf():
    port = free_port()
    d = os.path.join(WORK, "cncf")
    os.makedirs(d)
    cfg = os.path.join(d, "config.yml")
    with open(cfg, "w") as f:
        f.write("version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n"
                "storage:\n  filesystem:\n    rootdirectory: %s/data\n"
                "http:\n  addr: 127.0.0.1:%d\n" % (d, port))
    p = subprocess.Popen(["docker-registry", "serve", cfg], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    procs.append(p)
    url = "http://127.0.0.1:%d" % port
    for _ in range(100):
        try:
            urllib.request.urlopen(url + "/v2/", timeout=1)
            break
        except Exception:
            time.sleep(0.05)
    return p, url


def curl(args, stdin_path=None):
    stdin = open(stdin_path, "rb") if stdin_path else None
    try:
        out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{time_total}", *args],
                             stdin=stdin, capture_output=True, text=True, check=True).stdout.split()
    finally:
        if stdin:
            stdin.close()
    return int(out[0]), float(out[1])


def auth_args(pw):
    return ["-H", "Authorization: Basic " + base64.b64encode(("AWS:" + pw).encode()).decode()] if pw else []


def blob_push_pull(url, pw, path, digest, size):
    # The spec's "POST then PUT" monolithic upload (the CNCF registry ignores a body on POST).
    h = {"Authorization": "Basic " + base64.b64encode(("AWS:" + pw).encode()).decode()} if pw else {}
    r = urllib.request.urlopen(urllib.request.Request(url + "/v2/bench/blobs/uploads/", data=b"",
                                                      method="POST", headers=h))
    loc = r.headers["Location"]
    if loc.startswith("/"):
        loc = url + loc
    sep = "&" if "?" in loc else "?"
    # -T - streams stdin with the length we give.
    code, t = curl(["-X", "PUT", "-T", "-", "-H", "Content-Type: application/octet-stream",
                    "-H", "Content-Length: %d" % size, "-H", "Transfer-Encoding:",
                    *auth_args(pw), loc + sep + "digest=" + digest], stdin_path=path)
    assert code == 201, code
    push = size / t / 1e9
    best = 0
    for _ in range(3):
        code, t = curl([*auth_args(pw), url + "/v2/bench/blobs/" + digest])
        assert code == 200, code
        best = max(best, size / t / 1e9)
    return push, best


def wrk_manifest(url, pw, ref):
    script = os.path.join(WORK, "m.lua")
    with open(script, "w") as f:
        f.write('wrk.headers["Accept"] = "application/vnd.oci.image.manifest.v1+json"\n')
        if pw:
            f.write('wrk.headers["Authorization"] = "Basic %s"\n'
                    % base64.b64encode(("AWS:" + pw).encode()).decode())
        f.write("response = function(status) if status ~= 200 then io.stderr:write('HTTP ' .. status .. '\\n'); os.exit(1) end end\n")
    out = subprocess.run(["wrk", "-t1", "-c16", "-d%ds" % (5 if QUICK else 10), "--latency", "-s", script,
                          url + "/v2/" + ref], capture_output=True, text=True, check=True).stdout
    rps = float(next(l.split()[1] for l in out.splitlines() if l.startswith("Requests/sec")))
    p99 = next(l.split()[1] for l in out.splitlines() if l.strip().startswith("99%"))
    return rps, p99


def push_layers(url, pw, layout, repo):
    args = ["skopeo", "--insecure-policy", "copy", "--dest-tls-verify=false"]
    if pw:
        args += ["--dest-creds", "AWS:" + pw]
    t0 = time.perf_counter()
    subprocess.run(args + ["oci:%s:latest" % layout, "docker://%s/%s:1" % (url.removeprefix("http://"), repo)],
                   check=True, capture_output=True)
    return time.perf_counter() - t0


def rss_mib(pid):
    with open("/proc/%d/status" % pid) as f:
        return int(next(l for l in f if l.startswith("VmRSS")).split()[1]) / 1024


def main():
    berth, burl, pw = start_berth()
    cncf, curl_ = start_cncf()
    try:
        big = os.path.join(WORK, "big.bin")
        h = hashlib.sha256()
        with open(big, "wb") as f:
            chunk = os.urandom(1 << 20)
            for i in range(BLOB_MIB):
                c = bytes([i % 256]) + chunk[1:]
                h.update(c)
                f.write(c)
        digest = "sha256:" + h.hexdigest()
        size = BLOB_MIB << 20
        rows = []
        bp, bpl = blob_push_pull(burl, pw, big, digest, size)
        cp, cpl = blob_push_pull(curl_, None, big, digest, size)
        rows.append(("blob push, %d MiB, single stream (GB/s)" % BLOB_MIB, "%.2f" % bp, "%.2f" % cp, bp / cp))
        rows.append(("blob pull, %d MiB, single stream (GB/s, best of 3)" % BLOB_MIB, "%.2f" % bpl, "%.2f" % cpl, bpl / cpl))

        small = os.path.join(WORK, "small")
        make_layout(small, [{"bin/app": os.urandom(2048)}], tag="latest")
        subprocess.run(["skopeo", "--insecure-policy", "copy", "--dest-tls-verify=false", "--dest-creds", "AWS:" + pw,
                        "oci:%s:latest" % small, "docker://%s/bench:m" % burl.removeprefix("http://")], check=True,
                       capture_output=True)
        subprocess.run(["skopeo", "--insecure-policy", "copy", "--dest-tls-verify=false",
                        "oci:%s:latest" % small, "docker://%s/bench:m" % curl_.removeprefix("http://")], check=True,
                       capture_output=True)
        br, bp99 = wrk_manifest(burl, pw, "bench/manifests/m")
        cr, cp99 = wrk_manifest(curl_, None, "bench/manifests/m")
        rows.append(("manifest GET by tag (req/s; p99 berth %s, cncf %s)" % (bp99, cp99), "%.0f" % br, "%.0f" % cr, br / cr))

        layers = os.path.join(WORK, "layers50")
        make_layout(layers, [{"f%d" % i: os.urandom(4096)} for i in range(50)], tag="latest")
        tb = min(push_layers(burl, pw, layers, "layers") for _ in range(1))
        tc = min(push_layers(curl_, None, layers, "layers") for _ in range(1))
        rows.append(("push of a 50-layer image with skopeo (s)", "%.3f" % tb, "%.3f" % tc, tc / tb))

        # Memory while serving 64 concurrent pulls of the big blob.
        peak = [0.0]
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                peak[0] = max(peak[0], rss_mib(berth.pid))
                time.sleep(0.05)

        t = threading.Thread(target=sample)
        t.start()
        pulls = [subprocess.Popen(["curl", "-s", "-o", "/dev/null", *auth_args(pw),
                                   burl + "/v2/bench/blobs/" + digest]) for _ in range(64)]
        t0 = time.perf_counter()
        for p in pulls:
            p.wait()
        dt = time.perf_counter() - t0
        stop.set()
        t.join()
        mem_row = "peak resident memory during 64 concurrent %d MiB pulls: %.1f MiB (%.1f GB served in %.1f s)" % (
            BLOB_MIB, peak[0], 64 * size / 1e9, dt)

        print("| measure | berth | CNCF registry 2.8 | berth ÷ CNCF (higher is better) |")
        print("|---|---|---|---|")
        for name, b, c, ratio in rows:
            print("| %s | %s | %s | %.2f× |" % (name, b, c, ratio))
        print()
        print(mem_row)
    finally:
        for p in procs:
            p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(WORK, ignore_errors=True)


if __name__ == "__main__":
    main()
