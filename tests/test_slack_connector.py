"""The Slack connector against the local fake Slack Web API (real slack-sdk WebClient).

Component tests drive ``changes``/``fetch`` directly; end-to-end tests run the Engine's sync loop
(full, incremental, crash and resume, rate limits, private channels and search as a user).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from assistant.documents import ItemRef, Principals
from assistant.errors import AuthError, ConfigError, CursorExpired, RateLimited
from connectors.slack import SlackConfig, SlackConnector, from_settings
from connectors.slack.convert import render_mrkdwn
from tests.fakes.slack import FakeSlack

DAY = 86400.0
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def fake():
    with FakeSlack() as f:
        yield f


def connector(fake: FakeSlack, **kw) -> SlackConnector:
    return SlackConnector(SlackConfig(bot_token=fake.token, api_url=fake.url, **kw))


@pytest.fixture
def ws(fake):
    """alice, bob, carol; #general and #eng (public), #secret-plans (private, alice only),
    #random (bot not a member) and a DM; threads with replies, noise, a bot message and a file."""
    alice = fake.add_user("alice", email="alice@example.com", real_name="Alice Doe")
    bob = fake.add_user("bob", email="bob@example.com", real_name="Bob Roe")
    carol = fake.add_user("carol", email="carol@example.com", real_name="Carol Poe")
    general = fake.add_channel("general", members=[alice, bob, carol])
    eng = fake.add_channel("eng", members=[alice, bob])
    secret = fake.add_channel("secret-plans", private=True, members=[alice])
    rnd = fake.add_channel("random", members=[alice], bot_member=False)
    dm = fake.add_channel("alice-dm", is_im=True, members=[alice])
    group_dm = fake.add_channel("mpdm-alice--bob", is_mpim=True, members=[alice, bob])
    laptop = fake.post(general, alice, "How do I request a new laptop?", ago=3 * DAY)
    laptop_reply = fake.post(
        general,
        bob,
        f"Use the IT portal, laptops ship within five days. See <#{eng}|eng>.",
        thread_ts=laptop,
        ago=3 * DAY - 60,
    )
    fake.post(general, None, "", subtype="channel_join", ago=2.5 * DAY, extra={"user": carol})
    vacation = fake.post(
        general, carol, "The vacation policy is unlimited PTO with a two week minimum.", ago=2 * DAY
    )
    fake.post(
        general,
        None,
        "Deploy bot says build 42 is green",
        subtype="bot_message",
        bot_id="BOTHER",
        username="ci-bot",
        ago=1.5 * DAY,
    )
    freeze = fake.post(eng, bob, "Deploy freeze starts Friday for the database migration.", ago=2 * DAY)
    fake.post(
        eng,
        alice,
        f"<@{bob}> does the freeze include the billing service?",
        thread_ts=freeze,
        ago=2 * DAY - 30,
    )
    doc = fake.add_file(
        "runbook.md",
        "# Migration runbook\n\nRun the zebra-crossing checklist before the cutover.\n",
        mimetype="text/markdown",
        user=bob,
    )
    runbook = fake.post(eng, bob, "Runbook attached", files=[doc], ago=1 * DAY)
    quantum = fake.post(secret, alice, "The quantum budget for next year is 3 million.", ago=2 * DAY)
    fake.post(rnd, alice, "Cats are great", ago=DAY)
    fake.post(dm, alice, "my private note about the dentist", ago=DAY)
    fake.post(group_dm, bob, "surprise party for carol on friday", ago=DAY)
    return SimpleNamespace(
        alice=alice,
        bob=bob,
        carol=carol,
        general=general,
        eng=eng,
        secret=secret,
        rnd=rnd,
        dm=dm,
        group_dm=group_dm,
        laptop=laptop,
        laptop_reply=laptop_reply,
        vacation=vacation,
        freeze=freeze,
        runbook=runbook,
        quantum=quantum,
        file=doc,
    )


def upserts(pages) -> dict[str, ItemRef]:
    return {r.id: r for p in pages for r in p.upserts}


