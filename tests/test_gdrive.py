"""The Google Drive connector against the local Drive fake, with the real google-api-python-client.

Connector-level tests (listing, changes, scope, ACLs, retries, auth) first; end-to-end tests
through the Engine (full and incremental sync, search as alice/bob, crash and resume) below.
"""

from __future__ import annotations

import json
import threading

import pytest

from assistant.documents import Access, ItemRef, Principals
from assistant.errors import AuthError, CursorExpired, NotFound, RateLimited
from connectors.google_drive import DriveClient, DriveConfig, GoogleDriveConnector, RetryPolicy, from_settings
from connectors.google_drive.client import load_credentials
from connectors.google_drive.convert import access_from_permissions
from tests.fakes.gdrive import GDOC, GSHEET, GSLIDES, FakeDrive, handbook_pages, populate

ALICE, BOB = "alice@example.com", "bob@example.com"


@pytest.fixture(scope="session")
def embedder(hash_embedder):
    """Sync, state and access, not meaning: conftest's ``engine`` (and these tests) get the hash embedder."""
    return hash_embedder


@pytest.fixture
def fake():
    with FakeDrive(users=(ALICE, BOB), groups={"eng@example.com": {BOB}}) as f:
        yield f


def make(
    fake, *, sleeps: list | None = None, creds: dict | None = None, cls=None, crash: dict | None = None, **kw
) -> GoogleDriveConnector:
    """A connector acting as the admin (service account + domain-wide delegation) unless told otherwise."""
    w = fake.world
    info = creds or w.service_account_info()
    kw.setdefault("all_shared_drives", True)
    cfg = DriveConfig(
        credentials_info=info,
        subject=kw.pop("subject", w.admin if creds is None else None),
        api_endpoint=fake.url,
        max_retries=kw.pop("max_retries", 5),
        **kw,
    )
    client = DriveClient(
        load_credentials(info, subject=cfg.subject, token_uri=fake.url + "/token"),
        api_endpoint=fake.url,
        retry=RetryPolicy(max_retries=cfg.max_retries, base_s=0.001, cap_s=0.01),
        sleep=sleeps.append if sleeps is not None else (lambda s: None),
    )
    return (cls or GoogleDriveConnector)(cfg, client=client, **(crash or {}))


def sync_all(conn, cursor=None):
    """Run changes() to the end the way sync does; returns (upserts by id, deletions, last page)."""
    ups, dels, last = {}, [], None
    for page in conn.changes(cursor):
        dels += page.deletions
        ups.update({r.id: r for r in page.upserts})
        last = page
    return ups, dels, last


@pytest.fixture
def small_world(fake):
    pages = [(n, t[:1500]) for n, t in handbook_pages()[:40]]
    if not pages:
        pytest.skip("handbook corpus not found next to the repository")
    return populate(fake.world, 40, pages=pages)


# -- listing, paths, scope ---------------------------------------------------------------------------
def test_full_listing_covers_my_drive_and_shared_drives_with_paths(fake, small_world):
    conn = make(fake, page_size=7)
    pages = list(conn.changes(None))
    refs = {r.id: r for p in pages for r in p.upserts}
    assert set(refs) == set(small_world["files"])
    assert [p.prune for p in pages] == [False] * (len(pages) - 1) + [True]
    paths = {r.meta["path"] for r in refs.values()}
    assert any(p.startswith("My Drive/Policies/Archive/2024/") for p in paths)
    assert any(p.startswith("Engineering/Guides/") for p in paths) and any(
        p.startswith("People Ops/") for p in paths
    )
    lists = [r for r in fake.world.requests if r.path.endswith("/files")]
    assert all(
        r.params["q"] == "trashed = false" and r.params["fields"].startswith("nextPageToken,files(")
        for r in lists
    )
    assert sorted(conn.list_ids()) == sorted(small_world["files"])


def test_changes_during_a_full_listing_are_seen_by_the_next_incremental_run(fake, small_world):
    conn = make(fake, page_size=10)
    it = conn.changes(None)
    next(it)
    late = fake.world.add_file("late.md", "text/markdown", "# Late", fake.world.root(fake.world.admin))
    last = list(it)[-1]
    assert json.loads(last.next_cursor)["mode"] == "changes"
    ups, dels, _ = sync_all(conn, last.next_cursor)
    assert late in ups and not dels


