#!/usr/bin/env python3
"""Make the reference GGUF model set: tiny random-weight models of each
architecture, converted with llama.cpp's convert_hf_to_gguf.py and quantized
with llama-quantize to every common format, plus requantized real weights.

    /work/refenv/bin/python tools/make_ref_models.py OUTDIR [--arch A,B] [--formats F,G]
                                                         [--no-real] [--llama-cpp DIR]

Writes (nothing here is committed; see docs/models.md):
    OUTDIR/hf/<arch>/              save_pretrained() model + tokenizer files
    OUTDIR/tok/                    the trained tokenizers (spm-*.model, bpe.json)
    OUTDIR/<arch>-<FMT>.gguf       FMT in F32 F16 BF16 Q8_0 Q4_0 ... (FORMATS)
    OUTDIR/smollm2-<FMT>.gguf      SmolLM2-135M-Instruct requantized from its Q4_1
    OUTDIR/gemma3-270m-Q4_K_M.gguf symlink to models/gemma-3-270m-q4_k_m.gguf
    OUTDIR/manifest.json           one record per file: name, arch, format,
                                   kind (tiny|real), base (the F32 file of the
                                   same weights, the KL reference), hf_dir, sha256

Everything is deterministic (fixed seeds; tokenizers trained single-threaded
on tools/ref_corpus only), so regenerating gives byte-identical files and the
sha256 recorded with the references (tests/golden/models/) says whether a
reference still belongs to a file.

Tiny models: hidden 256 (so K-quant rows of 256 apply), 2-6 layers, n_ff 512,
768 or 1024, GQA where the architecture has it, vocab 1000-1200. Weights are
drawn at a scale where every layer changes the residual stream by O(1) (so
attention and MLP bugs show in the output) and the output projection is
scaled so that logits are peaked (top1-top2 margins mostly > 0.5): random
tiny models at the default init (0.02) have near-tied logits and every
rounding difference would flip greedy choices. Norm weights and biases are
randomised too, so a missing bias or a wrong norm offset shows.

Tokenizers (no hub access; built locally from tools/ref_corpus/*.txt):
  spm-llama: SentencePiece BPE, byte_fallback, identity normalisation,
             dummy prefix (llama, phi3)
  spm-gemma: the same without the dummy prefix (gemma3)
  bpe:       byte-level BPE (GPT-2 pre-tokenizer regex) trained with the
             `tokenizers` package (llama-bpe, qwen2, gpt2, gptneox)
The converter identifies BPE pre-tokenizers by hashing the tokenization of a
test string against known models; a freshly trained vocabulary is unknown,
so the converter refuses it. We run the converter in-process with
TextModel.get_vocab_base_pre wrapped: when the original raises
NotImplementedError (unknown hash), it returns "gpt-2" (llama.cpp's name for it), which is exactly the
pre-tokenizer the vocabulary was trained with (ByteLevel, GPT-2 regex). The
same wrapper fills hyperparameters that transformers 5's AutoConfig drops
(the converter reads gpt2 `n_ctx` and gpt_neox `rotary_pct`) from the raw
config.json, where add_legacy_keys() writes them. No llama.cpp file is
modified.
"""

import argparse
import hashlib
import json
import os
import subprocess
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS_DIR = os.path.join(REPO_ROOT, "tools", "ref_corpus")
DEFAULT_LLAMA_CPP = "/work/main/.llama-cpp"
SEED = 1234
LOGIT_STD = 12.0  # logits std on random input: top1-top2 margins mostly > 1

FORMATS = ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K_M", "Q5_K_M",
           "Q6_K", "Q2_K", "Q3_K_M", "IQ4_NL", "IQ4_XS"]
