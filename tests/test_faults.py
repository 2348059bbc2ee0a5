"""Faults from the outside world that the connector test files do not already cover, end to end.

Each test runs the real connector (real client library) against its local fake with a fault mode
switched on, through ``Engine.sync``, and compares the store with the ground truth of a clean
world: same ids, versions and access, every document exactly once, FAISS == SQLite. Covered
elsewhere and not repeated here (see the README's Reliability section for the full list):
Drive/Graph/Slack throttling and 5xx retries at connector level, Graph timeouts, expired
cursors after a complete sync, Graph duplicate delta items at connector level.

Vectors come from ``tests/fakes/hash_embedder`` (sync state is what is checked, not meaning).
"""

from __future__ import annotations

import numpy as np
import pytest

from assistant.documents import Principals
from assistant.engine import Engine
from connectors.google_drive import DriveClient, DriveConfig, GoogleDriveConnector, RetryPolicy
from connectors.google_drive.client import load_credentials
from connectors.onedrive import OneDriveConfig, OneDriveConnector
from connectors.slack import SlackConfig, SlackConnector
from tests.conftest import make_settings
from tests.fakes.gdrive import GDOC, FakeDrive
from tests.fakes.graph import FakeGraph, GraphWorld
from tests.fakes.hash_embedder import HashEmbedder
from tests.fakes.slack import FakeSlack

ALICE, BOB = "alice@example.com", "bob@example.com"


@pytest.fixture(scope="module")
def hash_embedder():
    return HashEmbedder()


@pytest.fixture
def eng(tmp_path, hash_embedder):
    e = Engine.open(make_settings(tmp_path / "data"), embedder=hash_embedder)
    yield e
    e.close()


def state(engine, source: str) -> dict[str, tuple[str, frozenset]]:
    """What a user would notice: which documents, which version, who may read them."""
    return {
        r.doc_id: (r.version, engine.store.access_of(r.key).tokens())
        for r in engine.store.iter_documents(source)
    }


def consistent(engine) -> bool:
    dupes = engine.store.execute(
        "SELECT count(*) FROM (SELECT source, doc_id FROM documents GROUP BY 1, 2 HAVING count(*) > 1)"
    )
    return dupes[0][0] == 0 and np.array_equal(np.sort(engine.index.ids()), engine.store.chunk_ids())


def clean_state(tmp_path, embedder, make_connector, source: str) -> dict:
    """Ground truth: a fresh data_dir synced once without faults."""
    with Engine.open(make_settings(tmp_path / "truth"), embedder=embedder) as truth:
        rep = truth.sync(make_connector())
        assert rep.failed == 0
        return state(truth, source)


# -- Google Drive ---------------------------------------------------------------------------------------
def note(i: int) -> str:
    return f"# Note {i}\n\nThe facilities rota for week {i} covers the {['kitchen', 'garden', 'lobby'][i % 3]}.\n"


@pytest.fixture
def drive():
    with FakeDrive(users=(ALICE, BOB)) as f:
        yield f


def drive_connector(fake, *, page_size: int = 100, sleeps: list | None = None, timeout_s: float = 30.0):
    w = fake.world
    info = w.service_account_info()
    cfg = DriveConfig(
        credentials_info=info,
        subject=w.admin,
        api_endpoint=fake.url,
        all_shared_drives=True,
        page_size=page_size,
    )
    client = DriveClient(
        load_credentials(info, subject=w.admin, token_uri=fake.url + "/token"),
        api_endpoint=fake.url,
        retry=RetryPolicy(max_retries=4, base_s=0.001, cap_s=0.01),
        timeout_s=timeout_s,
        sleep=sleeps.append if sleeps is not None else (lambda s: None),
    )
    return GoogleDriveConnector(cfg, client=client)


def drive_files(fake, n: int) -> list[str]:
    w = fake.world
    root = w.root(w.admin)
    return [
        w.add_file(
            f"note-{i}.md" if i % 2 else f"Note {i}", "text/markdown" if i % 2 else GDOC, note(i), root
        )
        for i in range(n)
    ]


