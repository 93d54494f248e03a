#!/usr/bin/env python3
"""Regenerate the llama.cpp reference ("golden") files in tests/golden/.

The engine is validated against llama.cpp (PyPI package llama-cpp-python),
never against its own output. Run with the reference venv's python
(see tools/setup-reference-env):

    .venv-ref/bin/python tools/gen_references.py [--model models/SmolLM2-135M-Instruct.Q4_1.gguf]

Produces (all deterministic for a given model + llama-cpp-python version):
    tests/golden/tokenize_lines.jsonl   tokenizer reference (vocab-only model)
    tests/golden/teacher_forced.bin     teacher-forced top-K log-probs
    tests/golden/greedy.jsonl           greedy continuations
    tests/golden/README.md              formats + provenance

The formats are described in tests/golden/README.md (written by this script).
"""

import argparse
import hashlib
import json
import math
import os
import random
import re
import struct
import sys
import time
import unicodedata

import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS_DIR = os.path.join(REPO_ROOT, "tools", "ref_corpus")
DEFAULT_MODEL = os.path.join(REPO_ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
DEFAULT_OUT = os.path.join(REPO_ROOT, "tests", "golden")

SEED = 20240601

# teacher forcing parameters
TF_CHUNK = 512
TF_MAX_CHUNKS = 5
TF_K = 128
TF_MAGIC = b"TFREF001"

# greedy parameters
GREEDY_N = 32

SYSTEM_PROMPT = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<repo_name>", "<reponame>",
    "<file_sep>", "<filename>", "<gh_stars>", "<issue_start>", "<issue_comment>",
    "<issue_closed>", "<jupyter_start>", "<jupyter_text>", "<jupyter_code>",
    "<jupyter_output>", "<jupyter_script>", "<empty_output>",
]


