"""The model-written summary path through a real OpenAI-compatible client (``llm.endpoint``) against a
local fake server: documents are written concurrently with the configured adapter, every sentence is
verified (an invented one is dropped, the fact it displaced stands as extracted), the summary keeps
its word limit although the model is given more facts than fit, and eval-summaries reports it."""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from assistant.documents import Principals
from assistant.engine import Engine
from assistant.evaluation_summaries import run_task, table
from assistant.service import Assistant
from connectors.local_files import LocalFilesConnector
from tests.conftest import make_settings
from tests.fakes.hash_embedder import HashEmbedder

ADMIN = Principals(everything=True)
INVENTED = "Hotels are capped at $999 USD per night."

PAGES = {
    "policies/travel.md": "# Travel\n\nHotels are capped at $300 USD per night, including taxes and fees.\n\n"
    "- All flights must be booked through Navan at least 14 days before departure.\n"
    "- Meals are reimbursed up to $75 per day while travelling for work.\n",
    "policies/security.md": "# Security\n\nLaptops must lock after 5 minutes of inactivity.\n\n"
    "Lost laptops must be reported to #security within 24 hours of noticing the loss.\n",
    "policies/expenses.md": "# Expenses\n\nItemized receipts are required for every expense over $25.\n\n"
    "Expenses older than 90 days need approval by Finance before they are paid.\n",
}


class FakeChatServer:
    """POST /v1/chat/completions: states each listed fact in its first clause (what a terse model does),
    adds one invented sentence to the travel page; records request bodies and the most requests in flight."""

    def __init__(self, delay_s: float = 0.15) -> None:
        self.bodies: list[dict] = []
        self.in_flight = self.max_in_flight = 0
        lock = threading.Lock()
        fake = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                with lock:
                    fake.bodies.append(body)
                    fake.in_flight += 1
                    fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
                time.sleep(delay_s)
                user = body["messages"][-1]["content"]
                facts = re.findall(r"^- (.*)$", user, re.M)
                said = [re.split(r",| while | of noticing", f)[0].rstrip(".") + "." for f in facts]
                if "Document: Travel" in user:
                    said.append(INVENTED)
                data = json.dumps(
                    {
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": " ".join(said)},
                                "finish_reason": "stop",
                            }
                        ]
                    }
                ).encode()
                with lock:
                    fake.in_flight -= 1
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *a):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def close(self) -> None:
        self.httpd.shutdown()


@pytest.fixture
def served(tmp_path):
    folder = tmp_path / "docs"
    for rel, text in PAGES.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)
    fake = FakeChatServer()
    settings = make_settings(
        tmp_path / "data",
        llm={"endpoint": fake.url, "model": "qwen-base", "adapter": "summaries-lora"},
        summaries={"model_workers": 4},
    )
    engine = Engine.open(settings, embedder=HashEmbedder())
    engine.sync(LocalFilesConnector(folder, name="docs"))
    try:
        yield fake, Assistant(settings, engine=engine)
    finally:
        engine.close()
        fake.close()


def test_documents_are_written_at_once_with_the_adapter_and_every_sentence_is_verified(served):
    fake, a = served
    s = a.summarize(who=ADMIN, scope="policies/")
    assert len(fake.bodies) == 3, "one request per document (map step)"
    assert {b["model"] for b in fake.bodies} == {"summaries-lora"}, "the configured adapter writes"
    assert fake.max_in_flight > 1, "documents were written concurrently"
    text = s.body()
    assert "$999" not in text  # the invented sentence was checked against the page and dropped
    assert "Hotels are capped at $300 USD per night." in text  # the model's terse sentence, verified
    assert "Lost laptops must be reported to #security within 24 hours." in text
    assert s.verified == sum(len(b.sentences) for b in s.bullets) and s.checked == s.verified + 1
    assert "write" in s.timings_ms


def test_more_facts_than_fit_are_given_to_the_model_and_the_limit_still_holds(served):
    fake, a = served
    s = a.summarize(who=ADMIN, scope="policies/", max_words=40)
    assert s.words <= 40
    given = sum(len(re.findall(r"^- ", b["messages"][-1]["content"], re.M)) for b in fake.bodies)
    assert given > sum(len(b.sentences) for b in s.bullets), "the model got more facts than were shown"
    assert all(b.sentences for b in s.bullets)


def test_eval_summaries_reports_coverage_words_verified_and_time_for_the_model_path(served):
    _fake, a = served
    task = {
        "id": "policies",
        "scope": "policies/",
        "points": [
            {"point": "hotel cap", "must": ["$300 USD per night"]},
            {"point": "lost laptops", "must": ["#security", "24 hours"]},
            {"point": "not in the pages", "must": ["$12,345"]},
        ],
    }
    r = run_task(a, task, who=ADMIN, use_llm=True)
    assert (r.covered, r.points) == (2, 3) and r.missed == ["not in the pages"]
    assert r.verified == r.checked - 1 and 0 < r.words <= 250 and r.seconds > 0
    row = table([r]).splitlines()[2]
    assert row.startswith("| policies | 2/3 |") and f"{r.verified}/{r.checked}" in row


def test_the_prompt_asks_for_the_documents_share_of_the_words(served):
    fake, a = served
    a.summarize(who=ADMIN, scope="policies/", max_words=60)
    asked = [
        int(re.search(r"(\d+) words at most", b["messages"][0]["content"]).group(1)) for b in fake.bodies
    ]
    assert all(12 <= w <= 60 for w in asked) and sum(asked) <= 60 * 1.6
