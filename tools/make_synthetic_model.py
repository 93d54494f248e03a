#!/usr/bin/env python3
"""Write a Llama-shaped GGUF model with random weights, for speed measurements.

    /work/refenv/bin/python tools/make_synthetic_model.py --type q4_k_m [-o OUT] [--seed 1]

Default shape: TinyLlama 1.1B (n_embd 2048, 22 layers, n_ff 5632, 32 heads,
4 KV heads, vocab 32000, untied output), about 1.1e9 parameters. What it is
for: timing both engines on a model ten times the size of the default one,
where decode is bound by memory bandwidth rather than by caches. Its outputs
are meaningless.

Weights are random in the quantized domain: every block gets random quant
bytes and a random scale of a magnitude that keeps weights around 0.02, so
no quantizer is needed and the file is written in seconds. Types:

  q4_0    every matrix Q4_0 except output.weight Q6_K (what llama-quantize
          Q4_0 makes)
  q4_k_m  Q4_K, with Q6_K for output.weight and for attn_v / ffn_down in the
          layers llama-quantize's Q4_K_M gives more bits (the first and last
          eighth of the layers and every third one between)
  q8_0    every matrix Q8_0
  f16     normal(0, 0.02) weights in F16: the input llama-quantize needs for
          any other type

Norm weights are F32 ones. The tokenizer is SmolLM2's (tokenizer.* keys of
--vocab-from), cut to --n-vocab tokens: merges that need a dropped token are
dropped too, so the cut vocabulary is a consistent BPE tokenizer.

Deterministic: the same arguments give the same bytes (numpy's PCG64 with
--seed; tensors written in a fixed order). Needs the gguf and numpy packages
(/work/refenv/bin/python, or PYTHONPATH=<llama.cpp>/gguf-py). The output goes
to models/derived/ by default, which git ignores: never commit it.
"""

import argparse
import os
import sys

import numpy as np

try:
    import gguf
