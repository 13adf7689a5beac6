"""The registry through real clients: the aws CLI for ECR, skopeo for OCI push/pull, and raw
HTTP for the spec's corners."""

import base64
import hashlib
import json
import os
import subprocess
import urllib.error
import urllib.request

import pytest

from images import busybox_image, make_layout

pytestmark = pytest.mark.skipif(subprocess.run(["which", "skopeo"], capture_output=True).returncode,
                                reason="skopeo not installed")


def _password(berth):
    ecr = berth.client("ecr")
    tok = ecr.get_authorization_token()["authorizationData"][0]["authorizationToken"]
    user, pw = base64.b64decode(tok).decode().split(":", 1)
    assert user == "AWS"
    return pw


def host(berth):
    return berth.endpoint.removeprefix("http://")


def skopeo(*args, check=True):
    p = subprocess.run(["skopeo", "--insecure-policy", *args], capture_output=True, text=True)
    if check and p.returncode != 0:
        raise AssertionError("skopeo %s failed: %s" % (" ".join(args), p.stderr))
    return p


def push(berth, layout, ref, pw=None, check=True):
    return skopeo("copy", "--dest-tls-verify=false", "--dest-creds", "AWS:" + (pw or _password(berth)),
                  "oci:%s:latest" % layout, "docker://%s/%s" % (host(berth), ref), check=check)