# ---- rendering -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "raw, expected",
    [
        ("hi <@U1>", "hi @Alice"),
        ("hi <@U9|bobby>", "hi @bobby"),
        ("see <#C1|eng> and <#C2>", "see #eng and #general"),
        ("<https://x.org/a?b=1&amp;c=2|the docs>", "[the docs](https://x.org/a?b=1&c=2)"),
        ("<https://x.org>", "https://x.org"),
        ("<!here> <!channel> <!subteam^S1|@oncall>", "@here @channel @oncall"),
        ("<mailto:a@x.org|a@x.org> &lt;tag&gt; &amp;", "a@x.org <tag> &"),
    ],
)
def test_mrkdwn_renders_readably(raw, expected):
    got = render_mrkdwn(
        raw, user_name=lambda u: {"U1": "Alice"}.get(u, u), channel_name=lambda c: {"C2": "general"}.get(c)
    )
    assert got == expected


# ---- listing and documents ---------------------------------------------------------------------------
def test_full_listing_has_one_document_per_thread_and_never_dms(fake, ws):
    pages = list(connector(fake).changes(None))
    ids = set(upserts(pages))
    assert ids == {
        f"{ws.general}/{ws.laptop}",
        f"{ws.general}/{ws.vacation}",
        f"{ws.eng}/{ws.freeze}",
        f"{ws.eng}/{ws.runbook}",
        f"file:{ws.file}",
        f"{ws.secret}/{ws.quantum}",
    }
    assert pages[-1].prune and not any(p.prune for p in pages[:-1])
    for never in (ws.dm, ws.group_dm, ws.rnd):  # DMs, group DMs, channels the bot is not in
        assert not fake.calls("/conversations.history", channel=never)


def test_thread_document_has_authors_times_replies_link_and_access(fake, ws):
    c = connector(fake)
    refs = upserts(c.changes(None))
    doc = c.fetch(refs[f"{ws.general}/{ws.laptop}"])
    text = doc.content.decode()
    assert "**alice**" in text and "**bob**" in text and "laptops ship" in text and "#eng" in text
    assert text.index("How do I request") < text.index("Use the IT portal")
    assert doc.mime == "text/markdown" and doc.path == f"#general/{ws.laptop}"
    assert doc.title == "#general: How do I request a new laptop?"
    assert doc.url == f"https://fakeco.slack.com/archives/{ws.general}/p{ws.laptop.replace('.', '')}"
    assert doc.modified == float(ws.laptop_reply)  # the latest message of the thread
    assert doc.access.groups == {"slack:t0fake"} and not doc.access.users
    secret = c.fetch(ItemRef(f"{ws.secret}/{ws.quantum}"))  # a bare ref (a retried failure) works too
    assert secret.access.users == {"alice@example.com"} and not secret.access.groups
    assert secret.version == refs[f"{ws.secret}/{ws.quantum}"].version


def test_noise_and_bots_are_skipped_unless_bots_are_included(fake, ws):
    c = connector(fake)
    assert not any(
        "ci-bot" in c.fetch(r).content.decode()
        for r in upserts(c.changes(None)).values()
        if not r.id.startswith("file:")
    )
    with_bots = connector(fake, include_bots=True)
    texts = [
        with_bots.fetch(r).content.decode()
        for r in upserts(with_bots.changes(None)).values()
        if not r.id.startswith("file:")
    ]
    assert any("build 42 is green" in t for t in texts)
    assert not any("joined" in t or "channel_join" in t for t in texts)


def test_the_assistants_own_messages_are_never_indexed(fake, ws):
    from slack_sdk import WebClient

    WebClient(token=fake.token, base_url=fake.url).chat_postMessage(
        channel=ws.general, text="I am the bot answering"
    )
    c = connector(fake, include_bots=True)
    texts = [
        c.fetch(r).content.decode() for r in upserts(c.changes(None)).values() if not r.id.startswith("file:")
    ]
    assert not any("I am the bot" in t for t in texts)


@pytest.mark.parametrize(
    "include, exclude, private, expected",
    [
        ((), (), True, {"general", "eng", "secret-plans"}),
        ((), ("secret-*",), True, {"general", "eng"}),
        (("eng", "gen*"), (), True, {"general", "eng"}),
        ((), ("#general",), False, {"eng"}),
    ],
)
def test_channel_include_exclude_patterns(fake, ws, include, exclude, private, expected):
    c = connector(
        fake, channels=include, exclude_channels=exclude, include_private=private, include_files=False
    )
    names = {c.fetch(r).path.split("/")[0].lstrip("#") for r in upserts(c.changes(None)).values()}
    assert names == expected


