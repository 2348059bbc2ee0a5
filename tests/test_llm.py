"""The model layer: helpers, loading, the adapter registry, LocalLLM and the remote client's HTTP rules."""
# ruff: noqa: F811  (pytest fixtures imported from tests.llm_fixtures are parameters here)

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from assistant.errors import ConfigError, ModelError
from assistant.llm.adapters import AdapterRegistry
from assistant.llm.base import TextStopper, clamp_new_tokens
from tests.llm_fixtures import fresh_model, llm_model_dir, lora_dirs  # noqa: F401  (fixtures)

CAPITAL = [{"role": "user", "content": "What is the capital of France?"}]


# -- pure helpers -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "pieces,stop,expected",
    [
        (["Hello", " wor", "ld"], None, "Hello world"),
        (["The answer", "\nQues", "tion: next"], ["\nQuestion:"], "The answer"),
        (["a\nQ", "x"], ["\nQuestion:"], "a\nQx"),  # a partial stop marker that does not complete is released
        (["stop at ", "END", " never shown"], ["END"], "stop at "),
    ],
)
def test_text_stopper_cuts_at_stop_and_never_leaks_a_partial_marker(pieces, stop, expected):
    s, text, shown = TextStopper(stop), "", []
    for p in pieces:
        text += p
        shown.append(s.feed(text))
        if s.stopped:
            break
    shown.append(s.final())
    assert "".join(shown) == expected
    if stop:
        assert all(not d.endswith(stop[0][:2]) or d == expected for d in shown if d)


def test_clamp_new_tokens():
    assert clamp_new_tokens(100, 50, 1000) == 50
    assert clamp_new_tokens(990, 50, 1000) == 10
    with pytest.raises(ModelError, match="context is 1000 tokens"):
        clamp_new_tokens(1000, 50, 1000)


# -- loading ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_bundled_model_converts_once_into_a_complete_folder(llm_model_dir):
    from assistant.llm.loading import bundled_gguf_path, ensure_model_dir, model_fingerprint

    assert bundled_gguf_path().suffix == ".gguf"
    assert (llm_model_dir / "config.json").is_file() and (llm_model_dir / "assistant-model.json").is_file()
    assert ensure_model_dir("bundled", data_dir=llm_model_dir.parent.parent) == llm_model_dir  # cached
    assert (
        ensure_model_dir(str(llm_model_dir), data_dir=Path("/nonexistent")) == llm_model_dir
    )  # HF folder as is
    assert model_fingerprint(llm_model_dir) == model_fingerprint(llm_model_dir)


def test_unknown_model_path_is_a_clear_error(tmp_path):
    from assistant.llm.loading import ensure_model_dir

    with pytest.raises(ModelError, match="not found"):
        ensure_model_dir(str(tmp_path / "nope"), data_dir=tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="no config.json"):
        ensure_model_dir(str(tmp_path / "empty"), data_dir=tmp_path)


# -- registry -----------------------------------------------------------------------------------
@pytest.mark.slow
def test_registry_round_trip(tmp_path, lora_dirs):
    reg = AdapterRegistry(tmp_path)
    assert reg.list() == [] and reg.active() is None
    r1 = reg.register(
        "hr",
        lora_dirs["hr"],
        base_fingerprint="fp1",
        data_fingerprint="d1",
        params={"r": 8},
        metrics={"fact": 0.5},
    )
    r2 = reg.register(
        "hr", lora_dirs["hr"], base_fingerprint="fp1", data_fingerprint="d2", params={"r": 8}, metrics={}
    )
    assert (r1.version, r2.version) == (1, 2)
    assert (r2.path / "adapter_config.json").is_file() and r2.path == tmp_path / "adapters" / "hr" / "v2"
    again = AdapterRegistry(tmp_path)  # persisted
    assert [(r.name, r.version, r.data_fingerprint, r.params) for r in again.list()] == [
        ("hr", 1, "d1", {"r": 8}),
        ("hr", 2, "d2", {"r": 8}),
    ]
    assert again.resolve("hr") == r2.path
    assert again.resolve(None) is None and again.resolve("none") is None
    assert again.resolve(str(lora_dirs["eng"])) == lora_dirs["eng"]
    again.use("hr")
    assert AdapterRegistry(tmp_path).active() == "hr" and again.resolve("default") == r2.path
    again.use("none")
    assert again.resolve("default") is None
    with pytest.raises(ConfigError, match="No adapter named"):
        again.use("sales")
    with pytest.raises(ConfigError, match="Unknown adapter"):
        again.resolve("sales")
    with pytest.raises(ConfigError, match="not allowed"):
        again.register("bad name!", lora_dirs["hr"], base_fingerprint="x", data_fingerprint="y")
    with pytest.raises(ModelError, match="not a peft adapter"):
        again.register("x", tmp_path, base_fingerprint="x", data_fingerprint="y")


