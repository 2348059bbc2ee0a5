"""What an answer is: the text a person reads, its numbered citations, and what the answerer saw.

The shape only (and its JSON, the ``ask --json`` contract); ``assistant.answering`` computes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from assistant.retrieval import Hit


@dataclass(frozen=True)
class Citation:
    n: int
    doc_id: str
    source: str
    path: str
    title: str
    url: str | None
    quote: str

    def as_json(self) -> dict:
        return {
            "n": self.n,
            "doc_id": self.doc_id,
            "source": self.source,
            "path": self.path,
            "title": self.title,
            "url": self.url,
            "quote": self.quote,
        }


@dataclass
class Answer:
    question: str
    answer: str
    refused: bool
    citations: list[Citation]
    retrieved: list[Hit]
    timings_ms: dict[str, float] = field(default_factory=dict)
    model_answer: str = ""  # what the model said before verification (for evaluation and debugging)
    passages: list[Hit] = field(default_factory=list)  # the excerpts the answerer read, numbered as cited
    confidence: float | None = (
        None  # the best sentence's relevance score (calibrated only with a relevance model)
    )

    def as_json(self) -> dict:
        return {
            "question": self.question,
            "answer": self.answer,
            "refused": self.refused,
            "citations": [c.as_json() for c in self.citations],
            "retrieved": [h.as_json() for h in self.retrieved],
            "passages": [{"path": p.path, "title": p.title, "text": p.text} for p in self.passages],
            "confidence": None if self.confidence is None else round(self.confidence, 4),
            "timings_ms": {k: round(v, 1) for k, v in self.timings_ms.items()},
        }
