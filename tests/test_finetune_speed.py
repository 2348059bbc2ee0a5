"""Fine-tuning speed features on the CPU: the fused-loss fallback, packing, the checkpointing decision.

- The chunked linear cross-entropy (the CPU/no-Liger path) gives the same loss and gradients as
  plain cross-entropy over full logits.
- Packed rows: changing example A's tokens does not change example B's loss (no attention across
  examples), and the packed loss equals the loss of the examples run one by one.
- Checkpointing is switched on exactly when the memory estimate says the pass would not fit.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from assistant.finetune import fused_loss as FL  # noqa: E402
from assistant.finetune import packing as PK  # noqa: E402
from assistant.finetune import plan as P  # noqa: E402
from assistant.finetune import train as T  # noqa: E402

VOCAB = 97


def tiny(attn: str = "sdpa"):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        attn_implementation=attn,
    )
    return LlamaForCausalLM(cfg).eval()


def example(n: int, seed: int, prompt: int = 3) -> tuple[list[int], list[int]]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (n,), generator=g).tolist()
    return ids, [-100] * prompt + ids[prompt:]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ------------------------------------------------------------------ fused loss


def test_chunked_cross_entropy_equals_plain_cross_entropy_and_its_gradients():
    torch.manual_seed(1)
    hidden = torch.randn(37, 16, requires_grad=True)
    weight = torch.randn(VOCAB, 16, requires_grad=True)
    targets = torch.randint(0, VOCAB, (37,))
    targets[::4] = -100  # prompt positions carry no loss
    plain = torch.nn.functional.cross_entropy(
        hidden @ weight.t(), targets, ignore_index=-100, reduction="sum"
    )
    g_plain = torch.autograd.grad(plain, (hidden, weight))
    keep = targets != -100
    h2 = hidden.detach().clone().requires_grad_(True)
    w2 = weight.detach().clone().requires_grad_(True)
    chunked = FL.chunked_linear_cross_entropy(h2[keep], w2, targets[keep], chunk=5)  # 6 chunks
    g_chunked = torch.autograd.grad(chunked, (h2, w2))
    assert chunked.item() == pytest.approx(plain.item(), rel=1e-5)
    for a, b in zip(g_plain, g_chunked):
        assert torch.allclose(a, b, atol=1e-5)


def test_loss_module_matches_the_models_own_logits():
    model = tiny()
    ids, labels = example(20, seed=2)
    batch = PK.collate_padded([(ids, labels)], pad_id=0)
    logits = model(input_ids=batch["input_ids"]).logits[0]  # (t, vocab)
    want = torch.nn.functional.cross_entropy(logits, batch["targets"][0], ignore_index=-100, reduction="sum")
    for impl in ("chunked", "none"):
        got = FL.CausalLMLoss(model, impl=impl)(batch["input_ids"], batch["targets"])
        assert got.item() == pytest.approx(want.item(), rel=1e-5), impl


def test_auto_picks_the_fallback_without_cuda():
    assert FL.resolve_impl("auto", torch.device("cpu")) == "chunked"
    assert FL.resolve_impl("none", torch.device("cpu")) == "none"


# ------------------------------------------------------------------ packing


def test_pack_fills_rows_without_overflow_and_keeps_every_example():
    lengths = [900, 300, 1200, 50, 700, 2048, 100, 400]
    rows = PK.pack(lengths, width=2048)
    assert sorted(i for r in rows for i in r) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in r) <= 2048 for r in rows)
    assert len(rows) == 3  # 5,698 tokens: the fewest rows of 2048 that can hold them


def test_packed_positions_restart_and_targets_stop_at_each_example():
    a, b = example(5, seed=1, prompt=2), example(4, seed=2, prompt=1)
    batch = PK.collate_packed([[a, b]], pad_id=0, width=12)
    assert batch["position_ids"][0].tolist() == [0, 1, 2, 3, 4, 0, 1, 2, 3, 0, 1, 2]
    t = batch["targets"][0].tolist()
    assert t[4] == -100  # A's last token does not predict B's first
    assert t[:4] == [-100, a[0][2], a[0][3], a[0][4]] and t[5:8] == b[0][1:] and t[8:] == [-100] * 4


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_examples_do_not_attend_to_each_other(attn):
    """Changing example A changes nothing for B in the same row; packed loss = loss one by one."""
    model = tiny(attn)
    loss = FL.CausalLMLoss(model, impl="chunked")
    a, a2, b = example(9, seed=1), example(9, seed=7), example(12, seed=3)

    def per_token(row):
        batch = PK.collate_packed([row], pad_id=0, width=24)
        hidden = loss.hidden_states(batch["input_ids"], position_ids=batch["position_ids"])
        logits = model.lm_head(hidden)[0]  # (t, vocab)
        return logits, batch

    logits1, _ = per_token([a, b])
    logits2, _ = per_token([a2, b])
    assert not torch.allclose(logits1[:9], logits2[:9])  # A itself did change
    assert torch.allclose(logits1[9:21], logits2[9:21], atol=1e-5)  # B did not

    packed_batch = PK.collate_packed([[a, b]], pad_id=0, width=24)
    packed = loss(
        packed_batch["input_ids"], packed_batch["targets"], position_ids=packed_batch["position_ids"]
    )
    alone = sum(
        loss(bb["input_ids"], bb["targets"]) for bb in (PK.collate_padded([x], pad_id=0) for x in (a, b))
    )
    assert packed.item() == pytest.approx(alone.item(), rel=1e-4)


def test_varlen_backend_matches_the_library_packed_path():
    """Our per-example attention backend (CPU reference of the flash varlen path) = transformers' mask."""
    from assistant.finetune import varlen

    a, b, c = example(9, seed=1), example(12, seed=3), example(20, seed=5)
    batch = PK.collate_packed([[a, b], [c]], pad_id=0, width=24)
    assert batch["cu_seq_lens"].tolist() == [0, 9, 21, 24, 44, 48] and batch["max_length"] == 20
    lib = FL.CausalLMLoss(tiny("sdpa"), impl="chunked")
    want = lib.hidden_states(batch["input_ids"], position_ids=batch["position_ids"])
    model = tiny("sdpa")
    varlen.enable(model)
    ours = FL.CausalLMLoss(model, impl="chunked")
    got = ours.hidden_states(
        batch["input_ids"],
        position_ids=batch["position_ids"],
        cu_seq_lens=batch["cu_seq_lens"],
        max_length=batch["max_length"],
    )
    assert model.config._attn_implementation == varlen.NAME
    assert torch.allclose(got, want, atol=1e-5)
    # and without boundaries a row is one causal sequence (plain right-padded batches)
    padded = PK.collate_padded([a, c], pad_id=0)
    assert torch.allclose(
        ours.hidden_states(padded["input_ids"]), lib.hidden_states(padded["input_ids"]), atol=1e-5
    )


