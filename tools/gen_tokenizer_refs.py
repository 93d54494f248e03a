#!/usr/bin/env python3
"""Tokenizer references from llama.cpp for vocabularies other than SmolLM2's.

The engine's tokenizer is checked against llama.cpp's own tokenizer
(`llama-tokenize`, built from llama.cpp's sources), never against itself.
Two jobs:

  make-spm-vocab   train a small SentencePiece BPE vocabulary (byte fallback,
                   space prefix, a few control and user-defined tokens) on the
                   repository's docs and tools/ref_corpus, and write it as a
                   vocabulary-only GGUF with the keys convert_hf_to_gguf.py
                   writes for a Llama SentencePiece vocabulary
                   (tests/golden/spm_tiny.gguf). Needs `sentencepiece`, `gguf`.

  make-bpe-variant write SmolLM2's byte-level BPE vocabulary with another
                   tokenizer.ggml.pre (gpt-2, llama-bpe, qwen2, olmo, default, ...)
                   and one extra control token "<|sep|>" (the separator below;
                   SmolLM2's own special tokens all occur in the corpus) as a
                   vocabulary-only GGUF, so each pre-tokenizer is checked on a
                   real vocabulary. tests/unit/test_tokenizer_vocabs.c builds
                   the same vocabulary in memory from the model file.

  refs             tokenize the tokenizer corpus (the lines of
                   tests/golden/tokenize_lines.jsonl, i.e. tools/gen_references.py's
                   corpus, plus chat-shaped lines of other families below)
                   with llama-tokenize and write {"text", "ids"} JSON lines:
                   no BOS added, special tokens parsed (as the SmolLM2 file).

Usage (the reference venv has sentencepiece and gguf):

    /work/refenv/bin/python tools/gen_tokenizer_refs.py make-spm-vocab
    /work/refenv/bin/python tools/gen_tokenizer_refs.py refs --vocab tests/golden/spm_tiny.gguf \\
        --out tests/golden/tokenize_spm_tiny.jsonl
    /work/refenv/bin/python tools/gen_tokenizer_refs.py refs --vocab models/gemma-3-270m-q4_k_m.gguf \\
        --ids-only --out tests/golden/tokenize_gemma3.jsonl
    for pre in gpt-2 llama-bpe qwen2 olmo default; do
      /work/refenv/bin/python tools/gen_tokenizer_refs.py make-bpe-variant --pre $pre \\
          --out /tmp/smollm_$pre.gguf
      /work/refenv/bin/python tools/gen_tokenizer_refs.py refs --vocab /tmp/smollm_$pre.gguf \\
          --ids-only --out tests/golden/tokenize_pre_$pre.jsonl
    done
    /work/refenv/bin/python tools/gen_tokenizer_refs.py make-spm-vocab \\
        --name "Phi-3 test (spm_tiny vocabulary)" --extra-control "<|endoftext|>" \\
        --out tests/golden/spm_tiny_phi3.gguf
    /work/refenv/bin/python tools/gen_tokenizer_refs.py refs --only-special \\
        --vocab tests/golden/spm_tiny_phi3.gguf --out tests/golden/tokenize_spm_tiny_phi3.jsonl
    /work/refenv/bin/python tools/gen_tokenizer_refs.py readme

--ids-only writes {"line": k, "ids": [...]} where k indexes the corpus
(tokenize_lines.jsonl's lines, then EXTRA_LINES), to keep the files small.

llama-tokenize loads a model once per call, so the corpus is tokenized in one
call: the lines are joined with a separator control token (--sep, default
chosen per vocabulary) and the output is cut at that token. The special-token
partition runs before anything else in llama.cpp and every fragment is
tokenized on its own (a SentencePiece fragment after a special token gets the
same space prefix as one at the start of the text), so each line's ids are
those of tokenizing the line alone. The script checks that no special token
could match across a separator, and re-tokenizes a sample of lines one by one
to confirm (--check N).
"""

