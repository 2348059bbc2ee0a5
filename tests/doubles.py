"""Test doubles for our own seams (not mocks of our functions): a scripted LLM that obeys the LLM protocol."""

from __future__ import annotations

from collections.abc import Callable, Iterator


class ScriptedLLM:
    """Answers every prompt with ``reply(messages)``; counts tokens as whitespace words."""

    context_tokens = 2048

    def __init__(self, reply: str | Callable[[list[dict]], str]) -> None:
        self.reply = reply if callable(reply) else (lambda _m, r=reply: r)
        self.prompts: list[list[dict]] = []

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def count_message_tokens(self, messages: list[dict]) -> int:
        return sum(self.count_tokens(m["content"]) + 4 for m in messages)

    def generate(
        self, messages, *, max_new_tokens=256, temperature=0.0, top_p=1.0, stop=None, adapter=None
    ) -> str:
        self.prompts.append(messages)
        return self.reply(messages)

    def stream(self, messages, **kw) -> Iterator[str]:
        text = self.generate(messages, **kw)
        for i in range(0, len(text), 7):
            yield text[i : i + 7]

    def adapter_names(self) -> list[str]:
        return []
