"""Load test of the Slack bot: C concurrent askers for N seconds against the fake Slack.

    python scripts/load_bot.py                          # 50 askers, 120 s, instant stand-in model
    python scripts/load_bot.py --seconds 30 --concurrency 20 --llm none

Each asker is a thread that, in its own channel (5 members drawn from 200 people), mentions the bot
with a question, waits for the final answer, and repeats. One delivery in ``--retry-every`` is sent
again with ``X-Slack-Retry-Num`` (as Slack does after a slow ack). Checked at the end:
- every event acknowledged with HTTP 200 in < 3 s,
- every question answered exactly once (one bot reply per thread, in its final state),
- memory stable: resident set size after warm-up vs. at the end (bot, fake Slack and the load
  generator share this one process, so the figure is an upper bound for the bot).
Prints a table; exits non-zero when a check fails. The corpus is the sample documents; the default
model is the instant stand-in (``--llm scripted``), so the numbers are about the bot, not the model.
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scripts.bench_bot import QUESTIONS, pct


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--concurrency", type=int, default=50)
    ap.add_argument("--workers", type=int, default=8, help="the bot's worker threads")
    ap.add_argument("--llm", choices=["scripted", "none", "bundled"], default="scripted")
    ap.add_argument("--retry-every", type=int, default=10, help="resend every n-th event as a Slack retry")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--log", type=Path, help="write the bot's INFO log here (duplicates, retries, errors)")
    args = ap.parse_args()

    from assistant.service import Assistant
    from assistant.settings import load_settings
    from connectors.local_files import LocalFilesConnector
    from tests.fakes.slack_bot_support import (
        BotRig,
        bot_messages,
        copy_first_source_llm,
        is_final,
        wait_final,
    )

    if args.log:
        logging.basicConfig(
            filename=args.log, level=logging.INFO, format="%(asctime)s %(threadName)s %(name)s: %(message)s"
        )
    rnd = random.Random(args.seed)
    sample = REPO / "assistant" / "sample_docs"
    overrides = {"data_dir": tempfile.mkdtemp(prefix="load-bot-"), "log_level": "ERROR"}
    if args.llm == "none":
        overrides["llm"] = {"model": "none"}
    settings = load_settings(environ={}, overrides=overrides)
    assistant = Assistant(settings, **({"llm": copy_first_source_llm()} if args.llm == "scripted" else {}))
    assistant.engine.sync(LocalFilesConnector(sample, name="sample", acl_file=sample / "acl.toml"))
    proc = psutil.Process()

    with BotRig(settings, assistant, workers=args.workers) as rig:
        fake = rig.fake
        people = [fake.add_user(f"person{i}", email=f"person{i}@northwind.example") for i in range(200)]
        channels = [
            fake.add_channel(f"load-{i}", members=rnd.sample(people, 5)) for i in range(args.concurrency)
        ]
        sent: list[tuple[str, str]] = []  # (channel, thread ts)
        acks: list[float] = []
        bad_status: list[int] = []
        finals: list[float] = []
        lock = threading.Lock()
        stop_at = time.perf_counter() + args.seconds
        rss: list[tuple[float, int]] = []
        counter = [0]

        def asker(i: int) -> None:
            r = random.Random(args.seed * 1000 + i)
            ch = channels[i]
            members = fake.channels[ch].members
            while time.perf_counter() < stop_at:
                user = r.choice([m for m in members if m != fake.bot_user])
                ev = rig.mention(user, ch, r.choice(QUESTIONS))
                t0 = time.perf_counter()
                status, _, ack_s = rig.slack.event(ev)
                with lock:
                    counter[0] += 1
                    resend = counter[0] % args.retry_every == 0
                    sent.append((ch, ev["event"]["ts"]))
                    acks.append(ack_s)
                    if status != 200:
                        bad_status.append(status)
                if resend:
                    status, _, ack_s = rig.slack.event(ev, retry_num=1)
                    with lock:
                        acks.append(ack_s)
                        if status != 200:
                            bad_status.append(status)
                done = wait_final(fake, ch, ev["event"]["ts"], timeout=300, poll_s=0.05)
                if done:
                    with lock:
                        finals.append(done - t0)

        def sampler() -> None:
            t0 = time.perf_counter()
            while time.perf_counter() < stop_at + 5:
                rss.append((time.perf_counter() - t0, proc.memory_info().rss))
                time.sleep(2.0)

        threads = [threading.Thread(target=asker, args=(i,), daemon=True) for i in range(args.concurrency)]
        mon = threading.Thread(target=sampler, daemon=True)
        mon.start()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        rig.wait(300)
        mon.join(timeout=10)

        replies = [bot_messages(fake, ch, ts) for ch, ts in sent]
        once = sum(1 for r in replies if len(r) == 1 and is_final(r[0]))
        dupes = sum(1 for r in replies if len(r) > 1)
        missing_at = [sent[i] for i, r in enumerate(replies) if not r or not any(is_final(m) for m in r)]
        missing = len(missing_at)
        for ch, ts in missing_at[:10]:
            print(f"unanswered: channel {ch} ts {ts}: {[m.get('text') for m in bot_messages(fake, ch, ts)]}")
        stats = dict(rig.bot.stats)

    warm = [b for t, b in rss if t >= min(20.0, args.seconds / 4)] or [b for _, b in rss]
    rss_start, rss_end, rss_max = warm[0] / 2**20, warm[-1] / 2**20, max(warm) / 2**20
    slow = sum(1 for a in acks if a >= 3.0)
    print(
        f"\nSlack bot load test — {args.concurrency} concurrent askers for {args.seconds:.0f} s, llm={args.llm}, "
        f"bot workers={args.workers}"
    )
    print("| metric | value |")
    print("|---|---|")
    print(f"| questions asked | {len(sent)} ({len(sent) / args.seconds:.1f}/s) |")
    print(f"| deliveries (incl. {len(acks) - len(sent)} Slack-style retries) | {len(acks)} |")
    print(
        f"| ack p50 / p95 / max | {pct(acks, 50) * 1000:.0f} / {pct(acks, 95) * 1000:.0f} / {max(acks) * 1000:.0f} ms |"
    )
    print(f"| acks >= 3 s / non-200 | {slow} / {len(bad_status)} |")
    print(f"| answered exactly once | {once} / {len(sent)} (duplicates {dupes}, unanswered {missing}) |")
    print(f"| event → final answer p50 / p95 | {pct(finals, 50):.2f} / {pct(finals, 95):.2f} s |")
    print(f"| RSS after warm-up → end (max) | {rss_start:.0f} → {rss_end:.0f} MiB ({rss_max:.0f}) |")
    print(f"| bot stats | {stats} |")
    ok = (
        slow == 0
        and not bad_status
        and once == len(sent)
        and not stats["errors"]
        and rss_end <= rss_start * 1.25 + 64
    )
    print("\nRESULT:", "PASS" if ok else "FAIL")
    assistant.close()
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
