"""OneDrive / SharePoint connector: real msal and requests against the local Graph fake.

Component tests (tokens, TLS, throttling, delta, permissions) run without the corpus; the
end-to-end tests go through the Engine with handbook pages and skip when the corpus is absent.
"""

from __future__ import annotations

import io
import json

import pytest
from docx import Document

from assistant.documents import Access, ItemRef, Principals
from assistant.errors import AuthError, ConfigError, CursorExpired, RateLimited
from connectors.base import Connector
from connectors.onedrive import OneDriveConfig, OneDriveConnector, config_from_settings
from connectors.onedrive.convert import access_from_permissions
from tests.fakes.graph import FakeGraph, GraphWorld, handbook_pages
from tests.fakes.graph_identity import make_client_certificate

ALICE, BOB, CAROL = "alice@contoso.com", "bob@contoso.com", "carol@contoso.com"


@pytest.fixture(scope="session")
def embedder(hash_embedder):
    """Sync, state and access, not meaning: conftest's ``engine`` (and these tests) get the hash embedder."""
    return hash_embedder


ENG_GROUP, ENG_EMAIL = "0f6a4b2e-eng", "eng@contoso.com"
SITE_URL = "https://contoso.sharepoint.com/sites/Eng"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"


def small_world(*, page_size: int = 50) -> tuple[GraphWorld, dict]:
    """Alice's OneDrive + the Eng site library, a few text files."""
    w = GraphWorld(page_size=page_size)
    w.add_group(ENG_GROUP, ENG_EMAIL, [ALICE])
    a = w.add_user_drive(ALICE)
    _, (s,) = w.add_site("Eng")
    ids = {
        "a": a,
        "s": s,
        "notes": w.add_file(a, "/Notes/standup.md", "# Standup\nWe meet at ten.", mime="text/markdown"),
        "deep": w.add_file(a, "/Notes/Deep/plan.md", "# Plan\nShip it.", mime="text/markdown"),
        "spec": w.add_file(s, "/Specs/api.md", "# API\nVersioned.", mime="text/markdown"),
    }
    return w, ids


@pytest.fixture
def fake(tmp_path):
    fakes = []

    def start(world: GraphWorld) -> FakeGraph:
        fakes.append(FakeGraph(tmp_path, world))
        return fakes[-1]

    yield start
    for f in fakes:
        f.close()


def connector(fg: FakeGraph, **over) -> OneDriveConnector:
    opts = {"user_drives": (ALICE,), "site_urls": (SITE_URL,), "max_retries": 3, "timeout_s": 10.0, **over}
    return OneDriveConnector(OneDriveConfig(**fg.settings(**opts)))


def drain(c: OneDriveConnector, cursor: str | None = None):
    pages = list(c.changes(cursor))
    return pages, pages[-1].next_cursor


# -- tokens and TLS ---------------------------------------------------------------------------
def test_token_requested_once_then_served_from_msal_cache(fake, tmp_path):
    world, ids = small_world()
    fg = fake(world)
    cache = tmp_path / "tokens.json"
    c = connector(fg, token_cache_file=str(cache))
    assert isinstance(c, Connector)
    _, cursor = drain(c)
    c.fetch(ItemRef(f"{ids['a']}/{ids['notes']}"))
    drain(c, cursor)
    assert fg.identity.token_requests() == 1
    issued = set(world.tokens)
    assert world.requests and all(
        r.headers["Authorization"] in {f"Bearer {t}" for t in issued} for r in world.requests
    )
    # a second process with the persisted cache asks for no new token either
    c2 = connector(fg, token_cache_file=str(cache))
    drain(c2, cursor)
    assert fg.identity.token_requests() == 1
    assert oct(cache.stat().st_mode & 0o777) == "0o600"


def test_wrong_secret_reports_the_aadsts_error(fake):
    fg = fake(small_world()[0])
    c = connector(fg, client_secret="not-the-secret")
    with pytest.raises(AuthError) as e:
        list(c.changes(None))
    assert "AADSTS7000215" in str(e.value) and "client_secret" in str(e.value)
    assert not fg.world.requests  # nothing reached Graph without a token


