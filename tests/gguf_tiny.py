"""A tiny random Qwen2 GGUF file (float32 tensors, a byte-level BPE vocabulary, a ChatML template),
written with the ``gguf`` package, so GGUF conversion can be tested without the 1 GB model."""

from __future__ import annotations

from pathlib import Path

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _byte_chars() -> list[str]:
    """GPT-2's byte → printable character table (the byte-level BPE alphabet)."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for _, c in sorted(zip(bs, cs))]


def write_tiny_qwen2_gguf(
    path: Path,
    *,
    hidden: int = 32,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    ffn: int = 64,
    seed: int = 0,
    context: int = 512,
) -> Path:
    import gguf
    import numpy as np

    rng = np.random.default_rng(seed)
    chars = _byte_chars()
    merges = ["Ġ t", "Ġ a", "h e", "i n", "Ġt he"]
    tokens = chars + [a + b for a, b in (m.split(" ") for m in merges)]
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tokens += specials
    types = [1] * (len(tokens) - len(specials)) + [3] * len(specials)  # 1 normal, 3 control
    vocab = len(tokens)
    w = gguf.GGUFWriter(str(path), "qwen2")
    w.add_name("tiny-qwen2")
    w.add_context_length(context)
    w.add_embedding_length(hidden)
    w.add_block_count(layers)
    w.add_feed_forward_length(ffn)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_file_type(0)  # all float32
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_eos_token_id(tokens.index("<|im_end|>"))
    w.add_bos_token_id(tokens.index("<|endoftext|>"))
    w.add_pad_token_id(tokens.index("<|endoftext|>"))
    w.add_add_bos_token(False)
    w.add_chat_template(CHATML)
    head_dim = hidden // heads

    def t(name: str, *shape: int) -> None:
        w.add_tensor(name, (rng.standard_normal(shape) * 0.05).astype(np.float32))

    t("token_embd.weight", vocab, hidden)
    w.add_tensor("output_norm.weight", np.ones(hidden, dtype=np.float32))
    for i in range(layers):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", np.ones(hidden, dtype=np.float32))
        t(p + "attn_q.weight", hidden, hidden)
        t(p + "attn_q.bias", hidden)
        t(p + "attn_k.weight", kv_heads * head_dim, hidden)
        t(p + "attn_k.bias", kv_heads * head_dim)
        t(p + "attn_v.weight", kv_heads * head_dim, hidden)
        t(p + "attn_v.bias", kv_heads * head_dim)
        t(p + "attn_output.weight", hidden, hidden)
        w.add_tensor(p + "ffn_norm.weight", np.ones(hidden, dtype=np.float32))
        t(p + "ffn_gate.weight", ffn, hidden)
        t(p + "ffn_up.weight", ffn, hidden)
        t(p + "ffn_down.weight", hidden, ffn)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