SMOLLM2 = os.path.join(REPO_ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
GEMMA270 = os.path.join(REPO_ROOT, "models", "gemma-3-270m-q4_k_m.gguf")

# architecture -> (tokenizer, config builder name); dims in make_config()
ARCHS = {
    "llama-spm": "spm-llama",
    "llama-bpe": "bpe",
    "qwen2": "bpe",
    "gemma3": "spm-gemma",
    "gpt2": "bpe",
    "gptneox": "bpe",
    "phi3": "spm-llama",
}

BPE_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def corpus_files():
    return sorted(os.path.join(CORPUS_DIR, f) for f in os.listdir(CORPUS_DIR) if f.endswith(".txt"))


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for blk in iter(lambda: f.read(1 << 20), b""):
            h.update(blk)
    return h.hexdigest()


# --------------------------------------------------------------------------
# tokenizers
# --------------------------------------------------------------------------

def train_spm(tokdir, name, dummy_prefix):
    import sentencepiece as spm
    prefix = os.path.join(tokdir, name)
    if os.path.exists(prefix + ".model"):
        return prefix + ".model"
    spm.SentencePieceTrainer.train(
        input=",".join(corpus_files()), model_prefix=prefix, model_type="bpe", vocab_size=1000,
        byte_fallback=True, character_coverage=0.99, normalization_rule_name="identity",
        add_dummy_prefix=dummy_prefix, remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True, split_digits=True, num_threads=1,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, minloglevel=2)
    return prefix + ".model"


def train_bpe(tokdir):
    path = os.path.join(tokdir, "bpe.json")
    if os.path.exists(path):
        return path
    os.environ["RAYON_NUM_THREADS"] = "1"
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1200, special_tokens=BPE_SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train(corpus_files(), trainer)
    tok.save(path)
    return path


def save_spm_tokenizer(hf_dir, model_path, cls):
    import shutil
    import sentencepiece as spm
    shutil.copy(model_path, os.path.join(hf_dir, "tokenizer.model"))
    sp = spm.SentencePieceProcessor(model_file=model_path)
    cfg = {"tokenizer_class": cls, "add_bos_token": True, "add_eos_token": False,
           "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
           "model_max_length": 2048}
    with open(os.path.join(hf_dir, "tokenizer_config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
    return sp.get_piece_size(), {"bos": 1, "eos": 2, "unk": 0}


def save_bpe_tokenizer(hf_dir, tok_path):
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast
    tok = Tokenizer.from_file(tok_path)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>",
                                   eos_token="<|endoftext|>", unk_token=None,
                                   model_max_length=2048)
    fast.save_pretrained(hf_dir)
    eot = tok.token_to_id("<|endoftext|>")
    return tok.get_vocab_size(), {"bos": eot, "eos": eot, "unk": None}


# --------------------------------------------------------------------------
# models
# --------------------------------------------------------------------------

def make_config(arch, n_vocab, ids):
    import transformers as tf
    common = dict(vocab_size=n_vocab, bos_token_id=ids["bos"], eos_token_id=ids["eos"],
                  initializer_range=0.06)
    if arch in ("llama-spm", "llama-bpe"):
        return tf.LlamaConfig(hidden_size=256, intermediate_size=768, num_hidden_layers=3,
                              num_attention_heads=4, num_key_value_heads=2, head_dim=64,
                              max_position_embeddings=2048, rms_norm_eps=1e-5,
                              tie_word_embeddings=False, **common), tf.LlamaForCausalLM
    if arch == "qwen2":
        return tf.Qwen2Config(hidden_size=256, intermediate_size=512, num_hidden_layers=3,
                              num_attention_heads=4, num_key_value_heads=2,
                              max_position_embeddings=2048, rms_norm_eps=1e-6,
                              tie_word_embeddings=False, use_sliding_window=False,
                              **common), tf.Qwen2ForCausalLM
    if arch == "gemma3":
        # 6 layers: layers 0-4 sliding-window (window 128), layer 5 global,
        # the pattern llama.cpp assumes for gemma3.
        return tf.Gemma3TextConfig(hidden_size=256, intermediate_size=512, num_hidden_layers=6,
                                   num_attention_heads=4, num_key_value_heads=1, head_dim=64,
                                   query_pre_attn_scalar=64, sliding_window=128,
                                   max_position_embeddings=2048, rms_norm_eps=1e-6,
                                   pad_token_id=None, **common), tf.Gemma3ForCausalLM
    if arch == "gpt2":
        # n_inner left at 4 * n_embd: the converter writes that, not n_inner
        return tf.GPT2Config(n_embd=256, n_inner=None, n_layer=2, n_head=4, n_positions=2048,
                             layer_norm_epsilon=1e-5, vocab_size=n_vocab,
                             bos_token_id=ids["bos"], eos_token_id=ids["eos"],
                             initializer_range=0.06), tf.GPT2LMHeadModel
    if arch == "gptneox":
        return tf.GPTNeoXConfig(hidden_size=256, intermediate_size=768, num_hidden_layers=2,
                                num_attention_heads=4, rotary_pct=0.25,
                                max_position_embeddings=2048, layer_norm_eps=1e-5,
                                use_parallel_residual=True, tie_word_embeddings=False,
                                **common), tf.GPTNeoXForCausalLM
    if arch == "phi3":
        return tf.Phi3Config(hidden_size=256, intermediate_size=512, num_hidden_layers=3,
                             num_attention_heads=4, num_key_value_heads=2,
                             max_position_embeddings=2048, original_max_position_embeddings=2048,
                             rms_norm_eps=1e-5, tie_word_embeddings=False, sliding_window=None,
                             pad_token_id=None, **common), tf.Phi3ForCausalLM
    raise ValueError(arch)


def final_norm(model):
    for name in ("model.norm", "transformer.ln_f", "gpt_neox.final_layer_norm"):
        mod = model
        try:
            for part in name.split("."):
                mod = getattr(mod, part)
        except AttributeError:
            continue
        return mod
    raise ValueError("no final norm found")


def randomise(model, seed, probe, logit_std):
    """Bias and norm noise, then logits scaled to a std of ~logit_std: through
    the output projection when it is its own tensor, else (tied embeddings:
    scaling them would also scale the input) through the final norm's gain."""
    import torch
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:  # biases and norm weights
                p.add_(torch.randn(p.shape, generator=g) * 0.1)
        k = logit_std / model(torch.tensor([probe])).logits.std().item()
        out = model.get_output_embeddings().weight
        if out.data_ptr() != model.get_input_embeddings().weight.data_ptr():
            out.mul_(k)
            return
        norm = final_norm(model)
        if type(norm).__name__.startswith("Gemma"):  # y = x_hat * (1 + w)
            norm.weight.copy_((1 + norm.weight) * k - 1)
        else:
            norm.weight.mul_(k)
            if getattr(norm, "bias", None) is not None:
                norm.bias.mul_(k)


def margins(model, ids):
    import torch
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].float()
    top = torch.topk(logits, 2, dim=-1).values
    m = (top[:, 0] - top[:, 1]).numpy()
    return float((m < 0.05).mean()), float((m < 0.5).mean()), float(sorted(m)[len(m) // 2])


def make_tiny(arch, outdir, tokdir):
    import torch
    hf_dir = os.path.join(outdir, "hf", arch)
    if os.path.exists(os.path.join(hf_dir, "config.json")):
        return hf_dir
    os.makedirs(hf_dir, exist_ok=True)
    kind = ARCHS[arch]
    if kind == "bpe":
        n_vocab, ids = save_bpe_tokenizer(hf_dir, train_bpe(tokdir))
    else:
        model_path = train_spm(tokdir, kind, dummy_prefix=(kind == "spm-llama"))
        cls = "GemmaTokenizer" if kind == "spm-gemma" else "LlamaTokenizer"
        n_vocab, ids = save_spm_tokenizer(hf_dir, model_path, cls)
        if arch == "phi3":
            # as Phi-3 ships them: added tokens after the spm pieces
            # (llama.cpp looks up <|endoftext|> in a model named phi3)
            added = {"<|endoftext|>": n_vocab, "<|end|>": n_vocab + 1}
            with open(os.path.join(hf_dir, "added_tokens.json"), "w") as f:
                json.dump(added, f)
            n_vocab += len(added)
    cfg, cls = make_config(arch, n_vocab, ids)
    torch.manual_seed(SEED)
    model = cls(cfg).float().eval()
    g = torch.Generator().manual_seed(7)
    probe = torch.randint(0, n_vocab, (256,), generator=g).tolist()
    randomise(model, SEED, probe, LOGIT_STD)
    m = margins(model, probe)
    print(f"{arch}: {sum(p.numel() for p in model.parameters())} params, vocab {n_vocab}; "
          f"top1-top2 margin on random tokens: {100 * m[0]:.1f}% < 0.05, "
          f"{100 * m[1]:.1f}% < 0.5, median {m[2]:.2f}", flush=True)
    model.save_pretrained(hf_dir, safe_serialization=True)
    add_legacy_keys(hf_dir, arch)
    return hf_dir


def add_legacy_keys(hf_dir, arch):
    """transformers 5 writes some hyperparameters under new names that the
    converter does not read (gpt2 n_ctx, gpt_neox rotary_pct): add the old
    spellings beside them (same values)."""
    path = os.path.join(hf_dir, "config.json")
    with open(path) as f:
        cfg = json.load(f)
    rope = cfg.get("rope_parameters") or {}
    if arch == "gpt2":
        cfg.setdefault("n_ctx", cfg["n_positions"])
    if arch == "gptneox":
        cfg.setdefault("rotary_pct", rope.get("partial_rotary_factor", 1.0))
        cfg.setdefault("rotary_emb_base", rope.get("rope_theta", 10000.0))
    with open(path, "w") as f:
        json.dump(cfg, f, indent=2)


# --------------------------------------------------------------------------
# conversion and quantization
# --------------------------------------------------------------------------

CONVERT_SNIPPET = r"""
import sys
src, args = sys.argv[1], sys.argv[2:]
sys.path.insert(0, src)
import conversion.base as base
_orig = base.TextModel.get_vocab_base_pre
def _pre(self, tokenizer):
    try:
        return _orig(self, tokenizer)
    except NotImplementedError:
        print("make_ref_models: unknown BPE pre-tokenizer hash -> 'gpt-2'", file=sys.stderr)
        return "gpt-2"
base.TextModel.get_vocab_base_pre = _pre
import json
_orig_lh = base.ModelBase.load_hparams
def _lh(dir_model, is_mistral_format, guess=True):
    cfg = _orig_lh(dir_model, is_mistral_format, guess)
    path = dir_model / "config.json"
    if isinstance(cfg, dict) and path.is_file():
        with open(path) as f:
            for k, v in json.load(f).items():
                cfg.setdefault(k, v)
    return cfg
base.ModelBase.load_hparams = staticmethod(_lh)
import convert_hf_to_gguf as c
sys.argv = ["convert_hf_to_gguf.py"] + args
c.main()
"""


def run(cmd, log, shown=None):
    with open(log, "a") as f:
        f.write("$ " + " ".join(shown or cmd) + "\n")
        f.flush()
        r = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT)
    if r.returncode:
        raise RuntimeError(f"{cmd[0]} failed ({r.returncode}); see {log}")


def convert(hf_dir, out, outtype, llama_cpp, log):
    if os.path.exists(out):
        return
    src = os.path.join(llama_cpp, "src", "llama.cpp")
    run([sys.executable, "-c", CONVERT_SNIPPET, src, hf_dir, "--outtype", outtype, "--outfile",
         out + ".tmp"], log, ["convert_hf_to_gguf.py (pre-tokenizer fallback gpt-2)", hf_dir,
                              "--outtype", outtype, "--outfile", out + ".tmp"])
    os.replace(out + ".tmp", out)


def quantize(src, out, fmt, llama_cpp, log, requant=False):
    if os.path.exists(out):
        return
    cmd = [os.path.join(llama_cpp, "bin", "llama-quantize")]
    if requant:
        cmd.append("--allow-requantize")
    run(cmd + [src, out + ".tmp", fmt, "2"], log)
    os.replace(out + ".tmp", out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("outdir")
    ap.add_argument("--arch", default=",".join(ARCHS))
    ap.add_argument("--formats", default=",".join(FORMATS))
    ap.add_argument("--no-real", action="store_true", help="skip the SmolLM2/Gemma real files")
    ap.add_argument("--llama-cpp", default=DEFAULT_LLAMA_CPP)
    a = ap.parse_args()
    outdir = os.path.abspath(a.outdir)
    tokdir = os.path.join(outdir, "tok")
    os.makedirs(tokdir, exist_ok=True)
    log = os.path.join(outdir, "make.log")
    formats = [f for f in a.formats.split(",") if f]
    manifest = []
    mpath = os.path.join(outdir, "manifest.json")

    def add(name, arch, fmt, kind, base, hf_dir):
        path = os.path.join(outdir, name)
        manifest.append({"name": name, "arch": arch, "format": fmt, "kind": kind, "base": base,
                         "hf_dir": hf_dir, "sha256": sha256(path)})
        print(f"  {name}", flush=True)

    for arch in [x for x in a.arch.split(",") if x]:
        hf_dir = make_tiny(arch, outdir, tokdir)
        base = f"{arch}-F32.gguf"
        for fmt in formats:
            name = f"{arch}-{fmt}.gguf"
            path = os.path.join(outdir, name)
            try:
                if fmt in ("F32", "F16"):
                    convert(hf_dir, path, fmt.lower(), a.llama_cpp, log)
                else:
                    convert(hf_dir, os.path.join(outdir, base), "f32", a.llama_cpp, log)
                    quantize(os.path.join(outdir, base), path, fmt, a.llama_cpp, log)
            except RuntimeError as e:
                print(f"  {name}: {e}", flush=True)
                continue
            add(name, arch, fmt, "tiny", base, os.path.relpath(hf_dir, outdir))
    if not a.no_real:
        if os.path.exists(SMOLLM2):
            for fmt in formats:
                name = f"smollm2-{fmt}.gguf"
                try:
                    quantize(SMOLLM2, os.path.join(outdir, name), fmt, a.llama_cpp, log,
                             requant=True)
                except RuntimeError as e:
                    print(f"  {name}: {e}", flush=True)
                    continue
                add(name, "smollm2", fmt, "real", "smollm2-F32.gguf", None)
        if os.path.exists(GEMMA270):
            name = "gemma3-270m-Q4_K_M.gguf"
            link = os.path.join(outdir, name)
            if not os.path.lexists(link):
                os.symlink(GEMMA270, link)
            add(name, "gemma3-270m", "Q4_K_M", "real", None, None)
    if os.path.exists(mpath):  # keep the records of files this run did not touch
        with open(mpath) as f:
            done = {m["name"] for m in manifest}
            manifest = [m for m in json.load(f) if m["name"] not in done] + manifest
    manifest.sort(key=lambda m: m["name"])
    with open(mpath, "w") as f:
        json.dump(manifest, f, indent=1)
    print(f"{len(manifest)} files; manifest {mpath}")


if __name__ == "__main__":
    main()