def chatml(user, system=SYSTEM_PROMPT):
    return (f"<|im_start|>system\n{system}<|im_end|>\n"
            f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n")


def read_lines(name):
    with open(os.path.join(CORPUS_DIR, name), encoding="utf-8") as f:
        return [ln for ln in f.read().split("\n") if ln.strip()]


def read_text(name):
    with open(os.path.join(CORPUS_DIR, name), encoding="utf-8") as f:
        return f.read()


# --------------------------------------------------------------------------
# tokenizer corpus
# --------------------------------------------------------------------------

EMOJI = [
    "😀", "😂", "🤣", "😍", "🥺", "😭", "🙏", "👍", "🔥", "❤️", "✨", "🎉",
    "🚀", "🐍", "🦀", "🍕", "🌍", "⭐", "✅", "❌", "⚠️", "☕", "♻️", "🏳️",
    "\u263A\uFE0F", "\u2764", "\u2764\uFE0F", "\u00A9\uFE0F", "1\uFE0F\u20E3", "#\uFE0F\u20E3",
    # skin tones
    "\U0001F44D\U0001F3FB", "\U0001F44D\U0001F3FC", "\U0001F44D\U0001F3FD",
    "\U0001F44D\U0001F3FE", "\U0001F44D\U0001F3FF", "\U0001F44B\U0001F3FD",
    # ZWJ sequences
    "\U0001F468\u200D\U0001F469\u200D\U0001F467\u200D\U0001F466",      # family
    "\U0001F469\u200D\U0001F4BB",                                      # woman technologist
    "\U0001F468\U0001F3FF\u200D\U0001F373",                            # man cook, dark skin
    "\U0001F3F3\uFE0F\u200D\U0001F308",                                # rainbow flag
    "\U0001F3F4\u200D\u2620\uFE0F",                                    # pirate flag
    "\U0001F9D1\u200D\U0001F91D\u200D\U0001F9D1",                      # people holding hands
    "\U0001F441\uFE0F\u200D\U0001F5E8\uFE0F",                          # eye in speech bubble
    "\U0001F408\u200D\u2B1B",                                          # black cat
    "\U0001F469\U0001F3FC\u200D\u2764\uFE0F\u200D\U0001F48B\u200D\U0001F468\U0001F3FE",
    # flags (regional indicator pairs) and subdivision flag
    "\U0001F1FA\U0001F1F8", "\U0001F1EF\U0001F1F5", "\U0001F1E8\U0001F1F3",
    "\U0001F1E9\U0001F1EA", "\U0001F1EB\U0001F1F7", "\U0001F1E7\U0001F1F7",
    "\U0001F1FA\U0001F1E6", "\U0001F1EE\U0001F1F3",
    "\U0001F3F4\U000E0067\U000E0062\U000E0073\U000E0063\U000E0074\U000E007F",  # Scotland
    # misc newer emoji
    "\U0001FAE0", "\U0001F972", "\U0001F9CB", "\U0001FAF6\U0001F3FD",
]

EMOJI_SENTENCES = [
    "I love pizza 🍕 and tacos 🌮!",
    "Great job 👍🏽👍🏽👍🏽",
    "Family: 👨‍👩‍👧‍👦 at the beach 🏖️",
    "🇺🇸🇬🇧🇫🇷🇩🇪🇯🇵",
    "Ship it 🚀🚀🚀 #release v2.0",
    "lol 😂😂😂😂😂😂",
    "Meeting at 3pm ☕️ — don't be late ⏰",
    "🔥🔥 hot take: tabs > spaces 🔥🔥",
    "Happy birthday!!! 🎂🎉🎁🥳",
    "Weather today: ☀️ 25°C, tomorrow 🌧️ 18°C",
    "我爱你❤️",
    "おはよう🌞ございます",
    "👩🏻‍💻👨🏿‍💻🧑🏽‍💻 devs",
    "✔️ done ✖️ failed ➡️ next",
]

ENGLISH_WORDS = (
    "the of and to in is was for on that with as by at from it this be are have "
    "not or an they which you one were all we their there been has when who will "
    "more no if out so said what up its about into than them can only other new "
    "some could time these two may then do first any my now such like our over man "
    "me even most made after also did many before must through back years where "
    "much your way well down should because each just those people how too little "
    "state good very make world still own see men work long get here between both "
    "life being under never day same another know while last might us great old "
    "year off come since against go came right used take three tokenizer llama "
    "model weights quantized inference kernel matrix vector thread cache"
).split()

CONTRACTION_BASES = ["I", "you", "he", "she", "it", "we", "they", "that", "there",
                     "who", "what", "John", "the dog", "Rock 'n", "y", "ma"]
CONTRACTION_SUFFIXES = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d"]

WS_SEPS = [" ", "  ", "   ", "    ", "\t", "\t\t", "\n", "\n\n", "\n\n\n", " \n",
           "\n ", "\r\n", " \t ", "\n\t", "        ", "\n\n\n\n", "\u00a0", "\u3000",
           " \n\n ", "\t\n"]

UNICODE_RANGES = [
    # (lo, hi, weight)
    (0x0020, 0x007E, 30),    # ASCII printable
    (0x00A0, 0x00FF, 8),     # Latin-1
    (0x0100, 0x024F, 6),     # Latin extended
    (0x0300, 0x036F, 3),     # combining marks
    (0x0370, 0x03FF, 4),     # Greek
    (0x0400, 0x04FF, 5),     # Cyrillic
    (0x0590, 0x05FF, 2),     # Hebrew
    (0x0600, 0x06FF, 3),     # Arabic
    (0x0900, 0x097F, 2),     # Devanagari
    (0x0E00, 0x0E7F, 2),     # Thai
    (0x1E00, 0x1EFF, 2),     # Latin extended additional
    (0x2000, 0x206F, 3),     # general punctuation
    (0x2070, 0x209F, 1),     # super/subscripts
    (0x20A0, 0x20CF, 1),     # currency
    (0x2100, 0x214F, 1),     # letterlike
    (0x2190, 0x22FF, 2),     # arrows, math
    (0x2500, 0x25FF, 1),     # box drawing, shapes
    (0x2600, 0x27BF, 2),     # misc symbols, dingbats
    (0x3000, 0x303F, 2),     # CJK punctuation
    (0x3040, 0x30FF, 4),     # kana
    (0x4E00, 0x9FFF, 10),    # CJK unified
    (0xAC00, 0xD7A3, 4),     # Hangul
    (0xFF00, 0xFFEF, 2),     # fullwidth forms
    (0x1D400, 0x1D7FF, 1),   # math alphanumerics
    (0x1F300, 0x1F64F, 4),   # emoji
    (0x1F680, 0x1F6FF, 1),   # transport
    (0x1F900, 0x1F9FF, 2),   # supplemental symbols
    (0x20000, 0x2A6DF, 1),   # CJK ext B
]


def ok_char(c):
    cat = unicodedata.category(c)
    if cat in ("Cn", "Cs", "Co"):
        return False
    if cat == "Cc" and c not in "\t\n\r":
        return False
    return True


def random_unicode(rng, n):
    total = sum(w for _, _, w in UNICODE_RANGES)
    out = []
    while len(out) < n:
        r = rng.randrange(total)
        for lo, hi, w in UNICODE_RANGES:
            if r < w:
                break
            r -= w
        c = chr(rng.randint(lo, hi))
        if ok_char(c):
            out.append(c)
        if rng.random() < 0.12:
            out.append(rng.choice([" ", " ", "\n", "\t", "  "]))
    return "".join(out)


def odd_case(rng, s):
    mode = rng.randrange(4)
    if mode == 0:
        return s.upper()
    if mode == 1:
        return s.lower()
    if mode == 2:
        return s.title()
    return "".join(ch.upper() if rng.random() < 0.5 else ch.lower() for ch in s)


def random_number(rng):
    kind = rng.randrange(16)
    if kind == 0:
        return str(rng.randint(0, 9))
    if kind == 1:
        return "".join(rng.choice("0123456789") for _ in range(rng.randint(2, 60)))
    if kind == 2:
        return f"{rng.randint(0, 10**rng.randint(1, 12)):,}"
    if kind == 3:
        return f"{rng.uniform(-1000, 1000):.{rng.randint(1, 9)}f}"
    if kind == 4:
        return f"{rng.uniform(0, 100):.1f}%"
    if kind == 5:
        return f"{rng.uniform(1e-12, 1e12):.4e}"
    if kind == 6:
        return f"{rng.randint(1900, 2099)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    if kind == 7:
        return f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}"
    if kind == 8:
        return f"+1 ({rng.randint(200, 999)}) {rng.randint(200, 999)}-{rng.randint(0, 9999):04d}"
    if kind == 9:
        return f"v{rng.randint(0, 20)}.{rng.randint(0, 99)}.{rng.randint(0, 999)}"
    if kind == 10:
        return f"0x{rng.getrandbits(rng.choice([8, 16, 32, 64])):X}"
    if kind == 11:
        return f"${rng.randint(0, 99999):,}.{rng.randint(0, 99):02d}"
    if kind == 12:
        w = rng.choice(ENGLISH_WORDS)
        return f"{w}{rng.randint(0, 99999)}{rng.choice(ENGLISH_WORDS)}"
    if kind == 13:
        n = rng.randint(1, 40)
        return f"{n}{'st' if n % 10 == 1 else 'nd' if n % 10 == 2 else 'rd' if n % 10 == 3 else 'th'}"
    if kind == 14:
        return " ".join(str(rng.randint(0, 10**rng.randint(1, 8))) for _ in range(rng.randint(2, 8)))
    return f"{rng.randint(1, 999)}x{rng.randint(1, 999)} = {rng.randint(1, 999999)}"


