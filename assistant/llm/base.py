"""The LLM contract, and the small pieces every backend shares.

``LLM`` is what answering, summaries and the Slack bot program against: chat messages in, text (or
text deltas) out, with token counting so callers can fit sources into ``context_tokens``. Local
(``local.LocalLLM``), remote (``remote.RemoteLLM``) and the server's batching engine all use the
helpers here, so context clamping, stop strings and incremental detokenization behave the same way
everywhere.

Not here: model loading (``loading``), adapters (``adapters``), or any HTTP.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable

from assistant.errors import ModelError


@runtime_checkable
class LLM(Protocol):
    """A chat model. ``adapter=None`` means the base model; a name picks a LoRA adapter."""

    context_tokens: int

    def count_tokens(self, text: str) -> int: ...

    def count_message_tokens(self, messages: list[dict]) -> int:
        """Tokens of the prompt the model would see (chat template and generation prompt included)."""
        ...

    def generate(
        self,
        messages: list[dict],
        *,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        top_p: float = 1.0,
        stop: list[str] | None = None,
        adapter: str | None = None,
    ) -> str: ...

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
        """Text deltas; joined they equal ``generate``'s result."""
        ...

    def adapter_names(self) -> list[str]: ...


def clamp_new_tokens(prompt_tokens: int, max_new_tokens: int, context_tokens: int) -> int:
    """Tokens we may still generate; raise when the prompt alone does not leave room for one."""
    room = context_tokens - prompt_tokens
    if room < 1:
        raise ModelError(
            f"The prompt is {prompt_tokens} tokens but the model's context is {context_tokens} tokens. "
            "Send fewer or shorter sources (measure them with count_message_tokens), or raise "
            "llm.context_tokens if the model supports a longer context."
        )
    return max(1, min(max_new_tokens, room))


def render_chat(tokenizer, messages: list[dict]) -> str:
    """The prompt text after the tokenizer's chat template, ready for the assistant's turn."""
    if not messages:
        raise ModelError("No messages to send to the model.")
    for m in messages:
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise ModelError(f"Each message needs 'role' and 'content'; got {m!r}.")
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    # A base model without a template: a plain transcript still works.
    return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant: "


def encode_chat(tokenizer, messages: list[dict]) -> list[int]:
    return tokenizer(render_chat(tokenizer, messages), add_special_tokens=False)["input_ids"]


class TextStopper:
    """Turns a growing text into safe deltas and cuts it at the first stop string.

    Text that could still become a stop string is held back until it cannot, so a streamed answer
    never shows the beginning of a stop marker; ``final`` flushes the rest.
    """

    def __init__(self, stop: list[str] | None) -> None:
        self.stop = [s for s in (stop or []) if s]
        self.emitted = 0
        self.stopped = False
        self.text = ""

    def feed(self, text: str) -> str:
        """The full text generated so far → the new part that is safe to show."""
        if self.stopped:
            return ""
        self.text = text
        cut = len(text)
        for s in self.stop:
            i = text.find(s)
            if i != -1 and i < cut:
                cut = i
                self.stopped = True
        if self.stopped:
            self.text = text[:cut]
            delta = self.text[self.emitted :]
            self.emitted = len(self.text)
            return delta
        safe = len(text)
        for s in self.stop:  # hold back a suffix that is a prefix of a stop string
            for k in range(min(len(s) - 1, len(text)), 0, -1):
                if text.endswith(s[:k]):
                    safe = min(safe, len(text) - k)
                    break
        delta = text[self.emitted : safe] if safe > self.emitted else ""
        self.emitted = max(self.emitted, safe)
        return delta

    def final(self) -> str:
        """What is left to show once generation has ended."""
        delta = self.text[self.emitted :]
        self.emitted = len(self.text)
        return delta


class IncrementalDetokenizer:
    """Token ids in, full decoded text out (special tokens skipped).

    Decodes only a short window per token (the offsets trick used by text-generation servers), so a
    step costs the same at token 5 and token 500; a token that ends mid-character waits for the next.
    """

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.text = ""
        self._prefix = 0  # ids[_prefix:_read] were decoded already, as context for the next piece
        self._read = 0

    def add(self, token_id: int) -> str:
        self.ids.append(token_id)
        dec = self.tokenizer.decode
        prefix_text = dec(self.ids[self._prefix : self._read], skip_special_tokens=True)
        new_text = dec(self.ids[self._prefix :], skip_special_tokens=True)
        if len(new_text) > len(prefix_text) and not new_text.endswith("\ufffd"):
            self.text += new_text[len(prefix_text) :]
            self._prefix, self._read = self._read, len(self.ids)
        return self.text


def eos_ids(tokenizer, model=None) -> set[int]:
    """Every token id that ends a turn (tokenizer EOS plus the generation config's)."""
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    gc = getattr(model, "generation_config", None)
    e = getattr(gc, "eos_token_id", None)
    if isinstance(e, int):
        ids.add(e)
    elif isinstance(e, (list, tuple)):
        ids.update(int(x) for x in e)
    for name in ("<|im_end|>", "<|eot_id|>", "<|end|>"):
        tid = tokenizer.convert_tokens_to_ids(name) if name in tokenizer.get_vocab() else None
        if isinstance(tid, int):
            ids.add(tid)
    return ids
