"""See the Slack bot work without a Slack workspace: a local fake Slack, the sample documents, real HTTP.

    python scripts/slack_demo.py            # the bundled model (first answer loads it: ~10-30 s on a CPU)
    python scripts/slack_demo.py --no-llm   # extractive answers only, instant
    python scripts/slack_demo.py --interactive   # then type questions as bob or alice

What happens: the sample documents are ingested (restricted/salary-bands-2026.md readable only by
alice@northwind.example), a fake Slack workspace is started (alice, bob, carol; #general with all three;
DMs), the bot runs exactly as ``assistant slack --http`` does, and signed Events API / slash command /
button requests are POSTed to it. Each step prints what people in Slack would see.
Uses the test fake in tests/fakes (so it needs a source checkout, not just the installed package).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from assistant.settings import load_settings
from assistant.slackbot import blocks as bk


def show(title: str, lines: list[str]) -> None:
    print(f"\n=== {title}")
    for line in lines:
        print("   " + line.replace("\n", "\n   "))


def bot_replies(rig, channel: str, thread_ts: str | None) -> list[str]:
    if thread_ts:
        msgs = rig.fake.thread(channel, thread_ts)
    else:
        msgs = [rig.fake.message(channel, p["ts"]) for p in rig.fake.posted if p["channel"] == channel]
    return [bk.plain_text(m) for m in msgs if m and m.get("user") == rig.fake.bot_user]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--no-llm", action="store_true", help="extractive answers only (no model)")
    ap.add_argument("--data-dir", type=Path, help="index location (default: a temporary folder)")
    ap.add_argument("--interactive", action="store_true", help="afterwards, type questions as bob or alice")
    args = ap.parse_args()

    from assistant.service import Assistant
    from connectors.local_files import LocalFilesConnector
    from tests.fakes.slack_bot_support import BotRig

    sample = REPO / "assistant" / "sample_docs"
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="slack-demo-"))
    overrides = {"data_dir": str(data_dir), "log_level": "WARNING"}
    if args.no_llm:
        overrides["llm"] = {"model": "none"}
    settings = load_settings(overrides=overrides)
    assistant = Assistant(settings)
    print(f"Indexing the sample documents into {data_dir} …", flush=True)
    rep = assistant.engine.sync(LocalFilesConnector(sample, name="sample", acl_file=sample / "acl.toml"))
    print("  " + rep.line())

    with BotRig(settings, assistant, stream_every_s=0.5) as rig:
        w = rig.world
        print(f"Fake Slack at {rig.fake.url}; the bot listens at {rig.server.url}")

        def mention(user, channel, text, thread_ts=None):
            ev = rig.mention(user, channel, text, thread_ts=thread_ts)
            t0 = time.perf_counter()
            status, _, ack_s = rig.slack.event(ev)
            rig.wait(600)
            took = time.perf_counter() - t0
            return ev["event"][
                "ts"
            ], f"(HTTP {status}, acked in {ack_s * 1000:.0f} ms, answered in {took:.1f} s)"

        ts, t = mention(w.bob, w.general, "how do I request a new laptop?")
        show(
            f"#general — bob: @assistant how do I request a new laptop? {t}", bot_replies(rig, w.general, ts)
        )
        _, t = mention(w.bob, w.general, "how long does shipping take?", thread_ts=ts)
        show(
            f"#general thread — bob: @assistant how long does shipping take? {t}",
            bot_replies(rig, w.general, ts)[-1:],
        )

        ev = rig.fake.message_event(
            w.dm_bob, w.bob, "How many weeks of parental leave does a primary caregiver get?"
        )
        rig.slack.event(ev)
        rig.wait(600)
        show(
            "DM — bob: How many weeks of parental leave does a primary caregiver get?",
            bot_replies(rig, w.dm_bob, None)[-1:],
        )

        ts, t = mention(w.bob, w.general, "What is the salary band for an L5 engineer?")
        show(
            f"#general — bob asks about salary bands (restricted to alice) {t}",
            bot_replies(rig, w.general, ts),
        )
        ts, t = mention(w.alice, w.general, "What is the salary band for an L5 engineer?")
        show(
            f"#general — alice asks the same (bob and carol are in the channel) {t}",
            bot_replies(rig, w.general, ts),
        )
        eph = [e for e in rig.fake.ephemerals if e["thread_ts"] == ts]
        show("… and what only alice sees (chat.postEphemeral)", [bk.plain_text(e) for e in eph])

        cmd = rig.fake.slash_command("/summarize", "handbook", user=w.bob, channel=w.general)
        rig.slack.command(cmd)
        rig.wait(600)
        show(
            "/summarize handbook — bob (ephemeral)",
            [bk.plain_text(r) for r in rig.fake.responses if "blocks" in r][-1:],
        )

        status, _, _ = rig.slack.event(rig.mention(w.bob, w.general, "hi"), secret="wrong-secret")
        show("A forged request", [f"HTTP {status} — nothing processed"])
        print(f"\nStats: {rig.bot.stats}")

        if args.interactive:
            print(
                "\nType questions. Prefix with 'alice:' to ask as alice (default bob); 'dm:' to ask in a DM. Ctrl-D ends."
            )
            for line in sys.stdin:
                q = line.strip()
                if not q:
                    continue
                user, dm = w.bob, False
                for prefix in ("alice:", "dm:"):
                    if q.lower().startswith(prefix):
                        q = q[len(prefix) :].strip()
                        user, dm = (w.alice, dm) if prefix == "alice:" else (user, True)
                if dm:
                    ch = w.dm_alice if user == w.alice else w.dm_bob
                    rig.slack.event(rig.fake.message_event(ch, user, q))
                    rig.wait(600)
                    show(f"DM — {q}", bot_replies(rig, ch, None)[-1:])
                else:
                    ts, t = mention(user, w.general, q)
                    show(f"#general — {q} {t}", bot_replies(rig, w.general, ts))
    assistant.close()


if __name__ == "__main__":
    main()