def test_shared_file_is_its_own_document_downloaded_with_the_token(fake, ws):
    c = connector(fake)
    refs = upserts(c.changes(None))
    doc = c.fetch(refs[f"file:{ws.file}"])
    assert doc.mime == "text/markdown" and b"zebra-crossing" in doc.content
    assert doc.metadata["message_ts"] == ws.runbook and doc.metadata["channel"] == ws.eng
    assert doc.access.groups == {"slack:t0fake"}
    dl = fake.calls(f"/files-pri/{fake.team_id}-{ws.file}/runbook.md")
    assert dl and dl[-1].headers["Authorization"] == f"Bearer {fake.token}"
    assert f"file:{ws.file}" not in upserts(connector(fake, include_files=False).changes(None))
    assert f"file:{ws.file}" not in upserts(connector(fake, max_file_mb=0.00001).changes(None))
    photo = fake.add_file("team.png", b"\x89PNG...", mimetype="image/png", user=ws.bob)
    fake.post(ws.eng, ws.bob, "team photo", files=[photo])
    assert f"file:{photo}" not in upserts(connector(fake).changes(None))  # no text to index


def test_download_without_a_valid_token_is_an_auth_error_not_a_login_page(fake, ws):
    c = connector(fake)
    url = fake.files[ws.file]["url_private"]
    c.client.token = "xoxb-wrong"
    with pytest.raises(AuthError, match="files:read"):
        c.client.download(url, max_bytes=10_000, expect_mime="text/markdown")


def test_wrong_token_is_an_auth_error(fake, ws):
    with pytest.raises(AuthError, match="bot_token"):
        list(SlackConnector(SlackConfig(bot_token="xoxb-nope", api_url=fake.url)).changes(None))


def test_history_larger_than_a_page_resumes_from_the_saved_cursor_in_a_new_process(fake):
    fake.populate(channels=2, roots_per_channel=25, replies_every=4, private_every=0)
    everything = set(upserts(connector(fake, page_size=7).changes(None)))
    first = connector(fake, page_size=7)
    seen, cursor = set(), None
    for n, page in enumerate(first.changes(None)):
        seen |= {r.id for r in page.upserts}
        cursor = page.next_cursor
        if n == 2:  # "killed" after the third page: a new connector resumes from the saved cursor
            break
    rest = list(connector(fake, page_size=7).changes(cursor))
    assert seen | set(upserts(rest)) == everything and len(everything) == 50
    assert rest[-1].prune


def test_replies_to_old_threads_are_seen_while_tracked_or_broadcast(fake, ws):
    c = connector(fake, track_days=7, recheck_hours=0)  # no "hot" re-fetching, to see what the cursor knows
    revived = fake.post(ws.eng, ws.alice, "Old RFC about service mesh", ago=30 * DAY)
    fake.post(ws.eng, ws.bob, "still relevant", thread_ts=revived, ago=3 * DAY)  # active: tracked
    quiet = fake.post(ws.eng, ws.alice, "Ancient question about tabs vs spaces", ago=60 * DAY)
    fake.post(ws.eng, ws.bob, "tabs", thread_ts=quiet, ago=50 * DAY)  # quiet: not tracked
    cursor = [p.next_cursor for p in c.changes(None)][-1]
    fake.post(ws.eng, ws.carol, "we adopted it", thread_ts=revived)
    fake.post(ws.eng, ws.carol, "spaces won", thread_ts=quiet, broadcast=True)  # also sent to the channel
    pages = list(c.changes(cursor))
    got = upserts(pages)
    assert {f"{ws.eng}/{revived}", f"{ws.eng}/{quiet}"} <= set(got)
    assert "spaces won" in c.fetch(got[f"{ws.eng}/{quiet}"]).content.decode()
    again = upserts(c.changes(pages[-1].next_cursor))
    assert not again  # nothing changed: the broadcast and the revived thread are known now


