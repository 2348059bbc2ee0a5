"""`llm.model = "auto"` on each kind of host: Qwen-1.5B with the adapter shipped for it on CUDA once the
model is pulled, extractive answers (no model) otherwise; never another base's adapter."""

from __future__ import annotations

import pytest

from assistant.llm import pull as P
from assistant.llm.adapters import SHIPPED, SHIPPED_DEFAULT, adapter_base_fingerprint, shipped_adapter
from assistant.llm.gguf_convert import MARKER
from assistant.llm.loading import GPU_DEFAULT, resolve_answer_model


def _pull(cache):
    folder = P.converted_dir(GPU_DEFAULT, cache_dir=cache)
    folder.mkdir(parents=True)
    (folder / MARKER).write_text("{}")


@pytest.mark.parametrize(
    ("cuda", "pulled", "expected"),
    [(True, True, GPU_DEFAULT), (True, False, "none"), (False, True, "none"), (False, False, "none")],
)
def test_auto_answers_with_qwen_only_on_cuda_when_pulled(tmp_path, cuda, pulled, expected):
    if pulled:
        _pull(tmp_path)
    assert resolve_answer_model("auto", cache_dir=tmp_path, cuda=cuda) == expected
    assert resolve_answer_model("none", cache_dir=tmp_path, cuda=cuda) == "none"  # explicit choices stand


def test_the_default_adapter_is_the_one_shipped_for_the_loaded_base():
    shipped = [p for p in SHIPPED if (p / "adapter_config.json").is_file()]
    assert SHIPPED_DEFAULT in shipped
    for path in shipped:  # each base gets its own adapter (qwen15 once it ships)
        assert shipped_adapter(adapter_base_fingerprint(path)) == path
    assert shipped_adapter("0" * 16) is None  # a base nothing was trained on runs without an adapter
