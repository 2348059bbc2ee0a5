"""Several training processes on the CPU (gloo): FSDP2 wiring, resume on another process count, --gpus.

- FSDP2 over 2 processes follows the 1-process loss curve (packing and the chunked loss on), and
  its checkpoint, written by 2 processes, resumes in 1 process on the same curve.
- ``assistant finetune train --gpus 2`` relaunches itself under torchrun: two processes train,
  NVLink multicast is off in their environment, and the adapter is registered once.

(DDP 2 → 1 is covered by tests/test_finetune.py::test_ddp_on_two_cpu_processes_matches_one_and_resumes_on_one.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}

SCRIPT = textwrap.dedent(f"""
    import json, sys, torch
    from pathlib import Path
    sys.path.insert(0, {str(REPO)!r})
    from transformers import LlamaConfig, LlamaForCausalLM
    from assistant.finetune import train as T
    out_json, out_dir, stop, strategy = sys.argv[1], sys.argv[2], int(sys.argv[3]) or None, sys.argv[4]
    d = T.init_distributed("cpu")
    torch.manual_seed(0)
    m = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                     num_attention_heads=4, num_key_value_heads=2))
    g = torch.Generator().manual_seed(1)
    data = [(ids, [-100] * 4 + ids[4:]) for ids in (torch.randint(0, 64, (int(n),), generator=g).tolist()
            for n in torch.randint(8, 24, (16,), generator=g))]
    cfg = T.TrainConfig(r=4, alpha=8, dropout=0.0, lr=1e-2, max_steps=4, global_batch=8, micro_batch=1,
                        max_seq_len=32, save_every=0, strategy=strategy, loss_impl="chunked")
    res = T.train_encoded(m, data, cfg, pad_id=0, out_dir=Path(out_dir) if out_dir != "-" else None, dist=d,
                          progress=False, stop_after=stop)
    if d.main:
        open(out_json, "w").write(json.dumps({{"losses": res.losses, "strategy": res.strategy}}))
""")


def _run(tmp_path: Path, name: str, procs: int, *, out_dir: str = "-", stop: int = 0, strategy: str = "auto"):
    script = tmp_path / "worker.py"
    script.write_text(SCRIPT)
    launcher = (
        [sys.executable]
        if procs == 1
        else [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={procs}"]
    )
    for _attempt in range(2):  # gloo on a loaded 2-core box can abort while connecting
        p = subprocess.run(
            launcher + [str(script), str(tmp_path / name), out_dir, str(stop), strategy],
            capture_output=True,
            text=True,
            timeout=300,
            env=ENV,
        )
        if p.returncode == 0 or "Signal 6" not in p.stderr:
            break
    assert p.returncode == 0, p.stderr[-4000:]
    return json.loads((tmp_path / name).read_text())


@pytest.mark.slow
def test_fsdp2_on_two_processes_matches_one_and_resumes_on_one(tmp_path):
    one = _run(tmp_path, "one.json", 1)
    assert one["losses"][-1] < one["losses"][0]
    half = _run(tmp_path, "half.json", 2, out_dir=str(tmp_path / "ck"), stop=2, strategy="fsdp")
    assert half["strategy"] == "fsdp"
    assert half["losses"] == pytest.approx(one["losses"][:2], rel=1e-3)
    step = json.loads((tmp_path / "ck" / "checkpoint" / "step.json").read_text())
    assert step["step"] == 2 and step["world"] == 2
    resumed = _run(tmp_path, "resumed.json", 1, out_dir=str(tmp_path / "ck"))
    assert resumed["losses"] == pytest.approx(one["losses"], rel=1e-3)  # the curve continues, same numbers


@pytest.mark.slow
def test_cli_gpus_2_trains_in_two_processes_and_registers_once(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from assistant.finetune import data as D

    tok = _tokenizer()
    torch.manual_seed(0)
    LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tok),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
        )
    ).save_pretrained(tmp_path / "base")
    assert isinstance(tok, PreTrainedTokenizerFast)
    tok.save_pretrained(tmp_path / "base")
    examples = [
        {
            "id": f"ex{i}",
            "doc_id": f"doc{i % 4}",
            "kind": "answer",
            "question": f"How long is leave {i}?",
            "passages": [{"n": 1, "title": "Leave", "text": f"Leave is {i} weeks."}],
            "answer": f"Leave is {i} weeks [1].",
        }
        for i in range(12)
    ]
    D.write_dataset(tmp_path / "ds", examples[:10], examples[10:])
    data_dir = tmp_path / "data"
    cmd = [sys.executable, "-m", "assistant.cli", "finetune", "train", "--data", str(tmp_path / "ds")]
    cmd += ["--name", "two", "--base", str(tmp_path / "base"), "--max-steps", "2", "--global-batch", "4"]
    cmd += ["--micro-batch", "1", "--r", "2", "--no-eval", "--gpus", "2"]
    env = {**ENV, "ASSISTANT_DATA_DIR": str(data_dir), "CUDA_VISIBLE_DEVICES": ""}
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=400, env=env, cwd=tmp_path)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-1500:]
    assert p.stdout.count("registered two v1") == 1  # rank 0 only
    run = json.loads((data_dir / "finetune" / "two" / "training.json").read_text())
    assert run["world"] == 2 and run["strategy"] == "ddp"
    assert run["launch_env"] == {
        "NCCL_NVLS_ENABLE": "0",
        "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1",
        "NVSHMEM_DISABLE_NVLS": "1",
    }


def _tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    corpus = ["Leave is 16 weeks.", "How long is leave?", "Sources: Question: system user assistant"] * 3
    tk.train_from_iterator(
        corpus,
        trainers.BpeTrainer(
            vocab_size=300,
            special_tokens=["<|im_start|>", "<|im_end|>", "<pad>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|im_end|>", pad_token="<pad>")
    tok.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    return tok


@pytest.mark.slow
def test_bench_70b_path_builds_on_meta_shards_with_fsdp2_then_trains(tmp_path):
    """The 2-GPU benchmark's FSDP2 row, tiny shapes on 2 gloo processes: meta → fully_shard → fill."""
    cmd = [sys.executable, str(REPO / "scripts" / "bench_finetune.py"), "--smoke", "--configs", "70b-fsdp"]
    cmd += ["--warmup", "1", "--out-dir", str(tmp_path)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=400, env=ENV)
    assert p.returncode == 0, p.stderr[-3000:]
    (row,) = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert "error" not in row, row
    assert row["gpus"] == 2 and row["strategy"] == "fsdp" and len(row["losses"]) == 9
    assert all(x == x and 0 < x < 20 for x in row["losses"])  # finite: the shards were filled