@pytest.mark.parametrize("sweep_hours", [24.0, 0.0])
def test_a_reply_to_a_thread_quiet_for_longer_than_track_days_is_found_by_the_next_sweep(
    fake, ws, sweep_hours
):
    """No broadcast, not tracked: only a re-listing of the whole history shows its new latest_reply."""
    import time as _time

    later = [0.0]
    c = SlackConnector(
        SlackConfig(
            bot_token=fake.token, api_url=fake.url, track_days=7, recheck_hours=0, sweep_hours=sweep_hours
        ),
        clock=lambda: _time.time() + later[0],
    )
    quiet = fake.post(ws.eng, ws.alice, "Ancient question about tabs vs spaces", ago=60 * DAY)
    fake.post(ws.eng, ws.bob, "tabs", thread_ts=quiet, ago=50 * DAY)
    others = [fake.post(ws.eng, ws.alice, f"Old thread {i}", ago=(40 + i) * DAY) for i in range(5)]
    for ts in others:
        fake.post(ws.eng, ws.bob, "old reply", thread_ts=ts, ago=35 * DAY)
    cursor = [p.next_cursor for p in c.changes(None)][-1]
    fake.post(
        ws.eng, ws.carol, "spaces won, finally", thread_ts=quiet
    )  # a reply only: history does not show it
    pages = list(c.changes(cursor))
    assert f"{ws.eng}/{quiet}" not in upserts(pages)  # within sweep_hours of the full listing: not yet
    later[0] = 25 * 3600.0
    fake.clear_requests()
    pages = list(c.changes(pages[-1].next_cursor))
    got = upserts(pages)
    if not sweep_hours:
        assert f"{ws.eng}/{quiet}" not in got
        return
    assert f"{ws.eng}/{quiet}" in got and "spaces won" in c.fetch(got[f"{ws.eng}/{quiet}"]).content.decode()
    assert not {f"{ws.eng}/{ts}" for ts in others} & set(got)  # quiet threads stay quiet: no replies calls
    assert {r.params.get("ts") for r in fake.calls("conversations.replies")} <= {quiet}
    later[0] = 26 * 3600.0
    assert not upserts(c.changes(pages[-1].next_cursor))  # and then it is known


def test_a_read_timeout_is_retried(fake, ws):
    """auth.test (and every other read) that times out once is tried again, not a failed sync."""
    c = connector(fake, timeout_s=0.5)
    fake.delay_next("auth.test", 1.5)
    fake.delay_next("conversations.list", 1.5)
    assert c.team_id == fake.team_id
    assert upserts(c.changes(None))
    assert len(fake.calls("auth.test")) == 2 and len(fake.calls("conversations.list")) >= 2


def test_cursor_stays_bounded(fake):
    import json as _json

    fake.populate(channels=1, roots_per_channel=40, private_every=0, start_ago=2 * DAY)
    pages = list(connector(fake, max_tracked_threads=5, page_size=10).changes(None))
    assert all(len(ch["threads"]) <= 5 for ch in _json.loads(pages[-1].next_cursor)["channels"].values())


def test_invalid_slack_cursor_raises_cursor_expired(fake):
    fake.populate(channels=1, roots_per_channel=10, private_every=0)
    it = connector(fake, page_size=3).changes(None)
    cursor = next(it).next_cursor
    fake.invalidate_cursors()
    with pytest.raises(CursorExpired):
        list(connector(fake, page_size=3).changes(cursor))
    with pytest.raises(CursorExpired):
        list(connector(fake).changes("not json"))


def test_rate_limits_are_retried_and_exhausted_retries_raise_rate_limited(fake, ws):
    fake.fail_next("conversations.history", 2)
    fake.fail_next("conversations.replies", 1)
    fake.fail_next("conversations.list", 1, status=503, error="service_unavailable")
    c = connector(fake)
    c.client.web.retry_handlers[2].interval_calculator.backoff_factor = 0.01
    assert len(upserts(c.changes(None))) == 6
    assert [r.status for r in fake.calls("/conversations.history")][:2] == [429, 429]
    fake.fail_next("conversations.history", 3)
    with pytest.raises(RateLimited):
        list(connector(fake, max_retries=1).changes(None))


