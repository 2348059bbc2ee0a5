"""Slack bot latency: event → final message, one at a time and with N questions at once.

    python scripts/bench_bot.py                    # the bundled model (SmolLM2-135M on the CPU)
    python scripts/bench_bot.py --llm scripted     # an instant stand-in model: measures the bot itself
    python scripts/bench_bot.py --llm none         # extractive answers, no model

Each question is a signed Events API ``app_mention`` POSTed to the running bot (the same server as
``assistant slack --http``), which talks to a local fake Slack through a real WebClient. Measured:
the HTTP acknowledgement (Slack wants it within 3 s) and the time until the thread's reply is final
(the placeholder replaced by the answer with sources and buttons). Sample documents as the corpus.
Prints a Markdown table; ``--json FILE`` also writes the raw numbers.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

QUESTIONS = [
    "How many weeks of paid parental leave does a primary caregiver get?",
    "How do I roll back a bad deploy?",
    "What is the hotel limit per night in New York?",
    "How do I request a new laptop?",
    "How many PTO days do I get per year?",
    "Who do I page when the API is down at night?",
    "How do I set up the office printer?",
    "What caused the API outage in August?",
    "Can I bring my dog to the office?",
    "What should I do in my first week?",
]


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))]


def ask(rig, user: str, channel: str, question: str, out: list, timeout: float) -> None:
    from tests.fakes.slack_bot_support import wait_final

    ev = rig.mention(user, channel, question)
    t0 = time.perf_counter()
    status, _, ack_s = rig.slack.event(ev)
    done = wait_final(rig.fake, channel, ev["event"]["ts"], timeout=timeout)
    out.append({"status": status, "ack_s": ack_s, "final_s": (done - t0) if done else None})


def run_phase(rig, n: int, concurrency: int, timeout: float) -> list[dict]:
    w = rig.world
    out: list[dict] = []
    users = [w.alice, w.bob, w.carol]
    jobs = [(users[i % 3], w.general, QUESTIONS[i % len(QUESTIONS)]) for i in range(n)]
    if concurrency <= 1:
        for j in jobs:
            ask(rig, *j, out, timeout)
        return out
    threads = [threading.Thread(target=ask, args=(rig, *j, out, timeout)) for j in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def row(name: str, res: list[dict]) -> str:
    acks = [r["ack_s"] * 1000 for r in res]
    finals = [r["final_s"] for r in res if r["final_s"] is not None]
    missing = sum(1 for r in res if r["final_s"] is None)
    return (
        f"| {name} | {len(res)} | {pct(acks, 50):.0f} | {pct(acks, 95):.0f} | {max(acks):.0f} | "
        f"{pct(finals, 50):.2f} | {pct(finals, 95):.2f} | {max(finals) if finals else float('nan'):.2f} | {missing} |"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--llm", choices=["bundled", "scripted", "none"], default="bundled")
    ap.add_argument("--sequential", type=int, default=10, help="questions asked one after another")
    ap.add_argument("--concurrent", type=int, default=20, help="questions asked at the same moment")
    ap.add_argument("--workers", type=int, default=8, help="the bot's worker threads")
    ap.add_argument(
        "--endpoint",
        help="OpenAI-compatible LLM server (e.g. `assistant serve-llm`: continuous "
        "batching) instead of the in-process model",
    )
    ap.add_argument("--model", help="with --endpoint: the model id the server lists at GET /v1/models")
    ap.add_argument("--timeout", type=float, default=900.0)
    ap.add_argument("--json", type=Path, help="write raw results here")
    args = ap.parse_args()

    from assistant.service import Assistant
    from assistant.settings import load_settings
    from connectors.local_files import LocalFilesConnector
    from tests.fakes.slack_bot_support import BotRig, copy_first_source_llm

    sample = REPO / "assistant" / "sample_docs"
    overrides = {"data_dir": tempfile.mkdtemp(prefix="bench-bot-"), "log_level": "WARNING"}
    if args.llm == "none":
        overrides["llm"] = {"model": "none"}
    elif args.endpoint:
        overrides["llm"] = {"endpoint": args.endpoint, **({"model": args.model} if args.model else {})}
    settings = load_settings(environ={}, overrides=overrides)
    kw = {"llm": copy_first_source_llm()} if args.llm == "scripted" else {}
    assistant = Assistant(settings, **kw)
    assistant.engine.sync(LocalFilesConnector(sample, name="sample", acl_file=sample / "acl.toml"))
    with BotRig(settings, assistant, workers=args.workers) as rig:
        t0 = time.perf_counter()
        run_phase(rig, 1, 1, args.timeout)  # warm-up: loads the model and the embedder
        warm = time.perf_counter() - t0
        seq = run_phase(rig, args.sequential, 1, args.timeout)
        conc = run_phase(rig, args.concurrent, args.concurrent, args.timeout)
        stats = dict(rig.bot.stats)
    print(
        f"\nSlack bot latency — llm={args.llm}{' via ' + args.endpoint if args.endpoint else ''}, bot workers={args.workers}, warm-up (model load + first answer) {warm:.1f} s"
    )
    print(
        "| phase | questions | ack p50 ms | ack p95 ms | ack max ms | final p50 s | final p95 s | final max s | unanswered |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    print(row("one at a time", seq))
    print(row(f"{args.concurrent} at once", conc))
    slow_acks = sum(1 for r in seq + conc if r["ack_s"] >= 3.0 or r["status"] != 200)
    print(f"\nacks >= 3 s or not 200: {slow_acks}; bot stats: {stats}")
    if stats["errors"]:
        print(
            f"FAIL: {stats['errors']} questions ended in the apology message, not an answer (see the log above)"
        )
    if args.json:
        args.json.write_text(
            json.dumps(
                {"llm": args.llm, "warmup_s": warm, "sequential": seq, "concurrent": conc, "stats": stats},
                indent=2,
            )
        )
    assistant.close()
    if slow_acks or stats["errors"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
