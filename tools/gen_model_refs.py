#!/usr/bin/env python3
"""Reference outputs for the model set made by tools/make_ref_models.py, from
implementations independent of ours: llama.cpp (llama-server, llama-perplexity)
and, for the tiny models' F32 files, HF transformers (float32 forward).

    /work/refenv/bin/python tools/gen_model_refs.py MODELDIR [--only SUBSTR,..]
        [--sources llamacpp,hf] [--chunks 4] [--n-ctx 512] [--out DIR] [--fa off]

Writes MODELDIR/refs/<file>.json (and MODELDIR/refs/<file>.kld, llama.cpp's
logits base files, for the KL oracle; not kept). --out DIR also copies the
JSONs, gzipped, to DIR (tests/golden/models/ for the committed set). An
existing JSON of the same file (same sha256) keeps the sources this run does
not redo. Format of a JSON
(all token ids are the model's own ids):

  {"name", "sha256", "arch", "format", "kind", "base",
   "prompts":  [20 prompt strings],
   "tok_texts": [texts for the tokenization check],
   "llamacpp": {"flash_attn": "off", "add_bos": bool,
       "tokenize": [{"text_index": i, "add_special": b, "ids": [..]}]
                   (F32 files of tiny models and real files only: the
                   vocabulary is the same in every format),
       "greedy":   [{"prompt_ids": [..], "ids": [32], "margins": [32]}],
       "tf": {"n_ctx": 512, "first": 256, "chunks": [[n_ctx ids], ..],
              "top1": [..], "margin": [..]},
       "kl_vs_base": {"mean": x, "p99": x, "max": x, "same_top": x} | absent (F32 files)},
   "hf": {"greedy": [...], "tf": {...}}   (tiny F32 files only)}

greedy: the prompt is tokenized by llama.cpp with add_special (BOS where
  the model adds one) and sent as a token-id array to llama-server
  POST /completion {"n_predict": 32, "temperature": 0, "cache_prompt": false,
  "ignore_eos": true, "n_probs": 2}: argmax decoding for exactly 32 tokens;
  margins = logprob(top1) - logprob(top2) at each step (= the logit margin).
tf (teacher forced): llama-perplexity's protocol, so that its
  --kl-divergence-base file holds the same positions: the corpus
  (tools/ref_corpus/*.txt concatenated) is tokenized without specials, cut
  into n_ctx-token chunks, the first token of each chunk replaced by BOS when
  the model adds BOS, each chunk evaluated from an empty cache; positions
  first = n_ctx/2 .. n_ctx-2 of each chunk are scored (chunks x 255 >= 1000).
  top1/margin come from the base file (log-probs stored as 16-bit codes:
  margins are exact to ~(max-min logit)/65535).
kl_vs_base: llama.cpp's KL of this file against the F32 file of the same
  weights (its quality number for the format), computed from the two
  --kl-divergence-base files as llama-perplexity --kl-divergence does
  (that program's summary lines are sometimes lost from its log at exit).
HF: the same prompts ids and chunks fed to AutoModelForCausalLM (float32,
  eager attention) from MODELDIR/hf/<arch>: argmax greedy and top-1/margin.
"""

import argparse
import gzip
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS_DIR = os.path.join(REPO_ROOT, "tools", "ref_corpus")
DEFAULT_LLAMA_CPP = "/work/main/.llama-cpp"
N_PREDICT = 32


def corpus_text():
    parts = []
    for name in ("prose.txt", "code.txt", "multilingual.txt"):
        with open(os.path.join(CORPUS_DIR, name), encoding="utf-8") as f:
            parts.append(f.read())
    return "\n".join(parts)


def prompts_and_texts():
    """20 greedy prompts (prose, code, multilingual lines) and the texts of the
    tokenization check (the prompts plus more corpus lines)."""
    lines = {}
    for name in ("prose.txt", "code.txt", "multilingual.txt"):
        with open(os.path.join(CORPUS_DIR, name), encoding="utf-8") as f:
            lines[name] = [ln.strip() for ln in f.read().split("\n") if len(ln.strip()) > 20]
    prompts = ([ln[:160] for ln in lines["prose.txt"][:10]] +
               [ln[:160] for ln in lines["code.txt"][:5]] +
               [ln[:160] for ln in lines["multilingual.txt"][:5]])
    texts = list(prompts)
    for name in ("prose.txt", "code.txt", "multilingual.txt"):
        texts += lines[name][10:30]
    texts += ["", " ", "  leading spaces", "tabs\tand\nnewlines\n\n", "3.14159 1,234,567 2024-06-01",
              "MiXeD CaSe ALLCAPS don't I'LL", "emoji 😀🚀 ✅", "日本語のテキスト", "Ünïcödé ß"]
    return prompts, texts