def test_from_settings_uses_the_settings_section_without_importing_settings(fake):
    from assistant.settings import load_settings

    s = load_settings(
        environ={},
        overrides={
            "connectors": {
                "slack": {
                    "enabled": True,
                    "bot_token": fake.token,
                    "api_url": fake.url,
                    "exclude_channels": ["x-*"],
                    "days_back": 30,
                }
            }
        },
    )
    c = from_settings(s.connectors.slack)
    assert c.name == "slack" and c.config.exclude_channels == ("x-*",) and c.config.days_back == 30
    assert fake.token not in repr(s.connectors.slack) and fake.token not in repr(c.config)
    with pytest.raises(ConfigError, match="bot_token"):
        from_settings(load_settings(environ={}).connectors.slack)
    code = "import sys, connectors.slack; assert 'assistant.settings' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


# ---- through the Engine ---------------------------------------------------------------------------------
class LexicalEmbedder:
    """A fast stand-in for the embedder seam (hashed bag of words, the real tokenizer for chunking):
    for tests about sync state, where what the vectors mean does not matter."""

    name, dim, max_seq_length = "lexical-test", 384, 256

    def __init__(self) -> None:
        from transformers import AutoTokenizer

        from assistant.embeddings import bundled_model_path

        self.tokenizer = AutoTokenizer.from_pretrained(str(bundled_model_path()))
        self.texts_embedded = self.calls = 0

    def embed(self, texts):
        import zlib

        import numpy as np

        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in t.lower().split():
                out[i, zlib.crc32(w.encode()) % self.dim] += 1.0
        self.calls += 1
        self.texts_embedded += len(texts)
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)

    def embed_query(self, text):
        return self.embed([text])[0]


@pytest.fixture(scope="session")
def lexical_embedder():
    return LexicalEmbedder()


def open_engine(path: Path, embedder):
    from assistant.engine import Engine
    from assistant.settings import load_settings

    return Engine.open(load_settings(environ={}, overrides={"data_dir": str(path)}), embedder=embedder)


@pytest.fixture
def eng(tmp_path, lexical_embedder):
    e = open_engine(tmp_path / "a", lexical_embedder)
    yield e
    e.close()


def state(engine, source: str = "slack") -> dict[str, tuple[str, str, int]]:
    return {
        r.doc_id: (r.version, r.content_hash, len(engine.store.chunks_of(r.key)))
        for r in engine.store.iter_documents(source)
    }


def text_of(engine, doc_id: str) -> str:
    row = engine.store.get_document("slack", doc_id)
    return "".join(c.text for c in engine.store.chunks_of(row.key)) if row else ""


def test_incremental_sync_sees_new_messages_replies_edits_and_deletions(fake, ws, eng):
    c = connector(fake)
    first = eng.sync(c)
    assert first.added == 6 and first.failed == 0
    thread = f"{ws.general}/{ws.laptop}"
    new = fake.post(ws.eng, bob := ws.bob, "Standup moves to 10:30 starting Monday.")
    fake.post(
        ws.general, ws.carol, "Also ask for a docking station.", thread_ts=ws.laptop
    )  # reply to an old thread
    fake.edit(ws.general, ws.vacation, "The vacation policy changed: 25 days of PTO per year.")
    reply = next(
        t for t, m in fake.messages[ws.eng].items() if m.get("thread_ts") == ws.freeze and t != ws.freeze
    )
    fake.delete(ws.eng, reply)  # a reply deleted
    fake.delete(ws.eng, ws.runbook)  # a root with a file deleted
    rep = eng.sync(c)
    assert rep.failed == 0
    ids = eng.store.document_ids("slack")
    assert f"{ws.eng}/{new}" in ids and f"{ws.eng}/{ws.runbook}" not in ids and f"file:{ws.file}" not in ids
    assert "docking station" in text_of(eng, thread)
    assert "25 days of PTO" in text_of(eng, f"{ws.general}/{ws.vacation}")
    assert "billing service" not in text_of(eng, f"{ws.eng}/{ws.freeze}")
    assert bob and rep.added == 1 and rep.deleted == 2 and rep.updated == 3
    again = eng.sync(c)  # nothing changed: nothing fetched
    assert (again.added, again.updated, again.deleted, again.fetched) == (0, 0, 0, 0)


def test_edited_reply_in_an_active_thread_updates_the_document(fake, ws, eng):
    c = connector(fake)
    root = fake.post(ws.eng, ws.alice, "Which database version do we run?", ago=DAY * 2)
    reply = fake.post(ws.eng, ws.bob, "Postgres 14.", thread_ts=root, ago=3600)
    eng.sync(c)
    fake.edit(ws.eng, reply, "Postgres 16 since the upgrade.")
    eng.sync(c)
    assert "Postgres 16" in text_of(eng, f"{ws.eng}/{root}")


