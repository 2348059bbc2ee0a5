"""The language-model layer: one ``LLM`` interface, a local and a remote implementation.

``load_llm(settings.llm, data_dir=...)`` returns ``RemoteLLM`` when ``llm.endpoint`` is set (any
OpenAI-compatible server: ``assistant serve-llm``, vLLM, ...), else ``LocalLLM`` (the model in this
process; the bundled SmolLM2-135M-Instruct by default). Heavy imports (torch, transformers) happen
only when a local model is loaded.
"""

from __future__ import annotations

from pathlib import Path

from assistant.llm.base import LLM

__all__ = ["LLM", "load_llm"]


def load_llm(llm_settings, *, data_dir: Path, cache_dir: Path | None = None) -> LLM:
    """The configured model: remote client when ``llm_settings.endpoint`` is set, else in-process."""
    if llm_settings.endpoint:
        from assistant.llm.remote import RemoteLLM

        return RemoteLLM.from_settings(llm_settings)
    from assistant.llm.local import LocalLLM

    return LocalLLM.load(llm_settings, data_dir=Path(data_dir), cache_dir=cache_dir)