def test_certificate_credential_signs_a_client_assertion(fake, tmp_path):
    fg = fake(small_world()[0])
    pem = make_client_certificate(tmp_path / "cred")
    fg.identity.register_app("cert-app", certificate_pem=pem)
    c = connector(fg, client_id="cert-app", client_secret=None, certificate_file=str(pem))
    pages, _ = drain(c)
    assert sum(len(p.upserts) for p in pages) == 3
    form = next(f for m, _, f in fg.identity.requests if m == "POST")
    assert "client_assertion" in form and "client_secret" not in form


def test_instance_discovery_endpoint_can_be_configured(fake):
    fg = fake(small_world()[0])
    drain(connector(fg, instance_discovery=f"{fg.identity.url}/common/discovery/instance"))
    assert [p for m, p, _ in fg.identity.requests][:2] == [
        "/common/discovery/instance",
        f"/{fg.world.tenant}/v2.0/.well-known/openid-configuration",
    ]


def test_drives_by_site_id_and_drive_id_are_deduplicated(fake):
    world, ids = small_world()
    fg = fake(world)
    site_id = next(iter(world.sites))
    c = connector(fg, user_drives=(ALICE,), site_urls=(), site_ids=(site_id,), drive_ids=(ids["a"], ids["s"]))
    assert sorted(d.label for d in c.drives()) == sorted([ALICE, "Eng/Documents"])
    assert sum(len(p.upserts) for p in drain(c)[0]) == 3