def test_resuming_a_half_finished_listing_continues_where_it_stopped(fake, small_world):
    conn = make(fake, page_size=10)
    first = next(conn.changes(None))
    rest, _, last = sync_all(make(fake, page_size=10), first.next_cursor)
    assert {r.id for r in first.upserts} | set(rest) == set(small_world["files"])
    assert not {r.id for r in first.upserts} & set(rest) and last.prune


def test_folder_scope_includes_nested_folders_and_moves_out_become_deletions(fake, small_world):
    w, folders = fake.world, small_world["folders"]
    scope = folders["My Drive/Policies"]
    conn = make(fake, folder_ids=(scope,), all_shared_drives=False)
    ups, _, last = sync_all(conn)
    under = {
        fid
        for fid, f in w.files.items()
        if scope in [a.id for a in w.ancestors(f)] and f.mime != "application/vnd.google-apps.folder"
    }
    assert set(ups) == under and any("/Archive/2024/" in r.meta["path"] for r in ups.values())
    moved = next(iter(under))
    w.move(moved, folders["My Drive/Projects"])
    ups2, dels, _ = sync_all(conn, last.next_cursor)
    assert dels == [moved] and not ups2


def test_mime_filters_and_size_limit(fake):
    w = fake.world
    root = w.root(w.admin)
    keep = w.add_file("notes.md", "text/markdown", "# Notes", root)
    w.add_file("photo.png", "image/png", b"\x89PNG", root)  # media: skipped by default
    w.add_file("form", "application/vnd.google-apps.form", "", root)  # no text export
    w.add_file("big.txt", "text/plain", "x" * 2_000_000, root)  # over 1 MB
    sheet = w.add_file("Budget", GSHEET, "a,b\n1,2\n", root)
    ups, _, _ = sync_all(make(fake, max_file_mb=1.0))
    assert set(ups) == {keep, sheet}
    ups, _, _ = sync_all(make(fake, exclude_mime_types=("application/vnd.google-apps.*",)))
    assert sheet not in ups and keep in ups


# -- fetch, export, permissions ------------------------------------------------------------------------
def test_fetch_exports_google_types_and_downloads_blobs(fake):
    w = fake.world
    root = w.root(w.admin)
    ids = {
        w.add_file("Doc", GDOC, "# Heading\n\nDoc body", root): ("text/markdown", b"# Heading\n\nDoc body"),
        w.add_file("Deck", GSLIDES, "Slide one", root): ("text/plain", b"Slide one"),
        w.add_file("f.md", "text/markdown", "# Blob", root): ("text/markdown", b"# Blob"),
    }
    conn = make(fake)
    ups, _, _ = sync_all(conn)
    for fid, (mime, content) in ids.items():
        doc = conn.fetch(ups[fid])
        assert (doc.mime, doc.content) == (mime, content)
        assert doc.version == ups[fid].version and doc.url and doc.metadata["owner"] == w.admin
    assert len(fake.world.downloads()) == 3


def test_a_spreadsheet_is_indexed_with_every_sheet_not_only_the_first(fake):
    """Drive's CSV export holds the first sheet only; the XLSX export holds them all."""
    from assistant.parsing import parse
    from connectors.google_drive.convert import XLSX

    w = fake.world
    book = json.dumps(
        {
            "Budget": "item,cost\nlaptops,1200\n",
            "Headcount": "team,people\nplatform,17\n",
            "Notes": "note\nfreeze starts 2026-12-18\n",
        }
    )
    fid = w.add_file("Planning", GSHEET, book, w.root(w.admin))
    conn = make(fake)
    ups, _, _ = sync_all(conn)
    doc = conn.fetch(ups[fid])
    assert doc.mime == XLSX
    text = parse(doc.content, doc.mime, name=doc.title)
    for sheet, value in (("Budget", "1200"), ("Headcount", "platform"), ("Notes", "2026-12-18")):
        assert sheet in text and value in text