except ImportError:
    sys.exit("make_synthetic_model: the gguf package is missing (use /work/refenv/bin/python, "
             "or PYTHONPATH=<llama.cpp>/gguf-py)")

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_VOCAB_FROM = os.path.join(REPO_ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
Q = gguf.GGMLQuantizationType

# Per block type: (bytes, weights, [(offset, kind, magnitude)]) - the fields
# that are not plain random quant bytes. "f16": an fp16 scale drawn from
# magnitude x [0.5, 1.5); "i8": int8 sub-block scales drawn from
# [-magnitude, magnitude]. Magnitudes put the weights' spread at 0.02-0.04
# (Q4_0: d x (q - 8); Q8_0: d x q; Q4_K: d x sc x q - dmin x m with 6-bit sc
# and m; Q6_K: d x scale x (q - 32)).
BLOCKS = {
    Q.Q4_0: (18, 32, [(0, "f16", 4e-3)]),
    Q.Q8_0: (34, 32, [(0, "f16", 2.7e-4)]),
    Q.Q4_K: (144, 256, [(0, "f16", 1.4e-4), (2, "f16", 1.0e-3)]),
    Q.Q6_K: (210, 256, [(192 + i, "i8", 16) for i in range(16)] + [(208, "f16", 1.2e-4)]),
}

FILE_TYPES = {"q4_0": gguf.LlamaFileType.MOSTLY_Q4_0, "q4_k_m": gguf.LlamaFileType.MOSTLY_Q4_K_M,
              "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0, "f16": gguf.LlamaFileType.MOSTLY_F16}


def use_more_bits(i, n):
    """llama-quantize's choice of the layers that get Q6_K in Q4_K_M."""
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def tensor_type(kind, name, layer, n_layer):
    if kind == "f16":
        return Q.F16
    if kind == "q8_0":
        return Q.Q8_0
    if name == "output.weight":
        return Q.Q6_K
    if kind == "q4_0":
        return Q.Q4_0
    if name.endswith(("attn_v.weight", "ffn_down.weight")) and use_more_bits(layer, n_layer):
        return Q.Q6_K
    return Q.Q4_K


def tensor_plan(a):
    """[(name, (rows, cols) in numpy order, layer or -1)] in file order."""
    hd = a.n_embd // a.n_head
    plan = [("token_embd.weight", (a.n_vocab, a.n_embd), -1)]
    for i in range(a.n_layer):
        p = f"blk.{i}."
        plan += [(p + "attn_norm.weight", (a.n_embd,), i),
                 (p + "attn_q.weight", (a.n_head * hd, a.n_embd), i),
                 (p + "attn_k.weight", (a.n_head_kv * hd, a.n_embd), i),
                 (p + "attn_v.weight", (a.n_head_kv * hd, a.n_embd), i),
                 (p + "attn_output.weight", (a.n_embd, a.n_head * hd), i),
                 (p + "ffn_norm.weight", (a.n_embd,), i),
                 (p + "ffn_gate.weight", (a.n_ff, a.n_embd), i),
                 (p + "ffn_up.weight", (a.n_ff, a.n_embd), i),
                 (p + "ffn_down.weight", (a.n_embd, a.n_ff), i)]
    plan.append(("output_norm.weight", (a.n_embd,), -1))
    if not a.tied:
        plan.append(("output.weight", (a.n_vocab, a.n_embd), -1))
    return plan


def random_blocks(rng, qtype, rows, cols):
    """(rows, bytes per row) uint8 of random blocks of qtype."""
    nbytes, nweights, fields = BLOCKS[qtype]
    if cols % nweights:
        sys.exit(f"make_synthetic_model: a row of {cols} is not a whole number of "
                 f"{qtype.name} blocks ({nweights})")
    nblk = rows * (cols // nweights)
    blk = np.frombuffer(rng.bytes(nblk * nbytes), dtype=np.uint8).reshape(nblk, nbytes).copy()
    for off, kind, mag in fields:
        if kind == "f16":
            v = (mag * rng.uniform(0.5, 1.5, nblk)).astype(np.float16)
            blk[:, off:off + 2] = v.view(np.uint8).reshape(nblk, 2)
        else:
            blk[:, off] = rng.integers(-mag, mag + 1, nblk).astype(np.int8).view(np.uint8)
    return blk.reshape(rows, -1)


def make_tensor(rng, qtype, shape):
    if len(shape) == 1:
        return np.ones(shape, dtype=np.float32)
    if qtype == Q.F16:
        return (0.02 * rng.standard_normal(shape, dtype=np.float32)).astype(np.float16)
    return random_blocks(rng, qtype, *shape)


def nbytes_of(qtype, shape):
    if len(shape) == 1:
        return 4 * shape[0]
    if qtype == Q.F16:
        return 2 * shape[0] * shape[1]
    nbytes, nweights, _ = BLOCKS[qtype]
    return shape[0] * (shape[1] // nweights) * nbytes


def field_value(reader, key):
    f = reader.fields.get(key)
    return None if f is None else f.contents()


def cut_vocab(tokens, types, merges, n_vocab):
    """The first n_vocab tokens, and the merges whose parts and result remain."""
    if n_vocab > len(tokens):
        sys.exit(f"make_synthetic_model: --n-vocab {n_vocab} exceeds the tokenizer's "
                 f"{len(tokens)} tokens")
    tokens, types = tokens[:n_vocab], types[:n_vocab]
    kept = set(tokens)
    out = []
    for m in merges:
        left, _, right = m.partition(" ")
        if left in kept and right in kept and left + right in kept:
            out.append(m)
    return tokens, types, out


def add_tokenizer(w, vocab_from, n_vocab):
    r = gguf.GGUFReader(vocab_from)
    tokens = field_value(r, "tokenizer.ggml.tokens")
    types = field_value(r, "tokenizer.ggml.token_type")
    merges = field_value(r, "tokenizer.ggml.merges") or []
    if not tokens:
        sys.exit(f"make_synthetic_model: {vocab_from} has no tokenizer.ggml.tokens")
    tokens, types, merges = cut_vocab(tokens, types, merges, n_vocab)
    w.add_tokenizer_model(field_value(r, "tokenizer.ggml.model"))
    pre = field_value(r, "tokenizer.ggml.pre")
    if pre:
        w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(types)
    if merges:
        w.add_token_merges(merges)
    for key, add in (("bos_token_id", w.add_bos_token_id), ("eos_token_id", w.add_eos_token_id),
                     ("unknown_token_id", w.add_unk_token_id),
                     ("padding_token_id", w.add_pad_token_id)):
        v = field_value(r, "tokenizer.ggml." + key)
        if v is not None and v < n_vocab:
            add(v)
    for key, add in (("add_bos_token", w.add_add_bos_token),
                     ("add_space_prefix", w.add_add_space_prefix)):
        v = field_value(r, "tokenizer.ggml." + key)
        if v is not None:
            add(bool(v))
    tmpl = field_value(r, "tokenizer.chat_template")
    if tmpl:
        w.add_chat_template(tmpl)
    return len(merges)


def add_hparams(w, a):
    w.add_name(f"synthetic-llama-{a.type} (random weights, seed {a.seed})")
    w.add_context_length(a.n_ctx)
    w.add_embedding_length(a.n_embd)
    w.add_block_count(a.n_layer)
    w.add_feed_forward_length(a.n_ff)
    w.add_head_count(a.n_head)
    w.add_head_count_kv(a.n_head_kv)
    w.add_rope_dimension_count(a.n_embd // a.n_head)
    w.add_rope_freq_base(a.rope_base)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(a.n_vocab)
    w.add_file_type(FILE_TYPES[a.type])
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--type", choices=sorted(FILE_TYPES), default="q4_k_m")
    ap.add_argument("-o", "--out", help="output file (default models/derived/"
                    "synthetic-llama-1b.<TYPE>.gguf)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--n-embd", type=int, default=2048)
    ap.add_argument("--n-layer", type=int, default=22)
    ap.add_argument("--n-ff", type=int, default=5632)
    ap.add_argument("--n-head", type=int, default=32)
    ap.add_argument("--n-head-kv", type=int, default=4)
    ap.add_argument("--n-vocab", type=int, default=32000)
    ap.add_argument("--n-ctx", type=int, default=2048)
    ap.add_argument("--rope-base", type=float, default=10000.0)
    ap.add_argument("--tied", action="store_true", help="no output.weight (tied embeddings)")
    ap.add_argument("--vocab-from", default=DEFAULT_VOCAB_FROM,
                    help="GGUF file whose tokenizer.* keys are reused (default SmolLM2)")
    a = ap.parse_args(argv)
    if a.n_embd % a.n_head or a.n_head % a.n_head_kv:
        ap.error("n_embd must divide by n_head, and n_head by n_head_kv")
    if a.out is None:
        a.out = os.path.join(REPO_ROOT, "models", "derived", f"synthetic-llama-1b.{a.type}.gguf")
    return a


def main(argv):
    a = parse_args(argv)
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    tmp = f"{a.out}.partial.{os.getpid()}"
    rng = np.random.default_rng(a.seed)
    plan = [(n, s, tensor_type(a.type, n, i, a.n_layer)) for n, s, i in tensor_plan(a)]
    w = gguf.GGUFWriter(tmp, "llama")
    try:
        add_hparams(w, a)
        n_merges = add_tokenizer(w, a.vocab_from, a.n_vocab)
        for name, shape, qt in plan:
            if len(shape) == 1:
                w.add_tensor_info(name, shape, np.dtype(np.float32), nbytes_of(qt, shape))
            elif qt == Q.F16:
                w.add_tensor_info(name, shape, np.dtype(np.float16), nbytes_of(qt, shape))
            else:
                w.add_tensor_info(name, shape, np.dtype(np.float32), nbytes_of(qt, shape),
                                  raw_dtype=qt)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        for name, shape, qt in plan:
            w.write_tensor_data(make_tensor(rng, qt, shape))
        w.close()
        os.replace(tmp, a.out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    n_params = sum(int(np.prod(s)) for _, s, _ in plan)
    print(f"make_synthetic_model: {a.out}: {n_params / 1e9:.3f}e9 parameters, "
          f"{os.path.getsize(a.out) / 2**20:.1f} MiB, vocab {a.n_vocab} ({n_merges} merges)",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