import argparse
import glob
import json
import os
import random
import subprocess
import sys
import tempfile

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN = os.path.join(REPO_ROOT, "tests", "golden")
DEFAULT_TOKENIZE = "/work/main/.llama-cpp/bin/llama-tokenize"

# chat-shaped lines of the families the engine renders (core/chat.c), so each
# vocabulary's own special tokens appear in context
EXTRA_LINES = [
    "<start_of_turn>user\nHello!<end_of_turn>\n<start_of_turn>model\n",
    "<start_of_turn>user\nWrite a haiku.<end_of_turn>\n<start_of_turn>model\nSure:\n<end_of_turn>\n",
    "<bos><start_of_turn>user\n 2+2?<end_of_turn>",
    "<s>[INST] <<SYS>>\nYou are terse.\n<</SYS>>\n\nHi there [/INST] Hello</s>",
    "[INST] What is 2+2? [/INST]",
    "<s> [INST] x [/INST] y</s><s>[INST] z [/INST]",
    "<|user|>\nHello!<|end|>\n<|assistant|>\n",
    "<|system|>\nBe brief.<|end|>\n<|user|>\n  spaced  <|end|>\n<|assistant|>",
    "<|user|>\nHi</s>\n<|assistant|>\n",
    "<tool> call <tool>x</tool>",
    "<unk>", "<s>", "</s>", "<pad>", "<eos>", "<bos>", "<mask>",
    "a<s>b", " </s> ", "<0x41>", "<0x0A>", "\u2581", "\u2581\u2581x", "x\u2581",
    "tab\tand\u3000ideographic space", "trailing   ", "   leading",
]

# byte strings that are not valid UTF-8, tokenized one call each and written
# as {"hex": ..., "ids": ...} after the text lines
INVALID_UTF8 = [
    b"\xff", b"a\xffb", b"\xc3", b"\xc3 x", b"\xe4\xbd", b"\xe4\xbd hello", b"\xf0\x9f\x98",
    b"\xed\xa0\x80 surrogate", b"\xc0\x80 overlong", b"\xf8\x88\x80\x80\x80", b"caf\xe9 au lait",
    b"\x80\x80 \xbf", b"\xff\xfe utf8 \xfe", b"ok \xe2\x82 cut", b"\xf4\x90\x80\x80 big",
]

SPM_CONTROL = ["<|user|>", "<|assistant|>", "<|system|>", "<|end|>", "<|sep|>"]
SPM_USER = ["<tool>", "</tool>"]


def corpus_lines():
    path = os.path.join(GOLDEN, "tokenize_lines.jsonl")
    with open(path, encoding="utf-8") as f:
        lines = [json.loads(l)["text"] for l in f]
    seen = dict.fromkeys(lines)
    for l in EXTRA_LINES:
        seen.setdefault(l, None)
    return list(seen)


# --------------------------------------------------------------------------
# the SentencePiece test vocabulary
# --------------------------------------------------------------------------

