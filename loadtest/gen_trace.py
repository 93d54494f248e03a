#!/usr/bin/env python3
"""Generate request traces (JSON Lines) for build/loadtest.

    loadtest/gen_trace.py WORKLOAD [-n N] [--seed S] [--rate R] [--burstiness B]
                          [workload options] [-o FILE]

Workloads:

  chat           chat-like traffic: prompt and output lengths drawn from
                 lognormal distributions (median M, shape sigma; the length is
                 round(exp(ln M + sigma * Z)), Z standard normal), clipped.
                 Defaults: prompt median 150 tokens, sigma 0.8, clip [8, 1024];
                 output median 120, sigma 0.8, clip [8, 512]. Greedy
                 (temperature 0) with ignore_eos, so every request generates
                 exactly its max_tokens. Prompts are given as `prompt_len`
                 (build/loadtest synthesizes the text), or with --text as real
                 English text cut from tools/ref_corpus/prose.txt.
  shared-prefix  one long system prompt (real text, about 300 tokens) followed
                 by a short user question, as one text `prompt`; outputs
                 lognormal (median 64, sigma 0.6, clip [16, 256]), greedy,
                 ignore_eos.
  long-prompt    prompts uniform in [1000, 3000] tokens (`prompt_len`, or
                 --text), short outputs (lognormal median 32, sigma 0.5,
                 clip [8, 64]), greedy, ignore_eos.
  lab11          the course lab's scenario: 11 short English questions and
                 instructions with their own temperature, top_p, seed,
                 min_length and max_length, arriving within about half a
                 second (-n, --rate and the length options do not apply).

Arrivals: request i arrives at t_i (seconds from the start of the run). The
gaps are drawn from a gamma distribution with shape B (--burstiness) and mean
1/R (--rate), the convention of vLLM's benchmark_serving: B = 1 is a Poisson
process, B < 1 burstier, B > 1 more regular. --rate inf (the default for
chat, shared-prefix and long-prompt) puts every request at t = 0; build/loadtest
can retime a trace with --time-scale, or drive it by --rate / --concurrency.

Determinism: the same arguments give the same bytes, on any machine (Python's
random.Random with separate streams for lengths, texts and arrivals, so
changing --rate does not change the requests). Only the standard library is
used.
"""
import argparse
import json
import math
import os
import random
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(REPO, "tools", "ref_corpus", "prose.txt")
# SmolLM2's tokenizer on tools/ref_corpus/prose.txt: about 1.12 tokens per
# word (bench/batching_report.py measured it), BOS included in prompt counts.
TOKENS_PER_WORD = 1.12

# About 300 tokens of SmolLM2's tokenizer (about 265 words).
SYSTEM_PROMPT = (
    "You are Quill, the customer support assistant of Northwind Outdoor Supply, "
    "a family-owned shop that sells camping, hiking and climbing equipment online "
    "and in three stores in Oregon. Answer the customer's question in a friendly, "
    "plain and concise way, in at most a few short paragraphs. Follow these rules. "
    "First, only give information about Northwind products, orders, shipping, "
    "returns, warranties and store opening hours; for anything else, politely say "
    "that you can only help with questions about the shop. Second, orders over "
    "fifty dollars ship for free within the United States; smaller orders pay a "
    "flat rate of six dollars, and express delivery costs fifteen dollars and "
    "arrives in two business days. Third, unused items can be returned within "
    "sixty days for a full refund; used items can be exchanged within thirty days "
    "if they are clean and undamaged, and sale items are final. Fourth, tents, "
    "backpacks and sleeping bags carry a two-year warranty against manufacturing "
    "defects, and stoves and lanterns carry one year; normal wear, misuse and "
    "accidents are not covered. Fifth, the stores in Portland, Bend and Eugene are "
    "open from nine in the morning to seven in the evening on weekdays, and from "
    "ten to six on weekends; all three are closed on public holidays. Sixth, never "
    "ask for payment details, passwords or full card numbers, and never promise a "
    "delivery date that the order system has not confirmed. If you do not know "
    "the answer, say so and suggest that the customer write to "
    "help@northwind.example or call the store. Keep a warm, helpful tone and do "
    "not use technical jargon."
)