def contraction(rng):
    base = rng.choice(CONTRACTION_BASES)
    suf = rng.choice(CONTRACTION_SUFFIXES)
    if rng.random() < 0.6:
        suf = odd_case(rng, suf)
    if rng.random() < 0.1:
        suf = suf.replace("'", "\u2019")
    s = base + suf
    if rng.random() < 0.5:
        s = odd_case(rng, s)
    tail = " ".join(rng.choice(ENGLISH_WORDS) for _ in range(rng.randint(0, 5)))
    return (s + " " + tail).rstrip() if tail else s


def whitespace_line(rng):
    kind = rng.randrange(5)
    if kind == 0:  # whitespace only
        return "".join(rng.choice(WS_SEPS) for _ in range(rng.randint(1, 4)))
    words = [rng.choice(ENGLISH_WORDS) for _ in range(rng.randint(1, 8))]
    s = ""
    for i, w in enumerate(words):
        if i:
            s += rng.choice(WS_SEPS)
        s += w
    if kind in (1, 3):
        s = rng.choice(WS_SEPS) + s
    if kind in (2, 3):
        s = s + rng.choice(WS_SEPS)
    return s


def special_line(rng, pool):
    kind = rng.randrange(8)
    msg = rng.choice(pool)
    if kind == 0:
        return chatml(msg)
    if kind == 1:
        return f"<|im_start|>user\n{msg}<|im_end|>\n<|im_start|>assistant\n{rng.choice(pool)}<|im_end|>\n"
    if kind == 2:
        return f"{msg}<|endoftext|>{rng.choice(pool)}"
    if kind == 3:
        look = rng.choice(["<|im_start", "<|im_end|x", "<|im_end|", "|im_start|>", "< |im_start|>",
                           "<|IM_START|>", "<|im start|>", "<<|im_start|>>", "<|endoftext",
                           "<|endoftext||>", "<repo_name", "<file_sep >", "<|im_end |>",
                           "<|im_ start|>", "<||>", "<|>", "<|", "|>"])
        return f"{msg} {look}{rng.choice(['', ' ', 'x', chr(10)])}{rng.choice(pool)}"
    if kind == 4:
        toks = [rng.choice(SPECIAL_TOKENS) for _ in range(rng.randint(1, 4))]
        seps = ["", " ", "\n", "x"]
        return "".join(t + rng.choice(seps) for t in toks)
    if kind == 5:
        return f"<repo_name>user/{rng.choice(ENGLISH_WORDS)}<file_sep><filename>src/main.py\n{msg}"
    if kind == 6:
        return f"<jupyter_start><jupyter_code>print({rng.randint(0, 99)})<jupyter_output>{rng.randint(0, 99)}<empty_output>"
    return f"{rng.choice(WS_SEPS)}{rng.choice(SPECIAL_TOKENS)}{rng.choice(WS_SEPS)}{msg}"


