"""Single-sequence decoding through transformers' ``generate``: static KV cache + ``torch.compile`` on CUDA.

At batch 1 a decode step is a few hundred small kernel launches; eager PyTorch spends more time
launching them than the GPU spends reading the weights. ``generate`` with
``cache_implementation="static"`` and a ``CompileConfig(mode="reduce-overhead", fullgraph=True)``
compiles the decode step and replays it as a CUDA graph (the prefill stays eager, so prompt lengths
do not trigger recompilation; the static cache is sized once for ``max_cache_len`` tokens so later
calls reuse the compiled graph). On CPU the same call runs plain (dynamic cache, no compilation).

Each request keeps its own sampling settings, stop strings, EOS handling and adapter: tokens arrive
through a streamer, the request's ``_Seq.accept`` streams their text and decides when it is done, and
a stopping criterion ends ``generate`` on a finish, a cancel, or when the caller asks it to *yield*
(the router hands the sequence to the batching engine when other requests arrive). Adapters go
through the batching engine's ``FusedLoRA`` hooks with a one-row mask (the same compiled graph serves
the base model and every adapter); without them, peft's ``set_adapter`` (one graph per adapter).

Not here: choosing which engine serves a request (``serving``), batching (``batching``), HTTP.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

from assistant.llm.batching import _Seq
from assistant.llm.fused_lora import FusedLoRA

log = logging.getLogger(__name__)


class SoloDecoder:
    """Decode one ``_Seq`` at a time on ``model``; the caller serialises use of the model."""

    def __init__(
        self,
        model,
        tokenizer,
        *,
        eos: set[int],
        max_cache_len: int = 4096,
        compiled: bool | None = None,
        fused: FusedLoRA | None = None,
    ) -> None:
        self.model = model
        self.eos = eos
        self.max_cache_len = max_cache_len
        self.device = next(model.parameters()).device
        self.compiled = self.device.type == "cuda" if compiled is None else compiled
        self.fused = fused
        self.peft = hasattr(model, "peft_config")
        self.pad_id = getattr(tokenizer, "pad_token_id", None) or 0
        self._compile_config = None  # one instance: generate() recompiles when the config changes

    def fits(self, seq: _Seq) -> bool:
        """Whether ``seq`` (prompt + every token it may generate) fits the static cache."""
        return len(seq.prompt) + len(seq.extra) + seq.max_new - seq.generated <= self.max_cache_len

    def generation_config(self, seq: _Seq, *, force_length: bool = False):
        """This request's GenerationConfig; the model's own defaults (top_k, repetition penalty) neutralised."""
        from transformers import CompileConfig, GenerationConfig

        n = seq.max_new - seq.generated
        kw: dict = {
            "max_new_tokens": n,
            "do_sample": seq.temperature > 0,
            "repetition_penalty": 1.0,
            "eos_token_id": sorted(self.eos) or None,
            "pad_token_id": self.pad_id,
        }
        if seq.temperature > 0:
            kw.update(temperature=seq.temperature, top_p=seq.top_p, top_k=0)
        if force_length:  # warm-up: no early EOS, so the decode step really runs (and compiles)
            kw["min_new_tokens"] = n
        if self.compiled:
            if self._compile_config is None:
                self._compile_config = CompileConfig(fullgraph=True, mode="reduce-overhead")
            kw.update(
                cache_implementation="static",
                compile_config=self._compile_config,
                max_cache_len=self.max_cache_len,  # newer transformers: one cache size for every call
            )
        else:
            kw["disable_compile"] = True
        return GenerationConfig(**kw)

    def run(self, seq: _Seq, *, should_yield: Callable[[], bool], force_length: bool = False) -> str | None:
        """Decode ``seq`` until done: its finish reason, or None when it yielded (``seq.extra`` holds its tokens).

        Runs on the caller's thread (CUDA graphs are recorded per thread: always call from the same one).
        """
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        state: dict = {"prompt": True, "reason": None, "yield": False}
        eos = set() if force_length else self.eos

        class Stream:  # transformers' streamer protocol: put(token ids), end()
            def put(self, value) -> None:
                if state["prompt"]:  # generate() first sends the prompt
                    state["prompt"] = False
                    return
                for tok in value.reshape(-1).tolist():
                    if state["reason"] or state["yield"]:
                        return  # a step computed after we asked to stop: discarded
                    if seq.handle.cancelled.is_set():
                        state["reason"] = "cancelled"
                        return
                    seq.extra.append(tok)
                    reason = seq.accept(tok, eos)
                    if reason:
                        state["reason"] = reason
                    elif should_yield():
                        state["yield"] = True

            def end(self) -> None:
                pass

        class Stop(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                done = state["reason"] is not None or state["yield"]
                return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)

        ids = torch.tensor([seq.prompt + seq.extra], device=self.device)
        try:
            with self._adapter(seq.adapter):
                self.model.generate(
                    input_ids=ids,
                    attention_mask=torch.ones_like(ids),
                    generation_config=self.generation_config(seq, force_length=force_length),
                    streamer=Stream(),
                    stopping_criteria=StoppingCriteriaList([Stop()]),
                )
        except Exception:
            if not self.compiled:
                raise
            # compilation failed (an op torch.compile cannot trace, e.g. some quantized layers): serve
            # eagerly from now on rather than fail every request; this one resumes after the tokens
            # it already streamed (they are in seq.extra)
            log.exception("compiled decoding failed; continuing without torch.compile")
            self.compiled = False
            return self.run(seq, should_yield=should_yield, force_length=force_length)
        if state["yield"] and not state["reason"]:
            return None
        return state["reason"] or "length"

    def _adapter(self, adapter: str | None):
        if self.fused is not None:  # one-row mask; zeros for the base model, so one graph serves all
            self.fused.set_rows([adapter], self.device, always=True)
            return contextlib.nullcontext()
        if not self.peft:
            return contextlib.nullcontext()
        if adapter is None:
            return self.model.disable_adapter()
        if self.model.active_adapter != adapter:
            self.model.set_adapter(adapter)
        return contextlib.nullcontext()