SHARED_QUESTIONS = [
    "How much does shipping cost for a forty dollar order?",
    "Can I return a tent I used once on a weekend trip?",
    "What time does the Bend store open on Saturday?",
    "My sleeping bag zipper broke after eight months. Is that covered?",
    "Do you ship to Canada?",
    "I bought hiking boots on sale and they are too small. Can I return them?",
    "Is the Portland store open on the Fourth of July?",
    "How fast is express delivery?",
    "What is the warranty on a camping stove?",
    "Can I exchange a backpack I bought three weeks ago for a bigger size?",
    "Do you price match other outdoor shops?",
    "Can you tell me the weather forecast for Mount Hood this weekend?",
    "I lost my receipt. Can I still return an unused lantern?",
    "Is shipping free if my order is exactly fifty dollars?",
    "My tent pole snapped in a storm. Will the warranty replace it?",
    "Which of your stores is open latest on Sunday?",
    "How do I track my order?",
    "Can I pay with a gift card in the Eugene store?",
    "What should I do if my package arrives damaged?",
    "Do you sell climbing ropes, and how long do they last?",
    "Can I return an item bought online to a store?",
    "How long do refunds take to appear on my card?",
    "Do you have a student discount?",
    "Is the warranty still valid if I bought the tent second hand?",
    "Can I change the delivery address after ordering?",
    "What is your email address for support?",
    "Can you recommend a sleeping bag for winter camping?",
    "Are returns free, or do I pay the postage?",
    "Do you rent equipment as well as sell it?",
    "I need my order by Friday. Can you guarantee that?",
    "Can I cancel an order that has not shipped yet?",
    "Why was my card charged twice?",
]

LAB11 = [
    # (prompt, temperature, top_p, min_length, max_length)
    ("What is the capital of France?", 0.0, 1.0, 1, 16),
    ("Write a haiku about the ocean.", 0.8, 0.95, 10, 48),
    ("Explain in one sentence what a large language model is.", 0.2, 0.9, 8, 64),
    ("List three fruits that are red.", 0.5, 0.95, 4, 32),
    ("Translate 'good morning' into Spanish.", 0.0, 1.0, 2, 12),
    ("Give me a short tip for staying focused while studying.", 0.7, 0.9, 16, 96),
    ("What is 12 times 7?", 0.0, 1.0, 1, 8),
    ("Write the opening line of a mystery novel.", 1.0, 0.95, 12, 80),
    ("Why is the sky blue? Answer briefly.", 0.3, 0.9, 20, 128),
    ("Name a famous painting by Leonardo da Vinci.", 0.0, 1.0, 2, 24),
    ("Describe a sunset over the mountains in two sentences.", 0.9, 0.95, 24, 160),
]


def lognormal_int(rng, median, sigma, lo, hi):
    v = int(round(rng.lognormvariate(math.log(median), sigma)))
    return max(lo, min(hi, v))


def arrivals(n, rate, burstiness, seed):
    if rate <= 0:
        sys.exit("error: --rate must be > 0 (inf for all at t = 0)")
    if burstiness <= 0:
        sys.exit("error: --burstiness must be > 0")
    if math.isinf(rate):
        return [0.0] * n
    rng = random.Random(f"{seed}/arrivals")
    t, out = 0.0, []
    for i in range(n):
        if i > 0:
            t += rng.gammavariate(burstiness, 1.0 / (rate * burstiness))
        out.append(round(t, 6))
    return out


class Corpus:
    def __init__(self, seed):
        with open(CORPUS, encoding="utf-8") as f:
            self.words = f.read().split()
        self.rng = random.Random(f"{seed}/text")

    def text(self, n_tokens):
        """English text of about n_tokens tokens (BOS included)."""
        n_words = max(1, round((n_tokens - 1) / TOKENS_PER_WORD))
        start = self.rng.randrange(len(self.words))
        return " ".join(self.words[(start + i) % len(self.words)] for i in range(n_words))


def prompt_field(args, corpus, n_tokens):
    if args.text:
        return {"prompt": corpus.text(n_tokens)}
    return {"prompt_len": n_tokens}


def gen_chat(args):
    rng = random.Random(f"{args.seed}/lengths")
    corpus = Corpus(args.seed) if args.text else None
    out = []
    for _ in range(args.n):
        p = lognormal_int(rng, args.prompt_median, args.prompt_sigma, args.prompt_min, args.prompt_max)
        o = lognormal_int(rng, args.output_median, args.output_sigma, args.output_min, args.output_max)
        r = prompt_field(args, corpus, p)
        r.update({"max_tokens": o, "temperature": 0, "ignore_eos": True})
        out.append(r)
    return out


def gen_shared_prefix(args):
    rng = random.Random(f"{args.seed}/lengths")
    qrng = random.Random(f"{args.seed}/questions")
    out = []
    for _ in range(args.n):
        q = qrng.choice(SHARED_QUESTIONS)
        o = lognormal_int(rng, args.output_median, args.output_sigma, args.output_min, args.output_max)
        out.append({"prompt": f"{SYSTEM_PROMPT}\n\nCustomer: {q}\nQuill:",
                    "max_tokens": o, "temperature": 0, "ignore_eos": True})
    return out