def ascii_noise(rng):
    alphabet = ("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~      \t\n")
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 60)))


def build_tokenize_corpus():
    rng = random.Random(SEED)
    prose = read_text("prose.txt")
    paragraphs = [p.strip() for p in prose.split("\n\n") if p.strip()]
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", " ".join(paragraphs)) if s]
    code = read_lines("code.txt")
    with open(os.path.join(CORPUS_DIR, "code.txt"), encoding="utf-8") as f:
        code_all = f.read().split("\n")
    multi = read_lines("multilingual.txt")
    chinese = [l for l in multi if re.search(r"[\u4e00-\u9fff]", l) and not re.search(r"[\u3040-\u30ff]", l)]

    out = []
    # fixed edge cases
    out += ["", " ", "  ", "\n", "\t", "\n\n\n", " \n ", "a", "A", "I'm", "'s", "''", "' '",
            "hello world", " hello world", "hello world ", "Hello, World!", "\u00a0", "\ufeffBOM"]
    out += [chr(c) for c in range(0x21, 0x7F)]                    # every printable ASCII char
    out += [" " + chr(c) for c in range(0x21, 0x7F) if rng.random() < 0.5]
    # prose
    out += sentences
    out += paragraphs
    out += [odd_case(rng, s) for s in rng.sample(sentences, 40)]
    out += ["\n\n".join(rng.sample(paragraphs, 2)) for _ in range(6)]
    # code
    out += code
    for _ in range(80):
        i = rng.randrange(len(code_all) - 2)
        out.append("\n".join(code_all[i:i + rng.randint(2, 7)]))
    # multilingual
    out += multi
    for _ in range(50):
        out.append(rng.choice(multi) + rng.choice([" ", "", "\n"]) + rng.choice(multi))
    for _ in range(50):
        zh = rng.choice(chinese)
        en = rng.choice(sentences)
        out.append(rng.choice([f"{zh} {en}", f"{en}{zh}", f"{zh[:len(zh)//2]}{rng.choice(ENGLISH_WORDS)}{zh[len(zh)//2:]}"]))
    # emoji
    out += EMOJI
    out += EMOJI_SENTENCES
    for _ in range(70):
        seq = [rng.choice(EMOJI) for _ in range(rng.randint(2, 6))]
        sep = rng.choice(["", " ", "  ", "\n"])
        s = sep.join(seq)
        if rng.random() < 0.5:
            s = " ".join(rng.choice(ENGLISH_WORDS) for _ in range(rng.randint(1, 4))) + rng.choice(["", " "]) + s
        out.append(s)
    # numbers
    for _ in range(200):
        s = random_number(rng)
        if rng.random() < 0.3:
            s = f"{rng.choice(ENGLISH_WORDS)} {s} {rng.choice(ENGLISH_WORDS)}"
        out.append(s)
    # contractions
    out += ["I'M HERE", "YOU'RE", "he'S", "THEY'LL", "we'Ve", "she'D", "DON'T", "don'T",
            "it'S it's IT'S It's", "'S 'LL 'RE 'VE 'M 'D 'T", "O'Neil's", "rock'n'roll",
            "'twas", "y'all'd've", "''''", "'s's's", "It\u2019s", "Can\u2019t"]
    out += [contraction(rng) for _ in range(150)]
    # whitespace
    out += [whitespace_line(rng) for _ in range(200)]
    out += ["x" + " " * n + "y" for n in range(1, 20)]
    out += [" " * n for n in range(1, 17)]
    out += ["\n" * n for n in range(1, 7)]
    out += ["\t" * n + "x" for n in range(1, 6)]
    # special tokens
    pool = sentences[:60] + multi[:20] + ["hi", "", "What is 2+2?", "Write a haiku."]
    out += [
        chatml("Hello!"),
        "<|im_start|>system\n...<|im_end|>\n",
        "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|im_start", "<|im_end|x",
        "<|im_start|><|im_end|>", "<|endoftext|><|endoftext|>", "text<|endoftext|>more",
        " <|im_start|> ", "<|im_start|>assistant\n", "\n<|im_end|>\n",
    ]
    out += SPECIAL_TOKENS
    out += [special_line(rng, pool) for _ in range(160)]
    # random unicode
    out += [random_unicode(rng, rng.randint(1, 40)) for _ in range(450)]
    out += [ascii_noise(rng) for _ in range(120)]
    # random mixtures of everything above
    base = list(out)
    for _ in range(650):
        parts = [rng.choice(base) for _ in range(rng.randint(2, 4))]
        out.append(rng.choice(["", " ", "\n", "\t", "  ", "\n\n"]).join(parts))

    # dedupe (order preserving), keep only valid text
    seen = {}
    for s in out:
        s.encode("utf-8")  # raises on surrogates
        seen.setdefault(s, None)
    return list(seen)


