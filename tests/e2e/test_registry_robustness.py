"""The registry against idle, greedy and impatient clients, over raw HTTP against `berth up`:
idle upload sessions must not hold up anyone else, are bounded and expire; a registry token
cannot renew itself; an answer given before a request body was read leaves the connection
either usable or clearly closed (`Connection: close`), never silently dropped."""

import base64
import hashlib
import http.client
import json
import os
import socket
import threading
import time

import pytest

from conftest import Berth


class EnvBerth(Berth):
    """`berth up` with extra environment variables (its `BERTH_*` settings)."""

    def __init__(self, data_dir, env, **kw):
        super().__init__(data_dir, **kw)
        self.extra_env = env

    def process_env(self):
        return {**os.environ, **self.extra_env}


@pytest.fixture
def start(data_dir):
    started = []

    def go(env=None, extra_args=()):
        b = EnvBerth(data_dir, env or {}, extra_args=extra_args).start()
        started.append(b)
        return b

    yield go
    for b in started:
        b.stop()


def password(berth):
    tok = berth.client("ecr").get_authorization_token()["authorizationData"][0]["authorizationToken"]
    user, pw = base64.b64decode(tok).decode().split(":", 1)
    assert user == "AWS"
    return pw


def basic(pw):
    return "Basic " + base64.b64encode(("AWS:" + pw).encode()).decode()


def hostport(berth):
    h, p = berth.endpoint.removeprefix("http://").rsplit(":", 1)
    return h, int(p)


class Conn:
    """One keep-alive HTTP/1.1 connection (http.client), with the registry's Basic auth."""

    def __init__(self, berth, pw, timeout=30):
        self.c = http.client.HTTPConnection(*hostport(berth), timeout=timeout)
        self.auth = basic(pw)

    def req(self, method, path, body=None, headers=None):
        h = {"Authorization": self.auth, **(headers or {})}
        self.c.request(method, path, body=body, headers=h)
        r = self.c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()

    def close(self):
        self.c.close()


def error_code(body):
    return json.loads(body)["errors"][0]["code"]