@pytest.mark.parametrize(
    "perm, expected",
    [
        ({"type": "user", "emailAddress": "A@x.com"}, Access(users=frozenset({"a@x.com"}))),
        ({"type": "group", "emailAddress": "eng@x.com"}, Access(groups=frozenset({"eng@x.com"}))),
        (
            {"type": "domain", "domain": "x.com", "allowFileDiscovery": True},
            Access(domains=frozenset({"x.com"})),
        ),
        ({"type": "domain", "domain": "x.com", "allowFileDiscovery": False}, Access()),
        ({"type": "anyone", "allowFileDiscovery": True}, Access(public=True)),
        ({"type": "anyone", "allowFileDiscovery": False}, Access()),  # anyone with the link
        ({"type": "user", "emailAddress": "gone@x.com", "deleted": True}, Access()),
    ],
)
def test_permissions_map_to_access(perm, expected):
    assert access_from_permissions([{"role": "reader", **perm}]) == expected


def test_shared_drive_items_read_inherited_permissions_and_fail_closed(fake):
    w = fake.world
    drive = w.add_drive("Legal", members={w.admin: "organizer", "eng@example.com": "reader"})
    ok = w.add_file("ok.md", "text/markdown", "fine", drive)
    broken = w.add_file("broken.md", "text/markdown", "secret", drive)
    w.permission_denied.add(broken)
    conn = make(fake)
    ups, _, _ = sync_all(conn)
    good = conn.fetch(ups[ok])
    assert good.access == Access(users=frozenset({w.admin}), groups=frozenset({"eng@example.com"}))
    bad = conn.fetch(ups[broken])
    assert bad.access == Access.nobody() and "insufficientFilePermissions" in bad.metadata["acl_error"]
    assert bad.version != ups[broken].version  # so the next sync fetches it again


def test_fetch_of_a_deleted_file_raises_not_found(fake):
    w = fake.world
    fid = w.add_file("a.md", "text/markdown", "x", w.root(w.admin))
    conn = make(fake)
    ups, _, _ = sync_all(conn)
    w.delete(fid)
    with pytest.raises(NotFound):
        conn.fetch(ups[fid])
    with pytest.raises(NotFound):
        conn.fetch(ItemRef(fid))


# -- incremental changes --------------------------------------------------------------------------------
def test_changes_report_edits_renames_moves_trash_and_sharing(fake, small_world):
    w = fake.world
    conn = make(fake)
    before, _, last = sync_all(conn)
    edited, renamed, moved, trashed, deleted, shared, *_ = list(small_world["files"])
    w.edit(edited, "new text")
    w.rename(renamed, "Renamed")
    w.move(moved, small_world["folders"]["My Drive/Shared"])
    w.trash(trashed)
    w.delete(deleted)
    w.share(shared, "user", email=BOB)
    ups, dels, _ = sync_all(conn, last.next_cursor)
    assert set(dels) == {trashed, deleted}
    assert set(ups) == {edited, renamed, moved, shared}
    assert all(ups[i].version != before[i].version for i in ups)
    assert ups[renamed].meta["path"].endswith("/Renamed") and ups[moved].meta["path"].startswith(
        "My Drive/Shared/"
    )


def test_folder_changes_reach_every_descendant(fake, small_world):
    w, folders = fake.world, small_world["folders"]
    conn = make(fake)
    before, _, last = sync_all(conn)

    def below(folder):
        return {
            fid
            for fid, f in w.files.items()
            if folder in [a.id for a in w.ancestors(f)] and f.mime != "application/vnd.google-apps.folder"
        }

    renamed, shared, trashed = (
        folders["My Drive/Policies"],
        folders["My Drive/Projects"],
        folders["Engineering/Teams"],
    )
    w.rename(renamed, "Rules")
    w.share(shared, "user", email=BOB)
    w.trash(trashed)
    ups, dels, _ = sync_all(conn, last.next_cursor)
    assert set(ups) == below(renamed) | below(shared) and set(dels) >= below(trashed)
    assert all(ups[i].meta["path"].startswith("My Drive/Rules/") for i in below(renamed))
    assert all(ups[i].version != before[i].version for i in ups)
    assert all(BOB in conn.fetch(ups[i]).access.users for i in below(shared))