def make_spm_vocab(args):
    import sentencepiece as spm
    import gguf

    texts = sorted(glob.glob(os.path.join(REPO_ROOT, "docs", "*.md")))
    texts += sorted(glob.glob(os.path.join(REPO_ROOT, "tools", "ref_corpus", "*.txt")))
    with tempfile.TemporaryDirectory() as tmp:
        prefix = os.path.join(tmp, "spm")
        spm.SentencePieceTrainer.train(
            input=",".join(texts), model_prefix=prefix, model_type="bpe",
            vocab_size=args.vocab_size, byte_fallback=True, character_coverage=0.9995,
            control_symbols=SPM_CONTROL + args.extra_control, user_defined_symbols=SPM_USER,
            bos_id=1, eos_id=2, unk_id=0, pad_id=-1, split_digits=True,
            num_threads=1, max_sentence_length=1 << 16, minloglevel=2)
        sp = spm.SentencePieceProcessor(model_file=prefix + ".model")
        from sentencepiece import sentencepiece_model_pb2 as pb
        proto = pb.ModelProto()
        with open(prefix + ".model", "rb") as f:
            proto.ParseFromString(f.read())

    tokens, scores, types = [], [], []
    for i in range(sp.vocab_size()):
        tokens.append(sp.id_to_piece(i).encode("utf-8"))
        scores.append(sp.get_score(i))
        if sp.is_unknown(i):
            t = gguf.TokenType.UNKNOWN
        elif sp.is_control(i):
            t = gguf.TokenType.CONTROL
        elif sp.is_unused(i):
            t = gguf.TokenType.UNUSED
        elif sp.is_byte(i):
            t = gguf.TokenType.BYTE
        elif sp.id_to_piece(i) in SPM_USER:
            t = gguf.TokenType.USER_DEFINED
        else:
            t = gguf.TokenType.NORMAL
        types.append(t)

    w = gguf.GGUFWriter(args.out, "llama")
    w.add_name(args.name)
    # hyper-parameters llama.cpp reads when loading a llama vocabulary only
    w.add_context_length(256)
    w.add_embedding_length(64)
    w.add_block_count(1)
    w.add_feed_forward_length(128)
    w.add_head_count(2)
    w.add_head_count_kv(2)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(len(tokens))
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.add_add_space_prefix(bool(proto.normalizer_spec.add_dummy_prefix))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"{args.out}: {len(tokens)} tokens, {os.path.getsize(args.out)} bytes, "
          f"add_space_prefix={bool(proto.normalizer_spec.add_dummy_prefix)}")


def make_bpe_variant(args):
    import gguf
    r = gguf.GGUFReader(args.base)

    def arr(key):
        f = r.fields[key]
        return [f.parts[i] for i in f.data]

    tokens = [bytes(p) for p in arr("tokenizer.ggml.tokens")] + [b"<|sep|>"]
    types = [int(p[0]) for p in arr("tokenizer.ggml.token_type")] + [gguf.TokenType.CONTROL]
    merges = [bytes(p).decode("utf-8") for p in arr("tokenizer.ggml.merges")]
    w = gguf.GGUFWriter(args.out, "llama")
    w.add_name(f"SmolLM2 vocabulary, pre-tokenizer {args.pre}")
    w.add_context_length(256)
    w.add_embedding_length(64)
    w.add_block_count(1)
    w.add_feed_forward_length(128)
    w.add_head_count(2)
    w.add_head_count_kv(2)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(args.pre)
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(int(arr("tokenizer.ggml.bos_token_id")[0][0]))
    w.add_eos_token_id(int(arr("tokenizer.ggml.eos_token_id")[0][0]))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"{args.out}: {len(tokens)} tokens, {len(merges)} merges, pre {args.pre}")


# --------------------------------------------------------------------------
# references from llama-tokenize
# --------------------------------------------------------------------------

def read_vocab(path):
    """Token texts and types of a GGUF file (gguf-py when present)."""
    import gguf
    r = gguf.GGUFReader(path)
    toks = r.fields["tokenizer.ggml.tokens"]
    types = r.fields.get("tokenizer.ggml.token_type")
    texts = [bytes(toks.parts[i]).decode("utf-8", "replace") for i in toks.data]
    tys = [int(types.parts[i][0]) for i in types.data] if types else [1] * len(texts)
    return texts, tys


def llama_tokenize(exe, vocab, text):
    with tempfile.NamedTemporaryFile("wb", delete=False) as f:
        f.write(text if isinstance(text, bytes) else text.encode("utf-8"))
        path = f.name
    try:
        out = subprocess.run([exe, "-m", vocab, "-f", path, "--ids", "--no-bos", "--no-escape",
                              "--log-disable"], check=True, capture_output=True)
    finally:
        os.unlink(path)
    s = out.stdout.decode().strip().splitlines()[-1]
    return json.loads(s)


def check_separator(lines, sep, specials):
    """No special token may straddle a separator (it would be cut first)."""
    longest = max(len(s) for s in specials)
    for a, b in zip(lines, lines[1:]):
        window_l, window_r = a[-(longest - 1):] if longest > 1 else "", b[:longest - 1]
        joined = window_l + sep + window_r
        for s in specials:
            start = joined.find(s)
            while start >= 0:
                end = start + len(s)
                inside_sep = start >= len(window_l) and end <= len(window_l) + len(sep)
                if not inside_sep and start < len(window_l) + len(sep) and end > len(window_l):
                    sys.exit(f"special token {s!r} straddles the separator after line {a!r}")
                start = joined.find(s, start + 1)
    if any(sep in l for l in lines):
        sys.exit(f"separator {sep!r} occurs in the corpus; choose another with --sep")


