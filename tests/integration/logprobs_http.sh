#!/usr/bin/env bash
# logprobs_http.sh - log-probabilities through infer-server's HTTP API:
# /v1/completions "logprobs": N and /v1/chat/completions "logprobs": true +
# "top_logprobs": N, unary and streamed, greedy: the documented shapes
# (docs/http.md "Log-probabilities"), the sampled token is the top-1
# alternative with the same logprob, alternatives sorted with probabilities
# summing to <= 1, tokens joined give the text, text_offset counts their
# bytes, a stream carries the same values as the unary reply, and
# out-of-range values are 400s that name the field.
#
# Environment (ctest sets them): ENGINE_BUILD_DIR (infer-server), ENGINE_MODEL.
# Exit: 0 pass, 1 fail, 77 skipped (no server binary, model or python3).
set -u

bin="${ENGINE_BUILD_DIR:-build}/infer-server"
model="${ENGINE_MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}"
[ -x "$bin" ] || { echo "logprobs_http: $bin not built, skipping"; exit 77; }
[ -r "$model" ] || { echo "logprobs_http: $model missing, skipping"; exit 77; }
command -v python3 >/dev/null || { echo "logprobs_http: python3 needed, skipping"; exit 77; }

# shellcheck source=free_port.sh
. "$(dirname "${BASH_SOURCE[0]}")/free_port.sh"

start_server 256

python3 - "$base" <<'PY' || { tail -20 "$tmp/server.log"; exit 1; }
import json, math, sys, time, urllib.error, urllib.request

base = sys.argv[1]
for _ in range(1200):
    try:
        urllib.request.urlopen(base + "/health", timeout=1).read()
        break
    except Exception:
        time.sleep(0.1)

fails = []
def check(cond, what):
    if not cond:
        fails.append(what)
        print("FAIL:", what)

def post(path, body):
    req = urllib.request.Request(base + path, json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=300) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()

def stream(path, body):
    st, text = post(path, dict(body, stream=True, stream_options={"include_usage": True}))
    assert st == 200, (st, text)
    return [json.loads(l[6:]) for l in text.splitlines()
            if l.startswith("data: ") and l != "data: [DONE]"]

def close(a, b):
    return abs(a - b) <= 1e-9 * max(1.0, abs(a))

def check_sorted_mass(lps, what):
    check(all(x <= 0 for x in lps), what + ": logprob > 0")
    check(all(lps[i] >= lps[i + 1] for i in range(len(lps) - 1)), what + ": unsorted")
    check(sum(math.exp(x) for x in lps) <= 1 + 1e-9, what + ": mass > 1")

GREEDY = {"temperature": 0, "max_tokens": 8, "seed": 1}

# ---- /v1/completions
body = dict(GREEDY, prompt="The capital of France is", logprobs=3)
st, text = post("/v1/completions", body)
check(st == 200, "completions: status %d %s" % (st, text))
r = json.loads(text)
ch = r["choices"][0]
lp = ch["logprobs"]
n = r["usage"]["completion_tokens"]
for key in ("tokens", "token_logprobs", "top_logprobs", "text_offset"):
    check(isinstance(lp.get(key), list) and len(lp[key]) == n, "completions: %s has %d" % (key, n))
check("".join(lp["tokens"]) == ch["text"], "completions: tokens join to the text")
off = 0
for i, tok in enumerate(lp["tokens"]):
    top = lp["top_logprobs"][i]
    check(isinstance(top, dict) and 1 <= len(top) <= 3, "completions: top %d: %r" % (i, top))
    best = max(top, key=top.get)
    check(best == tok and close(top[best], lp["token_logprobs"][i]),
          "completions: token %d %r is not the top-1 of %r" % (i, tok, top))
    check_sorted_mass(list(top.values()), "completions: token %d" % i)
    check(lp["text_offset"][i] == off, "completions: text_offset %d" % i)
    off += len(tok.encode())
sc = stream("/v1/completions", body)
toks, lps = [], []
for c in sc:
    for chc in c["choices"]:
        if chc.get("logprobs"):
            toks += chc["logprobs"]["tokens"]
            lps += chc["logprobs"]["token_logprobs"]
            check(len(chc["logprobs"]["text_offset"]) == 1, "completions stream: one token a chunk")