def test_invalid_change_token_raises_cursor_expired(fake, small_world):
    conn = make(fake)
    _, _, last = sync_all(conn)
    fake.world.invalidate_page_tokens()
    with pytest.raises(CursorExpired):
        list(conn.changes(last.next_cursor))
    with pytest.raises(CursorExpired):
        list(conn.changes("not a cursor"))


# -- retries -------------------------------------------------------------------------------------------
def test_rate_limits_and_server_errors_are_retried_with_backoff(fake, small_world):
    w, sleeps = fake.world, []
    w.inject("rate_limit", times=2, path="/files")
    w.inject("429", retry_after=7, path="/export")
    w.inject("500", path="/changes")
    w.inject("drop", times=3, path="/permissions")  # httplib2 retries a dropped connection once itself
    conn = make(fake, sleeps=sleeps)
    ups, _, _ = sync_all(conn)
    docs = [conn.fetch(r) for r in ups.values()]
    assert len(docs) == 40 and not any(d.metadata.get("acl_error") for d in docs)
    assert 7.0 in sleeps  # Retry-After honoured exactly
    assert all(0 <= s <= 0.01 for s in sleeps if s != 7.0)  # others: jittered, capped
    assert conn.client.retries == len(sleeps) >= 4


def test_throttling_beyond_the_retry_budget_raises_rate_limited(fake):
    w = fake.world
    w.add_file("a.md", "text/markdown", "x", w.root(w.admin))
    w.inject("rate_limit", times=10, path="/files")
    with pytest.raises(RateLimited):
        list(make(fake, max_retries=3).changes(None))


# -- auth ------------------------------------------------------------------------------------------------
def test_service_account_impersonates_the_subject(fake):
    w = fake.world
    mine = w.add_file("alice.md", "text/markdown", "a", w.root(ALICE))
    w.add_file("admin.md", "text/markdown", "b", w.root(w.admin))
    ups, _, _ = sync_all(make(fake, creds=w.service_account_info(), subject=ALICE))
    assert set(ups) == {mine}
    assert {r.principal for r in w.requests if r.path.startswith("/drive")} == {ALICE}


def test_subject_without_domain_wide_delegation_is_an_auth_error(fake):
    w = fake.world
    with pytest.raises(AuthError, match="delegation"):
        list(make(fake, creds=w.service_account_info(delegation=False), subject=ALICE).changes(None))


def test_authorized_user_refresh_token(fake):
    w = fake.world
    mine = w.add_file("alice.md", "text/markdown", "a", w.root(ALICE))
    conn = make(fake, creds=w.authorized_user_info(ALICE))
    ups, _, _ = sync_all(conn)
    assert set(ups) == {mine} and conn.fetch(ups[mine]).content == b"a"
    assert any(r.path == "/token" and r.params["grant_type"] == "refresh_token" for r in w.requests)


def test_from_settings_reads_credentials_and_options(fake, tmp_path):
    from assistant.settings import load_settings

    key = tmp_path / "key.json"
    key.write_text(json.dumps(fake.world.service_account_info()))
    s = load_settings(
        environ={},
        overrides={
            "connectors": {
                "google_drive": {
                    "enabled": True,
                    "credentials_file": str(key),
                    "subject": fake.world.admin,
                    "api_endpoint": fake.url,
                    "all_shared_drives": True,
                    "page_size": 50,
                }
            }
        },
    )
    conn = from_settings(s.connectors.google_drive)
    assert conn.name == "gdrive" and conn.config.page_size == 50
    assert "private_key" not in repr(conn.config)
    fid = fake.world.add_file("a.md", "text/markdown", "x", fake.world.root(fake.world.admin))
    assert list(conn.list_ids()) == [fid]


# -- end to end through the Engine -------------------------------------------------------------------
class Killed(BaseException):
    """Stands in for the process dying: not an Exception, so sync cannot record it as a per-item failure."""