def test_packed_training_follows_the_padded_curve():
    """Same data, same steps: packing changes how examples share a forward pass, not the loss."""
    data = [example(n, seed=i) for i, n in enumerate([12, 30, 7, 22, 16, 9, 27, 14])]
    curves = {}
    for packing, attention in ((False, "sdpa"), (True, "sdpa"), (True, "varlen")):
        cfg = T.TrainConfig(
            r=4, alpha=8, dropout=0.0, lr=1e-2, max_steps=3, global_batch=4, micro_batch=2,
            max_seq_len=64, save_every=0, packing=packing, loss_impl="chunked", attention=attention,
        )  # fmt: skip
        res = T.train_encoded(tiny(), data, cfg, pad_id=0, out_dir=None, progress=False)
        curves[packing, attention] = res.losses
        assert res.loss_impl == "chunked" and res.checkpointing is False
    assert curves[True, "sdpa"] == pytest.approx(curves[False, "sdpa"], rel=1e-4)
    assert curves[True, "varlen"] == pytest.approx(curves[False, "sdpa"], rel=1e-4)


def test_forward_batches_pack_each_process_share():
    lengths = [40, 10, 30, 20, 50, 60, 5, 25]
    cfg = T.TrainConfig(max_seq_len=64, micro_batch=2, packing=True)
    idx = list(range(8))
    seen = []
    for rank in range(2):
        passes = T.forward_batches(idx, lengths, cfg, rank=rank, world=2)
        assert all(len(p) <= 2 for p in passes)  # micro_batch counts rows
        for p in passes:
            for row in p:
                assert sum(lengths[i] for i in row) <= 64
                seen += row
    assert sorted(seen) == idx


# ------------------------------------------------------------------ checkpointing decision


def test_checkpointing_only_when_the_estimate_does_not_fit():
    s = P.Shapes.from_config(P.ARCHS["llama-3.1-8b"])
    lora = s.lora_params(16, tuple(s.module_shapes()))
    common = dict(weight_bytes=16e9, tokens=4 * 2048, lora_params=lora, fused_loss=True)
    assert not P.checkpointing_needed(s, **common, budget_bytes=141e9)  # one H200: no recompute
    assert P.checkpointing_needed(s, **common, budget_bytes=24e9)  # a 24 GB card: recompute
    nf4 = dict(weight_bytes=5.7e9, tokens=2048, lora_params=lora, fused_loss=True)
    assert P.checkpointing_needed(s, **nf4, budget_bytes=16e9)  # QLoRA held to 16 GB
    # at 9,216 tokens per pass the logits alone decide: the fused loss saves the recompute
    edge = dict(weight_bytes=16e9, tokens=9216, lora_params=lora, budget_bytes=141e9)
    assert P.checkpointing_needed(s, **edge, fused_loss=False)
    assert not P.checkpointing_needed(s, **edge, fused_loss=True)
    # 8 rows of 2048: LoRA's activations (calibrated on an H200) no longer fit without recompute
    assert P.checkpointing_needed(s, **{**edge, "tokens": 8 * 2048}, fused_loss=True)