# -- the local model ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def local_llm(llm_model_dir, lora_dirs, tmp_path_factory):
    from assistant.llm.loading import model_fingerprint
    from assistant.llm.local import LocalLLM

    model, tok = fresh_model(llm_model_dir)
    reg = AdapterRegistry(tmp_path_factory.mktemp("data"))
    reg.register(
        "hr", lora_dirs["hr"], base_fingerprint=model_fingerprint(llm_model_dir), data_fingerprint="d"
    )
    reg.register("alien", lora_dirs["eng"], base_fingerprint="another-base", data_fingerprint="d")
    return LocalLLM(
        model, tok, context_tokens=2048, fingerprint=model_fingerprint(llm_model_dir), registry=reg
    )


@pytest.mark.slow
def test_greedy_generation_is_deterministic_and_answers(local_llm):
    a = local_llm.generate(CAPITAL, max_new_tokens=12)
    assert a == local_llm.generate(CAPITAL, max_new_tokens=12)
    assert "Paris" in a


@pytest.mark.slow
def test_stream_equals_generate_and_stop_strings_cut(local_llm):
    full = local_llm.generate(CAPITAL, max_new_tokens=12)
    deltas = list(local_llm.stream(CAPITAL, max_new_tokens=12))
    assert len(deltas) > 1 and "".join(deltas) == full
    cut = local_llm.generate(CAPITAL, max_new_tokens=12, stop=["Paris"])
    assert cut == full[: full.index("Paris")]


@pytest.mark.slow
def test_context_is_never_overflowed(local_llm):
    n = local_llm.count_message_tokens(CAPITAL)
    assert n > local_llm.count_tokens(CAPITAL[0]["content"])  # the chat template counts too
    old = local_llm.context_tokens
    try:
        local_llm.context_tokens = n + 3
        out = local_llm.generate(CAPITAL, max_new_tokens=50)
        assert 0 < local_llm.count_tokens(out) <= 4
        local_llm.context_tokens = n
        with pytest.raises(ModelError, match="Send fewer or shorter sources"):
            local_llm.generate(CAPITAL, max_new_tokens=50)
    finally:
        local_llm.context_tokens = old


@pytest.mark.slow
def test_adapter_selection_changes_output_and_base_comes_back(local_llm):
    base = local_llm.generate(CAPITAL, max_new_tokens=10)
    hr = local_llm.generate(CAPITAL, max_new_tokens=10, adapter="hr")
    assert hr != base
    assert local_llm.generate(CAPITAL, max_new_tokens=10, adapter=None) == base
    assert local_llm.generate(CAPITAL, max_new_tokens=10, adapter="hr") == hr
    assert "hr" in local_llm.adapter_names()


@pytest.mark.slow
def test_adapter_for_another_base_is_refused(local_llm):
    with pytest.raises(ModelError, match="trained on a base model with fingerprint another-base"):
        local_llm.generate(CAPITAL, max_new_tokens=4, adapter="alien")