def test_private_channel_is_invisible_to_non_members_and_membership_changes_resync(
    fake, ws, tmp_path, hash_embedder
):
    eng = open_engine(tmp_path / "real", hash_embedder)
    c = connector(fake)
    eng.sync(c)
    team = {f"slack:{fake.team_id}"}
    secret = f"{ws.secret}/{ws.quantum}"
    alice = Principals(email="alice@example.com", groups=team)
    bob = Principals(email="bob@example.com", groups=team)
    assert eng.search("quantum budget next year", who=alice, k=3)[0].doc_id == secret
    assert all(h.doc_id != secret for h in eng.search("quantum budget next year", who=bob, k=10))
    assert any(h.doc_id == f"{ws.general}/{ws.vacation}" for h in eng.search("vacation policy", who=bob, k=3))
    assert not eng.search(
        "vacation policy", who=Principals(email="bob@example.com"), k=3
    )  # no workspace group
    fake.add_member(ws.secret, ws.bob)
    rep = eng.sync(c)
    assert rep.updated == 1 and eng.search("quantum budget next year", who=bob, k=3)[0].doc_id == secret
    fake.remove_member(ws.secret, ws.bob)
    eng.sync(c)
    assert all(h.doc_id != secret for h in eng.search("quantum budget next year", who=bob, k=10))
    eng.close()


def test_bot_removed_from_a_channel_prunes_its_documents(fake, ws, eng):
    c = connector(fake)
    eng.sync(c)
    fake.remove_member(ws.eng, fake.bot_user)
    eng.sync(c)
    assert not any(i.startswith(ws.eng) for i in eng.store.document_ids("slack"))
    assert f"{ws.general}/{ws.laptop}" in eng.store.document_ids("slack")


class Crash(Exception):
    pass


class CrashAfter:
    """Wraps a connector and dies after ``pages`` pages were handed out (a kill between pages)."""

    def __init__(self, inner, pages: int) -> None:
        self.inner, self.name, self.left = inner, inner.name, pages

    def changes(self, cursor):
        for page in self.inner.changes(cursor):
            if self.left == 0:
                raise Crash("killed")
            self.left -= 1
            yield page

    def fetch(self, ref):
        return self.inner.fetch(ref)

    def list_ids(self):
        return self.inner.list_ids()


def test_crash_between_pages_then_rerun_gives_the_exact_state_and_rate_limits_converge(
    fake, tmp_path, lexical_embedder
):
    fake.populate(channels=2, roots_per_channel=8, replies_every=3, files_every=4)
    with open_engine(tmp_path / "clean", lexical_embedder) as clean:
        clean.sync(connector(fake, page_size=3))
        expected = state(clean)
    with open_engine(tmp_path / "crashy", lexical_embedder) as e:
        with pytest.raises(Crash):
            e.sync(CrashAfter(connector(fake, page_size=3), pages=2))
        assert 0 < e.store.document_count("slack") < len(expected)
        fake.fail_next("conversations.history", 2)  # and throttled on the rerun
        fake.fail_next("conversations.replies", 1)
        rep = e.sync(connector(fake, page_size=3))  # a new process: fresh connector, cursor from the store
        assert rep.failed == 0
        assert state(e) == expected
    assert len(expected) == 16 + 4  # every root of every page, plus the files


def test_throttled_past_the_retry_budget_mid_sync_then_rerun_converges(fake, eng):
    fake.populate(channels=2, roots_per_channel=6, private_every=0)
    fake.fail_next("conversations.history", 2, after=2)  # the 3rd history page is refused twice
    with pytest.raises(RateLimited):
        eng.sync(connector(fake, page_size=3, max_retries=1))
    partial = eng.store.document_count("slack")
    assert 0 < partial < 12
    rep = eng.sync(connector(fake, page_size=3, max_retries=1))
    assert eng.store.document_count("slack") == 12 and rep.added == 12 - partial


def test_expired_cursor_mid_enumeration_restarts_and_converges(fake, eng):
    fake.populate(channels=2, roots_per_channel=6, private_every=0)
    with pytest.raises(Crash):
        eng.sync(CrashAfter(connector(fake, page_size=3), pages=1))
    fake.invalidate_cursors()
    rep = eng.sync(connector(fake, page_size=3))
    assert rep.restarted and eng.store.document_count("slack") == 12


