"""An OpenAI-compatible HTTP server for a base model plus LoRA adapters (``assistant serve-llm``).

Endpoints: ``POST /v1/chat/completions`` (SSE streaming and plain JSON; temperature, top_p,
max_tokens / max_completion_tokens, stop), ``GET /v1/models`` (the base id and one id per adapter),
``GET /health`` (no auth; queue depth). The request's ``model`` picks the adapter: the base id (or
``base``) runs the plain model, an adapter name runs that adapter; requests for different adapters
share one batch. The engine under it (``build_engine(engine=...)``): "auto" = ``serving.ServingEngine``
(a compiled single-sequence path when alone, eager continuous batching otherwise), "slots" =
``slots.SlotEngine`` (continuous batching with a compiled decode step at every batch size), "batch" =
``batching.BatchEngine`` (eager continuous batching only). Bearer-token auth when an API key is set, a request size
limit, and every error in OpenAI's shape ``{"error": {"message", "type", "param", "code"}}``.
Back-pressure: a full queue answers 429 with ``Retry-After``; a client that disconnects cancels
its generation.

Not here: model loading decisions (``loading``/``cli``), the batching algorithm (``batching``).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from assistant.errors import ModelError
from assistant.llm.base import encode_chat
from assistant.llm.batching import BatchEngine, Event, QueueFull
from assistant.llm.serving import ServingEngine

log = logging.getLogger(__name__)


class _Part(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class _Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[_Part] | None = None

    def as_dict(self) -> dict:
        content = self.content
        if isinstance(content, list):
            content = "".join(p.text or "" for p in content if p.type == "text")
        return {"role": "system" if self.role == "developer" else self.role, "content": content or ""}


class _StreamOptions(BaseModel):
    include_usage: bool = False


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str
    messages: list[_Message] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: _StreamOptions | None = None
    n: int = Field(1, ge=1, le=1)


class APIError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type, code, param
        self.headers = headers or {}


def _error(
    status: int,
    message: str,
    *,
    type: str = "invalid_request_error",
    code: str | None = None,
    param: str | None = None,
    headers: dict | None = None,
) -> JSONResponse:
    return JSONResponse(
        {"error": {"message": message, "type": type, "param": param, "code": code}},
        status_code=status,
        headers=headers,
    )


@dataclass(frozen=True)
class ServerConfig:
    base_id: str
    api_key: str | None = None
    context_tokens: int = 4096
    default_max_tokens: int = 256
    max_body_bytes: int = 2_000_000


def create_app(engine: BatchEngine | ServingEngine, tokenizer, config: ServerConfig) -> FastAPI:
    """The FastAPI app serving ``engine`` (which already holds the model and its adapters)."""
    app = FastAPI(title="assistant LLM server", docs_url=None, redoc_url=None)
    adapters = sorted(engine.adapters)
    # an engine with a fixed KV capacity (slots) bounds prompt + answer below the model's context
    context_tokens = min(config.context_tokens, getattr(engine, "capacity", config.context_tokens))

    @app.middleware("http")
    async def guard(request: Request, call_next):  # auth and size limit before any parsing
        if request.url.path.startswith("/v1/"):
            if config.api_key:
                auth = request.headers.get("authorization", "")
                given = auth[7:] if auth.lower().startswith("bearer ") else ""
                if not hmac.compare_digest(given.encode(), config.api_key.encode()):
                    return _error(
                        401,
                        "Invalid or missing API key: send 'Authorization: Bearer <key>'.",
                        code="invalid_api_key",
                    )
            length = request.headers.get("content-length")
            if request.method == "POST" and not (length and length.isdigit()):
                # a body without a declared length could be any size: refuse rather than read it
                return _error(
                    411, "Send the request body with a Content-Length header.", code="length_required"
                )
            if length and length.isdigit() and int(length) > config.max_body_bytes:
                return _error(
                    413,
                    f"Request body over {config.max_body_bytes} bytes; send fewer or shorter messages.",
                    code="request_too_large",
                )
        return await call_next(request)

    @app.exception_handler(APIError)
    async def _api_error(request: Request, e: APIError):
        return _error(e.status, e.message, type=e.type, code=e.code, param=e.param, headers=e.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, e: RequestValidationError):
        first = e.errors()[0] if e.errors() else {}
        loc = ".".join(str(p) for p in first.get("loc", ())[1:])
        return _error(400, f"Invalid request: {loc}: {first.get('msg', 'bad value')}", param=loc or None)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, e: StarletteHTTPException):
        return _error(e.status_code, str(e.detail), code="not_found" if e.status_code == 404 else None)

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", **engine.stats()}

    @app.get("/v1/models")
    async def models() -> dict:
        ids = [config.base_id] + adapters
        return {
            "object": "list",
            "data": [{"id": i, "object": "model", "created": 0, "owned_by": "assistant"} for i in ids],
        }

    @app.post("/v1/chat/completions")
    async def chat(req: ChatRequest, request: Request):
        if req.model in (config.base_id, "base"):
            adapter = None
        elif req.model in engine.adapters:
            adapter = req.model
        else:
            raise APIError(
                404,
                f"The model {req.model!r} does not exist. Available: "
                f"{', '.join([config.base_id] + adapters)}.",
                code="model_not_found",
                param="model",
            )
        try:
            prompt = encode_chat(tokenizer, [m.as_dict() for m in req.messages])
        except ModelError as e:
            raise APIError(400, str(e), param="messages") from e
        room = context_tokens - len(prompt)
        if room < 1:
            raise APIError(
                400,
                f"The messages are {len(prompt)} tokens; this model's context is "
                f"{context_tokens}. Send less text.",
                code="context_length_exceeded",
                param="messages",
            )
        max_new = min(req.max_completion_tokens or req.max_tokens or config.default_max_tokens, room)
        stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[Event] = asyncio.Queue()

        def sink(ev: Event) -> None:  # called on the engine thread
            try:
                loop.call_soon_threadsafe(events.put_nowait, ev)
            except RuntimeError:  # the loop is gone (server shutting down)
                pass

        try:
            handle = engine.submit(
                prompt,
                max_new_tokens=max_new,
                temperature=req.temperature,
                top_p=req.top_p,
                stop=stop,
                adapter=adapter,
                sink=sink,
            )
        except QueueFull as e:
            raise APIError(
                429,
                str(e),
                type="rate_limit_error",
                code="queue_full",
                headers={"Retry-After": str(int(e.retry_after))},
            ) from e
        except ModelError as e:  # the engine refused this request (e.g. beyond its KV capacity)
            raise APIError(400, str(e), param="messages") from e
        rid = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())

        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            return StreamingResponse(
                _sse(events, handle, rid, created, req.model, include_usage),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache"},
            )

        parts: list[str] = []
        try:
            while True:
                try:
                    ev = await asyncio.wait_for(events.get(), timeout=0.5)
                except TimeoutError:
                    if await request.is_disconnected():
                        handle.cancel()
                        return _error(499, "Client closed the request.")
                    continue
                if ev.kind == "delta":
                    parts.append(ev.text)
                elif ev.kind == "error":
                    raise APIError(500, ev.text, type="server_error")
                else:
                    break
        finally:
            handle.cancel()  # no-op once finished; stops the work if we leave early
        return {
            "id": rid,
            "object": "chat.completion",
            "created": created,
            "model": req.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(parts)},
                    "finish_reason": _finish(ev.finish_reason),
                }
            ],
            "usage": _usage(ev),
        }

    return app


def _finish(reason: str | None) -> str:
    return "length" if reason == "length" else "stop"


def _usage(ev: Event) -> dict:
    return {
        "prompt_tokens": ev.prompt_tokens,
        "completion_tokens": ev.completion_tokens,
        "total_tokens": ev.prompt_tokens + ev.completion_tokens,
    }


async def _sse(events: asyncio.Queue, handle, rid: str, created: int, model: str, include_usage: bool):
    def chunk(delta: dict, finish: str | None = None, **extra: Any) -> str:
        body = {
            "id": rid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            **extra,
        }
        return f"data: {json.dumps(body)}\n\n"

    try:
        yield chunk({"role": "assistant", "content": ""})
        while True:
            ev = await events.get()
            if ev.kind == "delta":
                yield chunk({"content": ev.text})
            elif ev.kind == "error":
                yield f"data: {json.dumps({'error': {'message': ev.text, 'type': 'server_error', 'param': None, 'code': None}})}\n\n"
                break
            else:
                yield chunk({}, _finish(ev.finish_reason))
                if include_usage:
                    body = {
                        "id": rid,
                        "object": "chat.completion.chunk",
                        "created": created,
                        "model": model,
                        "choices": [],
                        "usage": _usage(ev),
                    }
                    yield f"data: {json.dumps(body)}\n\n"
                break
        yield "data: [DONE]\n\n"
    finally:
        handle.cancel()  # the client went away (or we finished): stop generating for it


def build_engine(
    base: str,
    adapters: dict[str, str],
    *,
    data_dir,
    device: str = "auto",
    dtype: str = "auto",
    quantize: str = "none",
    max_batch: int = 64,
    max_queue: int = 256,
    cache_dir=None,
    engine: str = "auto",
    context_tokens: int | None = None,
    warm_up: bool | None = None,
) -> tuple[BatchEngine | ServingEngine, Any, str]:
    """Load ``base`` ('bundled', .gguf or HF folder) and attach ``adapters`` {name: registered name or folder}.

    Returns (engine, tokenizer, base_id). Adapters trained on another base are refused. GGUF
    conversions are cached under ``cache_dir`` (settings.model_cache_dir; default: ``data_dir``).
    ``engine``: "auto" (``ServingEngine``: compiled solo path + batching), "slots" (``SlotEngine``:
    compiled continuous batching) or "batch" (eager batching only). ``context_tokens`` sizes the
    static KV caches (default: the model's context, at most 4096); ``warm_up`` (default: on CUDA)
    compiles and runs the served shapes before returning (the start-up cost is logged).
    """
    from pathlib import Path

    from assistant.llm.adapters import AdapterRegistry, attach_adapter, check_base
    from assistant.llm.loading import ensure_model_dir, load_model, model_fingerprint

    model_dir = ensure_model_dir(base, cache_dir=Path(cache_dir if cache_dir is not None else data_dir))
    model, tok = load_model(model_dir, device=device, dtype=dtype, quantize=quantize)
    fingerprint = model_fingerprint(model_dir)
    registry = AdapterRegistry(Path(data_dir))
    for name, spec in adapters.items():
        path = registry.resolve(spec)
        if path is None:
            raise ModelError(
                f"Adapter {name}={spec} resolves to no adapter; give a folder or a registered name."
            )
        check_base(path, expected=registry.fingerprint_of(path), loaded=fingerprint, name=name)
        model = attach_adapter(model, path, name)
    base_id = "bundled" if base == "bundled" else Path(base).name.removesuffix(".gguf")
    if base_id in adapters:
        raise ModelError(f"Adapter name {base_id!r} is the base model's id; pick another adapter name.")
    if engine not in ("auto", "slots", "batch"):
        raise ModelError(f"Unknown engine {engine!r}; use 'auto', 'slots' or 'batch'.")
    if engine == "batch":
        eng: BatchEngine | ServingEngine = BatchEngine(
            model, tok, adapters=list(adapters), max_batch=max_batch, max_queue=max_queue
        )
        return eng, tok, base_id
    limit = getattr(model.config, "max_position_embeddings", None) or 4096
    warm = warm_up if warm_up is not None else next(model.parameters()).device.type == "cuda"
    if engine == "slots":
        from assistant.llm.slots import SlotEngine

        slots = SlotEngine(
            model,
            tok,
            adapters=list(adapters),
            max_batch=max_batch,
            max_queue=max_queue,
            capacity=context_tokens or min(limit, 4096),
        )
        if warm:
            log.warning("warm-up (compile + every batch bucket) took %.1f s", slots.warm_up())
        return slots, tok, base_id
    eng = ServingEngine(
        model,
        tok,
        adapters=list(adapters),
        max_batch=max_batch,
        max_queue=max_queue,
        context_tokens=context_tokens or min(limit, 4096),
    )
    if warm:
        took = eng.warm_up()
        log.warning("warm-up (compile + served shapes) took %.1f s", took)
    return eng, tok, base_id


class ServerThread:
    """Run an app under uvicorn in a background thread (tests, notebooks); ``port=0`` picks a free port."""

    def __init__(self, app: FastAPI, *, host: str = "127.0.0.1", port: int = 0) -> None:
        import uvicorn

        self.server = uvicorn.Server(
            uvicorn.Config(
                app, host=host, port=port, log_level="warning", lifespan="off", timeout_graceful_shutdown=2
            )
        )
        self.thread = threading.Thread(target=self.server.run, name="llm-server", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise ModelError(f"The LLM server did not start on {host}:{port}.")
            time.sleep(0.02)
        sock = self.server.servers[0].sockets[0]
        self.host, self.port = sock.getsockname()[:2]
        self.url = f"http://{self.host}:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