@pytest.mark.slow
def test_load_llm_picks_local_or_remote(tmp_path, llm_model_dir):
    from assistant.llm import load_llm
    from assistant.llm.local import LocalLLM
    from assistant.llm.remote import RemoteLLM
    from assistant.settings import LLMSettings

    remote = load_llm(
        LLMSettings(endpoint="http://127.0.0.1:9/v1", model="hr", context_tokens=4096), data_dir=tmp_path
    )
    assert isinstance(remote, RemoteLLM) and remote.context_tokens == 4096
    local = load_llm(LLMSettings(model=str(llm_model_dir), adapter="none", device="cpu"), data_dir=tmp_path)
    assert isinstance(local, LocalLLM) and local.adapter_names() == []


# -- the remote client's HTTP behaviour (against a scripted fake server) ------------------------
class _Fake:
    """A chat-completions endpoint that plays back scripted (status, headers, body) answers."""

    def __init__(self, script):
        self.script, self.requests = list(script), []
        fake = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                fake.requests.append((self.path, dict(self.headers), body))
                status, headers, payload = fake.script.pop(0)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *a):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def close(self):
        self.httpd.shutdown()


def _answer(text):
    return {
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]
    }


def test_remote_retries_429_honouring_retry_after_then_answers():
    from assistant.llm.remote import RemoteLLM

    fake = _Fake(
        [
            (429, {"Retry-After": "0"}, {"error": {"message": "busy"}}),
            (503, {}, {"error": {"message": "down"}}),
            (200, {}, _answer("Paris. END more")),
        ]
    )
    try:
        llm = RemoteLLM(endpoint=fake.url, model="hr", api_key="sekret", backoff_s=0.01)
        assert llm.generate(CAPITAL, max_new_tokens=5, stop=["END"], adapter="eng") == "Paris. "
        assert len(fake.requests) == 3
        path, headers, body = fake.requests[-1]
        assert path == "/v1/chat/completions" and headers["Authorization"] == "Bearer sekret"
        assert body["model"] == "eng" and body["max_tokens"] == 5 and body["stop"] == ["END"]
    finally:
        fake.close()


def test_remote_stream_parses_sse_and_reports_auth_errors():
    from assistant.llm.remote import RemoteLLM

    sse = (
        "".join(
            f"data: {json.dumps({'choices': [{'index': 0, 'delta': {'content': t}}]})}\n\n"
            for t in ["Par", "is", "."]
        )
        + "data: [DONE]\n\n"
    )
    fake = _Fake(
        [
            (200, {"content-type": "text/event-stream"}, sse),
            (401, {}, {"error": {"message": "bad key", "type": "invalid_request_error"}}),
        ]
    )
    try:
        llm = RemoteLLM(endpoint=fake.url, model="base", backoff_s=0.01)
        assert "".join(llm.stream(CAPITAL, max_new_tokens=5)) == "Paris."
        assert fake.requests[0][2]["stream"] is True and fake.requests[0][2]["model"] == "base"
        with pytest.raises(ModelError, match="rejected the API key"):
            llm.generate(CAPITAL)
    finally:
        fake.close()


def test_remote_refuses_a_prompt_beyond_the_context():
    from assistant.llm.remote import RemoteLLM

    llm = RemoteLLM(endpoint="http://127.0.0.1:9/v1", model="m", context_tokens=256)
    with pytest.raises(ModelError, match="context"):
        llm.generate([{"role": "user", "content": "word " * 400}])


def test_nf4_on_cpu_and_bad_adapter_flags_are_clear_errors(tmp_path):
    from assistant.llm.cli import parse_adapters
    from assistant.llm.loading import load_model

    with pytest.raises(ModelError, match="needs a CUDA GPU"):
        load_model(tmp_path, device="cpu", quantize="nf4")
    assert parse_adapters(["hr=/adapters/hr", "eng"]) == {"hr": "/adapters/hr", "eng": "eng"}
    with pytest.raises(ConfigError, match="given twice"):
        parse_adapters(["hr=/a", "hr=/b"])
