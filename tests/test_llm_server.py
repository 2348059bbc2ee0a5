"""The OpenAI-compatible server, driven by the official ``openai`` client and by our RemoteLLM.

Every test runs against each decoding engine the server offers, on CPU (their non-compiled paths):
"auto" (solo ``generate`` when alone, continuous batching otherwise) and "slots" (fixed KV slots).
"""
# ruff: noqa: F811  (pytest fixtures imported from tests.llm_fixtures are parameters here)

from __future__ import annotations

import threading
import time

import httpx
import pytest

from assistant.llm.server import ServerConfig, ServerThread, create_app
from tests.llm_fixtures import fresh_model, llm_model_dir, lora_dirs  # noqa: F401  (fixtures)

openai = pytest.importorskip("openai")
pytestmark = pytest.mark.slow  # every test here runs the bundled model
KEY = "test-key"
Q = [{"role": "user", "content": "What is the capital of France?"}]
QS = ["What is the capital of France?", "Name three colors.", "What is 2+2?", "Say hello."]


def make_engine(kind: str, model, tok, *, adapters=(), max_batch: int = 8, max_queue: int = 16):
    from assistant.llm.batching import BatchEngine
    from assistant.llm.serving import ServingEngine
    from assistant.llm.slots import SlotEngine

    kw = {"adapters": list(adapters), "max_batch": max_batch, "max_queue": max_queue}
    if kind == "auto":
        return ServingEngine(model, tok, context_tokens=2048, **kw)
    if kind == "slots":
        return SlotEngine(model, tok, capacity=2048, **kw)
    return BatchEngine(model, tok, **kw)


@pytest.fixture(scope="module", params=["auto", "slots"])
def server(request, llm_model_dir, lora_dirs):
    from assistant.llm.adapters import attach_adapter

    model, tok = fresh_model(llm_model_dir)
    for name, path in lora_dirs.items():
        model = attach_adapter(model, path, name)
    engine = make_engine(request.param, model, tok, adapters=list(lora_dirs))
    srv = ServerThread(
        create_app(
            engine,
            tok,
            ServerConfig(base_id="bundled", api_key=KEY, context_tokens=2048, max_body_bytes=20_000),
        )
    )
    yield srv
    srv.stop()
    engine.close()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0)


def ask(client, content, model="bundled", **kw):
    r = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": content}],
        max_tokens=kw.pop("max_tokens", 10),
        temperature=0,
        **kw,
    )
    return r.choices[0].message.content


def test_models_lists_base_and_adapters(client):
    assert [m.id for m in client.models.list()] == ["bundled", "eng", "hr"]


def test_completion_and_stream_agree(client):
    r = client.chat.completions.create(model="bundled", messages=Q, max_tokens=10, temperature=0)
    text = r.choices[0].message.content
    assert "Paris" in text and r.usage.completion_tokens <= 10 and r.usage.prompt_tokens > 10
    chunks = list(
        client.chat.completions.create(model="bundled", messages=Q, max_tokens=10, temperature=0, stream=True)
    )
    deltas = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(deltas) > 1 and "".join(deltas) == text
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    cut = client.chat.completions.create(
        model="bundled", messages=Q, max_tokens=10, temperature=0, stop=["Paris"]
    )
    assert cut.choices[0].message.content == text[: text.index("Paris")]


def test_adapter_selection_changes_output_and_matches_the_local_model(client, llm_model_dir, lora_dirs):
    from assistant.llm.local import LocalLLM

    base, hr = ask(client, QS[0]), ask(client, QS[0], model="hr")
    assert hr != base
    model, tok = fresh_model(llm_model_dir)
    local = LocalLLM(model, tok)
    local.add_adapter("hr", lora_dirs["hr"])
    # the server's fused multi-adapter path gives exactly peft's single-adapter result
    assert local.generate(Q, max_new_tokens=10, adapter="hr") == hr