class CrashingConnector(GoogleDriveConnector):
    """The real connector, killed after ``fetches`` downloads or ``pages`` change pages."""

    def __init__(self, *a, fetches: int | None = None, pages: int | None = None, **kw):
        super().__init__(*a, **kw)
        self.fetches, self.pages = fetches, pages
        self._mutex = threading.Lock()

    def fetch(self, ref):
        with self._mutex:
            if self.fetches is not None:
                self.fetches -= 1
                if self.fetches < 0:
                    raise Killed
        return super().fetch(ref)

    def changes(self, cursor):
        for i, page in enumerate(super().changes(cursor)):
            if self.pages is not None and i >= self.pages:
                raise Killed
            yield page


def tiny_pages(n: int) -> list[tuple[str, str]]:
    """Short handbook excerpts: one chunk each, so embedding stays cheap on a loaded machine."""
    pages = handbook_pages()[:n]
    if not pages:
        pytest.skip("handbook corpus not found next to the repository")
    return [(name, text[:120]) for name, text in pages]


def open_engine(path, embedder):
    from assistant.engine import Engine
    from assistant.settings import load_settings

    return Engine.open(load_settings(environ={}, overrides={"data_dir": str(path)}), embedder=embedder)


def hit_ids(engine, query, who):
    return [h.doc_id for h in engine.search(query, who=who, k=10)]


SECRET = "Nightingale rollout codename escrow procedure for the quarterly launch"
LINK_ONLY = "Heliotrope vendor contract renewal terms negotiated with the supplier"


@pytest.fixture(scope="module")
def synced(embedder, tmp_path_factory):
    """~200 files across My Drive, two shared drives and nested folders, fully synced once."""
    with FakeDrive(users=(ALICE, BOB), groups={"eng@example.com": {BOB}}) as fake:
        w = fake.world
        world = populate(w, 196, pages=tiny_pages(196))
        root = w.root(w.admin)
        secret = w.add_file("Nightingale plan", GDOC, f"# Nightingale\n\n{SECRET}.", root)
        w.share(secret, "user", email=ALICE)
        link = w.add_file("Heliotrope contract", GDOC, f"# Heliotrope\n\n{LINK_ONLY}.", root)
        w.share(link, "anyone", discoverable=False)
        w.share(link, "domain", domain=w.domain, discoverable=False)
        eng = open_engine(tmp_path_factory.mktemp("gdrive-e2e"), embedder)
        conn = make(fake)  # one change page per drive: every page costs an embedding call
        report = eng.sync(conn)
        yield {
            "fake": fake,
            "engine": eng,
            "conn": conn,
            "report": report,
            "world": world,
            "secret": secret,
            "link": link,
            "total": 198,
        }
        eng.close()


def test_full_sync_indexes_every_file_once(synced):
    eng, rep, w = synced["engine"], synced["report"], synced["fake"].world
    assert (rep.added, rep.failed, rep.deleted) == (synced["total"], 0, 0)
    assert eng.store.document_count(source="gdrive") == synced["total"]
    assert eng.store.document_ids("gdrive") == set(synced["world"]["files"]) | {
        synced["secret"],
        synced["link"],
    }
    assert len(w.downloads()) == synced["total"]


def test_doc_shared_only_with_alice_is_invisible_to_bob(synced):
    eng, secret = synced["engine"], synced["secret"]
    assert secret in hit_ids(eng, SECRET, Principals(email=ALICE))
    assert secret not in hit_ids(eng, SECRET, Principals(email=BOB, groups=frozenset({"eng@example.com"})))
    assert secret not in hit_ids(eng, SECRET, Principals())


def test_link_only_sharing_grants_nothing(synced):
    eng, link = synced["engine"], synced["link"]
    assert link in hit_ids(eng, LINK_ONLY, Principals(everything=True))
    for who in (Principals(email=BOB), Principals(email=ALICE), Principals()):
        assert link not in hit_ids(eng, LINK_ONLY, who)
    assert eng.store.get_document("gdrive", link) is not None


def test_unchanged_world_resyncs_without_downloads(synced):
    eng, conn, w = synced["engine"], synced["conn"], synced["fake"].world
    before = len(w.downloads())
    inc = eng.sync(conn)
    full = eng.sync(conn, full=True)
    assert len(w.downloads()) == before
    assert (inc.added, inc.updated, inc.deleted) == (0, 0, 0)
    assert (full.added, full.updated, full.deleted, full.unchanged) == (0, 0, 0, synced["total"])