# ---- the fake itself: what the Slack bot's tests rely on ---------------------------------------------------
def test_fake_serves_the_bot_methods_with_real_shapes_and_records_them(fake, ws):
    import json as _json
    import urllib.request

    from slack_sdk import WebClient
    from slack_sdk.errors import SlackApiError

    web = WebClient(token=fake.token, base_url=fake.url)
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "thinking…"}}]
    posted = web.chat_postMessage(
        channel=ws.general, thread_ts=ws.laptop, text="thinking", blocks=blocks, unfurl_links=False
    )
    web.chat_update(channel=ws.general, ts=posted["ts"], text="Use the IT portal [1]")
    assert fake.posted[-1]["thread_ts"] == ws.laptop and fake.posted[-1]["blocks"] == blocks
    assert fake.posted[-1]["params"]["unfurl_links"] is False
    assert fake.thread(ws.general, ws.laptop)[-1]["text"] == "Use the IT portal [1]"
    web.chat_postEphemeral(channel=ws.general, user=ws.alice, text="only for you")
    web.reactions_add(channel=ws.general, timestamp=ws.laptop, name="eyes")
    web.views_open(trigger_id="t1", view={"type": "modal", "title": {"type": "plain_text", "text": "x"}})
    dm = web.conversations_open(users=ws.alice)["channel"]["id"]
    web.chat_postMessage(channel=dm, text="hello in a DM")
    assert fake.ephemerals[-1]["user"] == ws.alice and fake.reactions[-1]["name"] == "eyes"
    assert fake.views[-1]["view"]["type"] == "modal" and fake.posted[-1]["channel"] == dm
    assert web.users_lookupByEmail(email="bob@example.com")["user"]["id"] == ws.bob
    members = web.conversations_members(channel=ws.eng)["members"]
    assert set(members) == {ws.alice, ws.bob, fake.bot_user}
    for call, code in [
        (lambda: web.chat_postMessage(channel=ws.rnd, text="x"), "not_in_channel"),
        (lambda: web.chat_postMessage(channel="C404", text="x"), "channel_not_found"),
        (lambda: web.chat_update(channel=ws.general, ts=ws.laptop, text="x"), "cant_update_message"),
        (lambda: web.chat_postEphemeral(channel=ws.eng, user=ws.carol, text="x"), "user_not_in_channel"),
        (lambda: web.conversations_history(channel=ws.secret, cursor="bad"), "invalid_cursor"),
    ]:
        with pytest.raises(SlackApiError) as e:
            call()
        assert e.value.response["error"] == code
    req = urllib.request.Request(
        fake.response_url("ask-1"),
        data=_json.dumps({"text": "an answer"}).encode(),
        headers={"Content-Type": "application/json"},
    )
    urllib.request.urlopen(req).read()
    assert fake.responses == [{"name": "ask-1", "text": "an answer"}]
    fake.assert_received("/chat.postMessage", min_count=2)
    ev = fake.message_event(ws.general, ws.bob, f"<@{fake.bot_user}> where is the runbook?", mention=True)
    assert (
        ev["event"]["type"] == "app_mention" and fake.message(ws.general, ev["event"]["ts"])["user"] == ws.bob
    )
    cmd = fake.slash_command("/ask", "vacation?", user=ws.bob, channel=ws.general)
    assert cmd["response_url"].startswith(fake.root) and cmd["channel_id"] == ws.general
    with pytest.raises(AssertionError):
        fake.assert_received("/chat.delete")


def test_fake_rate_limit_is_http_429_with_retry_after(fake):
    import urllib.error
    import urllib.request

    fake.fail_next("auth.test", 1, retry_after=7)
    req = urllib.request.Request(
        fake.url + "auth.test", data=b"", headers={"Authorization": f"Bearer {fake.token}"}
    )
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req)
    assert e.value.code == 429 and e.value.headers["Retry-After"] == "7"
    assert b'"ratelimited"' in e.value.read()
    assert json_ok(urllib.request.urlopen(req).read())


def json_ok(body: bytes) -> bool:
    import json as _json

    return _json.loads(body)["ok"] is True