def req(berth, method, path, body=None, headers=None, pw=None, auth=True):
    h = dict(headers or {})
    if auth:
        h["Authorization"] = "Basic " + base64.b64encode(("AWS:" + (pw or _password(berth))).encode()).decode()
    r = urllib.request.Request(berth.endpoint + path, data=body, method=method, headers=h)
    try:
        with urllib.request.urlopen(r, timeout=30) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def test_cli_login_password_and_skopeo_round_trip(berth, tmp_path):
    r = berth.aws("ecr", "create-repository", "--repository-name", "web",
                  "--image-tag-mutability", "IMMUTABLE")["repository"]
    assert r["repositoryUri"] == host(berth) + "/web"
    assert r["imageTagMutability"] == "IMMUTABLE"
    pw = subprocess.run(["aws", "ecr", "get-login-password"], capture_output=True, text=True,
                        env={**{k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
                             **berth.env, "AWS_CONFIG_FILE": "/dev/null",
                             "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}, check=True).stdout.strip()
    src = str(tmp_path / "src")
    digest = busybox_image(src)
    push(berth, src, "web:1", pw=pw)
    imgs = berth.aws("ecr", "describe-images", "--repository-name", "web")["imageDetails"]
    assert len(imgs) == 1
    assert imgs[0]["imageDigest"] == digest
    assert imgs[0]["imageTags"] == ["1"]
    assert imgs[0]["imageSizeInBytes"] > 1_000_000
    assert imgs[0]["imageManifestMediaType"] == "application/vnd.oci.image.manifest.v1+json"
    # Pull it back: byte-identical manifest, so the same digest.
    out = str(tmp_path / "out")
    skopeo("copy", "--src-tls-verify=false", "--src-creds", "AWS:" + pw,
           "docker://%s/web:1" % host(berth), "oci:%s:latest" % out)
    with open(os.path.join(out, "index.json")) as f:
        assert json.load(f)["manifests"][0]["digest"] == digest
    raw = skopeo("inspect", "--raw", "--tls-verify=false", "--creds", "AWS:" + pw,
                 "docker://%s/web:1" % host(berth)).stdout.encode()
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == digest
    # An immutable tag cannot be overwritten, not even through the push protocol.
    other = str(tmp_path / "other")
    busybox_image(other, marker=b"different")
    p = push(berth, other, "web:1", pw=pw, check=False)
    assert p.returncode != 0
    assert "TAG_INVALID" in p.stderr or "immutable" in p.stderr, p.stderr
    assert berth.aws("ecr", "list-images", "--repository-name", "web")["imageIds"] == [
        {"imageDigest": digest, "imageTag": "1"}]
    # Wrong credentials get nothing.
    p = skopeo("inspect", "--raw", "--tls-verify=false", "--creds", "AWS:not-a-token",
               "docker://%s/web:1" % host(berth), check=False)
    assert p.returncode != 0 and ("unauthorized" in p.stderr.lower() or "401" in p.stderr)


def test_push_to_missing_repository_is_refused(berth, tmp_path):
    src = str(tmp_path / "src")
    busybox_image(src)
    p = push(berth, src, "nope:1", check=False)
    assert p.returncode != 0
    assert "NAME_UNKNOWN" in p.stderr or "name unknown" in p.stderr.lower(), p.stderr


def test_distribution_api_corners(berth):
    berth.client("ecr").create_repository(repositoryName="raw")
    pw = _password(berth)
    # Unauthenticated: 401 with an ECR-style challenge.
    st, h, body = req(berth, "GET", "/v2/", auth=False)
    assert st == 401 and h["www-authenticate"].startswith("Basic realm=")
    assert json.loads(body)["errors"][0]["code"] == "UNAUTHORIZED"
    assert h["docker-distribution-api-version"] == "registry/2.0"
    st, _, _ = req(berth, "GET", "/v2/", pw=pw)
    assert st == 200

    data = os.urandom(300_000)
    d = "sha256:" + hashlib.sha256(data).hexdigest()
    # Digest mismatch: refused, nothing stored.
    st, _, body = req(berth, "POST", "/v2/raw/blobs/uploads/?digest=sha256:" + "0" * 64, data, pw=pw)
    assert st == 400 and json.loads(body)["errors"][0]["code"] == "DIGEST_INVALID"
    st, _, _ = req(berth, "HEAD", "/v2/raw/blobs/" + d, pw=pw)
    assert st == 404
    # Chunked: POST, PATCH in order, out-of-order PATCH refused with 416, status, PUT.
    st, h, _ = req(berth, "POST", "/v2/raw/blobs/uploads/", b"", pw=pw)
    assert st == 202
    loc = h["location"]
    st, h, _ = req(berth, "PATCH", loc, data[:100_000], {"Content-Range": "0-99999",
                                                         "Content-Type": "application/octet-stream"}, pw=pw)
    assert st == 202 and h["range"] == "0-99999"
    st, _, _ = req(berth, "PATCH", loc, data[200_000:], {"Content-Range": "200000-299999"}, pw=pw)
    assert st == 416
    st, h, _ = req(berth, "GET", loc, pw=pw)
    assert st == 204 and h["range"] == "0-99999"
    st, _, _ = req(berth, "PATCH", loc, data[100_000:], {"Content-Range": "100000-299999"}, pw=pw)
    assert st == 202
    st, h, _ = req(berth, "PUT", loc + "?digest=" + d, b"", pw=pw)
    assert st == 201 and h["docker-content-digest"] == d
    # Someone else's (or a finished) session id is unknown.
    st, _, body = req(berth, "PATCH", loc, b"x", pw=pw)
    assert st == 404 and json.loads(body)["errors"][0]["code"] == "BLOB_UPLOAD_UNKNOWN"
    # Pull with Range.
    st, h, body = req(berth, "GET", "/v2/raw/blobs/" + d, pw=pw)
    assert st == 200 and body == data and h["docker-content-digest"] == d
    st, h, body = req(berth, "GET", "/v2/raw/blobs/" + d, headers={"Range": "bytes=10-19"}, pw=pw)
    assert st == 206 and body == data[10:20] and h["content-range"] == "bytes 10-19/300000"
    # Bad names.
    for bad in ("/v2/Raw/tags/list", "/v2/a/../b/tags/list"):
        st, _, body = req(berth, "GET", bad, pw=pw)
        assert st in (400, 404), bad
    st, _, body = req(berth, "GET", "/v2/UPPER/tags/list", pw=pw)
    assert json.loads(body)["errors"][0]["code"] == "NAME_INVALID"
    # A manifest referring to a missing blob.
    cfg = b'{"architecture":"amd64","os":"linux"}'
    st, _, _ = req(berth, "POST", "/v2/raw/blobs/uploads/?digest=sha256:" + hashlib.sha256(cfg).hexdigest(), cfg, pw=pw)
    assert st == 201
    man = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                      "digest": "sha256:" + hashlib.sha256(cfg).hexdigest(), "size": len(cfg)},
           "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                       "digest": "sha256:" + "1" * 64, "size": 5}]}
    ct = {"Content-Type": "application/vnd.oci.image.manifest.v1+json"}
    st, _, body = req(berth, "PUT", "/v2/raw/manifests/v1", json.dumps(man).encode(), ct, pw=pw)
    assert st == 400 and json.loads(body)["errors"][0]["code"] == "MANIFEST_BLOB_UNKNOWN"
    st, _, body = req(berth, "PUT", "/v2/raw/manifests/v1", b"{nope", ct, pw=pw)
    assert json.loads(body)["errors"][0]["code"] == "MANIFEST_INVALID"
    # A good one, several tags, tags list pagination with Link.
    man["layers"][0] = {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": len(data)}
    mb = json.dumps(man).encode()
    md = "sha256:" + hashlib.sha256(mb).hexdigest()
    for t in ("a", "b", "c", "d"):
        st, h, _ = req(berth, "PUT", "/v2/raw/manifests/" + t, mb, ct, pw=pw)
        assert st == 201 and h["docker-content-digest"] == md
    st, h, body = req(berth, "GET", "/v2/raw/tags/list?n=2", pw=pw)
    assert json.loads(body)["tags"] == ["a", "b"] and 'last=b' in h["link"]
    st, h, body = req(berth, "GET", "/v2/raw/tags/list?n=2&last=b", pw=pw)
    assert json.loads(body)["tags"] == ["c", "d"]
    st, h, body = req(berth, "HEAD", "/v2/raw/manifests/a", pw=pw)
    assert st == 200 and h["docker-content-digest"] == md and int(h["content-length"]) == len(mb)
    # A referrer (artifact with subject) and the referrers API.
    art = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
           "artifactType": "application/vnd.example.sbom",
           "config": {"mediaType": "application/vnd.oci.empty.v1+json",
                      "digest": "sha256:" + hashlib.sha256(cfg).hexdigest(), "size": len(cfg)},
           "layers": [], "subject": {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                                      "digest": md, "size": len(mb)}}
    ab = json.dumps(art).encode()
    ad = "sha256:" + hashlib.sha256(ab).hexdigest()
    st, h, _ = req(berth, "PUT", "/v2/raw/manifests/" + ad, ab, ct, pw=pw)
    assert st == 201 and h["oci-subject"] == md
    st, h, body = req(berth, "GET", "/v2/raw/referrers/" + md, pw=pw)
    refs = json.loads(body)["manifests"]
    assert [r["digest"] for r in refs] == [ad] and refs[0]["artifactType"] == "application/vnd.example.sbom"
    st, h, body = req(berth, "GET", "/v2/raw/referrers/" + md + "?artifactType=other", pw=pw)
    assert json.loads(body)["manifests"] == [] and h["oci-filters-applied"] == "artifactType"
    # Cross-repository mount.
    berth.client("ecr").create_repository(repositoryName="copy")
    st, h, _ = req(berth, "POST", "/v2/copy/blobs/uploads/?mount=%s&from=raw" % d, b"", pw=pw)
    assert st == 201
    st, _, _ = req(berth, "HEAD", "/v2/copy/blobs/" + d, pw=pw)
    assert st == 200
    st, _, body = req(berth, "GET", "/v2/_catalog", pw=pw)
    assert json.loads(body)["repositories"] == ["copy", "raw"]
    # Deleting by digest removes its tags.
    st, _, _ = req(berth, "DELETE", "/v2/raw/manifests/" + md, pw=pw)
    assert st == 202
    st, _, body = req(berth, "GET", "/v2/raw/tags/list", pw=pw)
    assert json.loads(body)["tags"] == []


def test_ecr_api(berth, tmp_path):
    ecr = berth.client("ecr")
    ecr.create_repository(repositoryName="team/app", tags=[{"Key": "k", "Value": "v"}])
    with pytest.raises(ecr.exceptions.RepositoryAlreadyExistsException):
        ecr.create_repository(repositoryName="team/app")
    with pytest.raises(ecr.exceptions.InvalidParameterException):
        ecr.create_repository(repositoryName="Bad/Name")
    src = str(tmp_path / "src")
    digest = busybox_image(src)
    push(berth, src, "team/app:v1")
    push(berth, src, "team/app:v2")
    ids = ecr.list_images(repositoryName="team/app")["imageIds"]
    assert sorted(i["imageTag"] for i in ids) == ["v1", "v2"]
    got = ecr.batch_get_image(repositoryName="team/app", imageIds=[{"imageTag": "v1"}, {"imageTag": "zz"}])
    assert got["images"][0]["imageId"]["imageDigest"] == digest
    assert got["failures"][0]["failureCode"] == "ImageNotFound"
    layers = json.loads(got["images"][0]["imageManifest"])["layers"]
    avail = ecr.batch_check_layer_availability(repositoryName="team/app",
                                               layerDigests=[layers[0]["digest"], "sha256:" + "2" * 64])
    assert avail["layers"][0]["layerAvailability"] == "AVAILABLE"
    assert avail["failures"][0]["failureCode"] == "MissingLayerDigest"
    # PutImage: a new tag for an existing manifest.
    ecr.put_image(repositoryName="team/app", imageManifest=got["images"][0]["imageManifest"], imageTag="v3")
    with pytest.raises(ecr.exceptions.ImageAlreadyExistsException):
        ecr.put_image(repositoryName="team/app", imageManifest=got["images"][0]["imageManifest"], imageTag="v3")
    d = ecr.describe_images(repositoryName="team/app")["imageDetails"]
    assert sorted(d[0]["imageTags"]) == ["v1", "v2", "v3"]
    ecr.batch_delete_image(repositoryName="team/app", imageIds=[{"imageTag": "v2"}])
    assert sorted(ecr.describe_images(repositoryName="team/app")["imageDetails"][0]["imageTags"]) == ["v1", "v3"]
    arn = ecr.describe_repositories(repositoryNames=["team/app"])["repositories"][0]["repositoryArn"]
    assert ecr.list_tags_for_resource(resourceArn=arn)["tags"] == [{"Key": "k", "Value": "v"}]
    ecr.put_image_tag_mutability(repositoryName="team/app", imageTagMutability="IMMUTABLE")
    with pytest.raises(ecr.exceptions.RepositoryNotEmptyException):
        ecr.delete_repository(repositoryName="team/app")
    ecr.delete_repository(repositoryName="team/app", force=True)
    with pytest.raises(ecr.exceptions.RepositoryNotFoundException):
        ecr.describe_images(repositoryName="team/app")


def test_lifecycle_policy_expires_and_previews(berth, tmp_path):
    ecr = berth.client("ecr")
    ecr.create_repository(repositoryName="life")
    digests = []
    for i in range(4):
        src = str(tmp_path / ("img%d" % i))
        digests.append(busybox_image(src, marker=b"m%d" % i))
        push(berth, src, "life:prod-%d" % i)
    src = str(tmp_path / "dev")
    dev = busybox_image(src, marker=b"dev")
    push(berth, src, "life:dev-1")
    policy = json.dumps({"rules": [{
        "rulePriority": 1, "description": "keep two prod images",
        "selection": {"tagStatus": "tagged", "tagPrefixList": ["prod"],
                      "countType": "imageCountMoreThan", "countNumber": 2},
        "action": {"type": "expire"}}]})
    with pytest.raises(ecr.exceptions.LifecyclePolicyPreviewNotFoundException):
        ecr.get_lifecycle_policy_preview(repositoryName="life")
    ecr.start_lifecycle_policy_preview(repositoryName="life", lifecyclePolicyText=policy)
    prev = ecr.get_lifecycle_policy_preview(repositoryName="life")
    assert prev["status"] == "COMPLETE"
    assert sorted(r["imageDigest"] for r in prev["previewResults"]) == sorted(digests[:2])
    assert all(r["appliedRulePriority"] == 1 and r["action"]["type"] == "EXPIRE"
               for r in prev["previewResults"])
    assert prev["summary"]["expiringImageTotalCount"] == 2
    # Nothing expired by a preview.
    assert len(ecr.describe_images(repositoryName="life")["imageDetails"]) == 5
    # Invalid policies are refused with ECR's wording.
    with pytest.raises(ecr.exceptions.InvalidParameterException) as e:
        ecr.put_lifecycle_policy(repositoryName="life", lifecyclePolicyText=json.dumps({"rules": [{
            "rulePriority": 1, "selection": {"tagStatus": "tagged", "countType": "imageCountMoreThan",
                                             "countNumber": 1}, "action": {"type": "expire"}}]}))
    assert "LifecyclePolicyText" in str(e.value)
    # Put through the aws CLI, as the README shows: applied at once.
    pol = tmp_path / "policy.json"
    pol.write_text(policy)
    berth.aws("ecr", "put-lifecycle-policy", "--repository-name", "life",
              "--lifecycle-policy-text", "file://" + str(pol))
    left = berth.aws("ecr", "describe-images", "--repository-name", "life")["imageDetails"]
    assert sorted(i["imageDigest"] for i in left) == sorted(digests[2:] + [dev])
    got = ecr.get_lifecycle_policy(repositoryName="life")
    assert json.loads(got["lifecyclePolicyText"]) == json.loads(policy)
    assert "lastEvaluatedAt" in got
    ecr.delete_lifecycle_policy(repositoryName="life")
    with pytest.raises(ecr.exceptions.LifecyclePolicyNotFoundException):
        ecr.get_lifecycle_policy(repositoryName="life")
    # The README's example policy is accepted.
    from conftest import ROOT
    berth.aws("ecr", "put-lifecycle-policy", "--repository-name", "life", "--lifecycle-policy-text",
              "file://" + os.path.join(ROOT, "examples", "lifecycle.json"))


def test_repository_policy_is_enforced(berth, tmp_path):
    ecr = berth.client("ecr")
    ecr.create_repository(repositoryName="locked")
    src = str(tmp_path / "src")
    busybox_image(src)
    push(berth, src, "locked:1")
    no_pull = json.dumps({"Version": "2012-10-17", "Statement": [{
        "Sid": "nopull", "Effect": "Deny", "Principal": "*",
        "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]}]})
    ecr.set_repository_policy(repositoryName="locked", policyText=no_pull)
    assert json.loads(ecr.get_repository_policy(repositoryName="locked")["policyText"]) == json.loads(no_pull)
    pw = _password(berth)
    p = skopeo("inspect", "--raw", "--tls-verify=false", "--creds", "AWS:" + pw,
               "docker://%s/locked:1" % host(berth), check=False)
    assert p.returncode != 0 and ("denied" in p.stderr.lower()), p.stderr
    push(berth, src, "locked:2")  # pushes are not denied
    # Lock-out protection.
    lockout = json.dumps({"Statement": [{"Effect": "Deny", "Principal": "*", "Action": "ecr:*"}]})
    with pytest.raises(ecr.exceptions.InvalidParameterException):
        ecr.set_repository_policy(repositoryName="locked", policyText=lockout)
    ecr.delete_repository_policy(repositoryName="locked")
    skopeo("inspect", "--raw", "--tls-verify=false", "--creds", "AWS:" + pw,
           "docker://%s/locked:1" % host(berth))
    with pytest.raises(ecr.exceptions.RepositoryPolicyNotFoundException):
        ecr.get_repository_policy(repositoryName="locked")


def test_kill_9_during_a_200_mib_push_then_retry(data_dir):
    """The server dies mid-push: afterwards the store holds only whole, verified blobs, and
    the same push simply succeeds."""
    import http.client
    import threading
    import time

    from conftest import Berth

    b = Berth(data_dir).start()
    try:
        b.client("ecr").create_repository(repositoryName="big")
        chunk = os.urandom(1 << 20)
        total = 200

        def piece(i):
            return bytes([i % 256]) + chunk[1:]

        h = hashlib.sha256()
        for i in range(total):
            h.update(piece(i))
        digest = "sha256:" + h.hexdigest()

        def send(kill_after=None):
            u = b.endpoint.removeprefix("http://")
            hostname, port = u.split(":")
            conn = http.client.HTTPConnection(hostname, int(port), timeout=60)
            conn.putrequest("POST", "/v2/big/blobs/uploads/?digest=" + digest)
            conn.putheader("Authorization", "Basic " + base64.b64encode(
                ("AWS:" + _password(b)).encode()).decode())
            conn.putheader("Content-Type", "application/octet-stream")
            conn.putheader("Content-Length", str(total << 20))
            conn.endheaders()
            for i in range(total):
                if kill_after is not None and i == kill_after:
                    b.kill()  # SIGKILL by PID, mid-body
                    time.sleep(0.2)
                try:
                    conn.send(piece(i))
                except OSError:
                    return None
            resp = conn.getresponse()
            return resp.status, resp.getheader("Docker-Content-Digest")

        assert send(kill_after=100) is None
        blobs = os.path.join(data_dir, "registry", "blobs", "sha256")
        for root, _, files in os.walk(blobs):
            for f in files:
                with open(os.path.join(root, f), "rb") as fh:
                    assert hashlib.sha256(fh.read()).hexdigest() == f, "partial blob visible"
        assert not os.path.exists(os.path.join(blobs, digest[7:9], digest[7:]))
        b.start()
        status, got = send()
        assert (status, got) == (201, digest)
        st, hdr, _ = req(b, "HEAD", "/v2/big/blobs/" + digest)
        assert st == 200 and int(hdr["content-length"]) == total << 20
        with open(os.path.join(blobs, digest[7:9], digest[7:]), "rb") as fh:
            assert hashlib.sha256(fh.read()).hexdigest() == digest[7:]
    finally:
        b.stop()


def test_bearer_token_flow(data_dir, tmp_path):
    """With --registry-bearer true, clients are challenged with Bearer and fetch a token from
    /v2/token using their ECR credentials — the flow docker and podman follow."""
    from conftest import Berth

    b = Berth(data_dir, extra_args=["--registry-bearer", "true"]).start()
    try:
        b.client("ecr").create_repository(repositoryName="bear")
        st, h, _ = req(b, "GET", "/v2/", auth=False)
        assert st == 401 and h["www-authenticate"].startswith('Bearer realm="http://%s/v2/token"' % host(b))
        pw = _password(b)
        st, _, body = req(b, "GET", "/v2/token?service=%s&scope=repository:bear:pull,push" % host(b), pw=pw)
        tok = json.loads(body)["token"]
        st, _, _ = req(b, "GET", "/v2/bear/tags/list", auth=False, headers={"Authorization": "Bearer " + tok})
        assert st == 200
        st, _, _ = req(b, "GET", "/v2/bear/tags/list", auth=False, headers={"Authorization": "Bearer nope"})
        assert st == 401
        src = str(tmp_path / "src")
        d = busybox_image(src)
        push(b, src, "bear:1", pw=pw)  # skopeo follows the Bearer challenge by itself
        assert b.client("ecr").list_images(repositoryName="bear")["imageIds"][0]["imageDigest"] == d
    finally:
        b.stop()