# --------------------------------------------------------------------------
# llama.cpp
# --------------------------------------------------------------------------

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(port, path, body, timeout=600):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


class Server:
    def __init__(self, llama_cpp, model, fa, log):
        self.port = free_port()
        self.log = open(log, "a")
        exe = os.path.join(llama_cpp, "bin", "llama-server")
        self.proc = subprocess.Popen(
            [exe, "-m", model, "--port", str(self.port), "--host", "127.0.0.1", "-c", "2048",
             "-np", "1", "-t", "2", "-fa", fa, "--no-warmup"],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 300
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama-server exited ({self.proc.returncode}); see {log}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except Exception:
                pass
            time.sleep(0.3)
        self.close()
        raise RuntimeError("llama-server did not become healthy")

    def tokenize(self, text, add_special):
        return post(self.port, "/tokenize", {"content": text, "add_special": add_special,
                                              "parse_special": False})["tokens"]

    def complete(self, ids):
        r = post(self.port, "/completion", {
            "prompt": ids, "n_predict": N_PREDICT, "temperature": 0, "cache_prompt": False,
            "ignore_eos": True, "n_probs": 2, "return_tokens": True, "repeat_penalty": 1.0,
            "samplers": ["top_k", "temperature"], "top_k": 1})
        ids = r["tokens"]
        # completion_probabilities merges tokens that end inside a UTF-8
        # character, so it can be shorter than ids: align by id
        probs, margins, j = r.get("completion_probabilities", []), [], 0
        for t in ids:
            m = None
            if j < len(probs) and probs[j].get("id") == t:
                lp = [x.get("logprob") for x in probs[j].get("top_logprobs", [])]
                if len(lp) >= 2 and None not in lp[:2]:
                    m = round(lp[0] - lp[1], 3)
                j += 1
            margins.append(m)
        return ids, margins

    def close(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.log.close()


def read_kld(path):
    """llama-perplexity --kl-divergence-base file: n_ctx, n_vocab, n_chunk,
    tokens, then per chunk per scored position {f32 scale, f32 min_logprob,
    u16 codes[n_vocab]} (padded to an even count of u16)."""
    with open(path, "rb") as f:
        assert f.read(8) == b"_logits_"
        n_ctx, = np.frombuffer(f.read(4), "<i4")
        n_vocab, n_chunk = np.frombuffer(f.read(8), "<i4")
        tokens = np.frombuffer(f.read(4 * n_chunk * n_ctx), "<i4")
        nv = 2 * ((n_vocab + 1) // 2) + 4
        data = np.frombuffer(f.read(), "<u2")
    first = n_ctx // 2
    n_pos = n_ctx - 1 - first
    data = data[: n_chunk * n_pos * nv].reshape(n_chunk * n_pos, nv)
    codes = data[:, 4:4 + n_vocab].astype(np.float32)
    hdr = data[:, :4].copy().view("<f4")
    logp = hdr[:, 1:2] + hdr[:, 0:1] * codes
    return int(n_ctx), int(n_vocab), int(n_chunk), tokens.reshape(n_chunk, n_ctx), logp


def top1_margin(logp):
    idx = np.argsort(-logp, axis=1, kind="stable")[:, :2]
    top = np.take_along_axis(logp, idx, axis=1)
    return idx[:, 0].tolist(), np.round(top[:, 0] - top[:, 1], 3).tolist()


def perplexity(llama_cpp, model, args, log):
    exe = os.path.join(llama_cpp, "bin", "llama-perplexity")
    cmd = shlex.join([exe, "-m", model, "-t", "2"] + args)
    with open(log, "a") as f:
        f.write("$ " + cmd + "\n")
        f.flush()
        # under a pty: with its output on a pipe, llama-perplexity loses the
        # last lines of its log (the KLD summary among them) at exit
        r = subprocess.run(["script", "-q", "-e", "-c", cmd, "/dev/null"], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, errors="replace")
        f.write(r.stdout)
    if r.returncode:
        raise RuntimeError(f"llama-perplexity failed ({r.returncode}); see {log}")
    return r.stdout


def llamacpp_refs(entry, mdir, a, prompts, texts, log):
    path = os.path.join(mdir, entry["name"])
    ref = {"flash_attn": a.fa}
    srv = Server(a.llama_cpp, path, a.fa, log)
    try:
        bos_probe = srv.tokenize("a", True)
        plain = srv.tokenize("a", False)
        ref["add_bos"] = len(bos_probe) > len(plain)
        if entry["name"] == entry.get("base") or entry["kind"] == "real":
            # the vocabulary is the same in every format of one model: kept
            # with the F32 file only (and with each real file)
            ref["tokenize"] = [{"text_index": i, "add_special": sp, "ids": srv.tokenize(t, sp)}
                               for i, t in enumerate(texts) for sp in (False, True)]
        ref["greedy"] = []
        for p in prompts:
            ids = srv.tokenize(p, True)
            out, margins = srv.complete(ids)
            ref["greedy"].append({"prompt_ids": ids, "ids": out, "margins": margins})
    finally:
        srv.close()
    corpus = os.path.join(mdir, "refs", "corpus.txt")
    kld = os.path.join(mdir, "refs", entry["name"] + ".kld")
    common = ["-f", corpus, "-c", str(a.n_ctx), "-b", str(a.n_ctx), "--chunks", str(a.chunks),
              "-fa", a.fa]
    perplexity(a.llama_cpp, path, common + ["--kl-divergence-base", kld], log)
    n_ctx, _, n_chunk, toks, logp = read_kld(kld)
    top1, margin = top1_margin(logp)
    chunks = toks.tolist()
    if ref["add_bos"]:
        for c in chunks:
            c[0] = bos_probe[0]
    ref["tf"] = {"n_ctx": n_ctx, "first": n_ctx // 2, "chunks": chunks, "top1": top1,
                 "margin": margin}
    base = entry.get("base")
    base_kld = os.path.join(mdir, "refs", base + ".kld") if base else None
    if base and base != entry["name"] and os.path.exists(base_kld):
        # llama-perplexity --kl-divergence computes this same sum from the
        # same two files, but its summary lines are sometimes lost from its
        # log at exit; computed here from the stored log-probs instead
        _, _, _, _, base_logp = read_kld(base_kld)
        d = (np.exp(base_logp) * (base_logp - logp)).sum(axis=1)
        ref["kl_vs_base"] = {"mean": round(float(d.mean()), 6),
                             "p99": round(float(np.percentile(d, 99)), 6),
                             "max": round(float(d.max()), 6),
                             "same_top": round(float((base_logp.argmax(1) ==
                                                      logp.argmax(1)).mean()), 4)}
    return ref


# --------------------------------------------------------------------------
# HF transformers
# --------------------------------------------------------------------------

def hf_refs(entry, mdir, prompt_ids, chunks, first):
    import torch
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(os.path.join(mdir, entry["hf_dir"]),
                                                 dtype=torch.float32, attn_implementation="eager")
    model.eval()
    ref = {"greedy": []}
    with torch.no_grad():
        for ids in prompt_ids:
            seq = list(ids)
            margins = []
            out = model(torch.tensor([seq]), use_cache=True)
            for _ in range(N_PREDICT):
                lg = out.logits[0, -1].double()
                top = torch.topk(lg, 2)
                seq.append(int(top.indices[0]))
                margins.append(round(float(top.values[0] - top.values[1]), 3))
                out = model(torch.tensor([seq[-1:]]), past_key_values=out.past_key_values,
                            use_cache=True)
            ref["greedy"].append({"prompt_ids": list(ids), "ids": seq[len(ids):],
                                  "margins": margins})
        logps = []
        for c in chunks:
            lg = model(torch.tensor([c])).logits[0].double()
            logps.append(torch.log_softmax(lg[first:len(c) - 1], -1).numpy())
    top1, margin = top1_margin(np.concatenate(logps))
    ref["tf"] = {"n_ctx": len(chunks[0]), "first": first, "chunks": chunks, "top1": top1,
                 "margin": margin}
    return ref


def hf_tokenize(entry, mdir, prompts, chunks_n_ctx, n_chunks):
    """Prompt ids and tf chunks from the HF-side tokenizer files (used only
    when llama.cpp is not run): sentencepiece for spm vocabularies, the
    tokenizers library for BPE ones."""
    hf_dir = os.path.join(mdir, entry["hf_dir"])
    spm_path = os.path.join(hf_dir, "tokenizer.model")
    if os.path.exists(spm_path):
        import sentencepiece as spm
        sp = spm.SentencePieceProcessor(model_file=spm_path)
        enc, bos = (lambda t: sp.encode(t)), sp.bos_id()
    else:
        from tokenizers import Tokenizer
        tk = Tokenizer.from_file(os.path.join(hf_dir, "tokenizer.json"))
        enc, bos = (lambda t: tk.encode(t).ids), None
    pids = [([bos] if bos is not None else []) + enc(p) for p in prompts]
    stream = enc(corpus_text())
    chunks = [stream[i * chunks_n_ctx:(i + 1) * chunks_n_ctx] for i in range(n_chunks)]
    if bos is not None:
        for c in chunks:
            c[0] = bos
    return pids, chunks


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("modeldir")
    ap.add_argument("--only", default="", help="comma-separated substrings of file names")
    ap.add_argument("--sources", default="llamacpp,hf")
    ap.add_argument("--chunks", type=int, default=4)
    ap.add_argument("--n-ctx", type=int, default=512)
    ap.add_argument("--fa", default="off", choices=["on", "off"])
    ap.add_argument("--out", default=None, help="also copy the JSONs here")
    ap.add_argument("--llama-cpp", default=DEFAULT_LLAMA_CPP)
    a = ap.parse_args()
    mdir = os.path.abspath(a.modeldir)
    with open(os.path.join(mdir, "manifest.json")) as f:
        manifest = json.load(f)
    os.makedirs(os.path.join(mdir, "refs"), exist_ok=True)
    with open(os.path.join(mdir, "refs", "corpus.txt"), "w", encoding="utf-8") as f:
        f.write(corpus_text())
    log = os.path.join(mdir, "refs", "gen.log")
    sources = a.sources.split(",")
    only = [s for s in a.only.split(",") if s]
    prompts, texts = prompts_and_texts()
    # F32 files first: their .kld files are the KL bases of the others
    order = sorted(manifest, key=lambda e: (e["name"] != e.get("base"), e["name"]))
    for e in order:
        if only and not any(s in e["name"] for s in only):
            continue
        t0 = time.time()
        path = os.path.join(mdir, "refs", e["name"] + ".json")
        ref = {}
        if os.path.exists(path):  # keep the sources this run does not redo
            with open(path) as f:
                ref = json.load(f)
            if ref.get("sha256") != e.get("sha256"):
                ref = {}
        ref.update({k: e.get(k) for k in ("name", "sha256", "arch", "format", "kind", "base")})
        ref.update({"prompts": prompts, "tok_texts": texts})
        try:
            if "llamacpp" in sources:
                ref["llamacpp"] = llamacpp_refs(e, mdir, a, prompts, texts, log)
            if "hf" in sources and e["kind"] == "tiny" and e["format"] == "F32":
                if "llamacpp" in ref:
                    lc = ref["llamacpp"]
                    pids = [g["prompt_ids"] for g in lc["greedy"]]
                    chunks, first = lc["tf"]["chunks"], lc["tf"]["first"]
                else:
                    pids, chunks = hf_tokenize(e, mdir, prompts, a.n_ctx, a.chunks)
                    first = a.n_ctx // 2
                ref["hf"] = hf_refs(e, mdir, pids, chunks, first)
        except Exception as ex:  # one bad file must not stop the set
            print(f"{e['name']}: FAILED: {ex}", flush=True)
            continue
        with open(path, "w") as f:
            json.dump(ref, f, separators=(",", ":"))
        if a.out:
            os.makedirs(a.out, exist_ok=True)
            with gzip.open(os.path.join(a.out, e["name"] + ".json.gz"), "wt", encoding="utf-8",
                           compresslevel=9) as f:
                json.dump(ref, f, separators=(",", ":"))
        print(f"{e['name']}: {', '.join(k for k in ('llamacpp', 'hf') if k in ref)} "
              f"({time.time() - t0:.1f} s)", flush=True)


if __name__ == "__main__":
    sys.exit(main())