def push_and_pull(conn, repo, size=1 << 20):
    """A blob pushed monolithically, a manifest naming it, both read back."""
    data = os.urandom(size)
    d = "sha256:" + hashlib.sha256(data).hexdigest()
    st, _, body = conn.req("POST", "/v2/%s/blobs/uploads/?digest=%s" % (repo, d), data)
    assert st == 201, body
    cfg = b"{}"
    cd = "sha256:" + hashlib.sha256(cfg).hexdigest()
    st, _, body = conn.req("POST", "/v2/%s/blobs/uploads/?digest=%s" % (repo, cd), cfg)
    assert st == 201, body
    mt = "application/vnd.oci.image.manifest.v1+json"
    man = json.dumps({"schemaVersion": 2, "mediaType": mt,
                      "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                 "digest": cd, "size": len(cfg)},
                      "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                                  "digest": d, "size": size}]}).encode()
    st, _, body = conn.req("PUT", "/v2/%s/manifests/v1" % repo, man, {"Content-Type": mt})
    assert st == 201, body
    st, _, body = conn.req("GET", "/v2/%s/manifests/v1" % repo, headers={"Accept": mt})
    assert st == 200 and body == man
    st, _, body = conn.req("GET", "/v2/%s/blobs/%s" % (repo, d))
    assert st == 200 and body == data


def test_idle_upload_sessions_do_not_hang_pushes_and_pulls(start):
    """600 idle upload sessions (more than tokio's 512 blocking threads): a push and a pull
    still complete at once."""
    b = start({"BERTH_REGISTRY_MAX_UPLOADS_PER_PRINCIPAL": "1000"},
              extra_args=["--registry-create-on-push", "true"])
    pw = password(b)
    idle = Conn(b, pw)
    for i in range(600):
        st, h, body = idle.req("POST", "/v2/idle/blobs/uploads/")
        assert st == 202, (i, body)
        if i % 100 == 0:
            # Some with bytes in them, too.
            st, _, body = idle.req("PATCH", h["location"], b"x" * 1000,
                                   {"Content-Type": "application/octet-stream"})
            assert st == 202, body
    started = time.monotonic()
    c = Conn(b, pw, timeout=20)
    push_and_pull(c, "busy")
    assert time.monotonic() - started < 20
    c.close()
    idle.close()


def test_upload_limit_per_principal_answers_toomanyrequests(start):
    b = start({"BERTH_REGISTRY_MAX_UPLOADS_PER_PRINCIPAL": "5"},
              extra_args=["--registry-create-on-push", "true"])
    c = Conn(b, password(b))
    locations = []
    for _ in range(5):
        st, h, _ = c.req("POST", "/v2/app/blobs/uploads/")
        assert st == 202
        locations.append(h["location"])
    st, _, body = c.req("POST", "/v2/app/blobs/uploads/")
    assert st == 429, body
    assert error_code(body) == "TOOMANYREQUESTS"
    assert "per principal" in json.loads(body)["errors"][0]["message"]
    # Ending one session makes room.
    st, _, _ = c.req("DELETE", locations[0])
    assert st == 204
    st, _, _ = c.req("POST", "/v2/app/blobs/uploads/")
    assert st == 202
    c.close()


def test_idle_upload_session_expires_with_its_file(start, data_dir):
    b = start({"BERTH_REGISTRY_UPLOAD_TIMEOUT": "2"},
              extra_args=["--registry-create-on-push", "true"])
    c = Conn(b, password(b))
    st, h, _ = c.req("POST", "/v2/app/blobs/uploads/")
    assert st == 202
    loc, uid = h["location"], h["docker-upload-uuid"]
    st, _, _ = c.req("PATCH", loc, b"partial", {"Content-Type": "application/octet-stream"})
    assert st == 202
    path = os.path.join(data_dir, "registry", "uploads", uid)
    assert os.path.exists(path)
    # Expiry sweeps run every second; asking is a request that restarts the idle time, so
    # ask less often than timeout + sweep interval.
    for _ in range(4):
        time.sleep(3.5)
        st, _, body = c.req("GET", loc)
        if st == 404:
            break
        assert st == 204
    assert st == 404 and error_code(body) == "BLOB_UPLOAD_UNKNOWN"
    assert not os.path.exists(path)
    c.close()


def test_registry_token_cannot_renew_itself(start):
    b = start(extra_args=["--registry-bearer", "true", "--registry-create-on-push", "true"])
    pw = password(b)
    c = http.client.HTTPConnection(*hostport(b), timeout=30)

    def token(auth, scope="repository:app:pull,push"):
        c.request("GET", "/v2/token?service=x&scope=" + scope, headers={"Authorization": auth})
        r = c.getresponse()
        return r.status, r.read()

    st, body = token(basic(pw))
    assert st == 200, body
    tok = json.loads(body)
    assert 0 < tok["expires_in"] <= 12 * 3600
    # The token itself (as Bearer, or as the Basic password) mints nothing.
    for auth in ("Bearer " + tok["token"], basic(tok["token"])):
        st, body = token(auth)
        assert st == 401, body
        assert error_code(body) == "UNAUTHORIZED"
        assert "cannot be renewed" in json.loads(body)["errors"][0]["message"]
    # A malformed scope is a clear error.
    st, body = token(basic(pw), scope="bogus")
    assert st == 400 and "invalid scope" in json.loads(body)["errors"][0]["message"]

    # A token grants only its scopes: pull on `app` lists app's tags, but neither pushes to
    # app nor reads another repository nor the catalog.
    st, body = token(basic(pw), scope="repository:app:pull")
    pull_only = "Bearer " + json.loads(body)["token"]

    def status(method, path):
        c.request(method, path, headers={"Authorization": pull_only})
        r = c.getresponse()
        r.read()
        return r.status
    assert status("GET", "/v2/app/tags/list") != 403
    assert status("POST", "/v2/app/blobs/uploads/") == 403
    assert status("GET", "/v2/other/tags/list") == 403
    assert status("GET", "/v2/_catalog") == 403
    c.close()


def send_raw(berth, head, body, chunk=64 << 10):
    """Send `head` + `body` on a fresh socket from a thread (the server may answer before
    reading it); returns the socket and the thread."""
    s = socket.create_connection(hostport(berth), timeout=20)

    def writer():
        try:
            s.sendall(head)
            for i in range(0, len(body), chunk):
                s.sendall(body[i:i + chunk])
        except OSError:
            pass

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    return s, t


def read_response(s):
    """One HTTP/1.1 response with a Content-Length body: (status, headers, body)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        got = s.recv(65536)
        if not got:
            raise ConnectionError("closed before a response: %r" % buf)
        buf += got
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, v = line.split(":", 1)
        headers[k.strip().lower()] = v.strip()
    n = int(headers.get("content-length", "0"))
    while len(rest) < n:
        got = s.recv(65536)
        if not got:
            raise ConnectionError("closed inside a response body")
        rest += got
    return status, headers, rest[:n]


def test_answer_before_the_body_keeps_the_connection_usable(start):
    """A PATCH to an unknown upload with a 512 KiB body is answered (404) before its body is
    read; the body is then drained and the same connection serves the next request."""
    b = start(extra_args=["--registry-create-on-push", "true"])
    auth = basic(password(b))
    body = os.urandom(512 << 10)
    head = ("PATCH /v2/app/blobs/uploads/00000000-0000-0000-0000-000000000000 HTTP/1.1\r\n"
            "Host: x\r\nAuthorization: %s\r\nContent-Type: application/octet-stream\r\n"
            "Content-Length: %d\r\n\r\n" % (auth, len(body))).encode()
    s, t = send_raw(b, head, body)
    try:
        st, h, resp = read_response(s)
        assert st == 404 and error_code(resp) == "BLOB_UPLOAD_UNKNOWN"
        assert h.get("connection") != "close"
        t.join(20)
        s.sendall(("GET /v2/ HTTP/1.1\r\nHost: x\r\nAuthorization: %s\r\n\r\n" % auth).encode())
        st, _, resp = read_response(s)
        assert st == 200 and resp == b"{}"
    finally:
        s.close()


def test_answer_before_a_large_body_says_connection_close(start):
    """An unauthenticated PUT of 32 MiB is refused (401) before its body is read: the answer
    says `Connection: close`, arrives whole (not reset), and the server then closes."""
    b = start(extra_args=["--registry-create-on-push", "true"])
    body = os.urandom(32 << 20)
    head = ("PUT /v2/app/manifests/latest HTTP/1.1\r\nHost: x\r\n"
            "Content-Type: application/vnd.oci.image.manifest.v1+json\r\n"
            "Content-Length: %d\r\n\r\n" % len(body)).encode()
    s, t = send_raw(b, head, body)
    try:
        st, h, resp = read_response(s)
        assert st == 401 and error_code(resp) == "UNAUTHORIZED"
        assert h.get("connection") == "close"
    finally:
        s.close()
        t.join(20)