def test_explicit_ca_bundle_beats_requests_ca_bundle(fake, monkeypatch):
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    monkeypatch.setenv("CURL_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    fg = fake(small_world()[0])
    drain(connector(fg))  # verify=<the fake's CA> is honoured despite the environment
    with pytest.raises(AuthError, match="verify"):  # and TLS really is verified
        list(connector(fg, verify=True).changes(None))


def test_rejected_token_is_replaced_once(fake):
    world, ids = small_world()
    fg = fake(world)
    c = connector(fg)
    drain(c)
    world.tokens.clear()  # the tenant revoked it: Graph answers 401
    c.fetch(ItemRef(f"{ids['a']}/{ids['notes']}"))
    assert fg.identity.token_requests() == 2
    assert [r.status for r in world.requests].count(401) == 1 and world.downloads


def test_unknown_user_drive_is_a_config_error(fake):
    fg = fake(small_world()[0])
    with pytest.raises(ConfigError, match="user_drives entry 'nobody@contoso.com'"):
        list(connector(fg, user_drives=("nobody@contoso.com",)).changes(None))


def test_config_needs_something_to_index():
    with pytest.raises(ConfigError, match="user_drives"):
        OneDriveConfig(tenant_id="t", client_id="c", client_secret="s")


def test_registry_builds_it_from_the_settings_section(fake):
    from assistant.registry import build_connector
    from assistant.settings import load_settings

    fg = fake(small_world()[0])
    section = fg.settings() | {"enabled": True, "user_drives": [ALICE], "site_urls": [SITE_URL]}
    c = build_connector(
        load_settings(environ={}, overrides={"connectors": {"onedrive": section}}), source="sharepoint"
    )
    assert isinstance(c, OneDriveConnector) and sum(len(p.upserts) for p in drain(c)[0]) == 3


def test_from_settings_unwraps_secrets():
    from assistant.settings import load_settings

    s = load_settings(
        environ={},
        overrides={
            "connectors": {
                "onedrive": {
                    "tenant_id": "t",
                    "client_id": "c",
                    "client_secret": "shh",
                    "user_drives": [ALICE],
                    "verify": False,
                }
            }
        },
    )
    cfg = config_from_settings(s.connectors.onedrive)
    assert cfg.client_secret == "shh" and cfg.user_drives == (ALICE,) and cfg.verify is False
    assert "shh" not in repr(cfg)


# -- throttling and faults --------------------------------------------------------------------
@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_is_honoured(fake, status):
    world, _ = small_world()
    fg = fake(world)
    world.inject("/root/delta", status=status, retry_after=1)
    pages, _ = drain(connector(fg))
    assert sum(len(p.upserts) for p in pages) == 3
    delta = [r for r in world.requests if r.path.endswith("/root/delta")]
    throttled = next(i for i, r in enumerate(delta) if r.status == status)
    assert delta[throttled + 1].time - delta[throttled].time >= 1.0  # the client waited as told


def test_persistent_throttling_ends_in_rate_limited(fake):
    world, _ = small_world()
    fg = fake(world)
    world.inject("/drive", status=429, retry_after=0, times=10)
    with pytest.raises(RateLimited):
        list(connector(fg, max_retries=2).changes(None))
    assert len(world.requests) == 3  # one try + two retries, then it gives up


def test_hours_long_retry_after_gives_up_instead_of_stalling(fake):
    world, _ = small_world()
    fg = fake(world)
    world.inject("/drive", status=429, retry_after=7200)
    with pytest.raises(RateLimited) as e:
        list(connector(fg).changes(None))
    assert e.value.retry_after == pytest.approx(7200) and len(world.requests) == 1


def test_timeouts_and_server_errors_are_retried(fake):
    world, ids = small_world()
    fg = fake(world)
    c = connector(fg, timeout_s=0.5)
    world.inject("/permissions", delay_s=1.5)  # the client times out once
    world.inject("/content", status=500)
    doc = c.fetch(ItemRef(f"{ids['a']}/{ids['notes']}"))
    assert doc.content == b"# Standup\nWe meet at ten." and doc.access.users == {ALICE}
    assert [r.path.rsplit("/", 1)[1] for r in world.requests].count("permissions") >= 2  # timed out, retried
    assert "acl_error" not in doc.metadata


# -- delta ------------------------------------------------------------------------------------
def test_delta_pages_duplicates_moves_and_deletes(fake):
    world, ids = small_world(page_size=2)
    fg = fake(world)
    c = connector(fg)
    pages, cursor = drain(c)
    assert len(pages) > 2 and [p.prune for p in pages].count(True) == 1 and pages[-1].prune
    assert {r.meta["path"] for p in pages for r in p.upserts} == {
        f"{ALICE}/Notes/standup.md",
        f"{ALICE}/Notes/Deep/plan.md",
        "Eng/Documents/Specs/api.md",
    }
    world.page_size = 50
    world.edit(ids["notes"], "v2")
    world.edit(ids["notes"], "v3")  # listed twice in the same delta page
    world.move(ids["spec"], "/Archive/2024")
    world.edit(ids["deep"], "doomed")
    world.delete(world.folder(ids["a"], "/Notes/Deep"))  # folder and file deleted
    pages, cursor = drain(c, cursor)
    ups = [r for p in pages for r in p.upserts]
    dels = [d for p in pages for d in p.deletions]
    assert [r.id for r in ups].count(f"{ids['a']}/{ids['notes']}") == 1
    assert f"{ids['a']}/{ids['deep']}" in dels and f"{ids['a']}/{ids['deep']}" not in {r.id for r in ups}
    assert {r.meta["path"] for r in ups} == {f"{ALICE}/Notes/standup.md", "Eng/Documents/Archive/2024/api.md"}
    assert not any(p.prune for p in pages)
    assert sorted(c.list_ids()) == sorted(f"{i.drive_id}/{i.id}" for i in world.live_files())
    assert drain(c, cursor)[0][-1].upserts == ()  # caught up: nothing new


@pytest.mark.parametrize("change", ["rename", "move", "move out of scope"])
def test_a_renamed_or_moved_folder_updates_its_files_paths_without_a_full_sync(fake, change):
    """Delta lists the folder, not its descendants: they are re-listed and sent again with new paths."""
    world, ids = small_world(page_size=2)
    fg = fake(world)
    scoped = change == "move out of scope"
    c = connector(fg, folder_paths=(f"{ALICE}:/Notes",) if scoped else ())
    _, cursor = drain(c)
    notes = world.folder(ids["a"], "/Notes")
    if change == "rename":
        world.rename(notes, "Meetings")
        want = {f"{ALICE}/Meetings/standup.md", f"{ALICE}/Meetings/Deep/plan.md"}
    else:
        world.move(notes, "/Archive")
        want = {f"{ALICE}/Archive/Notes/standup.md", f"{ALICE}/Archive/Notes/Deep/plan.md"}
    c2 = connector(fg, folder_paths=(f"{ALICE}:/Notes",) if scoped else ())  # a new process: only the cursor
    pages, cursor = drain(c2, cursor)
    got = {r.meta["path"] for p in pages for r in p.upserts}
    dels = {d for p in pages for d in p.deletions}
    moved = {f"{ids['a']}/{ids['notes']}", f"{ids['a']}/{ids['deep']}"}
    if scoped:
        assert not got and moved <= dels
    else:
        assert got == want and not dels
    assert drain(c2, cursor)[0][-1].upserts == ()  # and then caught up


def test_expired_delta_link_raises_cursor_expired(fake):
    world, ids = small_world()
    fg = fake(world)
    c = connector(fg)
    _, cursor = drain(c)
    world.expire_delta_tokens(ids["s"])
    with pytest.raises(CursorExpired):
        list(c.changes(cursor))
    assert any(r.status == 410 for r in world.requests)
    with pytest.raises(CursorExpired):  # a cursor for another drive set is not trusted either
        list(connector(fg, site_urls=()).changes(cursor))


def test_folder_filter_and_moving_out(fake):
    world, ids = small_world()
    fg = fake(world)
    world.add_file(ids["a"], "/Notes/Deep/photo.png", b"\x89PNG...", mime="image/png")  # never listed
    world.add_file(ids["a"], "/Notes/Deep/huge.txt", "x" * 2_000_000, mime="text/plain")  # over max_file_mb
    c = connector(fg, folder_paths=(f"{ALICE}:/Notes/Deep",), max_file_mb=1)
    pages, cursor = drain(c)
    assert {r.meta["path"] for p in pages for r in p.upserts} == {
        f"{ALICE}/Notes/Deep/plan.md",
        "Eng/Documents/Specs/api.md",
    }
    by_url = connector(fg, folder_paths=(f"{SITE_URL}/:/Nothing/Here",), max_file_mb=1)
    assert {r.meta["path"] for p in drain(by_url)[0] for r in p.upserts} == {
        f"{ALICE}/Notes/standup.md",
        f"{ALICE}/Notes/Deep/plan.md",
    }
    world.move(ids["deep"], "/Elsewhere")
    pages, _ = drain(c, cursor)
    assert f"{ids['a']}/{ids['deep']}" in pages[0].deletions


# -- content and permissions ------------------------------------------------------------------
def test_fetch_follows_redirect_without_the_token(fake):
    world, ids = small_world()
    fg = fake(world)
    world.share_link(ids["spec"], "users", users=(CAROL,))
    doc = connector(fg).fetch(ItemRef(f"{ids['s']}/{ids['spec']}"))  # no meta: looked up
    assert (doc.path, doc.title, doc.mime, doc.content) == (
        "Eng/Documents/Specs/api.md",
        "api.md",
        "text/markdown",
        b"# API\nVersioned.",
    )
    assert doc.access.users == {CAROL} and doc.access.groups == {"sp-group:5"}
    assert world.downloads and all("Authorization" not in r.headers for r in world.downloads)
    assert world.downloads[0].path.startswith("/download/")


def test_permission_failure_fails_closed(fake):
    world, ids = small_world()
    fg = fake(world)
    world.inject("/permissions", status=403)
    doc = connector(fg).fetch(ItemRef(f"{ids['a']}/{ids['notes']}"))
    assert doc.access == Access.nobody() and "403" in doc.metadata["acl_error"]


@pytest.mark.parametrize(
    "perms, domain, want",
    [
        ([{"grantedToV2": {"user": {"email": ALICE}}}], None, Access(users=frozenset({ALICE}))),
        (
            [{"grantedToV2": {"group": {"id": ENG_GROUP, "email": ENG_EMAIL}}}],
            None,
            Access(groups=frozenset({ENG_GROUP, ENG_EMAIL})),
        ),
        (
            [{"grantedToV2": {"siteUser": {"loginName": f"i:0#.f|membership|{BOB}"}}}],
            None,
            Access(users=frozenset({BOB})),
        ),
        ([{"link": {"scope": "anonymous"}}], None, Access(public=True)),
        ([{"link": {"scope": "organization"}}], "contoso.com", Access(domains=frozenset({"contoso.com"}))),
        ([{"link": {"scope": "organization"}}], None, Access()),  # unknown tenant domain: fail closed
        (
            [
                {
                    "link": {"scope": "users"},
                    "grantedToIdentitiesV2": [{"user": {"email": BOB}}, {"group": {"id": "g2"}}],
                }
            ],
            None,
            Access(users=frozenset({BOB}), groups=frozenset({"g2"})),
        ),
        ([{"link": {"scope": "existingAccess"}}], "contoso.com", Access()),
        ([{"invitation": {"email": CAROL}, "roles": ["read"]}], None, Access(users=frozenset({CAROL}))),
        ([{"grantedToV2": {"application": {"id": "app"}}}], None, Access()),
        (
            [{"grantedTo": {"user": {"email": ALICE}}, "inheritedFrom": {"id": "x"}}],
            None,
            Access(users=frozenset({ALICE})),
        ),
    ],
)
def test_permissions_to_access(perms, domain, want):
    assert access_from_permissions(perms, tenant_domain=domain)[0] == want


# -- end to end through the Engine ------------------------------------------------------------
def handbook_world(n_per_drive: int = 3) -> tuple[GraphWorld, dict]:
    pages = [p for p in handbook_pages() if 250 < len(p[1]) < 1200]  # short pages: embedding is the cost
    if len(pages) < 2 * n_per_drive:
        pytest.skip("handbook corpus not found next to the repository")
    w = GraphWorld(page_size=3)
    w.add_group(ENG_GROUP, ENG_EMAIL, [ALICE])
    a = w.add_user_drive(ALICE)
    _, (s,) = w.add_site("Eng")
    ids = {"a": a, "s": s, "files": []}
    for k, (rel, text) in enumerate(pages[: 2 * n_per_drive]):
        drive = a if k < n_per_drive else s
        ids["files"].append((drive, w.add_file(drive, f"/{rel}", text, mime="text/markdown")))
    return w, ids


def indexed(engine, source: str = "onedrive") -> dict[str, tuple[str, str, frozenset]]:
    return {
        r.doc_id: (r.path, r.version, engine.store.access_of(r.key).tokens())
        for r in engine.store.iter_documents(source)
    }


def truth(fg: FakeGraph) -> dict[str, tuple[str, str, frozenset]]:
    """What a clean sync must store: every live file as a fresh connector fetches it."""
    c = connector(fg)
    docs = [c.fetch(ItemRef(f"{i.drive_id}/{i.id}")) for i in fg.world.live_files()]
    return {d.id: (d.path, d.version, d.access.tokens()) for d in docs}


def test_full_then_incremental_sync_propagates_everything(fake, engine):
    world, ids = handbook_world()
    fg = fake(world)
    c = connector(fg)
    rep = engine.sync(c)
    assert (rep.added, rep.failed) == (6, 0)
    assert indexed(engine) == truth(fg)
    before, tokens = len(world.requests), fg.identity.token_requests()
    rep = engine.sync(c)  # nothing changed: two delta calls, no fetches, no new token
    assert (rep.added, rep.updated, rep.deleted, rep.fetched) == (0, 0, 0, 0)
    assert [r.path.endswith("/root/delta") for r in world.requests[before:]] == [True, True]
    assert fg.identity.token_requests() == tokens
    (a1, f1), (a2, f2), (_, f3) = ids["files"][:3]
    (s1, g1), (s2, g2) = ids["files"][3:5]
    world.edit(f1, "# Parking\nThe visitor parking code is 4471.")
    world.move(f2, "/Moved")
    world.delete(f3)
    world.grant(g1, user=BOB)
    world.share_link(g2, "anonymous")
    rep = engine.sync(c)
    assert (rep.deleted, rep.failed) == (1, 0) and rep.updated >= 4
    assert indexed(engine) == truth(fg)
    hits = engine.search("visitor parking code", who=Principals(email=ALICE), k=3)
    assert hits and hits[0].doc_id == f"{a1}/{f1}" and "4471" in hits[0].text
    assert all(
        h.doc_id != f"{a1}/{f1}"
        for h in engine.search("visitor parking code", who=Principals(email=BOB), k=3)
    )
    assert indexed(engine)[f"{a2}/{f2}"][0].startswith(f"{ALICE}/Moved/")
    assert f"user:{BOB}" in indexed(engine)[f"{s1}/{g1}"][2] and "public" in indexed(engine)[f"{s2}/{g2}"][2]
    assert all("Authorization" not in r.headers for r in world.downloads) and len(world.downloads) >= 6


def test_group_share_visible_to_members_only(fake, engine):
    world, ids = small_world()
    fg = fake(world)
    docx = Document()  # an Office file goes through the core parser
    docx.add_heading("Budget", 1)
    docx.add_paragraph("The offsite budget is 90 thousand euros.")
    buf = io.BytesIO()
    docx.save(buf)
    secret = world.add_file(ids["s"], "/Private/budget.docx", buf.getvalue(), mime=DOCX)
    world.items[secret].perms.append(
        {"id": "x", "roles": ["read"], "grantedToV2": {"group": {"id": ENG_GROUP, "email": ENG_EMAIL}}}
    )
    world.items[world.drives[ids["s"]].root_id].perms.clear()  # only the group grant remains
    engine.sync(connector(fg))
    alice = Principals(email=ALICE, groups=frozenset({ENG_EMAIL}))
    found = engine.search("offsite budget", who=alice, k=5)
    assert (
        found[0].path == "Eng/Documents/Private/budget.docx" and found[0].title == "Budget"
    )  # heading from the DOCX
    assert "budget.docx" not in [
        h.path[-11:] for h in engine.search("offsite budget", who=Principals(email=BOB), k=5)
    ]
    by_id = Principals(email=CAROL, groups=frozenset({ENG_GROUP}))  # a directory that yields group ids
    assert "budget.docx" in [h.path[-11:] for h in engine.search("offsite budget", who=by_id, k=5)]


def test_resync_after_410_converges_without_duplicates(fake, engine):
    world, ids = handbook_world(2)
    fg = fake(world)
    c = connector(fg)
    engine.sync(c)
    chunks = engine.store.chunk_count()
    (s1, g1), (_, g2) = ids["files"][2:4]
    world.delete(g1)
    world.edit(g2, "# Rota\nOn-call rota changes on Mondays.")
    world.expire_delta_tokens(s1)
    rep = engine.sync(c)
    assert rep.restarted and rep.failed == 0
    assert indexed(engine) == truth(fg)
    assert engine.store.document_count("onedrive") == len(world.live_files())
    assert engine.status()["index"]["consistent"] and engine.store.chunk_count() < chunks + 5


class Crash(BaseException):
    """Stands for the process dying: not an error sync may catch."""


class CrashingConnector(OneDriveConnector):
    def __init__(self, *args, crash_after: int, **kw) -> None:
        super().__init__(*args, **kw)
        self.left = crash_after

    def fetch(self, ref: ItemRef):
        self.left -= 1
        if self.left < 0:
            raise Crash()
        return super().fetch(ref)


def test_crash_mid_sync_then_rerun_gives_the_exact_state(fake, embedder, tmp_path):
    from assistant.engine import Engine
    from assistant.settings import load_settings

    world, _ = handbook_world(2)
    fg = fake(world)
    settings = load_settings(
        environ={}, overrides={"data_dir": str(tmp_path / "data"), "sync": {"fetch_workers": 1}}
    )
    engine = Engine.open(settings, embedder=embedder)
    crashing = CrashingConnector(
        OneDriveConfig(**fg.settings(user_drives=(ALICE,), site_urls=(SITE_URL,))), crash_after=2
    )
    with pytest.raises(Crash):
        engine.sync(crashing)
    cursor = json.loads(engine.store.get_cursor("onedrive"))
    assert cursor["full"] and 0 < engine.store.document_count("onedrive") < 4  # part-way through
    engine.close()
    engine = Engine.open(settings, embedder=embedder)  # a new process
    try:
        rep = engine.sync(connector(fg))
        assert rep.failed == 0 and engine.store.failures("onedrive") == []
        assert indexed(engine) == truth(fg)
        assert engine.status()["index"]["consistent"]
        assert engine.sync(connector(fg)).fetched == 0
    finally:
        engine.close()