def gen_tokenize(llama_cls, model, out_dir):
    llm = llama_cls(model_path=model, vocab_only=True, verbose=False)
    lines = build_tokenize_corpus()
    path = os.path.join(out_dir, "tokenize_lines.jsonl")
    n_ids = 0
    n_special = 0
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for text in lines:
            ids = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
            n_ids += len(ids)
            n_special += sum(1 for t in ids if t < len(SPECIAL_TOKENS))
            f.write(json.dumps({"text": text, "ids": ids}, ensure_ascii=False) + "\n")
    print(f"[tokenize] {path}: {len(lines)} lines, {n_ids} ids total, "
          f"{n_special} special-token ids, {os.path.getsize(path)} bytes")
    return {"lines": len(lines), "ids": n_ids}


# --------------------------------------------------------------------------
# teacher forcing
# --------------------------------------------------------------------------

def log_softmax64(logits):
    x = np.asarray(logits, dtype=np.float64)
    m = x.max()
    return x - (m + np.log(np.exp(x - m).sum()))


def topk_entry(lp, k):
    """lp: float64 log-probs over the vocab -> (tail_logprob, ids[k], logprobs[k])."""
    idx = np.argpartition(-lp, k)[:k]
    # sort by descending log-prob, ties by ascending id (deterministic)
    order = np.lexsort((idx, -lp[idx]))
    idx = idx[order]
    mask = np.ones(lp.shape[0], dtype=bool)
    mask[idx] = False
    rest = lp[mask]
    if rest.size == 0:
        tail = -math.inf
    else:
        m = rest.max()
        tail = float(m + np.log(np.exp(rest - m).sum())) if np.isfinite(m) else -math.inf
    return tail, idx.astype(np.int32), lp[idx]