def test_expired_cursor_restarts_a_full_listing_without_downloads(synced):
    eng, conn, w = synced["engine"], synced["conn"], synced["fake"].world
    before = len(w.downloads())
    w.invalidate_page_tokens()
    rep = eng.sync(conn)
    assert rep.restarted and (rep.added, rep.deleted, rep.unchanged) == (0, 0, synced["total"])
    assert len(w.downloads()) == before


def test_incremental_sync_reflects_each_change_exactly(synced):
    eng, conn, w = synced["engine"], synced["conn"], synced["fake"].world
    files, folders = list(synced["world"]["files"]), synced["world"]["folders"]
    edited, renamed, moved, trashed, deleted = files[:5]  # My Drive files, private to the admin
    w.edit(edited, "# Quokka\n\nThe quokka census is now run every spring by the facilities team.")
    w.rename(renamed, "Renamed onboarding notes")
    w.move(moved, folders["My Drive/Shared"])  # shared with the domain
    w.trash(trashed)
    w.delete(deleted)
    w.share(synced["secret"], "user", email=BOB)
    new = w.add_file("Fresh memo", GDOC, "# Fresh memo\n\nAxolotl tank maintenance rota.", w.root(w.admin))
    rep = eng.sync(conn)
    assert (rep.added, rep.updated, rep.deleted, rep.failed) == (1, 4, 2, 0)
    store = eng.store
    assert store.document_ids("gdrive") == (set(files) - {trashed, deleted}) | {
        synced["secret"],
        synced["link"],
        new,
    }
    assert store.get_document("gdrive", renamed).title == "Renamed onboarding notes"
    assert store.get_document("gdrive", moved).path.startswith("My Drive/Shared/")
    assert edited in hit_ids(eng, "quokka census spring", Principals(everything=True))
    assert moved in hit_ids(eng, store.get_document("gdrive", moved).title, Principals(email=BOB))
    assert synced["secret"] in hit_ids(eng, SECRET, Principals(email=BOB))


def small_synced_world(fake, n=12):
    world = populate(fake.world, n, pages=tiny_pages(n))
    return set(world["files"])


def test_throttling_mid_sync_still_completes_with_correct_counts(fake, embedder, tmp_path):
    ids = small_synced_world(fake)
    w = fake.world
    w.inject("429", times=2, after=1, path="/files", retry_after=0)
    w.inject("rate_limit", times=3, after=5, path="/export")
    w.inject("500", times=2, path="/permissions")
    eng = open_engine(tmp_path, embedder)
    try:
        rep = eng.sync(make(fake))
        assert (rep.added, rep.failed) == (len(ids), 0)
        assert eng.store.document_ids("gdrive") == ids
        assert sorted(r.status for r in w.requests if r.status != 200) == [403, 403, 403, 429, 429, 500, 500]
    finally:
        eng.close()


@pytest.mark.parametrize("kill", ["fetch", "listing"])
def test_killed_sync_resumes_without_duplicates_or_gaps(fake, embedder, tmp_path, kill):
    ids = small_synced_world(fake)
    w = fake.world
    my_drive = sum(1 for f in ids if w.files[f].drive_id is None)  # the first change page
    kill = {"fetches": my_drive + 1} if kill == "fetch" else {"pages": 1}
    eng = open_engine(tmp_path, embedder)
    try:
        with pytest.raises(Killed):
            eng.sync(make(fake, cls=CrashingConnector, crash=kill))
        done = eng.store.document_count(source="gdrive")
        assert 0 < done < len(ids)
        before = len(w.downloads())
        rep = eng.sync(make(fake))
        assert eng.store.document_ids("gdrive") == ids
        assert rep.added == len(ids) - done and rep.failed == 0
        assert len(w.downloads()) - before == len(ids) - done  # committed files are not downloaded again
        status = eng.status()
        assert status["index"]["consistent"] and status["chunks"] == status["index"]["vectors"]
    finally:
        eng.close()