def write_refs(args, lines, per_line):
    with open(args.out, "w", encoding="utf-8", newline="\n") as f:
        for k, (text, line_ids) in enumerate(zip(lines, per_line)):
            rec = {"line": k} if args.ids_only else {"text": text}
            rec["ids"] = line_ids
            f.write(json.dumps(rec, ensure_ascii=False, separators=(",", ":") if args.ids_only
                               else None) + "\n")
        for raw in [] if args.only_special else INVALID_UTF8:
            try:
                raw_ids = llama_tokenize(args.tokenize, args.vocab, raw)
            except subprocess.CalledProcessError:
                # byte-level BPE: llama.cpp throws on a code point past U+10FFFF
                print(f"llama-tokenize failed on {raw!r}: left out")
                continue
            rec = {"hex": raw.hex(), "ids": raw_ids}
            f.write(json.dumps(rec, separators=(",", ":") if args.ids_only else None) + "\n")


def refs(args):
    texts, types = read_vocab(args.vocab)
    specials = [t for t, ty in zip(texts, types) if ty in (2, 3, 4) and t]
    lines = corpus_lines()
    sep = args.sep
    if sep is None:
        for cand in ["<unused0>", "<|sep|>"]:
            if cand in texts and types[texts.index(cand)] == 3 and not any(cand in l for l in lines):
                sep = cand
                break
    if sep is None or sep not in texts:
        sys.exit("no separator control token; pass --sep")
    sep_id = texts.index(sep)
    if args.only_special:
        # one call per line: with the Phi-3 rule the separator would eat the
        # white space that starts the next line
        lines = [l for l in lines if any(sp in l for sp in specials if sp != sep)]
        per_line = [llama_tokenize(args.tokenize, args.vocab, l) if l else [] for l in lines]
        write_refs(args, lines, per_line)
        print(f"{args.out}: {len(lines)} lines with special tokens, one call each")
        return
    check_separator(lines, sep, specials)
    ids = llama_tokenize(args.tokenize, args.vocab, sep.join(lines))
    per_line, cur = [], []
    for i in ids:
        if i == sep_id:
            per_line.append(cur)
            cur = []
        else:
            cur.append(i)
    per_line.append(cur)
    if len(per_line) != len(lines):
        sys.exit(f"got {len(per_line)} lines back for {len(lines)}")
    rng = random.Random(7)
    for k in rng.sample(range(len(lines)), min(args.check, len(lines))):
        alone = llama_tokenize(args.tokenize, args.vocab, lines[k]) if lines[k] else []
        if alone != per_line[k]:
            sys.exit(f"line {k} tokenized alone differs: {alone} vs {per_line[k]}")
    write_refs(args, lines, per_line)
    print(f"{args.out}: {len(lines)} lines, {len(ids) - len(lines) + 1} ids, separator {sep!r}, "
          f"{args.check} lines re-checked alone")


README_HEAD = """# tests/golden/tokenize_*.jsonl (other vocabularies) - llama.cpp references

Generated by `tools/gen_tokenizer_refs.py` (see its docstring for the
commands) with llama.cpp's `llama-tokenize` (`--ids --no-bos --no-escape`,
special tokens parsed), never with the engine. Checked by
`tests/unit/test_tokenizer_vocabs.c`. Do not edit by hand.

Corpus: the texts of `tokenize_lines.jsonl` (tools/gen_references.py) plus
chat-shaped lines of other families, then byte strings that are not valid
UTF-8 (records `{"hex": ..., "ids": [...]}`, tokenized one call each).
Files with `"line": k` records index that corpus (the order of
`tokenize_spm_tiny.jsonl`).

| file | vocabulary | records |
|---|---|---|
"""