def test_wrong_key_is_rejected_in_openai_error_shape(server):
    bad = openai.OpenAI(base_url=server.url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    r = httpx.post(server.url + "/v1/chat/completions", json={"model": "bundled", "messages": Q})
    assert r.status_code == 401
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    assert r.json()["error"]["code"] == "invalid_api_key"


@pytest.mark.parametrize(
    "body,status,code",
    [
        ({"model": "sales", "messages": Q}, 404, "model_not_found"),
        (
            {"model": "bundled", "messages": [{"role": "user", "content": "word " * 5000}]},
            413,
            "request_too_large",
        ),
        ({"model": "bundled", "messages": []}, 400, None),
    ],
)
def test_bad_requests_get_clean_errors(server, body, status, code):
    r = httpx.post(server.url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == status and "message" in r.json()["error"]
    if code:
        assert r.json()["error"]["code"] == code


def test_concurrent_requests_match_their_results_alone(client):
    jobs = [(q, m) for q, m in zip(QS, ["bundled", "hr", "bundled", "eng"])]
    alone = [ask(client, q, model=m) for q, m in jobs]
    together: list[str | None] = [None] * len(jobs)

    def run(i):
        together[i] = ask(client, jobs[i][0], model=jobs[i][1])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert together == alone


@pytest.mark.parametrize("kind", ["batch", "auto", "slots"])
def test_full_queue_answers_429_and_disconnect_cancels(llm_model_dir, kind):
    model, tok = fresh_model(llm_model_dir)
    engine = make_engine(kind, model, tok, max_batch=1, max_queue=1)
    srv = ServerThread(create_app(engine, tok, ServerConfig(base_id="bundled")))
    c = openai.OpenAI(base_url=srv.url + "/v1", api_key="none", max_retries=0)
    try:
        long = c.chat.completions.create(
            model="bundled",
            messages=[{"role": "user", "content": "Tell a long story."}],
            max_tokens=500,
            temperature=0,
            stream=True,
        )
        next(iter(long))  # the first request now runs (the batch holds one)
        waiting = threading.Thread(target=ask, args=(c, QS[2]))
        waiting.start()
        deadline = time.monotonic() + 30
        while httpx.get(srv.url + "/health").json()["waiting"] < 1:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        r = httpx.post(srv.url + "/v1/chat/completions", json={"model": "bundled", "messages": Q})
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert r.json()["error"]["type"] == "rate_limit_error"
        long.close()  # the client goes away: its generation stops and the waiting request runs
        waiting.join(timeout=60)
        assert not waiting.is_alive()
        assert httpx.get(srv.url + "/health").json() | {} and engine.stats()["running"] == 0
    finally:
        srv.stop()
        engine.close()


def test_remote_client_end_to_end(server, client):
    from assistant.llm.remote import RemoteLLM

    remote = RemoteLLM(endpoint=server.url + "/v1", model="bundled", api_key=KEY, context_tokens=2048)
    assert remote.generate(Q, max_new_tokens=10) == ask(client, QS[0])
    assert "".join(remote.stream(Q, max_new_tokens=10, adapter="hr")) == ask(client, QS[0], model="hr")
    assert remote.adapter_names() == ["eng", "hr"]


def test_answering_path_uses_the_server_through_llm_endpoint(server, tmp_path, embedder):
    from assistant.documents import Principals
    from assistant.engine import Engine
    from assistant.service import Assistant
    from connectors.local_files import LocalFilesConnector
    from tests.conftest import SAMPLE_DOCS, make_settings

    settings = make_settings(
        tmp_path / "data",
        llm={"endpoint": server.url + "/v1", "api_key": KEY, "model": "bundled", "adapter": "none"},
    )
    eng = Engine.open(settings, embedder=embedder)
    try:
        eng.sync(LocalFilesConnector(SAMPLE_DOCS, name="sample", acl_file=SAMPLE_DOCS / "acl.toml"))
        before = httpx.get(server.url + "/health").json()["served"]
        ans = Assistant(settings, engine=eng).ask(
            "How long is parental leave for the primary caregiver?",
            who=Principals(email="bob@northwind.example"),
        )
        assert httpx.get(server.url + "/health").json()["served"] > before  # the model ran on the server
        assert not ans.refused and "16 weeks" in ans.answer
        assert ans.citations[0].path == "handbook/parental-leave.md"
    finally:
        eng.close()


@pytest.mark.parametrize("kind", ["auto", "slots", "batch"])
def test_build_engine_builds_each_engine_and_refuses_unknown_ones(llm_model_dir, tmp_path, kind):
    from assistant.errors import ModelError
    from assistant.llm.base import encode_chat
    from assistant.llm.server import build_engine

    engine, tok, base_id = build_engine(
        str(llm_model_dir),
        {},
        data_dir=tmp_path,
        device="cpu",
        engine=kind,
        context_tokens=1024,
        warm_up=False,
    )
    try:
        assert (
            type(engine).__name__
            == {"auto": "ServingEngine", "slots": "SlotEngine", "batch": "BatchEngine"}[kind]
        )
        assert "Paris" in engine.submit(encode_chat(tok, Q), max_new_tokens=8).result()
    finally:
        engine.close()
    with pytest.raises(ModelError, match="Unknown engine"):
        build_engine(str(llm_model_dir), {}, data_dir=tmp_path, device="cpu", engine="vllm")


def test_a_fixed_kv_capacity_bounds_requests_with_clean_answers(llm_model_dir):
    from assistant.llm.slots import SlotEngine

    model, tok = fresh_model(llm_model_dir)
    engine = SlotEngine(model, tok, max_batch=2, capacity=64)
    srv = ServerThread(create_app(engine, tok, ServerConfig(base_id="bundled", context_tokens=2048)))
    c = openai.OpenAI(base_url=srv.url + "/v1", api_key="none", max_retries=0)
    try:
        r = c.chat.completions.create(model="bundled", messages=Q, max_tokens=500, temperature=0)
        assert r.usage.prompt_tokens + r.usage.completion_tokens <= 64  # clamped to the capacity, not a 500
        with pytest.raises(openai.BadRequestError, match="context is 64"):
            c.chat.completions.create(
                model="bundled", messages=[{"role": "user", "content": "word " * 80}], max_tokens=5
            )
    finally:
        srv.stop()
        engine.close()
