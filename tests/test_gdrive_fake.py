"""The Drive fake keeps the promises the connector tests rely on: the discovery document's
parameters, ``fields`` masks, paging, export rules, OAuth grants and fault modes.

Raw HTTP (urllib) is used where the real client library would refuse to send the request at all.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request

import pytest

from tests.fakes.gdrive import GDOC, SCOPE_RO, FakeDrive


@pytest.fixture
def fake():
    with FakeDrive(users=("alice@example.com",)) as f:
        yield f


def get(fake, path: str, token: str | None, **params):
    url = f"{fake.url}/drive/v3/{path}?{urllib.parse.urlencode(params)}"
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req) as r:
            body = r.read()
            return r.status, (
                json.loads(body) if r.headers["Content-Type"].startswith("application/json") else body
            )
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.fixture
def token(fake):
    return fake.world.issue_token(fake.world.admin, {SCOPE_RO})["access_token"]


def reason(body) -> str:
    return body["error"]["errors"][0]["reason"]


def test_rejects_requests_without_a_valid_token(fake):
    status, body = get(fake, "files", None)
    assert status == 401 and reason(body) == "authError"


@pytest.mark.parametrize(
    "params, code, why",
    [
        ({"bogus": "1"}, 400, "invalidParameter"),  # not in the discovery document
        ({"pageSize": "0"}, 400, "invalid"),  # minimum 1 (above 1000 is coerced)
        ({"pageSize": "ten"}, 400, "invalid"),
        ({"supportsAllDrives": "yes"}, 400, "invalidParameter"),
        ({"corpora": "drive"}, 400, "invalid"),  # driveId required with corpora=drive
        ({"corpora": "allDrives"}, 403, "teamDriveItemsRequired"),  # needs includeItemsFromAllDrives
        ({"fields": "files(id,nosuchfield)"}, 400, "invalidParameter"),
        ({"pageToken": "garbage"}, 400, "invalid"),
        ({"q": "fullText contains 'x'"}, 400, "invalid"),
    ],
)
def test_files_list_validates_parameters_like_drive(fake, token, params, code, why):
    status, body = get(fake, "files", token, **params)
    assert (status, reason(body)) == (code, why)


def test_fields_mask_and_paging(fake, token):
    w = fake.world
    ids = {w.add_file(f"doc{i}", "text/plain", f"text {i}", w.root(w.admin)) for i in range(5)}
    seen, page, pages = set(), None, 0
    while True:
        params = {"pageSize": "2", "fields": "nextPageToken,files(id,name)"}
        if page:
            params["pageToken"] = page
        status, body = get(fake, "files", token, **params)
        assert status == 200 and set(body) <= {"nextPageToken", "files"}
        assert all(set(f) == {"id", "name"} for f in body["files"])
        seen |= {f["id"] for f in body["files"]}
        pages += 1
        page = body.get("nextPageToken")
        if not page:
            break
    assert seen == ids and pages == 3


def test_default_fields_are_the_small_default_set(fake, token):
    w = fake.world
    w.add_file("a", "text/plain", "x", w.root(w.admin))
    _, body = get(fake, "files", token)
    assert set(body["files"][0]) == {"kind", "id", "name", "mimeType"}


def test_export_rules(fake, token):
    w = fake.world
    doc = w.add_file("Doc", GDOC, "# Title\n\nBody", w.root(w.admin))
    blob = w.add_file("b.txt", "text/plain", "bytes", w.root(w.admin))
    assert get(fake, f"files/{doc}/export", token, mimeType="text/markdown") == (200, b"# Title\n\nBody")
    status, body = get(fake, f"files/{doc}", token, alt="media")
    assert (status, reason(body)) == (403, "fileNotDownloadable")
    status, body = get(fake, f"files/{blob}/export", token, mimeType="text/plain")
    assert (status, reason(body)) == (403, "fileNotExportable")
    status, body = get(fake, f"files/{doc}/export", token, mimeType="image/png")
    assert status == 400
    w.export_limit = 5
    status, body = get(fake, f"files/{doc}/export", token, mimeType="text/markdown")
    assert (status, reason(body)) == (403, "exportSizeLimitExceeded")


def test_change_log_reports_latest_state_once_and_invalidation(fake, token):
    w = fake.world
    _, start = get(fake, "changes/startPageToken", token)
    fid = w.add_file("a.txt", "text/plain", "1", w.root(w.admin))
    w.edit(fid, "2")
    w.rename(fid, "b.txt")
    status, body = get(
        fake,
        "changes",
        token,
        pageToken=start["startPageToken"],
        fields="newStartPageToken,changes(fileId,removed,file(name,version))",
    )
    assert status == 200
    assert body["changes"] == [{"fileId": fid, "removed": False, "file": {"name": "b.txt", "version": "3"}}]
    w.invalidate_page_tokens()
    status, body = get(fake, "changes", token, pageToken=body["newStartPageToken"])
    assert status == 400 and body["error"]["errors"][0]["location"] == "pageToken"


def test_fault_modes_fire_once_each(fake, token):
    fake.world.inject("429", retry_after=3)
    fake.world.inject("rate_limit")
    req = urllib.request.Request(f"{fake.url}/drive/v3/files", headers={"Authorization": f"Bearer {token}"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req)
    assert e.value.code == 429 and e.value.headers["Retry-After"] == "3"
    status, body = get(fake, "files", token)
    assert (status, reason(body)) == (403, "userRateLimitExceeded")
    assert get(fake, "files", token)[0] == 200
    assert [r.status for r in fake.world.requests] == [429, 403, 200]
