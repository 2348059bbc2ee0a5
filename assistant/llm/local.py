"""The in-process model: a causal LM plus optional LoRA adapters, one generation at a time.

``LocalLLM`` implements ``base.LLM`` with ``model.generate``: greedy at temperature 0, sampling
otherwise, tokens streamed through transformers' ``TextIteratorStreamer`` from a worker thread, stop
strings honoured (and held back while they might still be forming). Adapters are peft LoRA modules
attached to one model; a request picks one by name, ``adapter=None`` runs the plain base model.
A lock serialises generation, because the Slack bot calls from several threads; when many requests
must share the hardware, run ``assistant serve-llm`` (continuous batching) and point
``llm.endpoint`` at it instead.

Not here: downloading, GGUF conversion (``loading``), the registry's storage (``adapters``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path

from assistant.errors import ModelError
from assistant.llm.adapters import AdapterRegistry, attach_adapter, check_base
from assistant.llm.base import TextStopper, clamp_new_tokens, encode_chat, eos_ids, render_chat

log = logging.getLogger(__name__)


class LocalLLM:
    """A model in this process. Build it with ``LocalLLM.load`` or from a (model, tokenizer) pair."""

    def __init__(
        self,
        model,
        tokenizer,
        *,
        context_tokens: int = 2048,
        fingerprint: str = "",
        registry: AdapterRegistry | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        limit = getattr(getattr(model, "config", None), "max_position_embeddings", None) or context_tokens
        self.context_tokens = min(context_tokens, int(limit))
        self.fingerprint = fingerprint
        self.registry = registry
        self._adapters: dict[str, Path] = {}
        self._lock = threading.RLock()
        self._eos = sorted(eos_ids(tokenizer, model))

    @classmethod
    def load(cls, llm_settings, *, data_dir: Path, cache_dir: Path | None = None) -> LocalLLM:
        """Load ``llm_settings.model`` (converting a GGUF once) and attach ``llm_settings.adapter``."""
        from assistant.llm.loading import ensure_model_dir, load_model, model_fingerprint, resolve_device

        cuda = resolve_device(llm_settings.device).startswith("cuda")  # 'auto' picks the GPU model only there
        model_dir = ensure_model_dir(llm_settings.model, cache_dir=cache_dir or data_dir, cuda=cuda)
        model, tok = load_model(
            model_dir, device=llm_settings.device, dtype=llm_settings.dtype, quantize=llm_settings.quantize
        )
        llm = cls(
            model,
            tok,
            context_tokens=llm_settings.context_tokens,
            fingerprint=model_fingerprint(model_dir),
            registry=AdapterRegistry(data_dir),
        )
        spec = llm_settings.adapter or None
        path = llm.registry.resolve(
            spec, base_fingerprint=llm.fingerprint
        )  # the registry owns 'none'/'default'
        if path is not None:
            llm.add_adapter(spec, path)
        return llm

    # -- adapters -----------------------------------------------------------------------------
    def add_adapter(self, name: str, path: Path, *, base_fingerprint: str | None = None) -> None:
        """Attach the peft adapter in ``path`` under ``name`` (refused if trained on another base)."""
        expected = base_fingerprint or (self.registry.fingerprint_of(path) if self.registry else None)
        check_base(path, expected=expected, loaded=self.fingerprint, name=name)
        with self._lock:
            if name in self._adapters:
                return
            self.model = attach_adapter(self.model, path, name)
            self._adapters[name] = Path(path)
        log.info("adapter %r attached from %s", name, path)

    def adapter_names(self) -> list[str]:
        names = set(self._adapters)
        if self.registry is not None:
            names.update(r.name for r in self.registry.list())
        return sorted(names)

    def _select(self, adapter: str | None) -> str | None:
        """The attached adapter name to run (attaching a registered one on first use)."""
        if adapter is None or adapter.lower() == "none":
            return None
        if adapter in self._adapters:
            return adapter
        if self.registry is None:
            raise ModelError(f"Unknown adapter {adapter!r}; attached: {sorted(self._adapters) or 'none'}.")
        path = self.registry.resolve(adapter)
        if path is None:  # 'default' with nothing to resolve to: the base model
            return None
        self.add_adapter(adapter, path)
        return adapter

    # -- tokens -------------------------------------------------------------------------------
    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def count_message_tokens(self, messages: list[dict]) -> int:
        return self.count_tokens(render_chat(self.tokenizer, messages))

    # -- generation ---------------------------------------------------------------------------
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
        return "".join(
            self.stream(
                messages,
                max_new_tokens=max_new_tokens,
                temperature=temperature,
                top_p=top_p,
                stop=stop,
                adapter=adapter,
            )
        )

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
        import torch
        from transformers import (
            GenerationConfig,
            StoppingCriteria,
            StoppingCriteriaList,
            TextIteratorStreamer,
        )

        ids = encode_chat(self.tokenizer, messages)
        n_new = clamp_new_tokens(len(ids), max_new_tokens, self.context_tokens)
        name = self._select(adapter)
        cancel = threading.Event()

        class _Cancelled(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                return torch.full(
                    (input_ids.shape[0],), cancel.is_set(), dtype=torch.bool, device=input_ids.device
                )

        sample = temperature > 0
        config = GenerationConfig(
            max_new_tokens=n_new,
            do_sample=sample,
            temperature=temperature if sample else None,
            top_p=top_p if sample else None,
            top_k=None,
            eos_token_id=self._eos,
            pad_token_id=self.tokenizer.pad_token_id,
            stop_strings=list(stop) if stop else None,
        )
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        device = next(self.model.parameters()).device
        input_ids = torch.tensor([ids], device=device)
        kwargs = {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "generation_config": config,
            "streamer": streamer,
            "stopping_criteria": StoppingCriteriaList([_Cancelled()]),
            "tokenizer": self.tokenizer,
        }
        failure: list[BaseException] = []
        worker = threading.Thread(
            target=self._run, args=(name, kwargs, streamer, failure), daemon=True, name="llm-generate"
        )
        worker.start()
        stopper = TextStopper(stop)
        text = ""
        try:
            for piece in streamer:
                text += piece
                delta = stopper.feed(text)
                if delta:
                    yield delta
                if stopper.stopped:
                    break
            if failure:
                raise ModelError(f"Generation failed: {failure[0]}") from failure[0]
            rest = stopper.final()
            if rest:
                yield rest
        finally:
            cancel.set()  # also when the caller stops reading early
            worker.join()

    def _run(self, name: str | None, kwargs: dict, streamer, failure: list) -> None:
        import torch

        try:
            with self._lock, torch.inference_mode():
                model = self.model
                if name is None and self._adapters:
                    with model.disable_adapter():
                        model.generate(**kwargs)
                else:
                    if name is not None:
                        model.set_adapter(name)
                    model.generate(**kwargs)
        except BaseException as e:  # noqa: BLE001  (handed to the reading thread, which raises it)
            failure.append(e)
            streamer.end()