def readme(args):
    import hashlib
    rows = []
    for path in sorted(glob.glob(os.path.join(GOLDEN, "tokenize_*.jsonl"))):
        name = os.path.basename(path)
        if name == "tokenize_lines.jsonl":
            continue
        with open(path, encoding="utf-8") as f:
            n = sum(1 for _ in f)
        vocab = {"tokenize_spm_tiny.jsonl": "`spm_tiny.gguf` (SentencePiece BPE, 2000 tokens)",
                 "tokenize_spm_tiny_phi3.jsonl": "`spm_tiny_phi3.gguf` (the same training plus "
                 "<\\|endoftext\\|>, named Phi-3: white space after special tokens "
                 "stripped); only lines with special tokens",
                 "tokenize_gemma3.jsonl": "`models/gemma-3-270m-q4_k_m.gguf` (Gemma 3, SPM)"}.get(
            name, f"SmolLM2's vocabulary, tokenizer.ggml.pre = "
                  f"`{name[len('tokenize_pre_'):-len('.jsonl')]}`")
        rows.append(f"| `{name}` | {vocab} | {n} |")
    src = os.path.join(os.path.dirname(os.path.dirname(args.tokenize)), "src", "llama.cpp")
    commit = subprocess.run(["git", "-C", src, "log", "-1", "--format=%H"], capture_output=True,
                            text=True).stdout.strip() or "unknown"
    sha = {}
    for rel in ["tests/golden/spm_tiny.gguf", "tests/golden/spm_tiny_phi3.gguf",
                "models/gemma-3-270m-q4_k_m.gguf",
                "models/SmolLM2-135M-Instruct.Q4_1.gguf"]:
        p = os.path.join(REPO_ROOT, rel)
        if os.path.exists(p):
            h = hashlib.sha256()
            with open(p, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            sha[rel] = h.hexdigest()
    with open(os.path.join(GOLDEN, "TOKENIZERS.md"), "w", encoding="utf-8") as f:
        f.write(README_HEAD + "\n".join(rows) + "\n\n## Provenance\n\n")
        f.write(f"- llama.cpp source commit: `{commit}`\n")
        for rel, h in sha.items():
            f.write(f"- `{rel}` sha256 `{h}`\n")
    print("wrote", os.path.join(GOLDEN, "TOKENIZERS.md"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make-spm-vocab")
    m.add_argument("--out", default=os.path.join(GOLDEN, "spm_tiny.gguf"))
    m.add_argument("--vocab-size", type=int, default=2000)
    m.add_argument("--name", default="spm-tiny test vocabulary",
                   help="general.name (a name with 'phi-3' switches on llama.cpp's Phi-3 rstrip)")
    m.add_argument("--extra-control", action="append", default=[],
                   help="another control token (llama.cpp's Phi-3 rule needs <|endoftext|>)")
    r = sub.add_parser("refs")
    r.add_argument("--vocab", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--tokenize", default=DEFAULT_TOKENIZE)
    r.add_argument("--sep", default=None, help="separator control token text")
    r.add_argument("--check", type=int, default=30, help="lines re-tokenized alone")
    r.add_argument("--ids-only", action="store_true", help="write line numbers, not texts")
    r.add_argument("--only-special", action="store_true",
                   help="only the lines with a special token of the vocabulary (and no hex lines)")
    b = sub.add_parser("make-bpe-variant")
    b.add_argument("--base", default=os.path.join(REPO_ROOT, "models",
                                                  "SmolLM2-135M-Instruct.Q4_1.gguf"))
    b.add_argument("--pre", required=True)
    b.add_argument("--out", required=True)
    d = sub.add_parser("readme", help="write tests/golden/TOKENIZERS.md (provenance)")
    d.add_argument("--tokenize", default=DEFAULT_TOKENIZE)
    args = ap.parse_args()
    {"make-spm-vocab": make_spm_vocab, "refs": refs, "make-bpe-variant": make_bpe_variant,
     "readme": readme}[args.cmd](args)


if __name__ == "__main__":
    main()