def gen_teacher_forced(llama_cls, model, out_dir, n_threads):
    llm = llama_cls(model_path=model, n_ctx=2 * TF_CHUNK, n_batch=TF_CHUNK, n_ubatch=TF_CHUNK,
                    logits_all=True, n_threads=n_threads, n_threads_batch=n_threads,
                    seed=0, verbose=False)
    n_vocab = llm.n_vocab()
    text = read_text("prose.txt")
    all_ids = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
    n_chunks = min(TF_MAX_CHUNKS, len(all_ids) // TF_CHUNK)
    assert n_chunks >= 4, f"prose.txt too short: {len(all_ids)} tokens"
    path = os.path.join(out_dir, "teacher_forced.bin")
    top1_hits = 0
    nll = 0.0
    n_pos = 0
    tails = []
    with open(path, "wb") as f:
        f.write(TF_MAGIC)
        f.write(struct.pack("<III", n_chunks, TF_K, n_vocab))
        for c in range(n_chunks):
            toks = all_ids[c * TF_CHUNK:(c + 1) * TF_CHUNK]
            llm.reset()
            llm.eval(toks)
            scores = np.array(llm.scores[:len(toks)], dtype=np.float32)
            assert scores.shape == (len(toks), n_vocab)
            f.write(struct.pack("<I", len(toks)))
            f.write(np.asarray(toks, dtype="<i4").tobytes())
            for p in range(len(toks)):
                lp = log_softmax64(scores[p])
                tail, ids, lps = topk_entry(lp, TF_K)
                rec = np.empty(TF_K, dtype=[("id", "<i4"), ("lp", "<f4")])
                rec["id"] = ids
                rec["lp"] = lps.astype(np.float32)
                f.write(struct.pack("<f", tail))
                f.write(rec.tobytes())
                tails.append(tail)
                if p + 1 < len(toks):
                    n_pos += 1
                    nll -= lp[toks[p + 1]]
                    top1_hits += int(ids[0] == toks[p + 1])
    ppl = math.exp(nll / n_pos)
    tails = np.array(tails)
    print(f"[teacher_forced] {path}: {n_chunks} chunks x {TF_CHUNK} tokens, K={TF_K}, "
          f"n_vocab={n_vocab}, {os.path.getsize(path)} bytes; corpus {len(all_ids)} tokens; "
          f"ppl(next token)={ppl:.3f}, top1==next-token {top1_hits}/{n_pos}; "
          f"tail mass: median {np.exp(np.median(tails)):.3e}, max {np.exp(tails.max()):.3e}")
    return {"chunks": n_chunks, "corpus_tokens": len(all_ids), "ppl": ppl, "n_vocab": n_vocab}


# --------------------------------------------------------------------------
# greedy decoding
# --------------------------------------------------------------------------

GREEDY_PROMPTS = [
    chatml("What is the capital of France?"),
    chatml("Write a short poem about the sea."),
    chatml("Explain what a hash table is in two sentences."),
    chatml("List three fruits that are red."),
    chatml("How do I reverse a list in Python?"),
    chatml("Translate 'good morning' into Spanish."),
    chatml("What is 12 times 7?"),
    chatml("Give me a tip for sleeping better."),
    chatml("Hi!"),
    chatml("Summarize the plot of Romeo and Juliet in one sentence."),
    "The capital of France is",
    "Once upon a time, in a small village by the river,",
    "def fibonacci(n):\n",
    "The three primary colors are",
    "Water boils at a temperature of",
    "1, 2, 3, 4, 5,",
    "In machine learning, a neural network is",
    "Dear Sir or Madam,\n\nI am writing to",
    "#include <stdio.h>\n\nint main(void) {\n",
    "The quick brown fox",
]


def gen_greedy(llama_cls, model, out_dir, n_threads):
    llm = llama_cls(model_path=model, n_ctx=1024, n_batch=512, n_ubatch=512, logits_all=True,
                    n_threads=n_threads, n_threads_batch=n_threads, seed=0, verbose=False)
    eos = llm.token_eos()
    path = os.path.join(out_dir, "greedy.jsonl")
    n_eos = 0
    min_margin = math.inf
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for prompt in GREEDY_PROMPTS:
            prompt_ids = llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)
            llm.reset()
            llm.eval(prompt_ids)
            gen = []
            margins = []
            eos_at = None
            for step in range(GREEDY_N):
                logits = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
                tok = int(np.argmax(logits))
                top2 = np.partition(logits, -2)[-2:]
                margins.append(round(float(top2[1] - top2[0]), 5))
                gen.append(tok)
                if tok == eos and eos_at is None:
                    eos_at = step
                if step + 1 < GREEDY_N:
                    llm.eval([tok])  # EOS is ignored: keep decoding
            text = llm.detokenize(gen, special=True).decode("utf-8", errors="replace")
            if eos_at is not None:
                n_eos += 1
            min_margin = min(min_margin, min(margins))
            rec = {"prompt": prompt, "prompt_ids": prompt_ids, "greedy_ids": gen,
                   "greedy_text": text, "stopped_eos": False, "eos_at": eos_at,
                   "top2_margins": margins}
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
            print(f"  {prompt[-40:]!r} -> {text!r}" + (f"  [EOS at {eos_at}]" if eos_at is not None else ""))
    print(f"[greedy] {path}: {len(GREEDY_PROMPTS)} prompts x {GREEDY_N} tokens, "
          f"{n_eos} hit EOS (decoding continued past it), min top1-top2 logit margin {min_margin:.4f}, "
          f"{os.path.getsize(path)} bytes")
    return {"prompts": len(GREEDY_PROMPTS), "eos": n_eos, "min_margin": min_margin}


# --------------------------------------------------------------------------
# README
# --------------------------------------------------------------------------

