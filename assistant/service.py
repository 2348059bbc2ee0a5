"""The assistant as one object: engine (store + index + embedder) plus the model, answering and summaries.

The CLI, the Slack bot and the scheduler each build one ``Assistant`` from settings and call
``ask`` / ``summarize`` / ``search``. The model loads lazily on the first question, so commands that
never generate (search, status) never pay for it. ``llm.model = "none"`` runs without a model:
answers are then the verified extractive quotes alone.
"""

from __future__ import annotations

import threading
from pathlib import Path

from assistant.answering import Answer, Answerer
from assistant.engine import Engine
from assistant.settings import Settings, is_no_model
from assistant.summaries import Summarizer, Summary

_UNSET = object()


class Assistant:
    def __init__(
        self, settings: Settings, *, engine: Engine | None = None, llm=_UNSET, embedder=None
    ) -> None:
        self.settings = settings
        self.engine = engine or Engine.open(settings, embedder=embedder)
        self._llm = llm
        self._lock = threading.Lock()
        self.progress = (
            None  # a callable taking one line: long work (summaries, reports) says what it is doing
        )

    @property
    def llm(self):
        with self._lock:
            if self._llm is _UNSET:
                from assistant.llm.loading import resolve_answer_model

                model = self.settings.llm.model
                if not self.settings.llm.endpoint:
                    model = resolve_answer_model(
                        model, cache_dir=Path(self.settings.model_cache_dir).expanduser()
                    )
                if is_no_model(model):
                    self._llm = None
                else:
                    from assistant.llm import load_llm

                    self._llm = load_llm(
                        self.settings.llm,
                        data_dir=self.settings.data_dir,
                        cache_dir=self.settings.model_cache_dir,
                    )
            return self._llm

    def default_adapter(self) -> str | None:
        spec = self.settings.llm.adapter
        llm = self.llm
        if llm is None or not spec or is_no_model(spec):
            return None
        if self.settings.llm.endpoint:
            return spec if spec != "default" else None
        return spec if spec in llm.adapter_names() else None

    def answerer(self) -> Answerer:
        return Answerer(
            self.engine.retriever,
            self.llm,
            self.engine.embedder,
            settings=self.settings,
            adapter=self.default_adapter(),
            relevance=self.relevance,
        )

    def ask(
        self, question: str, *, who, history=None, adapter: str | None = None, on_delta=None, k=None
    ) -> Answer:
        return self.answerer().ask(
            question, who=who, history=history, adapter=adapter, on_delta=on_delta, k=k
        )

    def summarize(
        self,
        *,
        who,
        scope: str | None = None,
        since: float | None = None,
        use_llm: bool = True,
        max_docs: int | None = None,
        until: float | None = None,
        focus: str | None = None,
        scorer=None,
        progress=None,
        max_words: int | None = None,
    ) -> Summary:
        """See ``Summarizer.summarize``; ``progress`` (a callable taking a line) defaults to ``self.progress``."""
        from assistant.summaries import model_writes

        llm = (
            self.llm if use_llm and model_writes(self.settings) else None
        )  # never load a model that will not write
        return Summarizer(self.engine, llm, settings=self.settings).summarize(
            who=who,
            scope=scope,
            since=since,
            until=until,
            use_llm=use_llm,
            max_docs=max_docs,
            focus=focus,
            scorer=scorer,
            progress=progress or self.progress,
            max_words=max_words,
        )

    def search(self, query: str, *, who, k: int = 5, **kw):
        return self.engine.search(query, who=who, k=k, **kw)

    def close(self) -> None:
        self.engine.close()

    @property
    def relevance(self):
        """The trained relevance model from ``[relevance]`` (loaded once), or None when none is configured."""
        with self._lock:
            if getattr(self, "_relevance", _UNSET) is _UNSET:
                from assistant.relevance import load_relevance

                self._relevance = load_relevance(self.settings.relevance)
            return self._relevance

    def __enter__(self) -> Assistant:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
