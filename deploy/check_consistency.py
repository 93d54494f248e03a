#!/usr/bin/env python3
"""Cross-checks between the engine config and the Kubernetes manifests that
no schema can express (deploy/validate.sh runs it with the venv's Python,
which has PyYAML as a dependency of kubernetes-validate).

  - the ConfigMap's engine.json is valid JSON and equals deploy/engine.json;
  - containerPorts "http"/"rpc" are the ports of server.http_listen/listen,
    probes and the Prometheus annotation use them, and probes hit /health;
  - terminationGracePeriodSeconds >= preStop sleep + drain_timeout_ms + 5 s;
  - the liveness probe cannot fail within the grace period (a draining pod
    answers 503 on /health);
  - the CPU limit equals model_loading_config.n_threads (0 = the node's cores);
  - the memory request covers kv_memory_mb + the default model (94 MiB);
  - Services select the Deployment's pods, the HPA targets it.
Usage: check_consistency.py REPO_ROOT   Exit 0 ok, 1 with one line per problem.
"""
import glob
import json
import os
import re
import sys

import yaml

MODEL_MIB = 94  # SmolLM2-135M-Instruct.Q4_1.gguf, 98362432 bytes
problems = []


def bad(msg):
    problems.append(msg)


def mib(q):
    m = re.fullmatch(r"(\d+)(Mi|Gi)", str(q))
    if not m:
        bad(f"memory quantity {q!r}: expected NMi or NGi")
        return 0
    return int(m.group(1)) * (1024 if m.group(2) == "Gi" else 1)


def port_of(url):
    m = re.search(r":(\d+)$", url)
    return int(m.group(1)) if m else None


def main(root):
    k8s = os.path.join(root, "deploy", "k8s")
    docs = []
    for path in sorted(glob.glob(os.path.join(k8s, "**", "*.yaml"), recursive=True)):
        with open(path) as f:
            docs += [(os.path.relpath(path, root), d) for d in yaml.safe_load_all(f) if d]
    with open(os.path.join(root, "deploy", "engine.json")) as f:
        engine = json.load(f)

    cms = [d for _, d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "infer-server-config"]
    if len(cms) != 1:
        bad("expected one ConfigMap infer-server-config")
    else:
        try:
            if json.loads(cms[0]["data"]["engine.json"]) != engine:
                bad("ConfigMap engine.json differs from deploy/engine.json")
        except (KeyError, ValueError) as e:
            bad(f"ConfigMap engine.json: {e}")

    srv = engine.get("server", {})
    http_port = port_of(srv.get("http_listen", ""))
    rpc_ports = [port_of(u) for u in srv.get("listen", [])]
    drain_s = srv.get("drain_timeout_ms", 30000) / 1000
    n_threads = engine.get("model_loading_config", {}).get("n_threads", 0)
    kv_mib = engine.get("cache_config", {}).get("kv_memory_mb", 256)

    deployments = [(p, d) for p, d in docs if d["kind"] == "Deployment"]
    if not deployments:
        bad("no Deployment")
    pod_labels = None
    for path, d in deployments:
        where = f"{path}: Deployment {d['metadata']['name']}"
        tmpl = d["spec"]["template"]
        pod_labels = tmpl["metadata"]["labels"]
        spec = tmpl["spec"]
        c = next(c for c in spec["containers"] if c["name"] == "infer-server")
        ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
        if ports.get("http") != http_port:
            bad(f"{where}: containerPort http {ports.get('http')} != http_listen port {http_port}")
        if ports.get("rpc") not in rpc_ports:
            bad(f"{where}: containerPort rpc {ports.get('rpc')} not among server.listen ports {rpc_ports}")
        ann = tmpl["metadata"].get("annotations", {})
        if ann.get("prometheus.io/port") != str(http_port) or ann.get("prometheus.io/path") != "/metrics":
            bad(f"{where}: prometheus.io annotations must name port {http_port} and /metrics")
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            g = c.get(probe, {}).get("httpGet", {})
            if g.get("path") != "/health" or g.get("port") not in ("http", http_port):
                bad(f"{where}: {probe} must be httpGet /health on the http port")
        pre = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
        pre_s = float(pre[-1]) if pre and pre[0].endswith("sleep") else 0
        grace = spec.get("terminationGracePeriodSeconds", 30)
        if grace < pre_s + drain_s + 5:
            bad(f"{where}: terminationGracePeriodSeconds {grace} < preStop {pre_s:g} + drain {drain_s:g} + 5")
        live = c["livenessProbe"]
        if live.get("periodSeconds", 10) * live.get("failureThreshold", 3) <= grace:
            bad(f"{where}: livenessProbe can fail within the {grace} s grace period (draining answers 503)")
        res = c.get("resources", {})
        cpu = str(res.get("limits", {}).get("cpu", ""))
        if n_threads and cpu != str(n_threads):
            bad(f"{where}: CPU limit {cpu!r} != model_loading_config.n_threads {n_threads}")
        if not n_threads:
            bad(f"{where}: n_threads 0 means all of the node's cores; set it to the CPU limit")
        if mib(res.get("requests", {}).get("memory", "0Mi")) < kv_mib + MODEL_MIB:
            bad(f"{where}: memory request below kv_memory_mb {kv_mib} + model {MODEL_MIB} MiB")

    for path, d in docs:
        if d["kind"] == "Service" and pod_labels is not None:
            sel = d["spec"]["selector"]
            if any(pod_labels.get(k) != v for k, v in sel.items()):
                bad(f"{path}: Service {d['metadata']['name']} selects no infer-server pod")
            sports = {p["name"]: p["targetPort"] for p in d["spec"]["ports"]}
            if sports != {"http": "http", "rpc": "rpc"}:
                bad(f"{path}: Service {d['metadata']['name']} must target ports http and rpc")
        if d["kind"] == "HorizontalPodAutoscaler":
            if d["spec"]["scaleTargetRef"]["name"] != "infer-server":
                bad(f"{path}: HPA does not target Deployment infer-server")
        if d["kind"] == "PodDisruptionBudget" and pod_labels is not None:
            sel = d["spec"]["selector"]["matchLabels"]
            if any(pod_labels.get(k) != v for k, v in sel.items()):
                bad(f"{path}: PodDisruptionBudget selects no infer-server pod")

    for p in problems:
        print(f"check_consistency: {p}", file=sys.stderr)
    if not problems:
        print(f"check_consistency: ok ({len(docs)} resources)", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..")))
