"""Presigned SigV4 requests (query-string auth), driven with botocore's own presigners against
the real berth: a URL presigned for `GetCallerIdentity` (what `aws eks get-token` hands out)
answers who signed it, and cannot be replayed as any other operation — not with another Action
in the query, not as a POST carrying a body or an `X-Amz-Target`, not after it expires. A
header-signed request cannot have its body or its target changed after signing either."""

import json
import time
import urllib.error
import urllib.parse
import urllib.request

import botocore.auth
import botocore.awsrequest
import botocore.credentials

ACCOUNT = "000000000000"
ECS_TARGET = "AmazonEC2ContainerServiceV20141113."
TRUST_ROOT = json.dumps({"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::%s:root" % ACCOUNT},
     "Action": "sts:AssumeRole"}]})


def send(url, method="GET", body=None, headers=None):
    """Send one plain HTTP request (no SDK); returns (status, body text)."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def creds(berth):
    return botocore.credentials.Credentials(berth.env["AWS_ACCESS_KEY_ID"],
                                            berth.env["AWS_SECRET_ACCESS_KEY"])


def s3_style_presign(berth, params, method="POST", expires=60, service="sts"):
    """A URL presigned S3-style, with UNSIGNED-PAYLOAD as the payload hash (botocore's S3
    presigner): the form a signature that covers no body at all takes."""
    req = botocore.awsrequest.AWSRequest(method=method, url=berth.endpoint + "/", data=params)
    botocore.auth.S3SigV4QueryAuth(creds(berth), service, berth.env["AWS_REGION"],
                                   expires=expires).add_auth(req)
    return req.url


def clusters(berth):
    return berth.client("ecs").list_clusters()["clusterArns"]


def test_presigned_get_caller_identity(berth):
    sts = berth.client("sts")
    me = sts.get_caller_identity()
    url = sts.generate_presigned_url("get_caller_identity", ExpiresIn=60, HttpMethod="GET")
    status, text = send(url)
    assert status == 200, text
    assert "<GetCallerIdentityResponse" in text, text
    assert "<Arn>%s</Arn>" % me["Arn"] in text and "<Account>%s</Account>" % me["Account"] in text
    # The signature covers the method: HEAD needs a URL presigned for HEAD.
    assert send(url, method="HEAD")[0] == 403
    head = sts.generate_presigned_url("get_caller_identity", ExpiresIn=60, HttpMethod="HEAD")
    assert send(head, method="HEAD")[0] == 200
    # An S3-style presign (UNSIGNED-PAYLOAD) of a GET is the same promise: no body.
    status, text = send(s3_style_presign(berth, {"Action": "GetCallerIdentity",
                                                 "Version": "2011-06-15"}, method="GET"))
    assert status == 200 and "<GetCallerIdentityResponse" in text, text


def test_presigned_url_is_not_another_action(berth):
    berth.client("iam").create_role(RoleName="admin", AssumeRolePolicyDocument=TRUST_ROOT)
    arn = "arn:aws:iam::%s:role/admin" % ACCOUNT
    url = berth.client("sts").generate_presigned_url("get_caller_identity", ExpiresIn=60,
                                                     HttpMethod="GET")
    assume = "Action=AssumeRole&RoleArn=%s&RoleSessionName=stolen" % urllib.parse.quote(arn, "")
    for forged in (url.replace("Action=GetCallerIdentity", assume), url + "&" + assume):
        status, text = send(forged)
        assert status == 403, text
        assert "<Code>SignatureDoesNotMatch</Code>" in text, text
        assert "<Credentials>" not in text


def test_presigned_url_cannot_carry_a_body_or_target(berth):
    """A URL presigned as POST (botocore's default for the query protocol, and S3-style with
    UNSIGNED-PAYLOAD) must not take its operation from a body or an X-Amz-Target header."""
    berth.client("iam").create_role(RoleName="admin", AssumeRolePolicyDocument=TRUST_ROOT)
    before = clusters(berth)
    gci = {"Action": "GetCallerIdentity", "Version": "2011-06-15"}
    urls = [s3_style_presign(berth, gci),
            berth.client("sts").generate_presigned_url("get_caller_identity", ExpiresIn=60),
            berth.client("sts").generate_presigned_url("get_caller_identity", ExpiresIn=60,
                                                       HttpMethod="GET")]
    for url in urls:
        # The JSON protocol: CreateCluster in the target, its input in the body.
        status, text = send(url, method="POST", body=b'{"clusterName":"stolen"}', headers={
            "X-Amz-Target": ECS_TARGET + "CreateCluster",
            "Content-Type": "application/x-amz-json-1.1"})
        assert status == 400, text
        assert json.loads(text)["__type"] in ("IncompleteSignatureException",
                                              "InvalidSignatureException"), text
        # The query protocol: AssumeRole in a form body.
        status, text = send(url, method="POST", headers={
            "Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
            body=urllib.parse.urlencode({
                "Action": "AssumeRole", "Version": "2011-06-15", "RoleSessionName": "stolen",
                "RoleArn": "arn:aws:iam::%s:role/admin" % ACCOUNT}).encode())
        assert status in (400, 403), text
        assert "<Credentials>" not in text and "<Code>" in text, text
    # Scoped to ecs, a presigned POST with no body would pass every other check: it is
    # refused for its shape, whatever target and body it is sent with.
    url = s3_style_presign(berth, {}, service="ecs")
    for body in (b'{"clusterName":"stolen"}', b""):
        status, text = send(url, method="POST", body=body, headers={
            "X-Amz-Target": ECS_TARGET + "CreateCluster",
            "Content-Type": "application/x-amz-json-1.1"})
        assert status == 400, text
        assert json.loads(text)["__type"] == "IncompleteSignatureException", text
    assert clusters(berth) == before


def test_presigned_url_expires(berth):
    sts = berth.client("sts")
    url = sts.generate_presigned_url("get_caller_identity", ExpiresIn=1, HttpMethod="GET")
    assert send(url)[0] == 200
    time.sleep(2.1)
    status, text = send(url)
    assert status == 403, text
    assert "<Code>SignatureDoesNotMatch</Code>" in text and "Signature expired" in text, text
    # Longer than seven days is not a valid presigned URL (never silently shortened).
    url = sts.generate_presigned_url("get_caller_identity", ExpiresIn=604801, HttpMethod="GET")
    status, text = send(url)
    assert status == 400 and "<Code>IncompleteSignature</Code>" in text, text
    assert "X-Amz-Expires" in text


def signed_ecs(berth, body, target="CreateCluster", sign_target=True):
    """A header-signed ECS request as botocore signs it; returns (url, headers)."""
    headers = {"Content-Type": "application/x-amz-json-1.1"}
    if sign_target:
        headers["X-Amz-Target"] = ECS_TARGET + target
    req = botocore.awsrequest.AWSRequest(method="POST", url=berth.endpoint + "/", data=body,
                                         headers=headers)
    botocore.auth.SigV4Auth(creds(berth), "ecs", berth.env["AWS_REGION"]).add_auth(req)
    out = {k: v for k, v in req.prepare().headers.items() if k.lower() != "content-length"}
    if not sign_target:
        out["X-Amz-Target"] = ECS_TARGET + target
    return req.url, out


def test_header_signed_body_and_target_are_covered(berth):
    before = clusters(berth)
    url, headers = signed_ecs(berth, b'{"clusterName":"signed"}')
    # The body changed after signing.
    status, text = send(url, "POST", b'{"clusterName":"swapped"}', headers)
    assert status == 400 and json.loads(text)["__type"] == "InvalidSignatureException", text
    # A claimed payload hash that is not the body's, even unsigned.
    status, text = send(url, "POST", b'{"clusterName":"signed"}',
                        {**headers, "X-Amz-Content-Sha256": "UNSIGNED-PAYLOAD"})
    assert status == 400 and json.loads(text)["__type"] == "InvalidSignatureException", text
    # The (signed) target changed after signing.
    status, text = send(url, "POST", b'{"clusterName":"signed"}',
                        {**headers, "X-Amz-Target": ECS_TARGET + "DeleteCluster"})
    assert status == 400 and json.loads(text)["__type"] == "InvalidSignatureException", text
    # A target added to a request whose signature does not cover one.
    url2, unsigned = signed_ecs(berth, b'{"clusterName":"untargeted"}', sign_target=False)
    status, text = send(url2, "POST", b'{"clusterName":"untargeted"}', unsigned)
    assert status == 400 and json.loads(text)["__type"] == "IncompleteSignatureException", text
    assert clusters(berth) == before
    # Unchanged, the same request goes through.
    status, text = send(url, "POST", b'{"clusterName":"signed"}', headers)
    assert status == 200, text
    assert {a.rsplit("/", 1)[1] for a in clusters(berth)} == {
        a.rsplit("/", 1)[1] for a in before} | {"signed"}
