"""Build small OCI images for tests, from files the test chooses (usually Debian's static
busybox), as OCI image layouts that skopeo can copy."""

import gzip
import hashlib
import io
import json
import os
import tarfile

BUSYBOX = "/bin/busybox"


def _blob(layout, data):
    d = hashlib.sha256(data).hexdigest()
    p = os.path.join(layout, "blobs", "sha256")
    os.makedirs(p, exist_ok=True)
    with open(os.path.join(p, d), "wb") as f:
        f.write(data)
    return "sha256:" + d


def layer_tar(files):
    """files: {path: bytes | (bytes, mode)} → gzipped tar bytes and the uncompressed digest."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as t:
        for path, content in sorted(files.items()):
            mode = 0o755
            if isinstance(content, tuple):
                content, mode = content
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size = len(content)
            info.mode = mode
            info.mtime = 0
            t.addfile(info, io.BytesIO(content))
    raw_bytes = raw.getvalue()
    gz = io.BytesIO()
    with gzip.GzipFile(fileobj=gz, mode="wb", mtime=0) as g:
        g.write(raw_bytes)
    return gz.getvalue(), "sha256:" + hashlib.sha256(raw_bytes).hexdigest()


def make_layout(layout, layers, tag="latest", cmd=None, extra_config=None):
    """Write an OCI image layout with one image of `layers` (each a files dict).
    Returns the manifest digest."""
    os.makedirs(layout, exist_ok=True)
    with open(os.path.join(layout, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    descs, diff_ids = [], []
    for files in layers:
        gz, diff = layer_tar(files)
        descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                      "digest": _blob(layout, gz), "size": len(gz)})
        diff_ids.append(diff)
    config = {"architecture": "amd64", "os": "linux",
              "config": {"Cmd": cmd or ["/bin/sh"], "Env": ["PATH=/bin"]},
              "rootfs": {"type": "layers", "diff_ids": diff_ids}}
    config.update(extra_config or {})
    cfg = json.dumps(config).encode()
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                           "digest": _blob(layout, cfg), "size": len(cfg)},
                "layers": descs}
    mb = json.dumps(manifest).encode()
    md = _blob(layout, mb)
    with open(os.path.join(layout, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md,
             "size": len(mb), "annotations": {"org.opencontainers.image.ref.name": tag}}]}, f)
    return md


def busybox_image(layout, tag="latest", marker=b""):
    """A runnable image: static busybox at /bin/busybox with /bin/sh linking to it."""
    with open(BUSYBOX, "rb") as f:
        bb = f.read()
    files = {"bin/busybox": bb, "bin/sh": bb, "etc/marker": (marker or b"x", 0o644)}
    return make_layout(layout, [files], tag=tag)