README = """\
# tests/golden — llama.cpp reference data

Everything in this directory (this README included) is **generated** by
`tools/gen_references.py` from llama.cpp (PyPI `llama-cpp-python`), so that the
engine is checked against an independent implementation, never against itself.
Do not edit the data files by hand; regenerate them:

    tools/setup-reference-env                 # once; builds llama-cpp-python (10+ min)
    .venv-ref/bin/python tools/gen_references.py --model models/SmolLM2-135M-Instruct.Q4_1.gguf

## Provenance (last generation)

| item | value |
|---|---|
| llama-cpp-python | {llama_version} |
| model file | `{model_name}` |
| model sha256 | `{model_sha}` |
| threads | {threads} |
| generated with | numpy {numpy_version}, Python {py_version} |

Inputs live in `tools/ref_corpus/` (`prose.txt`, `code.txt`, `multilingual.txt`);
the rest of the tokenizer corpus is generated by the script from a fixed seed
({seed}).

## tokenize_lines.jsonl

JSON Lines, UTF-8, one record per line (`\\n`-terminated; {tok_lines} records):

    {{"text": "<string>", "ids": [int, ...]}}

* `ids` = `llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)` with a
  `vocab_only=True` model: **no BOS is added**, and special/control tokens written
  literally in the text (`<|im_start|>`, `<|im_end|>`, `<|endoftext|>`,
  `<repo_name>`, ... — ids 0..16) are parsed as single special tokens.
* `text` may contain newlines, tabs, CR, NBSP, etc. It is written with
  `json.dumps(..., ensure_ascii=False)`: non-ASCII characters appear as raw
  UTF-8; the only escapes are `\\"` `\\\\` `\\n` `\\r` `\\t` `\\b` `\\f` and
  `\\u00XX` for other control characters. `text` may be the empty string
  (then `ids` is `[]`).
* Contents: printable ASCII singles, English prose sentences/paragraphs (also odd
  case), source code lines and multi-line snippets (C, Python, JS, shell, Rust,
  Go, SQL, HTML, Make, YAML...), Chinese (and mixed Chinese/English), Japanese,
  Korean, Cyrillic, Arabic, Hebrew, Greek, Devanagari, Thai, accented Latin,
  combining marks, emoji (ZWJ sequences, skin tones, flags, keycaps, tag
  sequences), numbers (long digit runs, decimals, `1,234,567`, dates, hex...),
  contractions with odd case (`'S`, `'LL`, `’s`), runs of spaces/tabs/newlines,
  leading/trailing whitespace, special tokens and near-miss look-alikes
  (`<|im_start`, `<|im_end|x`, `<|IM_START|>`), seeded random Unicode strings
  (assigned code points only — categories Cn/Cs/Co and controls other than
  `\\t\\n\\r` excluded) and random concatenations of all of the above.

## teacher_forced.bin

Teacher-forced next-token distributions of llama.cpp over ordinary English
text (`tools/ref_corpus/prose.txt`, tokenized with `add_bos=False`, first
{tf_chunks} x {tf_chunk} tokens of {tf_corpus} used). Each chunk is evaluated
from an **empty KV cache**, position 0 = first token of the chunk, **no BOS**:
`Llama(n_ctx={tf_nctx}, n_batch={tf_chunk}, n_ubatch={tf_chunk}, logits_all=True)`,
`llm.reset(); llm.eval(chunk)` (one ubatch of {tf_chunk} tokens),
`scores = llm.scores[:n]`. Log-probabilities are `log_softmax` over the full
vocabulary computed in float64 from the float32 logits, then stored as float32.

Little-endian binary layout:

    offset  type          field
    0       char[8]       magic "{tf_magic}"
    8       u32           n_chunks            ({tf_chunks})
    12      u32           K                   ({tf_k})
    16      u32           n_vocab             ({tf_vocab})
    20      chunk[n_chunks]:
              u32           n_tokens          ({tf_chunk})
              i32           tokens[n_tokens]  (the input token ids of the chunk)
              position[n_tokens]:             (distribution for the token AFTER tokens[p])
                f32           tail_logprob    log(1 - sum_{{top K}} p) = logsumexp of all
                                              log-probs not in the top K; -inf if none
                K x {{ i32 id, f32 logprob }}   sorted by descending logprob
                                              (ties: ascending id)

Each position record is 4 + 8K = {tf_rec} bytes; each chunk 4 + 4*n + n*{tf_rec} bytes.
Entry 0 of each position is llama.cpp's top-1 (argmax) token, used for top-1
agreement. The distribution at position p predicts `tokens[p+1]`; the last
position of a chunk predicts a token that is not stored (still a valid
comparison point). llama.cpp's own perplexity on these targets is
{tf_ppl:.4f} (mean over the {tf_npos} positions that have a target).

Numerics of the reference (for choosing tolerances): llama.cpp's CPU backend
stores the KV cache as **f16** (default `type_k`/`type_v`), and for Q4_1
weights quantizes the activation vector to **Q8_1** before each dot product;
an engine computing in f32 will differ slightly from these numbers.

Suggested comparisons: top-1 agreement, KL(llama.cpp || ours) computed on the
top K plus the tail bucket, max |logprob difference| on the top entries.

## greedy.jsonl

{g_prompts} records, one per line (same JSON conventions as above):

    {{"prompt": str, "prompt_ids": [int], "greedy_ids": [{g_n} ints], "greedy_text": str,
     "stopped_eos": false, "eos_at": int|null, "top2_margins": [{g_n} floats]}}

* `prompt_ids` = `tokenize(prompt, add_bos=False, special=True)` (ChatML prompts
  contain the special tokens literally; no BOS).
* Decoding: `Llama(n_ctx=1024, n_batch=512, logits_all=True)`, `reset()`,
  `eval(prompt_ids)` as one batch, then {g_n} times: take `argmax` of the last
  row of logits (float32; ties -> lowest id; i.e. temperature 0, top_k=1, no
  repetition penalty), append it, `eval([tok])`. Exactly {g_n} tokens are always
  produced: **EOS (`<|im_end|>`, id 2) does not stop decoding**, so
  `stopped_eos` is always false; `eos_at` is the index in `greedy_ids` of the
  first EOS, or null. {g_eos} of the {g_prompts} prompts hit EOS; a test that
  stops at EOS should compare only `greedy_ids[:eos_at+1]`.
* `greedy_text` = `detokenize(greedy_ids, special=True)` decoded as UTF-8 with
  replacement characters.
* `top2_margins[i]` = llama.cpp logit(top1) - logit(top2) at step i. A
  divergence from llama.cpp at a step with a tiny margin (say < 0.05) may be
  numerical noise rather than a bug (smallest margin in this file: {g_minm:.4f}).
"""


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=DEFAULT_MODEL, help="GGUF model (default: %(default)s)")
    ap.add_argument("--out-dir", default=DEFAULT_OUT, help="output directory (default: %(default)s)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", choices=["tokenize", "teacher", "greedy"], action="append",
                    help="regenerate only these files (repeatable); README is rewritten only on a full run")
    args = ap.parse_args()

    try:
        import llama_cpp
        from llama_cpp import Llama
    except ImportError:
        sys.exit("error: llama_cpp not importable; run tools/setup-reference-env and use its python")
    if not os.path.isfile(args.model):
        sys.exit(f"error: model not found: {args.model} (tools/fetch-model fetches it)")
    os.makedirs(args.out_dir, exist_ok=True)
    which = set(args.only or ["tokenize", "teacher", "greedy"])

    t0 = time.time()
    model_sha = sha256_file(args.model)
    print(f"llama-cpp-python {llama_cpp.__version__}, model {args.model} sha256 {model_sha}")
    info = {}
    if "tokenize" in which:
        info["tok"] = gen_tokenize(Llama, args.model, args.out_dir)
    if "teacher" in which:
        info["tf"] = gen_teacher_forced(Llama, args.model, args.out_dir, args.threads)
    if "greedy" in which:
        info["greedy"] = gen_greedy(Llama, args.model, args.out_dir, args.threads)

    if len(which) == 3:
        tf = info["tf"]
        readme = README.format(
            llama_version=llama_cpp.__version__, model_name=os.path.basename(args.model),
            model_sha=model_sha, threads=args.threads, numpy_version=np.__version__,
            py_version=sys.version.split()[0], seed=SEED, tok_lines=info["tok"]["lines"],
            tf_chunks=tf["chunks"], tf_chunk=TF_CHUNK, tf_corpus=tf["corpus_tokens"],
            tf_nctx=2 * TF_CHUNK, tf_magic=TF_MAGIC.decode(), tf_k=TF_K, tf_vocab=tf["n_vocab"],
            tf_rec=4 + 8 * TF_K, tf_ppl=tf["ppl"], tf_npos=tf["chunks"] * (TF_CHUNK - 1),
            g_prompts=info["greedy"]["prompts"], g_n=GREEDY_N, g_eos=info["greedy"]["eos"],
            g_minm=info["greedy"]["min_margin"])
        path = os.path.join(args.out_dir, "README.md")
        with open(path, "w", encoding="utf-8") as f:
            f.write(readme)
        print(f"[readme] {path}")
    print(f"done in {time.time() - t0:.1f}s")


if __name__ == "__main__":
    main()
