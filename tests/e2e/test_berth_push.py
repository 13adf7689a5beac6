"""`berth push` and `berth pull`: images from a directory, a docker-save archive and an OCI
layout, checked with skopeo and the ECR API."""

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile

from conftest import BERTH
from images import busybox_image


def berth_cli(berth, *args, check=True):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    p = subprocess.run([BERTH, *args, "--data-dir", berth.data_dir], capture_output=True, text=True, env=env)
    if check and p.returncode != 0:
        raise AssertionError("berth %s failed: %s" % (" ".join(args), p.stderr))
    return p


def host(berth):
    return berth.endpoint.removeprefix("http://")


def test_push_directory_then_pull(berth, tmp_path):
    berth.client("ecr").create_repository(repositoryName="tools")
    root = tmp_path / "rootfs"
    (root / "bin").mkdir(parents=True)
    shutil.copy("/bin/busybox", root / "bin" / "busybox")
    (root / "etc").mkdir()
    (root / "etc" / "greeting").write_text("hello\n")
    out = berth_cli(berth, "push", str(root), host(berth) + "/tools:1", "--cmd", "/bin/busybox sh",
                    "--env", "A=1", "--workdir", "/etc").stdout
    digest = out.strip().split("digest: ")[1]
    d = berth.client("ecr").describe_images(repositoryName="tools")["imageDetails"][0]
    assert d["imageDigest"] == digest and d["imageTags"] == ["1"]
    # Pushing the same tree again is a no-op with the same digest (reproducible layers).
    again = berth_cli(berth, "push", str(root), host(berth) + "/tools:1", "--cmd", "/bin/busybox sh",
                      "--env", "A=1", "--workdir", "/etc").stdout
    assert again.strip().split("digest: ")[1] == digest
    # Pull to an OCI layout: valid for skopeo, same manifest, config as asked.
    dest = tmp_path / "layout"
    out = berth_cli(berth, "pull", host(berth) + "/tools:1", str(dest)).stdout
    assert digest in out
    index = json.loads((dest / "index.json").read_text())
    assert index["manifests"][0]["digest"] == digest
    manifest = json.loads((dest / "blobs" / "sha256" / digest[7:]).read_bytes())
    cfg = json.loads((dest / "blobs" / "sha256" / manifest["config"]["digest"][7:]).read_bytes())
    assert cfg["config"]["Cmd"] == ["/bin/busybox", "sh"]
    assert "A=1" in cfg["config"]["Env"] and cfg["config"]["WorkingDir"] == "/etc"
    for layer in manifest["layers"]:
        blob = (dest / "blobs" / "sha256" / layer["digest"][7:]).read_bytes()
        assert hashlib.sha256(blob).hexdigest() == layer["digest"][7:]
    p = subprocess.run(["skopeo", "inspect", "oci:%s:1" % dest], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


def test_push_oci_layout_and_docker_save(berth, tmp_path):
    berth.client("ecr").create_repository(repositoryName="imports")
    layout = tmp_path / "oci"
    digest = busybox_image(str(layout))
    out = berth_cli(berth, "push", str(layout), host(berth) + "/imports:oci").stdout
    assert out.strip().endswith(digest), "an OCI layout is pushed byte for byte"

    # A docker-save archive (classic format: manifest.json, config, layer tars).
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as t:
        data = b"saved\n"
        info = tarfile.TarInfo("etc/saved")
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    layer_bytes = layer.getvalue()
    diff = "sha256:" + hashlib.sha256(layer_bytes).hexdigest()
    cfg = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/sh"]},
                      "rootfs": {"type": "layers", "diff_ids": [diff]}}).encode()
    archive = tmp_path / "saved.tar"
    with tarfile.open(archive, "w") as t:
        for name, content in (("abc/layer.tar", layer_bytes), ("cfg.json", cfg),
                              ("manifest.json", json.dumps([{"Config": "cfg.json", "RepoTags": ["x:1"],
                                                             "Layers": ["abc/layer.tar"]}]).encode())):
            info = tarfile.TarInfo(name)
            info.size = len(content)
            t.addfile(info, io.BytesIO(content))
    berth_cli(berth, "push", str(archive), host(berth) + "/imports:saved")
    got = berth.client("ecr").batch_get_image(repositoryName="imports", imageIds=[{"imageTag": "saved"}])
    m = json.loads(got["images"][0]["imageManifest"])
    assert m["layers"][0]["digest"] == diff
    # Bad destination and missing repository are reported, not crashed on.
    p = berth_cli(berth, "push", str(layout), "no-host-here", check=False)
    assert p.returncode != 0 and "host" in p.stderr
    p = berth_cli(berth, "push", str(layout), host(berth) + "/missing:1", check=False)
    assert p.returncode != 0 and "NAME_UNKNOWN" in p.stderr