check(toks == lp["tokens"], "completions stream: tokens %r vs %r" % (toks, lp["tokens"]))
check(len(lps) == n and all(close(a, b) for a, b in zip(lps, lp["token_logprobs"])),
      "completions stream: logprobs equal the unary reply's")
st, text = post("/v1/completions", dict(GREEDY, prompt="Hi", logprobs=0))
z = json.loads(text)["choices"][0]["logprobs"] if st == 200 else None
check(z is not None and all(t == {} for t in z["top_logprobs"]) and len(z["tokens"]) > 0,
      "completions: logprobs 0 gives the tokens' logprobs without alternatives")
st, text = post("/v1/completions", dict(GREEDY, prompt="Hi"))
check(st == 200 and json.loads(text)["choices"][0]["logprobs"] is None,
      "completions: no logprobs asked, null")

# ---- /v1/chat/completions
msgs = [{"role": "user", "content": "Name three colors."}]
body = dict(GREEDY, messages=msgs, logprobs=True, top_logprobs=2)
st, text = post("/v1/chat/completions", body)
check(st == 200, "chat: status %d %s" % (st, text))
r = json.loads(text)
ch = r["choices"][0]
content = ch["logprobs"]["content"]
check(len(content) == r["usage"]["completion_tokens"], "chat: one entry per token")
check("".join(e["token"] for e in content) == ch["message"]["content"], "chat: tokens join")
for i, e in enumerate(content):
    check(set(e) == {"token", "logprob", "bytes", "top_logprobs"}, "chat: entry keys %r" % e)
    check(bytes(e["bytes"]).decode("utf-8", "replace") == e["token"], "chat: bytes of %d" % i)
    top = e["top_logprobs"]
    check(len(top) == 2 and all(set(t) == {"token", "logprob", "bytes"} for t in top),
          "chat: top_logprobs of %d: %r" % (i, top))
    check(top[0]["token"] == e["token"] and close(top[0]["logprob"], e["logprob"]),
          "chat: token %d is the top-1" % i)
    check_sorted_mass([t["logprob"] for t in top], "chat: token %d" % i)
sc = stream("/v1/chat/completions", body)
got = [e for c in sc for chc in c["choices"] if chc.get("logprobs")
       for e in chc["logprobs"]["content"]]
check([e["token"] for e in got] == [e["token"] for e in content], "chat stream: tokens")
check(all(close(a["logprob"], b["logprob"]) and
          [t["token"] for t in a["top_logprobs"]] == [t["token"] for t in b["top_logprobs"]]
          for a, b in zip(got, content)) and len(got) == len(content),
      "chat stream: logprobs equal the unary reply's")
usage = [c["usage"] for c in sc if c.get("usage")]
check(usage and usage[0]["completion_tokens"] == len(got), "chat stream: a chunk per token")
st, text = post("/v1/chat/completions", dict(GREEDY, messages=msgs, logprobs=True))
e0 = json.loads(text)["choices"][0]["logprobs"]["content"][0] if st == 200 else {}
check(e0.get("top_logprobs") == [], "chat: logprobs without top_logprobs: no alternatives")

# ---- refusals
BAD = [
    ("/v1/completions", {"prompt": "x", "logprobs": 6}, "logprobs"),
    ("/v1/completions", {"prompt": "x", "logprobs": -1}, "logprobs"),
    ("/v1/completions", {"prompt": "x", "logprobs": 1.5}, "logprobs"),
    ("/v1/completions", {"prompt": "x", "logprobs": "3"}, "logprobs"),
    ("/v1/completions", {"prompt": "x", "logprobs": 2, "top_logprobs": 2}, "top_logprobs"),
    ("/v1/completions", {"prompt": "x", "echo": True, "logprobs": 1}, "echo"),
    ("/v1/chat/completions", {"messages": msgs, "logprobs": True, "top_logprobs": 21},
     "top_logprobs"),
    ("/v1/chat/completions", {"messages": msgs, "logprobs": True, "top_logprobs": -1},
     "top_logprobs"),
    ("/v1/chat/completions", {"messages": msgs, "top_logprobs": 2}, "top_logprobs"),
    ("/v1/chat/completions", {"messages": msgs, "logprobs": 3}, "logprobs"),
]
for path, b, word in BAD:
    st, text = post(path, dict(b, max_tokens=2))
    check(st == 400 and word in text, "%s %r: %d %s" % (path, b, st, text))

print("logprobs_http: %d failures" % len(fails))
sys.exit(1 if fails else 0)
PY
