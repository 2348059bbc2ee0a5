"""A client for any OpenAI-compatible chat-completions server, with the same interface as LocalLLM.

Used when ``llm.endpoint`` is set: our own ``assistant serve-llm``, vLLM (``--enable-lora
--lora-modules name=path``), llama.cpp's server, or a hosted API. The request's ``model`` is
``llm.model``, or the adapter name when one is given (vLLM and our server select a LoRA adapter by
model id); ``adapter`` None, 'none' or 'default' uses ``llm.model``. Streaming reads server-sent
events. 429 and 5xx answers (and dropped connections before any text arrived) are retried with
exponential back-off, honouring ``Retry-After``.

Token counts are an estimate (about 4 characters a token, plus a few tokens per message for the chat
template), because the OpenAI API has no tokenizer endpoint; callers keep a margin, and a prompt the
server still finds too long comes back as a clear ModelError.

Not here: any model code, or reading the API key from the environment (settings does that).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterator

import httpx

from assistant.errors import ModelError
from assistant.llm.base import TextStopper, clamp_new_tokens

log = logging.getLogger(__name__)

_RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}
_PER_MESSAGE = 4  # role markers and separators of a typical chat template
_CHARS_PER_TOKEN = 4.0


class RemoteLLM:
    """An OpenAI-compatible endpoint (``endpoint`` is the base URL ending in /v1)."""

    def __init__(
        self,
        *,
        endpoint: str,
        model: str,
        api_key: str | None = None,
        context_tokens: int = 2048,
        timeout_s: float = 120.0,
        max_retries: int = 4,
        backoff_s: float = 0.5,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.model = model
        self.context_tokens = context_tokens
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(
            base_url=self.endpoint,
            headers=headers,
            transport=transport,
            timeout=httpx.Timeout(timeout_s, connect=min(10.0, timeout_s)),
        )

    @classmethod
    def from_settings(cls, llm_settings) -> RemoteLLM:
        key = llm_settings.api_key.get_secret_value() if llm_settings.api_key else None
        return cls(
            endpoint=llm_settings.endpoint,
            model=llm_settings.model,
            api_key=key,
            context_tokens=llm_settings.context_tokens,
            timeout_s=llm_settings.timeout_s,
        )

    def close(self) -> None:
        self._client.close()

    # -- tokens (estimates) ---------------------------------------------------------------------
    def count_tokens(self, text: str) -> int:
        return math.ceil(len(text) / _CHARS_PER_TOKEN)

    def count_message_tokens(self, messages: list[dict]) -> int:
        return 3 + sum(_PER_MESSAGE + self.count_tokens(str(m.get("content") or "")) for m in messages)

    def adapter_names(self) -> list[str]:
        """Model ids the server offers other than ``llm.model`` (adapters, on our server and vLLM)."""
        data = self._request("GET", "/models").json()
        return sorted(m["id"] for m in data.get("data", []) if m.get("id") != self.model)

    # -- generation -----------------------------------------------------------------------------
    def _body(self, messages, max_new_tokens, temperature, top_p, stop, adapter, stream) -> dict:
        n_new = clamp_new_tokens(self.count_message_tokens(messages), max_new_tokens, self.context_tokens)
        model = self.model if adapter is None or adapter.lower() in ("none", "default") else adapter
        body = {
            "model": model,
            "messages": [{"role": m["role"], "content": m["content"]} for m in messages],
            "max_tokens": n_new,
            "temperature": temperature,
            "top_p": top_p,
            "stream": stream,
        }
        if stop:
            body["stop"] = list(stop)
        return body

    def generate(
        self,
        messages: list[dict],
        *,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        top_p: float = 1.0,
        stop: list[str] | None = None,
        adapter: str | None = None,
    ) -> str:
        body = self._body(messages, max_new_tokens, temperature, top_p, stop, adapter, False)
        data = self._request("POST", "/chat/completions", json=body).json()
        try:
            text = data["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError) as e:
            raise ModelError(
                f"{self.endpoint} answered without choices[0].message.content: {str(data)[:200]}"
            ) from e
        return _cut(text, stop)

    def stream(
        self,
        messages: list[dict],
        *,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        top_p: float = 1.0,
        stop: list[str] | None = None,
        adapter: str | None = None,
    ) -> Iterator[str]:
        body = self._body(messages, max_new_tokens, temperature, top_p, stop, adapter, True)
        stopper = TextStopper(stop)  # servers honour `stop`, but not every one cuts exactly
        text = ""
        for attempt in range(self.max_retries + 1):
            got_any = False
            try:
                with self._client.stream("POST", "/chat/completions", json=body) as resp:
                    if resp.status_code != 200:
                        resp.read()
                        wait = self._retry_wait(resp, attempt)
                        if wait is None:
                            self._raise(resp)
                        time.sleep(wait)
                        continue
                    for piece in _sse_deltas(resp.iter_lines()):
                        got_any = True
                        text += piece
                        delta = stopper.feed(text)
                        if delta:
                            yield delta
                        if stopper.stopped:
                            return
                rest = stopper.final()
                if rest:
                    yield rest
                return
            except httpx.TransportError as e:
                if got_any or attempt >= self.max_retries:
                    raise ModelError(
                        f"Lost the connection to {self.endpoint} while streaming: {e}. "
                        "Check that the LLM server is running and reachable."
                    ) from e
                time.sleep(self.backoff_s * 2**attempt)
        raise ModelError(
            f"{self.endpoint} kept refusing the request after {self.max_retries + 1} tries; "
            "the server is overloaded — try again later or add capacity."
        )

    # -- HTTP -----------------------------------------------------------------------------------
    def _retry_wait(self, resp: httpx.Response, attempt: int) -> float | None:
        if resp.status_code not in _RETRY_STATUS or attempt >= self.max_retries:
            return None
        after = resp.headers.get("retry-after")
        try:
            return min(60.0, float(after)) if after else self.backoff_s * 2**attempt
        except ValueError:
            return self.backoff_s * 2**attempt

    def _request(self, method: str, path: str, **kwargs) -> httpx.Response:
        for attempt in range(self.max_retries + 1):
            try:
                resp = self._client.request(method, path, **kwargs)
            except httpx.TransportError as e:
                if attempt >= self.max_retries:
                    raise ModelError(
                        f"Cannot reach the LLM server at {self.endpoint}: {e}. Check llm.endpoint "
                        "and that the server is running."
                    ) from e
                time.sleep(self.backoff_s * 2**attempt)
                continue
            if resp.status_code == 200:
                return resp
            wait = self._retry_wait(resp, attempt)
            if wait is None:
                self._raise(resp)
            log.info("LLM server answered %s; retrying in %.1f s", resp.status_code, wait)
            time.sleep(wait)
        raise AssertionError("unreachable")

    def _raise(self, resp: httpx.Response) -> None:
        try:
            err = resp.json().get("error") or {}
            message = err.get("message") if isinstance(err, dict) else str(err)
        except ValueError:
            message = resp.text[:200]
        if resp.status_code in (401, 403):
            raise ModelError(
                f"The LLM server at {self.endpoint} rejected the API key ({message}). "
                "Set llm.api_key (ASSISTANT_LLM__API_KEY) to the server's key."
            )
        if resp.status_code == 404:
            raise ModelError(
                f"The LLM server at {self.endpoint} says: {message}. Set llm.model (or the "
                "adapter) to one of the ids GET /v1/models lists."
            )
        raise ModelError(f"The LLM server at {self.endpoint} answered {resp.status_code}: {message}")


def _sse_deltas(lines: Iterator[str]) -> Iterator[str]:
    """Content deltas from an OpenAI chat-completions event stream."""
    for line in lines:
        if not line.startswith("data:"):
            continue
        payload = line[5:].strip()
        if payload == "[DONE]":
            return
        try:
            data = json.loads(payload)
        except ValueError:
            continue
        if "error" in data:
            err = data["error"]
            raise ModelError(
                f"The LLM server failed mid-answer: {err.get('message') if isinstance(err, dict) else err}"
            )
        for choice in data.get("choices") or []:
            piece = (choice.get("delta") or {}).get("content")
            if piece:
                yield piece


def _cut(text: str, stop: list[str] | None) -> str:
    for s in stop or []:
        i = text.find(s) if s else -1
        if i != -1:
            text = text[:i]
    return text