@pytest.mark.parametrize("page_size", [1, 1000])
def test_drive_one_item_and_thousand_item_pages_converge(drive, eng, tmp_path, hash_embedder, page_size):
    n = 12 if page_size == 1 else 1001  # 1000: one full page plus one
    ids = drive_files(drive, n)
    rep = eng.sync(drive_connector(drive, page_size=page_size))
    assert (rep.added, rep.failed) == (n, 0) and eng.store.document_ids("gdrive") == set(ids)
    lists = [r for r in drive.world.requests if r.path.endswith("/files")]
    assert {int(r.params["pageSize"]) for r in lists} == {page_size} and len(lists) == -(-n // page_size)
    assert state(eng, "gdrive") == clean_state(
        tmp_path, hash_embedder, lambda: drive_connector(drive), "gdrive"
    )
    assert consistent(eng)


def test_drive_page_token_expired_in_the_middle_of_a_full_listing_restarts_and_converges(drive, eng):
    ids = drive_files(drive, 9)

    class DiesAfterTwoPages(GoogleDriveConnector):
        def changes(self, cursor):
            for i, page in enumerate(super().changes(cursor)):
                if i == 2:
                    raise KeyboardInterrupt  # the process stops between pages
                yield page

    base = drive_connector(drive, page_size=3)
    with pytest.raises(KeyboardInterrupt):
        eng.sync(DiesAfterTwoPages(base.config, client=base.client))
    assert 0 < eng.store.document_count("gdrive") < 9
    drive.world.invalidate_page_tokens()  # the saved files.list page token is now refused
    before = len(drive.world.downloads())
    rep = eng.sync(drive_connector(drive, page_size=3))
    assert rep.restarted and rep.failed == 0 and eng.store.document_ids("gdrive") == set(ids)
    assert len(drive.world.downloads()) - before == 9 - 6  # committed files were not downloaded again
    assert consistent(eng)


def test_drive_timeout_then_success_is_retried(drive, eng):
    ids = drive_files(drive, 3)
    w, sleeps = drive.world, []

    def sleep(s: float) -> None:  # the client backs off after the timeout: the server is healthy again
        sleeps.append(s)
        w.latency_s = 0.0

    conn = drive_connector(drive, timeout_s=0.3)
    conn.client.sleep = sleep
    w.latency_s = 1.0  # every call now takes longer than the client's timeout
    rep = eng.sync(conn)
    assert (rep.added, rep.failed) == (3, 0) and eng.store.document_ids("gdrive") == set(ids)
    assert len(sleeps) >= 1 and conn.client.retries >= 1


def test_drive_5xx_burst_on_downloads_converges(drive, eng, tmp_path, hash_embedder):
    drive_files(drive, 10)
    drive.world.inject("500", times=4, path="/export")  # four in a row: one export retried four times
    drive.world.inject("500", times=3, path="/files/")  # and the downloads
    rep = eng.sync(drive_connector(drive))
    assert rep.failed == 0
    assert sorted(r.status for r in drive.world.requests if r.status >= 500) == [500] * 7
    assert state(eng, "gdrive") == clean_state(
        tmp_path, hash_embedder, lambda: drive_connector(drive), "gdrive"
    )


def test_drive_revoked_share_removes_access_within_one_sync(drive, eng):
    w = drive.world
    (doc,) = drive_files(drive, 1)
    perm = w.share(doc, "user", email=BOB)
    conn = drive_connector(drive)
    eng.sync(conn)
    assert [h.doc_id for h in eng.search("facilities rota week", who=Principals(email=BOB), k=5)] == [doc]
    w.unshare(doc, perm)
    eng.sync(conn)
    assert eng.search("facilities rota week", who=Principals(email=BOB), k=5) == []
    assert eng.search("facilities rota week", who=Principals(email=w.admin), k=5)[0].doc_id == doc


# -- OneDrive -------------------------------------------------------------------------------------------
@pytest.fixture
def graph(tmp_path):
    fakes = []

    def start(world: GraphWorld) -> FakeGraph:
        fakes.append(FakeGraph(tmp_path, world))
        return fakes[-1]

    yield start
    for f in fakes:
        f.close()


def od_connector(fg: FakeGraph) -> OneDriveConnector:
    return OneDriveConnector(
        OneDriveConfig(**fg.settings(user_drives=(ALICE,), max_retries=4, timeout_s=10.0))
    )


def od_world(n: int, *, page_size: int) -> tuple[GraphWorld, str, list[str]]:
    w = GraphWorld(page_size=page_size, domain="example.com")
    d = w.add_user_drive(ALICE)
    return w, d, [w.add_file(d, f"/Team/note-{i}.md", note(i), mime="text/markdown") for i in range(n)]


def test_onedrive_one_item_pages_with_duplicates_across_pages_converge(graph, eng, tmp_path, hash_embedder):
    w, d, items = od_world(6, page_size=1)
    fg = graph(w)
    conn = od_connector(fg)
    eng.sync(conn)
    for k in range(3):  # the same item three times in the delta feed, one item per page
        w.edit(items[0], note(100 + k))
    w.edit(items[1], note(200))
    w.edit(items[1], note(201))
    rep = eng.sync(conn)
    assert rep.failed == 0 and rep.added == 0
    assert state(eng, "onedrive") == clean_state(
        tmp_path, hash_embedder, lambda: od_connector(fg), "onedrive"
    )
    assert len(state(eng, "onedrive")) == 6 and consistent(eng)
    hit = eng.search("facilities rota week 102", who=Principals(email=ALICE), k=1)[0]
    assert hit.doc_id.endswith(items[0]) and "102" in hit.text


def test_onedrive_thousand_item_delta_page(graph):
    w, d, items = od_world(1001, page_size=1000)
    fg = graph(w)
    pages = list(od_connector(fg).changes(None))
    got = [r.id for p in pages for r in p.upserts]
    assert sorted(got) == sorted(f"{d}/{i}" for i in items) and len(got) == len(set(got))
    assert (
        max(len(p.upserts) for p in pages) >= 998
    )  # the big page arrived whole (the root and a folder take slots)


def test_onedrive_5xx_burst_during_sync_converges(graph, eng, tmp_path, hash_embedder):
    w, d, items = od_world(5, page_size=50)
    fg = graph(w)
    w.inject("/content", status=503, retry_after=0, times=3)
    w.inject("/permissions", status=500, times=2)
    rep = eng.sync(od_connector(fg))
    assert rep.failed == 0 and [r.status for r in w.requests].count(503) == 3
    assert state(eng, "onedrive") == clean_state(
        tmp_path, hash_embedder, lambda: od_connector(fg), "onedrive"
    )


def test_onedrive_revoked_grant_removes_access_within_one_sync(graph, eng):
    w, d, (item,) = od_world(1, page_size=50)
    fg = graph(w)
    perm = w.grant(item, user=BOB)
    conn = od_connector(fg)
    eng.sync(conn)
    assert eng.search("facilities rota week", who=Principals(email=BOB), k=5)
    w.revoke(item, perm)
    rep = eng.sync(conn)
    assert rep.updated == 1
    assert eng.search("facilities rota week", who=Principals(email=BOB), k=5) == []
    assert eng.search("facilities rota week", who=Principals(email=ALICE), k=5)


# -- Slack ----------------------------------------------------------------------------------------------
@pytest.fixture
def slack():
    with FakeSlack() as f:
        yield f


def slack_connector(fake, **kw) -> SlackConnector:
    return SlackConnector(SlackConfig(bot_token=fake.token, api_url=fake.url, **kw))


def test_slack_retry_after_wait_is_observed(slack, eng):
    slack.populate(channels=1, roots_per_channel=3, private_every=0)
    slack.fail_next("conversations.history", 1, retry_after=1)
    rep = eng.sync(slack_connector(slack))
    assert rep.failed == 0 and eng.store.document_count("slack") == 3
    calls = slack.calls("/conversations.history")
    assert calls[0].status == 429 and calls[1].at - calls[0].at >= 1.0  # waited as told


@pytest.mark.parametrize("page_size", [1, 999])
def test_slack_smallest_and_largest_pages_converge(slack, eng, tmp_path, hash_embedder, page_size):
    slack.populate(channels=2, roots_per_channel=5, replies_every=2, private_every=0)
    rep = eng.sync(slack_connector(slack, page_size=page_size))
    assert rep.failed == 0 and eng.store.document_count("slack") == 10
    truth = clean_state(tmp_path, hash_embedder, lambda: slack_connector(slack, page_size=200), "slack")
    assert state(eng, "slack") == truth


def test_slack_thousand_message_history_in_big_pages(slack):
    user = slack.add_user("ann", email="ann@example.com")
    ch = slack.add_channel("announcements", members=[user])
    for i in range(1001):
        slack.post(ch, user, f"Announcement {i}: the lobby is repainted on day {i}.", ago=3600 + i)
    pages = list(slack_connector(slack, page_size=999).changes(None))
    ids = [r.id for p in pages for r in p.upserts]
    assert len(ids) == len(set(ids)) == 1001
    assert [r.params.get("limit") for r in slack.calls("/conversations.history")][:1] == ["999"]


def test_slack_5xx_burst_and_dropped_connection_converge(slack, eng, tmp_path, hash_embedder):
    slack.populate(channels=2, roots_per_channel=4, replies_every=2, private_every=0)
    slack.fail_next("conversations.history", 2, status=500, error="internal_error")
    slack.fail_next("conversations.replies", 1, status=0)  # the connection is closed without a reply
    slack.fail_next("conversations.list", 1, status=503, error="service_unavailable")
    conn = slack_connector(slack)
    conn.client.web.retry_handlers[2].interval_calculator.backoff_factor = 0.01
    rep = eng.sync(conn)
    assert rep.failed == 0
    truth = clean_state(tmp_path, hash_embedder, lambda: slack_connector(slack), "slack")
    assert state(eng, "slack") == truth and consistent(eng)
