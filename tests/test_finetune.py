"""Fine-tuning: data building and splitting, LoRA training on a tiny random Llama, resume, registry, plan.

Most tests use a tiny random LlamaForCausalLM and a byte-level BPE tokenizer trained on the
in-test corpus, so a training step takes milliseconds. The DDP test starts 2 CPU processes on gloo.
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

from assistant.errors import ConfigError  # noqa: E402
from assistant.finetune import data as D  # noqa: E402
from assistant.finetune import evaluate as E  # noqa: E402
from assistant.finetune import plan as P  # noqa: E402
from assistant.finetune import train as T  # noqa: E402
from assistant.prompting import REFUSAL  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

TOPICS = {
    "leave": (
        "Parental leave",
        [
            (
                "Eligibility",
                "Parental leave is 16 weeks of fully paid time off for every new parent. "
                "Teammates become eligible after three months of employment.",
            ),
            (
                "How to request leave",
                "Submit the request in Deel at least 30 days before the leave starts. "
                "Your manager approves the dates within five business days.",
            ),
        ],
    ),
    "laptop": (
        "Laptop policy",
        [
            (
                "Hardware",
                "The standard laptop is a 14-inch MacBook Pro with 32 GB of memory. "
                "Engineers may request a 16-inch model for heavy builds.",
            ),
            ("Returns", "Laptops must be returned within ten days after your last working day."),
        ],
    ),
    "oncall": (
        "On-call rotation",
        [
            (
                "Schedule",
                "The on-call rotation is one week long and starts every Monday at 10:00 UTC. "
                "Each engineer is on call about once every six weeks.",
            ),
            (
                "Escalation",
                "Incidents are escalated to the incident commander after fifteen minutes without progress.",
            ),
        ],
    ),
    "travel": (
        "Travel",
        [
            (
                "Booking",
                "Travel is booked through Navan so that the finance team sees every trip. "
                "Economy class is the default for flights under six hours.",
            )
        ],
    ),
    "expenses": (
        "Expenses",
        [
            (
                "Limits",
                "The meal allowance is 75 dollars per day while travelling for work. "
                "Receipts are required for every expense above 25 dollars.",
            )
        ],
    ),
    "security": (
        "Security",
        [
            (
                "Passwords",
                "The password manager is 1Password and every teammate must use it. "
                "Two-factor authentication is required on all company accounts.",
            )
        ],
    ),
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models run faster on one thread, and the test machine is shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def docs() -> list[D.DocText]:
    return [D.DocText(k, title, tuple(sections)) for k, (title, sections) in TOPICS.items()]


@pytest.fixture(scope="module")
def examples(docs) -> list[dict]:
    return D.synthesise(docs, seed=3, refusal_rate=0.5, max_chars=160)


@pytest.fixture(scope="module")
def tokenizer(docs):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    corpus = [s for d in docs for _, s in d.sections] + [
        REFUSAL,
        "Sources: Question: system user assistant",
    ] * 3
    tk.train_from_iterator(
        corpus,
        trainers.BpeTrainer(
            vocab_size=700,
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


def tiny_model(vocab: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
    )
    return LlamaForCausalLM(cfg)


# ------------------------------------------------------------------ data


def test_answers_quote_the_gold_passage_and_cite_it(examples):
    answers = [e for e in examples if e["kind"] == "answer"]
    assert len(answers) >= len(TOPICS)
    positions = set()
    for ex in answers:
        assert 3 <= len(ex["passages"]) <= 5  # the gold passage among 2-4 distractors
        (n,) = ex["cite"]
        positions.add(n)
        gold = ex["passages"][n - 1]
        assert ex["key_fact"] in gold["text"]
        assert ex["answer"].endswith(f"[{n}].")
        assert all(ex["key_fact"] not in p["text"] for p in ex["passages"] if p["n"] != n)
    assert len(positions) > 1  # the gold passage is not always in the same slot


def test_refusals_have_no_passage_with_the_answer(examples):
    refusals = [e for e in examples if e["kind"] == "refusal"]
    assert refusals
    for ex in refusals:
        assert ex["answer"] == REFUSAL and ex["cite"] == []
        assert all(ex["key_fact"] not in p["text"] for p in ex["passages"])
        assert {p["title"] for p in ex["passages"]}.isdisjoint({TOPICS[ex["doc_id"]][0]})


def test_split_is_by_document_and_fingerprint_tracks_content(tmp_path, examples):
    train, val = D.split_by_document(examples, validation=0.34, seed=1)
    assert train and val
    assert not {e["doc_id"] for e in train} & {e["doc_id"] for e in val}
    r1 = D.write_dataset(tmp_path / "a", train, val)
    r2 = D.write_dataset(tmp_path / "b", train, val)
    r3 = D.write_dataset(tmp_path / "c", train[1:], val)
    assert r1.fingerprint == r2.fingerprint != r3.fingerprint
    assert D.read_manifest(tmp_path / "a")["fingerprint"] == r1.fingerprint
    assert D.read_split(tmp_path / "a", "validation") == json.loads(json.dumps(val))


def test_feedback_keeps_thumbs_up_only():
    from types import SimpleNamespace as Row

    src = [{"n": 1, "title": "Travel", "quote": "Travel is booked through Navan."}]
    rows = [
        Row(question="How do I book travel?", answer="Through Navan [1].", sources=src, vote=1),
        Row(question="Bad?", answer="Wrong answer [1].", sources=src, vote=-1),
    ]
    out, negative = D.from_feedback(rows)
    assert negative == 1 and [e["answer"] for e in out] == ["Through Navan [1]."] and out[0]["cite"] == [1]


def test_user_jsonl_reports_the_bad_line(tmp_path):
    good = {"question": "Q?", "passages": [{"title": "T", "text": "text"}], "answer": "A [1]."}
    f = tmp_path / "u.jsonl"
    f.write_text(json.dumps(good) + "\n" + json.dumps({"question": "no answer"}) + "\n")
    with pytest.raises(ConfigError, match=r"u.jsonl:2"):
        D.from_jsonl(f)
    f.write_text(json.dumps(good) + "\n")
    assert D.from_jsonl(f)[0]["cite"] == [1]


def test_markdown_sections_become_documents(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.md").write_text(
        "# Title X\n\nIntro [link](http://x) text that is long enough to keep as a section body here, "
        "with a few more words.\n## Part\nThe **part** has a body that is also long enough to be kept "
        "by the splitter, and then some.\n## Tiny\nToo short.\n"
    )
    (doc,) = D.documents_from_markdown(tmp_path, folders=["a"])
    assert doc.doc_id == "a/x.md" and doc.title == "Title X"
    assert [h for h, _ in doc.sections] == ["Title X", "Part"] and "http" not in doc.sections[0][1]


# ------------------------------------------------------------------ tokenization and training


def test_loss_is_on_answer_tokens_only(tokenizer, examples):
    ex = examples[0]
    ids, labels = T.encode(tokenizer, ex, max_seq_len=4096)
    answer = tokenizer.decode([t for t, y in zip(ids, labels) if y != -100])
    assert answer == ex["answer"] + "<|im_end|>"
    assert T.encode(tokenizer, ex, max_seq_len=16) is None


def test_batches_cover_the_same_examples_on_any_world_size():
    lengths = [5, 9, 3, 7, 8, 2, 6, 4]
    idx = T.step_indices(8, 1, global_batch=4, seed=0)
    one = [
        i for mb in T.micro_batches(idx, lengths, rank=0, world=1, micro_batch=2, bucketing=True) for i in mb
    ]
    two = [
        i
        for r in range(2)
        for mb in T.micro_batches(idx, lengths, rank=r, world=2, micro_batch=1, bucketing=True)
        for i in mb
    ]
    assert sorted(one) == sorted(two) == sorted(idx)
    first = T.micro_batches(idx, lengths, rank=0, world=1, micro_batch=2, bucketing=True)[0]
    assert max(lengths[i] for i in first) <= min(
        lengths[i] for i in idx if i not in first
    )  # short ones together


def test_lora_training_lowers_loss_resumes_and_registers(tmp_path, tokenizer, examples):
    from peft import PeftModel

    from assistant.llm.adapters import AdapterRegistry

    cfg = T.TrainConfig(
        r=4,
        alpha=8,
        dropout=0.0,
        lr=3e-3,
        max_steps=12,
        global_batch=4,
        micro_batch=2,
        max_seq_len=1024,
        save_every=3,
    )
    out = tmp_path / "run"
    first = T.train_model(
        tiny_model(len(tokenizer)),
        tokenizer,
        examples,
        cfg,
        out_dir=out,
        progress=False,
        data_fingerprint="fp1",
        stop_after=5,
    )
    assert first.steps == 5 and not (out / "adapter").exists()
    assert json.loads((out / "checkpoint" / "step.json").read_text())["step"] == 5
    with pytest.raises(ConfigError, match="other training data"):
        T.train_model(
            tiny_model(len(tokenizer)),
            tokenizer,
            examples,
            cfg,
            out_dir=out,
            progress=False,
            data_fingerprint="other",
        )
    second = T.train_model(
        tiny_model(len(tokenizer)),
        tokenizer,
        examples,
        cfg,
        out_dir=out,
        progress=False,
        data_fingerprint="fp1",
    )
    assert second.resumed_from == 5 and second.steps == 12
    assert second.losses[:5] == first.losses  # the history continues, not restarts
    assert sum(second.losses[-3:]) / 3 < sum(second.losses[:3]) / 3
    reg = AdapterRegistry(tmp_path / "data")
    rec = reg.register(
        "tiny",
        second.adapter_dir,
        base_fingerprint="base",
        data_fingerprint="fp1",
        params={"r": 4},
        metrics={},
    )
    path = reg.resolve("tiny")
    assert path == rec.path
    loaded = PeftModel.from_pretrained(tiny_model(len(tokenizer)), str(path))
    ids = torch.tensor([T.encode(tokenizer, examples[0], max_seq_len=4096)[0]])
    assert torch.isfinite(loaded(input_ids=ids).logits).all()


def test_bad_settings_name_the_field():
    with pytest.raises(ConfigError, match="dropout"):
        T.TrainConfig(dropout=1.5)
    with pytest.raises(ConfigError, match="target modules"):
        T.attach_lora(tiny_model(50), T.TrainConfig(target_modules=("nope",)))


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_matches_one_and_resumes_on_one(tmp_path):
    """1 and 2 gloo processes follow the same loss curve; a 2-process checkpoint resumes on 1."""
    script = tmp_path / "ddp.py"
    script.write_text(
        textwrap.dedent(f"""
        import json, sys, torch
        from pathlib import Path
        sys.path.insert(0, {str(REPO)!r})
        from transformers import LlamaConfig, LlamaForCausalLM
        from assistant.finetune import train as T
        out_json, stop = sys.argv[1], int(sys.argv[3]) or None
        out_dir = Path(sys.argv[2]) if sys.argv[2] != "-" else None
        d = T.init_distributed("cpu")
        torch.manual_seed(0)
        m = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2))
        g = torch.Generator().manual_seed(1)
        data = [(ids, [-100] * 4 + ids[4:]) for ids in (torch.randint(0, 64, (int(n),), generator=g).tolist()
                for n in torch.randint(8, 24, (16,), generator=g))]
        cfg = T.TrainConfig(r=4, alpha=8, dropout=0.0, lr=1e-2, max_steps=4, global_batch=8, micro_batch=2,
                            save_every=0)
        res = T.train_encoded(m, data, cfg, pad_id=0, out_dir=out_dir, dist=d, progress=False,
                              stop_after=stop)
        if d.main:
            open(out_json, "w").write(json.dumps(res.losses))
    """)
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def run(name: str, procs: int, out_dir: str = "-", stop: int = 0) -> list[float]:
        launcher = (
            [sys.executable]
            if procs == 1
            else [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={procs}"]
        )
        for _attempt in range(
            2
        ):  # gloo on a loaded 2-core box can abort while connecting; the result must not differ
            p = subprocess.run(
                launcher + [str(script), str(tmp_path / name), out_dir, str(stop)],
                capture_output=True,
                text=True,
                timeout=300,
                env=env,
            )
            if p.returncode == 0 or "Signal 6" not in p.stderr:
                break
        assert p.returncode == 0, p.stderr[-4000:]
        return json.loads((tmp_path / name).read_text())

    one = run("one.json", 1)
    assert one[-1] < one[0]
    assert run("two.json", 2) == pytest.approx(one, rel=1e-3)
    assert len(run("half.json", 2, str(tmp_path / "ck"), stop=2)) == 2
    assert run("resumed.json", 1, str(tmp_path / "ck")) == pytest.approx(one, rel=1e-3)


# ------------------------------------------------------------------ evaluation and planning


def test_scores_count_what_a_user_notices():
    ans = {"kind": "answer", "key_fact": "Parental leave is 16 weeks of fully paid time off.", "cite": [2]}
    ref = {"kind": "refusal", "key_fact": "x", "cite": []}
    s = E.Scores()
    s.add(ans, "Parental leave is 16 weeks, fully paid time off [2].")
    s.add(ans, "It is 16 weeks [1].")
    s.add(ref, REFUSAL)
    s.add(ans, REFUSAL)
    t = s.table()
    assert t["key fact contained"] == pytest.approx(1 / 3) and t["citation correct"] == pytest.approx(1 / 3)
    assert t["refusal correct (unanswerable)"] == 1.0 and t["false refusals (answerable)"] == pytest.approx(
        1 / 3
    )
    assert "| key fact contained |" in E.format_table({"base": t})


def test_plan_orders_methods_and_counts_parameters():
    p = P.plan("llama-3.1-8b", data_tokens=1e7, gpu="h200")
    assert 8.0e9 < p["params"] < 8.1e9  # Llama-3.1-8B has 8.03B parameters
    m = p["methods"]
    assert m["qlora"]["total"] < m["lora"]["total"] < m["full"]["total"]
    assert m["full"]["flops"] > m["lora"]["flops"] == m["qlora"]["flops"]
    assert m["full"]["hours"] > m["lora"]["hours"] > 0
    assert 1.3e8 < P.plan("bundled", data_tokens=1e6)["params"] < 1.4e8
    assert "PRE-TRAINING" in P.format_plan(p)
    with pytest.raises(ConfigError, match="unknown GPU"):
        P.plan("bundled", data_tokens=1, gpu="tpu")


def test_cli_builds_data_from_jsonl_and_plans(tmp_path):
    from typer.testing import CliRunner

    from assistant.cli import app

    rows = [
        {
            "doc_id": f"d{i}",
            "question": f"Q{i}?",
            "passages": [{"title": "T", "text": f"fact {i}"}],
            "answer": f"fact {i} [1].",
        }
        for i in range(10)
    ]
    (tmp_path / "u.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    env = {"ASSISTANT_DATA_DIR": str(tmp_path / "data")}
    r = CliRunner().invoke(
        app,
        ["finetune", "build-data", "--from", str(tmp_path / "u.jsonl"), "--out", str(tmp_path / "ds")],
        env=env,
    )
    assert r.exit_code == 0, r.output
    assert D.read_manifest(tmp_path / "ds")["train"] + D.read_manifest(tmp_path / "ds")["validation"] == 10
    r = CliRunner().invoke(app, ["finetune", "plan", "--base", "llama-3.1-8b", "--data", "2e7"], env=env)
    assert r.exit_code == 0 and "| qlora |" in r.output, r.output
    r = CliRunner().invoke(app, ["adapters", "list"], env=env)
    assert r.exit_code == 0, r.output


def test_cli_trains_registers_and_switches_adapter(tmp_path, tokenizer, examples):
    """build-data output → `finetune train` on a tiny model → registered → `adapters use` → default."""
    from typer.testing import CliRunner

    from assistant.cli import app
    from assistant.llm.adapters import AdapterRegistry

    base = tmp_path / "tiny-base"
    tiny_model(len(tokenizer)).save_pretrained(base)
    tokenizer.save_pretrained(base)
    train, val = D.split_by_document(examples, validation=0.34, seed=1)
    D.write_dataset(tmp_path / "ds", train, val)
    env = {"ASSISTANT_DATA_DIR": str(tmp_path / "data")}
    r = CliRunner().invoke(
        app,
        [
            "finetune",
            "train",
            "--data",
            str(tmp_path / "ds"),
            "--name",
            "hr-answers",
            "--base",
            str(base),
            "--max-steps",
            "2",
            "--global-batch",
            "2",
            "--micro-batch",
            "2",
            "--r",
            "2",
            "--eval-limit",
            "2",
        ],
        env=env,
    )
    assert r.exit_code == 0, r.output
    assert "registered hr-answers v1" in r.output and "citation correct" in r.output
    reg = AdapterRegistry(tmp_path / "data")
    (rec,) = reg.list()
    assert rec.params["r"] == 2 and rec.metrics["loss_first"] > 0 and "key fact contained" in rec.metrics
    r = CliRunner().invoke(app, ["adapters", "use", "hr-answers"], env=env)
    assert r.exit_code == 0, r.output
    assert reg.resolve("default") == rec.path
    assert "* hr-answers v1" in CliRunner().invoke(app, ["adapters", "list"], env=env).output
    r = CliRunner().invoke(
        app,
        [
            "adapters",
            "eval",
            "hr-answers",
            "--data",
            str(tmp_path / "ds"),
            "--base",
            str(base),
            "--limit",
            "2",
        ],
        env=env,
    )
    assert r.exit_code == 0, r.output
    saved = json.loads((tmp_path / "ds" / "eval-hr-answers.json").read_text())["results"]
    assert set(saved) == {"base", "hr-answers"} and saved["base"]["examples"] == 2


def test_build_from_the_index_skips_restricted_documents(engine, tmp_path):
    from connectors.local_files import LocalFilesConnector

    sample = REPO / "assistant" / "sample_docs"
    engine.sync(LocalFilesConnector(sample, name="sample", acl_file=sample / "acl.toml"))
    docs = D.documents_from_store(engine.store)
    ids = {d.doc_id for d in docs}
    assert ids and not any("restricted/" in i for i in ids)
    assert any(
        "restricted/" in d.doc_id for d in D.documents_from_store(engine.store, include_restricted=True)
    )
    examples = D.synthesise(docs, seed=0)
    train, val = D.split_by_document(examples, validation=0.2)
    assert train and val and not {e["doc_id"] for e in train} & {e["doc_id"] for e in val}
    assert all(
        not line.startswith("#") for e in examples for p in e["passages"] for line in p["text"].splitlines()
    )
