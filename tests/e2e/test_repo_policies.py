"""Repository policies are evaluated by the same evaluator as identity policies, on the ECR API
and on the registry's /v2 routes alike: principals match role sessions by their role, Deny
statements with conditions apply, an Allow in the repository's policy grants within the
account, and a cross-repository mount needs pull rights on its source."""

import base64
import json
import subprocess
import urllib.error
import urllib.request

import botocore.exceptions
import pytest

from images import busybox_image
from test_iam import ACCOUNT, code, policy, session_client, trust

pytestmark = pytest.mark.skipif(subprocess.run(["which", "skopeo"], capture_output=True).returncode,
                                reason="skopeo not installed")


def v2(berth, method, path, token):
    """A /v2 request with a registry password (`token`: ECR's base64 authorizationToken)."""
    r = urllib.request.Request(berth.endpoint + path, method=method, data=b"" if method == "POST" else None,
                               headers={"Authorization": "Basic " + token})
    try:
        with urllib.request.urlopen(r, timeout=10) as resp:
            return resp.status, resp.headers
    except urllib.error.HTTPError as e:
        return e.code, e.headers


def push(berth, layout, ref):
    tok = berth.client("ecr").get_authorization_token()["authorizationData"][0]["authorizationToken"]
    pw = base64.b64decode(tok).decode().split(":", 1)[1]
    subprocess.run(["skopeo", "--insecure-policy", "copy", "--dest-tls-verify=false",
                    "--dest-creds", "AWS:" + pw, "oci:%s:latest" % layout,
                    "docker://%s/%s" % (berth.endpoint.removeprefix("http://"), ref)],
                   check=True, capture_output=True)


def repo_policy(*statements):
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def test_repository_policies_on_the_ecr_api_and_v2_with_one_evaluator(berth, tmp_path):
    ecr, iam = berth.client("ecr"), berth.client("iam")
    for repo in ("team-a/app", "team-b/src"):
        ecr.create_repository(repositoryName=repo)
    src = str(tmp_path / "src")
    busybox_image(src)
    push(berth, src, "team-b/src:1")
    push(berth, src, "team-a/app:1")
    manifest = json.loads(ecr.batch_get_image(repositoryName="team-b/src", imageIds=[{"imageTag": "1"}])[
        "images"][0]["imageManifest"])
    layer = manifest["layers"][0]["digest"]

    # The ECR JSON API honours the repository policy too (it was /v2 only).
    ecr.set_repository_policy(repositoryName="team-a/app", policyText=repo_policy(
        {"Sid": "nodelete", "Effect": "Deny", "Principal": "*",
         "Action": ["ecr:BatchGetImage", "ecr:BatchDeleteImage"]}))
    for call in (lambda: ecr.batch_get_image(repositoryName="team-a/app", imageIds=[{"imageTag": "1"}]),
                 lambda: ecr.batch_delete_image(repositoryName="team-a/app", imageIds=[{"imageTag": "1"}])):
        with pytest.raises(botocore.exceptions.ClientError) as e:
            call()
        assert code(e) == "AccessDeniedException" and "resource-based policy" in str(e.value)
    assert [i["imageTag"] for i in ecr.list_images(repositoryName="team-a/app")["imageIds"]] == ["1"]
    ecr.delete_repository_policy(repositoryName="team-a/app")

    # A role session: identity allows every ECR action.
    iam.create_role(RoleName="builder", AssumeRolePolicyDocument=trust(aws=ACCOUNT))
    iam.put_role_policy(RoleName="builder", PolicyName="ecr", PolicyDocument=policy(
        {"Effect": "Allow", "Action": "ecr:*", "Resource": "*"}))
    creds = berth.client("sts").assume_role(
        RoleArn="arn:aws:iam::%s:role/builder" % ACCOUNT, RoleSessionName="ci")["Credentials"]
    s_ecr = session_client(berth, creds, "ecr")
    token = s_ecr.get_authorization_token()["authorizationData"][0]["authorizationToken"]
    assert v2(berth, "GET", "/v2/team-b/src/tags/list", token)[0] == 200

    # A Deny that names the role (not the session ARN) hits the role's sessions.
    ecr.set_repository_policy(repositoryName="team-b/src", policyText=repo_policy(
        {"Effect": "Deny", "Principal": {"AWS": "arn:aws:iam::%s:role/builder" % ACCOUNT},
         "Action": ["ecr:BatchGetImage", "ecr:ListImages"]}))
    assert v2(berth, "GET", "/v2/team-b/src/tags/list", token)[0] == 403
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s_ecr.list_images(repositoryName="team-b/src")
    assert code(e) == "AccessDeniedException"
    assert ecr.list_images(repositoryName="team-b/src")["imageIds"], "the root key is not named"

    # A Deny with a condition applies (it was skipped: fail open).
    ecr.set_repository_policy(repositoryName="team-b/src", policyText=repo_policy(
        {"Effect": "Deny", "Principal": "*", "Action": "ecr:ListImages",
         "Condition": {"StringEquals": {"aws:PrincipalType": "AssumedRole"}}}))
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s_ecr.list_images(repositoryName="team-b/src")
    assert code(e) == "AccessDeniedException"
    assert ecr.list_images(repositoryName="team-b/src")["imageIds"]

    # Operators berth cannot evaluate are refused when the policy is set, not ignored later.
    with pytest.raises(ecr.exceptions.InvalidParameterException):
        ecr.set_repository_policy(repositoryName="team-b/src", policyText=repo_policy(
            {"Effect": "Deny", "Principal": "*", "Action": "ecr:*",
             "Condition": {"IpAddress": {"aws:SourceIp": "not-an-address"}}}))

    # Within the account, the repository's Allow grants what the identity does not.
    iam.create_role(RoleName="reader", AssumeRolePolicyDocument=trust(aws=ACCOUNT))
    iam.put_role_policy(RoleName="reader", PolicyName="token", PolicyDocument=policy(
        {"Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"}))
    rcreds = berth.client("sts").assume_role(
        RoleArn="arn:aws:iam::%s:role/reader" % ACCOUNT, RoleSessionName="ci")["Credentials"]
    r_ecr = session_client(berth, rcreds, "ecr")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        r_ecr.list_images(repositoryName="team-a/app")
    assert code(e) == "AccessDeniedException"
    ecr.set_repository_policy(repositoryName="team-a/app", policyText=repo_policy(
        {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::%s:role/reader" % ACCOUNT},
         "Action": "ecr:ListImages"}))
    assert r_ecr.list_images(repositoryName="team-a/app")["imageIds"]

    # A cross-repository mount reads its source: without pull rights there it is a plain
    # upload (202), which says nothing of whether the blob exists there.
    ecr.set_repository_policy(repositoryName="team-b/src", policyText=repo_policy(
        {"Effect": "Deny", "Principal": {"AWS": "arn:aws:iam::%s:role/builder" % ACCOUNT},
         "Action": "ecr:BatchGetImage"}))
    status, headers = v2(berth, "POST", "/v2/team-a/app/blobs/uploads/?mount=%s&from=team-b/src" % layer,
                         token)
    assert status == 202 and "/blobs/uploads/" in headers["Location"], (status, dict(headers))
    ecr.delete_repository_policy(repositoryName="team-b/src")
    status, headers = v2(berth, "POST", "/v2/team-a/app/blobs/uploads/?mount=%s&from=team-b/src" % layer,
                         token)
    assert status == 201 and headers["Docker-Content-Digest"] == layer
