"""Slow clients and forged requests against the bot's HTTP endpoint (127.0.0.1 only; stops by itself).

    python scripts/bench_slow_clients.py                      # 200 slow clients, 20 s
    python scripts/bench_slow_clients.py --clients 500 --seconds 30

Starts the bot (empty index, the fake Slack) behind ``serve_http`` with the default limits, then:
1. opens ``--clients`` connections that send their bytes one at a time, every ``--drip-s`` seconds:
   half never finish the request head (slowloris), half send a whole head announcing a 100 kB body
   and then dribble it;
2. while they are open, sends a signed ``url_verification`` request every 0.25 s and a signed
   ``app_mention`` every second, and times each answer;
3. afterwards sends forged requests (bad signature: 500 kB with a newline and a fake log entry, and
   10 MB) and counts what reached the log.
Reports: signed requests answered / sent and their latency (p50, max), how long a slow client was
held before the server cut it off (each reconnects at once), the bot's threads, and the log bytes per forged request.
Exits non-zero when a signed request was not answered. Every loop is bounded by ``--seconds``.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def slow_client(
    host: str, port: int, prefix: bytes, drip: bytes, drip_s: float, deadline: float, held: list[float]
) -> None:
    """Send ``prefix`` at once, then ``drip`` a byte every ``drip_s``; when the server cuts the
    connection, reconnect (as an attacker would) — until ``deadline``. ``held``: seconds per connection."""
    while time.monotonic() < deadline:
        t0 = time.monotonic()
        try:
            with socket.create_connection((host, port), timeout=5) as s:
                s.settimeout(drip_s)
                s.sendall(prefix)
                for b in drip:
                    if time.monotonic() > deadline:
                        return
                    s.sendall(bytes([b]))
                    try:
                        s.recv(4096)  # b"" (closed) or a 408: either way the server gave up on us
                        break
                    except TimeoutError:
                        pass
        except OSError:
            pass
        held.append(time.monotonic() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--drip-s", type=float, default=0.5, help="seconds between two bytes of a slow client")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()

    from slack_sdk import WebClient

    from assistant.service import Assistant
    from assistant.settings import load_settings
    from assistant.slackbot.app import create_app, serve_http
    from tests.fakes.slack import FakeSlack
    from tests.fakes.slack_bot_support import SIGNING_SECRET, SlackDelivery, northwind_world

    log_buf = io.StringIO()
    handler = logging.StreamHandler(log_buf)
    handler.setLevel(logging.DEBUG)
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)

    with tempfile.TemporaryDirectory() as tmp, FakeSlack() as fake:
        w = northwind_world(fake)
        settings = load_settings(
            environ={},
            overrides={
                "data_dir": str(Path(tmp) / "data"),
                "llm": {"model": "none"},
                "slack": {"signing_secret": SIGNING_SECRET, "api_url": fake.url},
            },
        )
        assistant = Assistant(settings, llm=None)
        app = create_app(settings, assistant, WebClient(token=fake.token, base_url=fake.url), workers=4)
        server = serve_http(app, host="127.0.0.1", port=0).start()
        slack = SlackDelivery(server.url, timeout=10)
        limits = server.limits
        try:
            deadline = time.monotonic() + args.seconds
            held: list[float] = []
            line = b"POST /slack/events HTTP/1.1\r\n"
            rest_of_head = b"Host: x\r\nContent-Type: application/json\r\nX-Pad: " + b"a" * 400
            head = line + b"Host: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
            kinds = [(line, rest_of_head), (head, b"{" + b" " * 400)]  # slow head / slow body
            slow = [
                threading.Thread(
                    target=slow_client,
                    daemon=True,
                    args=(server.host, server.port, *kinds[i % 2], args.drip_s, deadline, held),
                )
                for i in range(args.clients)
            ]
            for t in slow:
                t.start()
            time.sleep(1.0)
            bot_threads = sum(1 for t in threading.enumerate() if t.name.startswith("slackbot"))
            sent = answered = 0
            lat: list[float] = []
            mentions = 0
            next_mention = time.monotonic()
            stop_at = deadline - 2.0
            while time.monotonic() < stop_at:
                body = json.dumps({"type": "url_verification", "token": "t", "challenge": f"c{sent}"})
                status, text, secs = slack.post(body, "application/json")
                sent += 1
                if status == 200 and f"c{sent - 1}" in text:
                    answered += 1
                    lat.append(secs)
                if time.monotonic() >= next_mention:
                    ev = fake.message_event(
                        w.general, w.bob, f"<@{fake.bot_user}> how do I get a laptop?", mention=True
                    )
                    status, _, secs = slack.event(ev)
                    sent += 1
                    mentions += 1
                    if status == 200:
                        answered += 1
                        lat.append(secs)
                    next_mention += 1.0
                time.sleep(0.25)
            for t in slow:
                t.join(timeout=max(0.0, deadline - time.monotonic()) + 1.0)

            log_buf.truncate(0)
            log_buf.seek(0)
            forged = json.dumps(
                {
                    "type": "event_callback",
                    "event": {"type": "app_mention", "text": "x" * 500_000},
                    "note": "ok\n2026-01-01 INFO assistant: admin logged in",
                }
            )
            forged_status = slack.post(forged, "application/json", secret="forged")[0]
            forged_log = log_buf.getvalue()
            log_buf.truncate(0)
            log_buf.seek(0)
            try:
                big_status = slack.post("x" * 10_000_000, "application/json", secret="forged")[0]
            except OSError as e:  # the server answered 413 and closed before the upload finished
                big_status = f"closed ({type(e).__name__})"
            big_log = log_buf.getvalue()
            assert app.assistant_bot.wait_idle(60)
        finally:
            server.close()
            app.assistant_bot.close()
            assistant.close()

    figures = {
        "slow_clients": args.clients,
        "seconds": args.seconds,
        "drip_s": args.drip_s,
        "limits": {
            "header_timeout_s": limits.header_timeout_s,
            "body_timeout_s": limits.body_timeout_s,
            "max_body_bytes": limits.max_body_bytes,
            "max_connections": limits.max_connections,
        },
        "signed_sent": sent,
        "signed_answered": answered,
        "mentions": mentions,
        "latency_p50_ms": round(pct(lat, 0.5) * 1000, 1),
        "latency_max_ms": round(max(lat) * 1000, 1) if lat else None,
        "slow_client_held_p50_s": round(pct(held, 0.5), 2),
        "slow_client_held_max_s": round(max(held), 2) if held else None,
        "slow_connections_made": len(held),
        "bot_threads_under_load": bot_threads,
        "forged_500kB": {
            "status": forged_status,
            "log_bytes": len(forged_log),
            "body_in_log": "admin logged in" in forged_log or "x" * 100 in forged_log,
            "log_lines": forged_log.count("\n"),
        },
        "forged_10MB": {"status": big_status, "log_bytes": len(big_log)},
    }
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    sys.exit(0 if sent and answered == sent else 1)


if __name__ == "__main__":
    main()
