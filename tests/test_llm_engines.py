"""The server's decoding engines on CPU (their non-compiled fallbacks), against the eager BatchEngine.

A tiny random Llama with two LoRA adapters: whatever path a request takes (solo ``generate``, a solo
sequence that yields into the batch, fixed KV slots with rows moved between slots), its greedy
output must be the one the plain batching engine gives for it alone.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from assistant.errors import ModelError  # noqa: E402
from assistant.llm.batching import BatchEngine  # noqa: E402
from assistant.llm.serving import ServingEngine  # noqa: E402
from assistant.llm.slots import SlotEngine  # noqa: E402


class Tok:
    """Token ids decode to ``<id>``: stop strings and text deltas are easy to predict."""

    pad_token_id = 0
    eos_token_id = None

    def decode(self, ids, skip_special_tokens=True):
        return "".join(f"<{i}>" for i in ids)


PROMPTS = [[(i * 7 + j) % 250 + 3 for j in range(5 + 3 * i)] for i in range(7)]
ADAPTERS = [None, "hr", "eng", "hr", None, "eng", "hr"]
LENGTHS = [10, 3, 12, 7, 10, 5, 9]


@pytest.fixture(scope="module")
def model():
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, LlamaConfig

    torch.manual_seed(0)
    cfg = LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=256,
        max_position_embeddings=512,
    )
    cfg.eos_token_id, cfg.pad_token_id = None, 0
    m = AutoModelForCausalLM.from_config(cfg).eval()
    m.generation_config.eos_token_id, m.generation_config.pad_token_id = None, 0
    lora = LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj"], init_lora_weights=False
    )
    pm = get_peft_model(m, lora, adapter_name="hr")
    pm.add_adapter("eng", lora)
    return pm.eval()


@pytest.fixture(scope="module")
def reference(model):
    eng = BatchEngine(model, Tok(), adapters=["hr", "eng"], eos_token_ids=set())
    try:
        return [
            eng.submit(p, max_new_tokens=n, adapter=a).result() for p, a, n in zip(PROMPTS, ADAPTERS, LENGTHS)
        ]
    finally:
        eng.close()


def run_all(engine, *, together: bool) -> list[str]:
    jobs = list(zip(PROMPTS, ADAPTERS, LENGTHS))
    if not together:
        return [engine.submit(p, max_new_tokens=n, adapter=a).result() for p, a, n in jobs]
    handles = [engine.submit(p, max_new_tokens=n, adapter=a) for p, a, n in jobs]
    return [h.result() for h in handles]


@pytest.fixture(params=["auto", "slots"])
def engine(request, model):
    if request.param == "auto":
        eng = ServingEngine(model, Tok(), adapters=["hr", "eng"], eos_token_ids=set(), context_tokens=128)
    else:  # 4 slots for 7 requests: rows finish, move down and new ones fill the slots
        eng = SlotEngine(model, Tok(), adapters=["hr", "eng"], eos_token_ids=set(), max_batch=4, capacity=64)
    yield eng
    eng.close()


@pytest.mark.parametrize("together", [False, True], ids=["one-by-one", "all-at-once"])
def test_every_path_gives_the_batch_engines_greedy_output(engine, reference, together):
    assert run_all(engine, together=together) == reference
    assert engine.stats()["running"] == 0 and engine.stats()["waiting"] == 0


def test_a_solo_sequence_yields_into_the_batch_when_another_request_arrives(model, reference):
    eng = ServingEngine(model, Tok(), adapters=["hr", "eng"], eos_token_ids=set(), context_tokens=256)
    try:
        long = eng.submit(PROMPTS[0], max_new_tokens=150, adapter="eng")
        first = next(iter(long))  # it decodes solo now
        assert eng.stats()["solo"] == 1
        other = eng.submit(PROMPTS[1], max_new_tokens=LENGTHS[1], adapter=ADAPTERS[1])
        assert other.result() == reference[1]
        text = first + long.result()
        assert eng.stats()["yielded"] == 1
        assert long.completion_tokens == 150 and long.prompt_tokens == len(PROMPTS[0])
        alone = eng.submit(PROMPTS[0], max_new_tokens=150, adapter="eng").result()
        assert text == alone  # moving into the batch mid-way changed nothing
    finally:
        eng.close()


def test_solo_path_honours_stop_strings_cancel_and_sampling(model, reference):
    eng = ServingEngine(model, Tok(), adapters=["hr", "eng"], eos_token_ids=set(), context_tokens=256)
    try:
        full = reference[2]  # "<t1><t2>..." for adapter eng
        cut_at = full.index(">", 10) + 1
        stop = full[cut_at : cut_at + 4]
        h = eng.submit(PROMPTS[2], max_new_tokens=LENGTHS[2], adapter="eng", stop=[stop])
        assert h.result() == full[: full.index(stop)] and h.finish_reason == "stop"

        h = eng.submit(PROMPTS[0], max_new_tokens=200)
        next(iter(h))
        h.cancel()
        assert h.result() is not None and h.finish_reason == "cancelled" and h.completion_tokens < 200

        h = eng.submit(PROMPTS[0], max_new_tokens=6, temperature=1.0, top_p=0.9)
        assert h.result().count("<") == 6 and h.finish_reason == "length"
        assert eng.stats()["served"] >= 3
    finally:
        eng.close()


def test_warm_up_runs_every_bucket_and_reports_its_cost(model):
    eng = SlotEngine(model, Tok(), eos_token_ids=set(), max_batch=4, capacity=64)
    try:
        took = eng.warm_up(prompt_lengths=(8,), new_tokens=2)
        assert took > 0 and eng.stats()["served"] == 2 + 4  # buckets 2 (also serves batch 1) and 4
    finally:
        eng.close()
    auto = ServingEngine(model, Tok(), eos_token_ids=set(), context_tokens=64)
    try:
        assert auto.warm_up(prompt_lengths=(8,), batch_sizes=(2,), new_tokens=2) > 0
        assert auto.stats()["served"] == 2 + 2  # two solo runs (longest prompt, short prompt), one batch of 2
    finally:
        auto.close()


def test_slots_refuse_a_request_beyond_their_capacity(model):
    eng = SlotEngine(model, Tok(), eos_token_ids=set(), max_batch=2, capacity=50)  # rounded up to 64
    try:
        with pytest.raises(ModelError, match="KV capacity of 64"):
            eng.submit(list(range(3, 60)), max_new_tokens=10)
        assert eng.submit(list(range(3, 50)), max_new_tokens=10).result().count("<") == 10
    finally:
        eng.close()