def gen_long_prompt(args):
    rng = random.Random(f"{args.seed}/lengths")
    corpus = Corpus(args.seed) if args.text else None
    out = []
    for _ in range(args.n):
        p = rng.randint(args.prompt_min, args.prompt_max)
        o = lognormal_int(rng, args.output_median, args.output_sigma, args.output_min, args.output_max)
        r = prompt_field(args, corpus, p)
        r.update({"max_tokens": o, "temperature": 0, "ignore_eos": True})
        out.append(r)
    return out


def gen_lab11(args):
    out = []
    for i, (prompt, temp, top_p, lo, hi) in enumerate(LAB11):
        out.append({"id": f"lab-{i + 1:02d}", "prompt": prompt, "temperature": temp, "top_p": top_p,
                    "seed": 1000 + i, "min_length": lo, "max_length": hi})
    return out


# name: (generator, defaults for n, rate, and the length options)
WORKLOADS = {
    "chat": (gen_chat, dict(n=200, rate="inf", prompt_median=150, prompt_sigma=0.8, prompt_min=8,
                            prompt_max=1024, output_median=120, output_sigma=0.8, output_min=8,
                            output_max=512)),
    "shared-prefix": (gen_shared_prefix, dict(n=100, rate="inf", output_median=64, output_sigma=0.6,
                                              output_min=16, output_max=256)),
    "long-prompt": (gen_long_prompt, dict(n=40, rate="inf", prompt_min=1000, prompt_max=3000,
                                          output_median=32, output_sigma=0.5, output_min=8,
                                          output_max=64)),
    # 11 requests, about 20 per second: all arrive within about half a second
    "lab11": (gen_lab11, dict(n=11, rate="20")),
}


def parse_args(argv):
    ap = argparse.ArgumentParser(
        description="Generate a request trace (JSON Lines) for build/loadtest.",
        epilog="See the module docstring (head of this file) for each workload's defaults.")
    ap.add_argument("workload", choices=sorted(WORKLOADS))
    ap.add_argument("-n", type=int, help="requests (default: chat 200, shared-prefix 100, long-prompt 40)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rate", help="mean requests/s of the arrivals, or inf (default: inf; lab11 20)")
    ap.add_argument("--burstiness", type=float, default=1.0, help="gamma shape of the gaps (1 = Poisson)")
    ap.add_argument("--prompt-median", type=float)
    ap.add_argument("--prompt-sigma", type=float)
    ap.add_argument("--prompt-min", type=int)
    ap.add_argument("--prompt-max", type=int)
    ap.add_argument("--output-median", type=float)
    ap.add_argument("--output-sigma", type=float)
    ap.add_argument("--output-min", type=int)
    ap.add_argument("--output-max", type=int)
    ap.add_argument("--text", action="store_true",
                    help="chat, long-prompt: real text prompts (tools/ref_corpus/prose.txt) instead of prompt_len")
    ap.add_argument("--no-header", action="store_true", help="omit the leading '#' comment line")
    ap.add_argument("-o", "--output", help="output file (default: stdout)")
    args = ap.parse_args(argv)
    gen, defaults = WORKLOADS[args.workload]
    for k, v in defaults.items():
        if getattr(args, k, None) is None:
            setattr(args, k, v)
    if args.workload == "lab11" and args.n != 11:
        ap.error("lab11 always has 11 requests")
    try:
        args.rate = float(args.rate)
    except ValueError:
        ap.error(f"--rate: expected a number or inf, got {args.rate!r}")
    if args.n < 1:
        ap.error("-n must be >= 1")
    for lo, hi in (("prompt_min", "prompt_max"), ("output_min", "output_max")):
        a, b = getattr(args, lo, None), getattr(args, hi, None)
        if a is not None and b is not None and (a < 1 or a > b):
            ap.error(f"--{lo.replace('_', '-')} / --{hi.replace('_', '-')}: need 1 <= min <= max")
    return args, gen


def command_line(argv):
    return " ".join(["loadtest/gen_trace.py"] + [a if a and all(c.isalnum() or c in "-_./=:" for c in a)
                                                  else json.dumps(a) for a in argv])


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args, gen = parse_args(argv)
    reqs = gen(args)
    ts = arrivals(len(reqs), args.rate, args.burstiness, args.seed)
    lines = []
    if not args.no_header:
        shown = [a for a in argv]
        # the output path is not part of what determines the contents
        for flag in ("-o", "--output"):
            if flag in shown:
                i = shown.index(flag)
                del shown[i:i + 2]
        lines.append("# " + command_line(shown))
    for t, r in zip(ts, reqs):
        lines.append(json.dumps({"t": t, **r}, ensure_ascii=False))
    text = "\n".join(lines) + "\n"
    if args.output:
        d = os.path.dirname(os.path.abspath(args.output))
        os.makedirs(d, exist_ok=True)
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
