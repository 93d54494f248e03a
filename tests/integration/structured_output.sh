#!/usr/bin/env bash
# structured_output.sh - response_format through infer-server's HTTP API,
# checked with Python's jsonschema (an implementation independent of ours):
# chat and completions, unary and streamed, several schemas and seeds, all
# sent concurrently; every completion that ends by itself ("stop") must
# parse and validate, json_object must give an object, and a schema outside
# the subset must be a 400 that names the keyword.
#
# Environment (ctest sets them): ENGINE_BUILD_DIR (infer-server), ENGINE_MODEL.
# Exit: 0 pass, 1 fail, 77 skipped (no server binary, model, python3 or
# python3's jsonschema).
set -u

bin="${ENGINE_BUILD_DIR:-build}/infer-server"
model="${ENGINE_MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}"
[ -x "$bin" ] || { echo "structured_output: $bin not built, skipping"; exit 77; }
[ -r "$model" ] || { echo "structured_output: $model missing, skipping"; exit 77; }
# the first python3 that has jsonschema (Debian's python3-jsonschema lives in
# /usr/bin/python3 even where another python3 comes first on PATH)
py=""
for cand in python3 /usr/bin/python3; do
    if "$cand" -c 'import jsonschema' 2>/dev/null; then py="$cand" && break; fi
done
[ -n "$py" ] ||
    { echo "structured_output: python3 with jsonschema needed (python3-jsonschema), skipping"; exit 77; }

# shellcheck source=free_port.sh
. "$(dirname "${BASH_SOURCE[0]}")/free_port.sh"

start_server 512

"$py" - "$base" <<'PY' || { cat "$tmp/server.log" | tail -20; exit 1; }
import json, sys, time, urllib.error, urllib.request
from concurrent.futures import ThreadPoolExecutor
import jsonschema

base = sys.argv[1]
for _ in range(1200):
    try:
        urllib.request.urlopen(base + "/health", timeout=1).read()
        break
    except Exception:
        time.sleep(0.1)

def post(path, body):
    req = urllib.request.Request(base + path, json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=300) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()

SCHEMAS = [
    ("Describe a book as JSON.", {
        "type": "object", "additionalProperties": False,
        "properties": {"title": {"type": "string", "maxLength": 60},
                       "year": {"type": "integer", "minimum": 1450, "maximum": 2025},
                       "genres": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
                       "rating": {"type": ["number", "null"]}},
        "required": ["title", "year", "genres"]}),
    ("Pick a traffic light color and say why, as JSON.", {
        "type": "object", "additionalProperties": False,
        "properties": {"color": {"enum": ["red", "yellow", "green"]},
                       "why": {"type": "string", "minLength": 1, "maxLength": 80}},
        "required": ["color", "why"]}),
    ("List some numbers as JSON.", {
        "type": "array", "items": {"anyOf": [{"type": "integer"}, {"const": "many"}]},
        "minItems": 2, "maxItems": 6}),
    ("Give a person with an address as JSON.", {
        "$defs": {"addr": {"type": "object", "additionalProperties": False,
                           "properties": {"city": {"type": "string", "maxLength": 30},
                                          "zip": {"type": "string", "maxLength": 10}},
                           "required": ["city"]}},
        "type": "object", "additionalProperties": False,
        "properties": {"name": {"type": "string", "maxLength": 30}, "home": {"$ref": "#/$defs/addr"}},
        "required": ["name", "home"]}),
]

def run(job):
    ask, schema, seed, route, stream = job
    fmt = ({"type": "json_object"} if schema is None else
           {"type": "json_schema", "json_schema": {"name": "s", "strict": True, "schema": schema}})
    body = {"max_tokens": 160, "seed": seed, "response_format": fmt, "stream": stream}
    if route == "chat":
        body["messages"] = [{"role": "user", "content": ask}]
    else:
        body["prompt"] = ask + "\n"
    status, text = post("/v1/chat/completions" if route == "chat" else "/v1/completions", body)
    if status != 200:
        return job, None, None, "status %d: %s" % (status, text)
    if stream:
        content, finish = "", None
        for line in text.splitlines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            ch = json.loads(line[6:])["choices"][0]
            content += (ch.get("delta") or {}).get("content") or ch.get("text") or ""
            finish = ch.get("finish_reason") or finish
    else:
        ch = json.loads(text)["choices"][0]
        content = ch["message"]["content"] if route == "chat" else ch["text"]
        finish = ch["finish_reason"]
    return job, content, finish, None

jobs = []
for ask, schema in SCHEMAS + [("Describe the weather as a JSON object.", None)]:
    for seed in range(4):
        jobs.append((ask, schema, seed, "chat" if seed % 2 == 0 else "completions", seed == 3))
fails = complete = 0
with ThreadPoolExecutor(len(jobs)) as ex:
    for job, content, finish, err in ex.map(run, jobs):
        ask, schema, seed = job[0], job[1], job[2]
        if err:
            print("FAIL", ask, seed, err); fails += 1; continue
        if finish != "stop":
            if finish != "length":
                print("FAIL", ask, seed, "finish", finish); fails += 1
            continue
        complete += 1
        try:
            value = json.loads(content)
            jsonschema.validate(value, schema if schema is not None else {"type": "object"})
        except Exception as e:
            print("FAIL", ask, seed, repr(content), str(e).splitlines()[0]); fails += 1
print("%d of %d completions ended by themselves and validated" % (complete, len(jobs)))
if complete * 2 < len(jobs):
    print("FAIL too few completions ended by themselves"); fails += 1

status, text = post("/v1/chat/completions", {
    "messages": [{"role": "user", "content": "x"}],
    "response_format": {"type": "json_schema", "json_schema": {
        "name": "x", "schema": {"type": "object", "properties": {"n": {"type": "number", "minimum": 0}}}}}})
if status != 400 or "'minimum' on type number at /properties/n" not in text:
    print("FAIL unsupported keyword:", status, text); fails += 1
else:
    print("ok   unsupported keyword refused:", json.loads(text)["error"]["message"])
sys.exit(1 if fails else 0)
PY
