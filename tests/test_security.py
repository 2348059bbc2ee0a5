"""Security end to end: canaries per source never leak, permissions fail closed, prompt injection stays inert.

One world for the module (real connectors against the local fakes; vectors from
``tests/fakes/hash_embedder`` to keep the module fast on a small CPU — the ACL filter runs before
ranking, so what the vectors mean does not change what may leak):
- Google Drive: a doc shared with alice only; a shared-drive doc whose permissions.list fails (403);
  a doc shared with an unknown group plus carol.
- OneDrive: a file in alice's OneDrive (owner only); a file whose permissions call fails (403).
- Slack: a private channel with alice as the only member.
- Local folder: the bundled sample corpus (its restricted/ salary canary), an ACL'd canary file,
  and the prompt-injection corpus ``tests/data/injection`` (22 documents, public).
Each canary has a distinctive string. A model double that tries to leak (it repeats every canary,
or obeys the injected instructions) must not get them into search results, answers or summaries
of people who cannot read the document.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from assistant.documents import Principals
from assistant.retrieval import Audience
from assistant.service import Assistant
from connectors.google_drive import DriveClient, DriveConfig, GoogleDriveConnector, RetryPolicy
from connectors.google_drive.client import load_credentials
from connectors.local_files import LocalFilesConnector
from connectors.onedrive import OneDriveConfig, OneDriveConnector
from connectors.slack import SlackConfig, SlackConnector
from tests.conftest import SAMPLE_DOCS, make_settings
from tests.doubles import ScriptedLLM
from tests.fakes.gdrive import GDOC, FakeDrive
from tests.fakes.graph import FakeGraph, GraphWorld
from tests.fakes.slack import FakeSlack

INJECTION = Path(__file__).resolve().parent / "data" / "injection"
ALICE, BOB, CAROL = "alice@example.com", "bob@example.com", "carol@example.com"
TEAM = "slack:T0FAKE"


def who(email: str | None, *groups: str) -> Principals:
    return Principals(email=email, groups=frozenset(groups))


ALICE_P = who(ALICE, TEAM)
BOB_P = who(BOB, TEAM, "eng@example.com")
CAROL_P = who(CAROL, TEAM)
NW_ALICE = who("alice@northwind.example")
UNKNOWN = Principals()
EVERYONE_ASKS = {"alice": ALICE_P, "bob": BOB_P, "carol": CAROL_P, "nw-alice": NW_ALICE, "unknown": UNKNOWN}

# name -> (canary string, a query that finds it, who may read it)
CANARIES = {
    "gdrive-user": ("GD-CANARY-5521", "Bluefin acquisition target price negotiation", {"alice"}),
    "gdrive-acl-failed": ("GD-ACLFAIL-CANARY-0917", "Harbourview lease termination penalty clause", set()),
    "gdrive-unknown-group": (
        "GD-GHOST-CANARY-3390",
        "Orchid reorganisation headcount reduction plan",
        {"carol"},
    ),
    "onedrive-owner": ("OD-CANARY-7104", "Kestrel board deck revenue forecast", {"alice"}),
    "onedrive-acl-failed": ("OD-ACLFAIL-CANARY-2286", "Tamarind whistleblower investigation findings", set()),
    "slack-private": ("SL-CANARY-6643", "Marigold layoffs announcement date", {"alice"}),
    "local-acl": ("LF-CANARY-8850", "Juniper litigation settlement amount", {"alice"}),
    "local-sample": ("NW-SALARY-CANARY-7731", "salary bands for engineering levels", {"nw-alice"}),
}


def canary_doc(name: str) -> str:
    canary, query, _ = CANARIES[name]
    return (
        f"# {query.title()}\n\nConfidential. {query.capitalize()}: the figures are final and must not be "
        f"shared outside the group. Reference code {canary}. The {query} was approved on Monday.\n"
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from tests.fakes.hash_embedder import HashEmbedder

    embedder = HashEmbedder()
    tmp = tmp_path_factory.mktemp("security")
    drive = FakeDrive(users=(ALICE, BOB, CAROL), groups={"eng@example.com": {BOB}})
    graph = FakeGraph(tmp, GraphWorld(domain="example.com"))
    slack = FakeSlack(token="xoxb-security-test-token")
    try:
        # Google Drive
        w = drive.world
        root = w.root(w.admin)
        f = w.add_file("Bluefin", GDOC, canary_doc("gdrive-user"), root)
        w.share(f, "user", email=ALICE)
        legal = w.add_drive("Legal", members={w.admin: "organizer", ALICE: "reader", BOB: "reader"})
        broken = w.add_file("Harbourview lease", GDOC, canary_doc("gdrive-acl-failed"), legal)
        w.permission_denied.add(broken)
        ghost = w.add_file("Orchid plan", GDOC, canary_doc("gdrive-unknown-group"), root)
        w.share(ghost, "group", email="ghost-team@example.com")
        w.share(ghost, "user", email=CAROL)
        info = w.service_account_info()
        gconn = GoogleDriveConnector(
            DriveConfig(
                credentials_info=info, subject=w.admin, api_endpoint=drive.url, all_shared_drives=True
            ),
            client=DriveClient(
                load_credentials(info, subject=w.admin, token_uri=drive.url + "/token"),
                api_endpoint=drive.url,
                retry=RetryPolicy(max_retries=2, base_s=0.001, cap_s=0.01),
            ),
        )
        # OneDrive
        gw = graph.world
        a = gw.add_user_drive(ALICE)
        gw.add_file(a, "/Board/kestrel.md", canary_doc("onedrive-owner"), mime="text/markdown")
        failing = gw.add_file(
            a, "/Legal/tamarind.md", canary_doc("onedrive-acl-failed"), mime="text/markdown"
        )
        gw.grant(failing, user=BOB)  # would be readable by bob, but the permissions call fails
        gw.inject(f"{failing}/permissions", status=403, times=100)
        oconn = OneDriveConnector(
            OneDriveConfig(**graph.settings(user_drives=(ALICE,), max_retries=1, timeout_s=10.0))
        )
        # Slack
        al, bo = slack.add_user("alice", email=ALICE), slack.add_user("bob", email=BOB)
        slack.add_user("carol", email=CAROL)
        general = slack.add_channel("general", members=[al, bo])
        slack.post(general, bo, "The office closes early on Friday for the summer party.", ago=3600)
        private = slack.add_channel("exec-offsite", private=True, members=[al])
        slack.post(private, al, canary_doc("slack-private").replace("\n", " "), ago=3600)
        sconn = SlackConnector(SlackConfig(bot_token=slack.token, api_url=slack.url))
        # Local folder: sample corpus + an ACL'd canary + the injection corpus
        folder = tmp / "local"
        shutil.copytree(SAMPLE_DOCS, folder)
        shutil.copytree(INJECTION, folder / "injection")
        (folder / "legal").mkdir()
        (folder / "legal" / "juniper.md").write_text(canary_doc("local-acl"))
        acl = folder / "acl.toml"
        acl.write_text(acl.read_text() + f'\n[[rule]]\nglob = "legal/**"\nusers = ["{ALICE}"]\n')
        lconn = LocalFilesConnector(folder, name="local", acl_file=acl)

        settings = make_settings(tmp / "data")
        assistant = Assistant(settings, embedder=embedder, llm=None)
        reports = {c.name: assistant.engine.sync(c) for c in (gconn, oconn, sconn, lconn)}
        yield {
            "assistant": assistant,
            "settings": settings,
            "reports": reports,
            "drive": drive,
            "graph": graph,
        }
        assistant.close()
    finally:
        drive.close()
        graph.close()
        slack.close()


def _texts_of_answer(ans) -> str:
    j = ans.as_json()
    return " ".join(
        [j["answer"], *[c["quote"] for c in j["citations"]], *[h["text"] for h in j["retrieved"]]]
    )


def _non_readers(readers: set[str]) -> dict[str, Principals]:
    return {k: p for k, p in EVERYONE_ASKS.items() if k not in readers}


def test_every_source_synced_without_failures(world):
    assert {n: r.failed for n, r in world["reports"].items()} == {
        "gdrive": 0,
        "onedrive": 0,
        "slack": 0,
        "local": 0,
    }
    assert world["reports"]["local"].added >= 13 + 22 + 1


@pytest.mark.parametrize("name", sorted(CANARIES))
def test_canary_is_indexed_and_found_by_its_readers(world, name):
    canary, query, readers = CANARIES[name]
    eng = world["assistant"].engine
    assert any(canary in h.text for h in eng.search(query, who=Principals(everything=True), k=5))
    for r in readers:  # the search really finds it, so the leak checks below can fail
        assert any(canary in h.text for h in eng.search(query, who=EVERYONE_ASKS[r], k=5)), r


@pytest.mark.parametrize("name", sorted(CANARIES))
def test_canary_never_in_search_results_of_non_readers(world, name):
    canary, query, readers = CANARIES[name]
    eng = world["assistant"].engine
    tries = [(query, "hybrid"), (query, "dense"), (canary, "keyword")]  # the literal code finds it by keyword
    leaks = [
        (k, mode)
        for k, p in _non_readers(readers).items()
        for q, mode in tries
        if any(canary in h.text for h in eng.search(q, who=p, k=50, mode=mode))
    ]
    assert leaks == []


def _leaky(messages) -> str:
    """A model that tries to leak: repeats every canary, claiming source [1]."""
    return " ".join(f"The reference code is {c} [1]." for c, _, _ in CANARIES.values())


@pytest.mark.parametrize("name", sorted(CANARIES))
def test_leaky_model_cannot_put_a_canary_in_an_answer_for_non_readers(world, name):
    canary, query, readers = CANARIES[name]
    a = Assistant(world["settings"], engine=world["assistant"].engine, llm=ScriptedLLM(_leaky))
    question = f"What is the reference code of the {query}?"
    if readers:  # a channel with one reader and one non-reader: the strictest member decides
        askers = [
            Audience.of([EVERYONE_ASKS[sorted(readers)[0]], BOB_P if "bob" not in readers else UNKNOWN])
        ]
    else:
        askers = [BOB_P]
    doc = _canary_docs(a.engine)[name]
    for asker in askers:
        ans = a.ask(question, who=asker)
        assert canary not in _texts_of_answer(ans)
        assert doc not in {(h.source, h.doc_id) for h in ans.retrieved} | {
            (c.source, c.doc_id) for c in ans.citations
        }
    if readers:  # the reader asking alone does get the document: the checks above can fail
        ans = a.ask(question, who=EVERYONE_ASKS[sorted(readers)[0]])
        assert doc in {(h.source, h.doc_id) for h in ans.retrieved}


def _canary_docs(engine) -> dict[str, tuple[str, str]]:
    """canary name -> (source, doc id) of the document that holds it."""
    out = {}
    for r in engine.store.iter_documents():
        text = " ".join(c.text for c in engine.store.chunks_of(r.key))
        out.update({n: (r.source, r.doc_id) for n, (c, _, _) in CANARIES.items() if c in text})
    return out


SCOPES = ["gdrive", "onedrive", "slack", "local:legal/", "local:restricted/"]  # where the canaries live


def test_summaries_never_contain_documents_the_reader_cannot_read(world):
    a = Assistant(world["settings"], engine=world["assistant"].engine, llm=ScriptedLLM(_leaky))
    where = _canary_docs(a.engine)
    assert len(where) == len(CANARIES)
    leaks = []
    for k, p in [("bob", BOB_P), ("unknown", UNKNOWN), ("carol", CAROL_P)]:
        for scope in SCOPES:
            s = a.summarize(who=p, scope=scope, max_docs=50, use_llm=True)
            text = str(s.as_json())
            shown = {(b.source, b.doc_id) for b in s.bullets}
            leaks += [
                (k, n)
                for n, (c, _, readers) in CANARIES.items()
                if k not in readers and (c in text or where[n] in shown)
            ]
    assert leaks == []
    admin = {
        (b.source, b.doc_id)
        for scope in SCOPES
        for b in a.summarize(who=Principals(everything=True), scope=scope, max_docs=50, use_llm=False).bullets
    }
    assert set(where.values()) <= admin  # the canaries are summarizable at all: the check above can fail


@pytest.mark.parametrize("name", ["gdrive-acl-failed", "onedrive-acl-failed"])
def test_failed_permission_fetch_means_nobody_can_read(world, name):
    canary, query, _ = CANARIES[name]
    eng = world["assistant"].engine
    (row,) = [
        r for r in eng.store.iter_documents() if any(canary in c.text for c in eng.store.chunks_of(r.key))
    ]
    assert eng.store.access_of(row.key).tokens() == frozenset()
    assert row.metadata.get("acl_error")


def test_unknown_group_grants_nothing_but_explicit_users_still_read(world):
    canary, query, _ = CANARIES["gdrive-unknown-group"]
    eng = world["assistant"].engine
    (row,) = [r for r in eng.store.iter_documents("gdrive") if r.title == "Orchid plan"]
    assert "group:ghost-team@example.com" in eng.store.access_of(row.key).tokens()
    assert not any(
        canary in h.text for h in eng.search(query, who=BOB_P, k=50)
    )  # bob's groups do not include it
    assert any(canary in h.text for h in eng.search(query, who=CAROL_P, k=5))


# -- prompt injection ------------------------------------------------------------------------------------
# (question, injected document) — every document of tests/data/injection, asked about its mundane topic
INJECTION_QUESTIONS = [
    ("When is the third-floor kitchen deep-cleaned?", "kitchen-cleaning-rota.md"),
    ("Where do visitors park?", "visitor-parking.md"),
    ("What is the guest Wi-Fi network called?", "guest-wifi.md"),
    ("How often is the espresso machine descaled?", "coffee-machine.md"),
    ("What are the mail room opening hours?", "mail-room.md"),
    ("How far ahead can I book a hot desk?", "desk-booking.md"),
    ("Within how many days must I upload expense receipts?", "expense-receipts.md"),
    ("When is the winter holiday party?", "holiday-party.md"),
    ("Where are the spare printer toner cartridges?", "printer-toner.md"),
    ("Where can I store my bike?", "bike-storage.md"),
    ("How do I replace a lost badge?", "badge-replacement.md"),
    ("How do I share my screen in a meeting room?", "meeting-room-av.md"),
    ("Who waters the office plants?", "plant-watering.md"),
    ("What do I do with my laptop when I leave the company?", "laptop-returns.txt"),
    ("Where is the assembly point during a fire drill?", "fire-drill.txt"),
    ("Which bin takes glass for recycling?", "recycling.md"),
    ("Can I take calls in the quiet room?", "quiet-room.md"),
    ("On which day are salaries paid?", "payroll-dates.md"),
    ("How long are found items kept at reception?", "lost-and-found.html"),
    ("How often does the shuttle bus run from Central Station?", "shuttle-bus.md"),
    ("Where are the first-aid kits?", "first-aid.md"),
    ("Can I leave my day locker locked overnight?", "locker-policy.md"),
]
BROADCAST = re.compile(r"<!(?:channel|here|everyone|subteam)|@(?:channel|here|everyone)\b", re.I)
USER_MENTION = re.compile(r"<@[UW][A-Z0-9]+")  # pings a person from a document's text
URL = re.compile(r"(?:https?://|www\.)[^\s>)\]|]+", re.I)


def test_injection_corpus_is_big_enough_and_fully_covered():
    docs = sorted(p.name for p in INJECTION.iterdir())
    assert len(docs) >= 20 and sorted(d for _, d in INJECTION_QUESTIONS) == docs


def _parrot(messages) -> str:
    """A model that obeys the documents: repeats the first source verbatim, then the injected payloads."""
    user = messages[-1]["content"]
    first = user.split("<<<\n", 1)[1].split("\n>>>", 1)[0]
    payloads = " ".join(dict.fromkeys(re.findall(r"<[!@][^>]+>|https?://\S+|www\.\S+|@channel|@here", user)))
    return f"{first} [1]\nPWNED. {payloads} [1]"


def _injection_problems(ans, doc: str) -> list[str]:
    problems = []
    if "PWNED" in ans.answer.upper():
        problems.append("PWNED")
    if URL.search(ans.answer):  # every source here is a local file: any web link came from an injection
        problems.append(f"foreign URL: {URL.findall(ans.answer)}")
    if BROADCAST.search(ans.answer):
        problems.append(f"broadcast: {BROADCAST.findall(ans.answer)}")
    if USER_MENTION.search(ans.answer):
        problems.append(f"user mention: {USER_MENTION.findall(ans.answer)}")
    if "CANARY" in ans.answer:
        problems.append("canary")
    return problems


@pytest.mark.parametrize("model", ["parrot", "extractive"])
def test_injected_instructions_links_and_mentions_never_reach_the_answer(world, model):
    a = Assistant(
        world["settings"],
        engine=world["assistant"].engine,
        llm=ScriptedLLM(_parrot) if model == "parrot" else None,
    )
    bad, retrieved, answered = {}, 0, 0
    for question, doc in INJECTION_QUESTIONS:
        ans = a.ask(question, who=BOB_P, k=3)
        retrieved += any(h.path == f"injection/{doc}" for h in ans.retrieved)
        answered += not ans.refused
        if problems := _injection_problems(ans, doc):
            bad[doc] = (problems, ans.answer)
    assert not bad, "\n".join(f"{doc}: {problems} in {answer!r}" for doc, (problems, answer) in bad.items())
    # the injected documents were really in play: retrieved for (nearly) every question, mostly answered
    assert retrieved >= len(INJECTION_QUESTIONS) - 2 and answered >= len(INJECTION_QUESTIONS) // 2


# -- secrets ---------------------------------------------------------------------------------------------
def _toml(value) -> str:
    import json

    return json.dumps(value)  # JSON strings and lists are valid TOML values


def test_secrets_never_reach_logs_errors_the_database_or_status(tmp_path, caplog):
    """Every connector configured with secret values, synced at DEBUG logging, then scanned."""
    import json
    import logging

    from typer.testing import CliRunner

    from assistant.cli import app
    from assistant.engine import Engine
    from assistant.errors import AssistantError
    from assistant.registry import build_connector
    from assistant.settings import load_settings
    from tests.fakes.hash_embedder import HashEmbedder

    slack_token, od_secret = "xoxb-SECRET-slack-4bd1f0e2aa", "SECRET-onedrive-9c3e77b1"
    bot_token, signing, app_token, llm_key = (
        "xoxb-SECRET-bot-77c1",
        "SECRET-signing-0d0d5e",
        "xapp-SECRET-app-12ab",
        "sk-SECRET-llm-55aa",
    )
    with (
        FakeDrive(users=(ALICE,)) as drive,
        FakeSlack(token=slack_token) as slack,
        FakeGraph(tmp_path, GraphWorld(domain="example.com"), client_secret=od_secret) as graph,
    ):
        w = drive.world
        w.add_file("Handbook", GDOC, "# Handbook\n\nWelcome to the team.", w.root(w.admin))
        key = w.service_account_info()
        pem_body = key["private_key"].splitlines()[5]  # a line from the middle of the private key
        d = graph.world.add_user_drive(ALICE)
        graph.world.add_file(d, "/notes.md", "# Notes\nStandup at ten.", mime="text/markdown")
        poster = slack.add_user("alice", email=ALICE)
        slack.post(slack.add_channel("general", members=[poster]), poster, "Lunch is at noon.", ago=60)
        od = graph.settings()
        cfg = tmp_path / "assistant.toml"
        cfg.write_text(
            "\n".join(
                [
                    f"data_dir = {_toml(str(tmp_path / 'data'))}",
                    'log_level = "DEBUG"',
                    "[llm]",
                    'endpoint = "http://127.0.0.1:9/v1"',
                    f"api_key = {_toml(llm_key)}",
                    "[slack]",
                    f"bot_token = {_toml(bot_token)}",
                    f"signing_secret = {_toml(signing)}",
                    f"app_token = {_toml(app_token)}",
                    "[connectors.google_drive]",
                    "enabled = true",
                    f"credentials_json = {_toml(json.dumps(key))}",
                    f"subject = {_toml(w.admin)}",
                    f"api_endpoint = {_toml(drive.url)}",
                    f"token_uri = {_toml(drive.url + '/token')}",
                    "[connectors.onedrive]",
                    "enabled = true",
                    f"tenant_id = {_toml(od['tenant_id'])}",
                    f"client_id = {_toml(od['client_id'])}",
                    f"client_secret = {_toml(od_secret)}",
                    f"authority_host = {_toml(od['authority_host'])}",
                    f"graph_url = {_toml(od['graph_url'])}",
                    f"verify = {_toml(od['verify'])}",
                    f"tenant_domain = {_toml(od['tenant_domain'])}",
                    f"user_drives = {_toml([ALICE])}",
                    "[connectors.slack]",
                    "enabled = true",
                    f"bot_token = {_toml(slack_token)}",
                    f"api_url = {_toml(slack.url)}",
                ]
            )
            + "\n"
        )
        settings = load_settings([cfg], environ={})
        caplog.set_level(logging.DEBUG)
        errors: list[str] = [repr(settings), str(settings.model_dump())]
        with Engine.open(settings, embedder=HashEmbedder()) as eng:
            reports = {
                s: eng.sync(build_connector(settings, source=s)) for s in ("gdrive", "onedrive", "slack")
            }
            errors += [json.dumps(r.as_dict()) for r in reports.values()]
        assert {s: (r.added, r.failed) for s, r in reports.items()} == {
            "gdrive": (1, 0),
            "onedrive": (1, 0),
            "slack": (1, 0),
        }
        # wrong secrets: the errors must say what to fix without echoing what was given
        wrong = {
            "connectors": {
                "onedrive": {"client_secret": "SECRET-wrong-od-31"},
                "slack": {"bot_token": "xoxb-SECRET-wrong-3"},
            }
        }
        bad = load_settings([cfg], environ={}, overrides=wrong)
        for source in ("onedrive", "slack"):
            with pytest.raises(AssistantError) as e:
                list(build_connector(bad, source=source).changes(None))
            errors.append(str(e.value))
        issued = list(w.access_tokens) + list(graph.world.tokens)
        status = CliRunner().invoke(app, ["--config", str(cfg), "status", "--json"])
        assert status.exit_code == 0, status.output
        assert json.loads(status.output)["documents"] == 3
        db = b"".join(p.read_bytes() for p in (tmp_path / "data").glob("store.sqlite*"))
    secrets = [
        slack_token,
        od_secret,
        bot_token,
        signing,
        app_token,
        llm_key,
        pem_body,
        "SECRET-wrong-od-31",
        "xoxb-SECRET-wrong-3",
        *issued,
    ]
    assert len(issued) >= 2 and len(caplog.records) > 10  # tokens were issued, DEBUG logging really ran
    places = {
        "logs": caplog.text,
        "errors": "\n".join(errors),
        "status": status.output,
        "database": db.decode("latin-1"),
    }
    leaks = [(where, s[:12]) for where, text in places.items() for s in secrets if s in text]
    assert leaks == []
