"""Continuous batching: many generation requests decoded together on one model.

One engine thread owns the model. Between decode steps it admits waiting requests (their prompts
are prefilled together, left-padded, computing logits for the last position only) and merges their
KV caches into the running batch; after each step, finished or cancelled sequences leave the batch
and the padding columns nobody needs any more are trimmed. Every sequence keeps its own sampling
settings (greedy at temperature 0, else temperature + top-p), stop strings and adapter: with a peft
model the whole batch runs in one forward pass with ``adapter_names=`` (peft's mixed-adapter
batches; ``"__base__"`` rows use the plain base model).

Why not transformers' own ``generate_batch``/``ContinuousBatchingManager``: it works (we measured
it), but one manager has one generation config for every request, no stop strings, no per-request
LoRA adapter and no streaming of text deltas per request, which the server needs. Its paged KV cache
is the better memory layout; ours is transformers' ``DynamicCache`` with one row per sequence,
which is simple and exact (a request's greedy output does not depend on its neighbours).

Not here: HTTP (``server``), tokenization of chat messages (``base``), model loading (``loading``),
the KV slabs (``kv_slabs``), compiled decoding (``solo``, ``slots``).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from assistant.errors import ModelError
from assistant.llm.base import IncrementalDetokenizer, TextStopper, eos_ids
from assistant.llm.fused_lora import FusedLoRA
from assistant.llm.kv_slabs import cache_layers as _layers
from assistant.llm.kv_slabs import readopt as _readopt
from assistant.llm.kv_slabs import use_slabs as _use_slabs

log = logging.getLogger(__name__)

BASE = "__base__"  # peft's name for "no adapter" in a mixed batch


class QueueFull(ModelError):
    """Too many requests are waiting; try again after ``retry_after`` seconds."""

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass
class Event:
    kind: str  # "delta" | "done" | "error"
    text: str = ""
    finish_reason: str | None = None  # "stop" | "length" | "cancelled"
    prompt_tokens: int = 0
    completion_tokens: int = 0


class RequestHandle:
    """A submitted request: iterate for text deltas, or call ``result``; ``cancel`` to stop early."""

    def __init__(self, sink: Callable[[Event], None] | None = None) -> None:
        self._queue: queue.Queue[Event] = queue.Queue()
        self.sink = sink or self._queue.put
        self.cancelled = threading.Event()
        self.finish_reason: str | None = None
        self.prompt_tokens = 0
        self.completion_tokens = 0

    def cancel(self) -> None:
        self.cancelled.set()

    def __iter__(self) -> Iterator[str]:
        while True:
            ev = self._queue.get()
            if ev.kind == "delta":
                yield ev.text
            elif ev.kind == "error":
                raise ModelError(ev.text)
            else:
                self.finish_reason = ev.finish_reason
                self.prompt_tokens, self.completion_tokens = ev.prompt_tokens, ev.completion_tokens
                return

    def result(self) -> str:
        return "".join(self)


@dataclass
class _Seq:
    """One request inside the engine."""

    handle: RequestHandle
    prompt: list[int]
    max_new: int
    temperature: float
    top_p: float
    adapter: str | None
    detok: IncrementalDetokenizer
    stopper: TextStopper
    generated: int = 0
    pending: int = -1  # sampled token not yet fed to the model
    pos: int = 0  # real tokens already in this row's KV cache
    enqueued: float = field(default_factory=time.perf_counter)
    extra: list[int] = field(default_factory=list)  # tokens generated (and streamed) before joining

    def accept(self, tok: int, eos: set[int]) -> str | None:
        """Take one sampled token: stream its text; the finish reason when the sequence is done."""
        self.generated += 1
        if tok in eos:
            return "stop"
        delta = self.stopper.feed(self.detok.add(tok))
        if delta:
            self.handle.sink(Event("delta", text=delta))
        if self.stopper.stopped:
            return "stop"
        return "length" if self.generated >= self.max_new else None


class BatchEngine:
    """Owns a model in a background thread; ``submit`` is thread-safe."""

    def __init__(
        self,
        model,
        tokenizer,
        *,
        adapters: list[str] | None = None,
        max_batch: int = 64,
        max_queue: int = 256,
        prefill_tokens: int = 16384,
        eos_token_ids: set[int] | None = None,
        slabs: bool = True,
        model_lock: threading.Lock | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.adapters = set(adapters or [])
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.prefill_tokens = prefill_tokens
        self.slabs = slabs  # KV cache with spare room (in-place appends) instead of a concat per step
        # which tokens end a sequence; an empty set generates exactly max_new_tokens (benchmarks)
        self._eos = eos_ids(tokenizer, model) if eos_token_ids is None else set(eos_token_ids)
        self._waiting: deque[_Seq] = deque()
        self._running: list[_Seq] = []
        self._cond = threading.Condition()
        self._closed = False
        self._served = 0  # finished requests, for /health
        self._cache = None
        self._mask = None  # (B, L) 1 for real tokens, 0 for left padding
        self._peft = hasattr(model, "peft_config")
        self._fused: FusedLoRA | None = None
        if self._peft and self.adapters:
            try:
                self._fused = FusedLoRA(model, sorted(self.adapters))
            except ModelError as e:
                log.info("%s", e)
        self._device = next(model.parameters()).device
        # held for each step; shared with the single-sequence decoder so only one uses the model at a time
        self.model_lock = model_lock or threading.Lock()
        if self._device.type == "cuda":
            import torch

            # cuDNN attention sets up per shape (a 2-3x slower first step at every new length); the other
            # SDPA kernels do not
            torch.backends.cuda.enable_cudnn_sdp(False)
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        # transformers renamed the forward's `past_key_values` to `cache` (5.2x); use whichever it takes
        self._cache_kw = (
            "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"
        )
        self._thread = threading.Thread(target=self._loop, name="llm-batch-engine", daemon=True)
        self._thread.start()

    # -- public -------------------------------------------------------------------------------
    def submit(
        self,
        prompt_ids: list[int],
        *,
        max_new_tokens: int,
        temperature: float = 0.0,
        top_p: float = 1.0,
        stop: list[str] | None = None,
        adapter: str | None = None,
        sink: Callable[[Event], None] | None = None,
    ) -> RequestHandle:
        seq = self.new_seq(
            prompt_ids,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            stop=stop,
            adapter=adapter,
            sink=sink,
        )
        self.enqueue(seq)
        return seq.handle

    def new_seq(
        self,
        prompt_ids: list[int],
        *,
        max_new_tokens: int,
        temperature: float = 0.0,
        top_p: float = 1.0,
        stop: list[str] | None = None,
        adapter: str | None = None,
        sink: Callable[[Event], None] | None = None,
    ) -> _Seq:
        """A checked request, not yet queued (``enqueue`` queues it; the serving router may run it elsewhere)."""
        if adapter is not None and adapter not in self.adapters:
            raise ModelError(f"Unknown adapter {adapter!r}; loaded: {sorted(self.adapters) or 'none'}.")
        if not prompt_ids:
            raise ModelError("Empty prompt.")
        handle = RequestHandle(sink)
        return _Seq(
            handle=handle,
            prompt=list(prompt_ids),
            max_new=max(1, max_new_tokens),
            temperature=temperature,
            top_p=top_p,
            adapter=adapter,
            detok=IncrementalDetokenizer(self.tokenizer),
            stopper=TextStopper(stop),
        )

    def enqueue(self, seq: _Seq, *, resumed: bool = False) -> None:
        """Queue ``seq``; a ``resumed`` one (already running elsewhere) skips the queue limit, goes first."""
        with self._cond:
            if self._closed:
                raise ModelError("The generation engine is shut down.")
            if not resumed and len(self._waiting) >= self.max_queue:
                raise QueueFull(
                    f"{len(self._waiting)} requests are already waiting; try again shortly.",
                    retry_after=self._retry_after(),
                )
            if resumed:
                self._waiting.appendleft(seq)
            else:
                self._waiting.append(seq)
            self._cond.notify()

    def idle(self) -> bool:
        with self._cond:
            return not self._waiting and not self._running

    def stats(self) -> dict:
        with self._cond:
            return {
                "running": len(self._running),
                "waiting": len(self._waiting),
                "served": self._served,
                "max_batch": self.max_batch,
                "max_queue": self.max_queue,
            }

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=30)
        if self._fused is not None:
            self._fused.close()

    def _retry_after(self) -> float:
        # a crude estimate: the queue drains one batch per few seconds; clients back off at least 1 s
        return float(max(1, min(30, len(self._waiting) // max(1, self.max_batch) + 1)))

    # -- engine thread ------------------------------------------------------------------------
    def _loop(self) -> None:
        from assistant.llm.cudagraph_tls import init_thread

        init_thread()
        import torch

        with torch.inference_mode():
            while True:
                with self._cond:
                    while not self._closed and not self._waiting and not self._running:
                        self._cond.wait()
                    if self._closed:
                        break
                    new = self._admit()
                try:
                    with self.model_lock:
                        if new:
                            self._prefill(new)
                        if self._running:
                            self._decode()
                except Exception as e:  # a failed step fails the requests in it, never the engine
                    log.exception("generation step failed")
                    for s in self._running + new:
                        s.handle.sink(Event("error", text=f"Generation failed: {e}"))
                    self._running, self._cache, self._mask = [], None, None
        for s in list(self._waiting) + self._running:
            s.handle.sink(Event("error", text="The server is shutting down."))

    def _admit(self) -> list[_Seq]:
        new: list[_Seq] = []
        longest = 0
        while self._waiting and len(self._running) + len(new) < self.max_batch:
            s = self._waiting[0]
            if s.handle.cancelled.is_set():
                self._waiting.popleft()
                self._finish(s, "cancelled")
                continue
            longest2 = max(longest, len(s.prompt) + len(s.extra))
            if new and longest2 * (len(new) + 1) > self.prefill_tokens:
                break
            new.append(self._waiting.popleft())
            longest = longest2
        return new

    def _forward(self, input_ids, mask, positions, cache, adapters: list[str | None], **kw):
        extra = {}
        ctx = contextlib.nullcontext()
        if self._fused is not None:
            self._fused.set_rows(adapters, self._device)
        elif self._peft:
            kinds = set(adapters)
            if len(kinds) > 1:  # mixed batch: peft routes each row through its own adapter
                extra["adapter_names"] = [a or BASE for a in adapters]
            elif None in kinds:  # all base: skip the LoRA branches entirely
                ctx = self.model.disable_adapter()
            else:  # one adapter for everyone: the ordinary (faster) LoRA path
                (name,) = kinds
                if self.model.active_adapter != name:
                    self.model.set_adapter(name)
        with ctx:
            out = self.model(
                input_ids=input_ids,
                attention_mask=mask,
                position_ids=positions,
                use_cache=True,
                logits_to_keep=1,
                **{self._cache_kw: cache},
                **extra,
                **kw,
            )
        new_cache = getattr(out, "cache", None)
        return out.logits[:, -1, :], new_cache if new_cache is not None else out.past_key_values

    def _prefill(self, new: list[_Seq]) -> None:
        import torch

        L = max(len(s.prompt) + len(s.extra) for s in new)
        pad = self.tokenizer.pad_token_id or 0
        ids = torch.full((len(new), L), pad, dtype=torch.long)
        mask = torch.zeros((len(new), L), dtype=torch.long)
        for i, s in enumerate(new):  # left padding: every row's last token is at column L-1
            toks = s.prompt + s.extra
            ids[i, L - len(toks) :] = torch.tensor(toks)
            mask[i, L - len(toks) :] = 1
            s.pos = len(toks)
        ids, mask = ids.to(self._device), mask.to(self._device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        logits, cache = self._forward(ids, mask, positions, None, [s.adapter for s in new])
        self._merge(new, cache, mask)
        self._emit(new, logits)

    def _merge(self, new: list[_Seq], cache, mask) -> None:
        """Append freshly prefilled rows to the running batch, left-padding the shorter cache."""
        import torch
        import torch.nn.functional as F

        if not self._running:
            self._running, self._cache, self._mask = list(new), cache, mask
            if self.slabs:
                _use_slabs(cache)
            return
        old_len, new_len = self._mask.shape[1], mask.shape[1]
        L = max(old_len, new_len)
        for lo, ln in zip(_layers(self._cache), _layers(cache)):
            for attr in ("keys", "values"):
                a, b = getattr(lo, attr), getattr(ln, attr)  # (B, heads, len, head_dim)
                a = F.pad(a, (0, 0, L - old_len, 0)) if L > old_len else a
                b = F.pad(b, (0, 0, L - new_len, 0)) if L > new_len else b
                setattr(lo, attr, torch.cat([a, b], dim=0))
            _readopt(lo)
        self._mask = torch.cat([F.pad(self._mask, (L - old_len, 0)), F.pad(mask, (L - new_len, 0))], dim=0)
        self._running.extend(new)

    def _decode(self) -> None:
        import torch

        ids = torch.tensor([[s.pending] for s in self._running], device=self._device)
        positions = torch.tensor([[s.pos] for s in self._running], device=self._device)
        self._mask = torch.cat([self._mask, self._mask.new_ones((len(self._running), 1))], dim=1)
        logits, self._cache = self._forward(
            ids, self._mask, positions, self._cache, [s.adapter for s in self._running]
        )
        for s in self._running:
            s.pos += 1
        self._emit(list(self._running), logits)

    def _emit(self, seqs: list[_Seq], logits) -> None:
        """Sample one token for each of ``seqs`` (rows of ``logits``), stream it, drop finished rows."""
        tokens = _sample(logits, [s.temperature for s in seqs], [s.top_p for s in seqs])
        done: set[int] = set()
        for s, tok in zip(seqs, tokens):
            if s.handle.cancelled.is_set():
                self._finish(s, "cancelled")
                done.add(id(s))
                continue
            reason = s.accept(tok, self._eos)
            if reason:
                self._finish(s, reason)
                done.add(id(s))
            else:
                s.pending = tok
        if done:
            self._select([i for i, s in enumerate(self._running) if id(s) not in done])

    def _finish(self, s: _Seq, reason: str) -> None:
        self._served += 1
        finish_seq(s, reason)

    def _select(self, keep: list[int]) -> None:
        """Keep only rows ``keep`` and drop padding columns that no remaining row uses."""
        import torch

        self._running = [self._running[i] for i in keep]
        if not keep:
            self._cache, self._mask = None, None
            return
        idx = torch.tensor(keep, device=self._device)
        mask = self._mask[idx]
        start = int((mask.cumsum(-1) == 0).sum(-1).min())  # leading all-padding columns
        for layer in _layers(self._cache):
            layer.keys = layer.keys[idx, :, start:]
            layer.values = layer.values[idx, :, start:]
            _readopt(layer)
        self._mask = mask[:, start:]


def _sample(logits, temperatures: list[float], top_ps: list[float]) -> list[int]:
    """(B, vocab) logits → one token per row: argmax at temperature 0, else temperature + top-p."""
    import torch

    out = logits.argmax(dim=-1)
    rows = [i for i, t in enumerate(temperatures) if t > 0]
    if rows:
        idx = torch.tensor(rows, device=logits.device)
        temp = torch.tensor([temperatures[i] for i in rows], device=logits.device, dtype=torch.float32)
        probs = torch.softmax(logits[idx].float() / temp[:, None], dim=-1)
        sorted_p, order = probs.sort(dim=-1, descending=True)
        top_p = torch.tensor([top_ps[i] for i in rows], device=logits.device)
        drop = (sorted_p.cumsum(-1) - sorted_p) > top_p[:, None]  # keep the smallest set reaching top_p
        sorted_p = sorted_p.masked_fill(drop, 0.0)
        choice = torch.multinomial(sorted_p, 1).squeeze(-1)
        out[idx] = order.gather(-1, choice[:, None]).squeeze(-1)
    return out.tolist()


def finish_seq(s: _Seq, reason: str) -> None:
    """Flush ``s``'s held-back text (unless cancelled) and send its "done" event."""
    rest = s.stopper.final()
    if rest and reason != "cancelled":
        s.handle.sink(Event("delta", text=rest))
    s.handle.sink(
        Event("done", finish_reason=reason, prompt_tokens=len(s.prompt), completion_tokens=s.generated)
    )