def test_explicit_checkpointing_setting_wins(tmp_path):
    data = [example(12, seed=i) for i in range(4)]
    cfg = T.TrainConfig(
        r=2, max_steps=1, global_batch=2, micro_batch=2, save_every=0, grad_checkpointing=True
    )
    res = T.train_encoded(tiny(), data, cfg, pad_id=0, out_dir=None, progress=False)
    assert res.checkpointing is True


# ------------------------------------------------------------------ plan from measured rates


def test_plan_uses_the_measured_rate_of_each_method_and_gpu_count(tmp_path):
    import json

    from assistant.finetune import rates as R

    rows = [
        {
            "config": "8b-all",
            "model": "llama-3.1-8b",
            "method": "lora",
            "gpus": 1,
            "mfu": 0.40,
            "tok_s": 12000,
        },
        {"config": "8b-plain", "model": "llama-3.1-8b", "method": "lora", "gpus": 1, "mfu": 0.90, "tok_s": 1},
        {
            "config": "8b-all-ddp",
            "model": "llama-3.1-8b",
            "method": "lora",
            "gpus": 2,
            "mfu": 0.36,
            "tok_s": 21600,
        },
        {
            "config": "8b-qlora-mb1",
            "model": "llama-3.1-8b",
            "method": "qlora",
            "gpus": 1,
            "mfu": 0.10,
            "tok_s": 3000,
        },
        {"config": "broken", "method": "lora", "gpus": 1, "error": "OOM"},
    ]
    (tmp_path / "results.json").write_text(json.dumps({"device": "test", "rows": rows}))
    measured = R.load_rates([tmp_path / "results.json"])
    assert len(measured) == 4  # the failed row carries no rate
    p = P.plan("llama-3.1-8b", data_tokens=1e7, rates=measured)
    lora, qlora = p["methods"]["lora"], p["methods"]["qlora"]
    assert lora["mfu"] == 0.40 and "8b-all" in lora["mfu_source"]  # ours, not the plain PEFT row
    assert qlora["mfu"] == 0.10
    assert qlora["hours"] == pytest.approx(lora["hours"] * 4)  # same FLOPs, a quarter of the rate
    two = P.plan("llama-3.1-8b", data_tokens=1e7, rates=measured, gpus=2)["methods"]["lora"]
    assert two["mfu"] == 0.36 and "assumed" not in two["mfu_source"]
    hw = {row["setup"]: row["methods"] for row in p["hardware"]}
    assert hw["1x H200 141 GB"]["lora"]["fits"] and not hw["1x H200 141 GB"]["lora"]["assumed"]
    assert not hw["1x H200 141 GB"]["full"]["fits"]  # 16 bytes/param of an 8B model: no
    assert hw["2x H200, FSDP2"]["full"]["fits"]  # sharded over two: yes
    text = P.format_plan(p)
    assert "Which method fits which hardware" in text and "| 2x H200, FSDP2 |" in text


# ------------------------------------------------------------------ the GPU benchmark's script, on the CPU


def test_bench_finetune_smoke_writes_json_and_markdown(tmp_path):
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    cmd = [
        sys.executable,
        str(repo / "scripts" / "bench_finetune.py"),
        "--smoke",
        "--configs",
        "8b-plain,8b-all",
    ]
    cmd += ["--warmup", "1", "--out-dir", str(tmp_path)]
    p = subprocess.run(
        cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert p.returncode == 0, p.stderr[-3000:]
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert [r["config"] for r in rows] == ["8b-plain", "8b-all"]
    assert all("error" not in r and r["tok_s_min"] <= r["tok_s"] <= r["tok_s_max"] for r in rows)
    assert all(len(r["losses"]) == 9 for r in rows)  # 1 warm-up + 8 timed steps
    assert rows[0]["checkpointing"] and rows[1]["packing"] and rows[1]["loss_impl"] == "chunked"
    md = (tmp_path / "results.md").read_text()
    assert "| 8b-all |" in md and "x plain PEFT tokens/s" in md
