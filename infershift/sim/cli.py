"""Command line: vLLM's serving flags plus the simulator's own."""
from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Mapping

from .lora import parse_lora_modules
from .profiles import PROFILES

# vLLM flags the seeds (and common deployments) pass that change nothing here.
# name -> takes a value
IGNORED_VLLM_FLAGS = {
    "--enable-lora": False, "--trust-remote-code": False, "--enforce-eager": False,
    "--chat-template": True, "--dtype": True, "--disable-log-requests": False,
    "--disable-log-stats": False, "--enable-prefix-caching": False, "--max-lora-rank": True,
    "--quantization": True, "--kv-cache-dtype": True, "--swap-space": True,
    "--download-dir": True, "--uvicorn-log-level": True, "--pipeline-parallel-size": True,
    "--enable-chunked-prefill": False, "--max-log-len": True, "--tokenizer": True,
    "--revision": True, "--load-format": True, "--disable-custom-all-reduce": False,
    "--enable-auto-tool-choice": False, "--tool-call-parser": True, "--generation-config": True,
}


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m infershift.sim", description=(
        "Simulated vLLM OpenAI-compatible server(s). Unlisted vLLM flags are rejected; "
        "harmless ones (" + ", ".join(sorted(IGNORED_VLLM_FLAGS)) + ") are accepted and ignored."))
    ap.add_argument("positional", nargs="*", help="optional `serve MODEL`, as `vllm serve MODEL`")
    ap.add_argument("--profile", default="a10-7b", choices=sorted(PROFILES),
                    help="GPU + model timing profile (default a10-7b)")
    ap.add_argument("--model", help="model path or name, as vLLM's --model")
    ap.add_argument("--served-model-name", nargs="+", help="name(s) clients use; default --model")
    ap.add_argument("--lora-modules", nargs="+", action="extend", default=[],
                    help="name=path or vLLM's JSON form; may repeat")
    ap.add_argument("--max-loras", type=int, default=1)
    ap.add_argument("--max-cpu-loras", type=int)
    ap.add_argument("--max-num-seqs", type=int)
    ap.add_argument("--max-num-batched-tokens", type=int)
    ap.add_argument("--num-gpu-blocks", "--num-gpu-blocks-override", dest="num_gpu_blocks", type=int)
    ap.add_argument("--block-size", type=int)
    ap.add_argument("--max-model-len", type=int)
    ap.add_argument("--tensor-parallel-size", "-tp", type=int,
                    help="default: the TP size the profile is quoted for (1, or 4 for a10-32b)")
    ap.add_argument("--gpu-memory-utilization", type=float)
    ap.add_argument("--host", default=os.environ.get("SIM_HOST", "127.0.0.1"),
                    help="bind address (default 127.0.0.1, or $SIM_HOST; the image sets 0.0.0.0)")
    ap.add_argument("--port", type=int, default=int(os.environ.get("PORT", 8000)))
    ap.add_argument("--servers", type=int, default=1, help="N servers on consecutive ports")
    ap.add_argument("--admin-port", type=_admin_port, default=None,
                    help="first admin port (/admin/faults, /admin/predict): server i uses P+i, 0 picks free "
                         "ports (the default; each server prints its admin URL); "
                         "`same`: on the serving port too (benchmark harnesses that talk to servers directly)")
    ap.add_argument("--pod-name", help="instance i is named PREFIX-i (default: served name and port; "
                    "with one server and $POD_NAME set, exactly $POD_NAME)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--time-scale", type=float, default=1.0,
                    help="divide every modelled duration by this (10 = ten times faster)")
    ap.add_argument("--max-waiting", type=int, default=1024, help="waiting queue bound; beyond it 429")
    ap.add_argument("--stream-coalesce-ms", type=float, default=0.0,
                    help="send a stream's tokens at most every this many ms after the first (saves CPU; "
                         "default 0: one chunk per token, as vLLM)")
    ap.add_argument("--error-rate", type=float, default=0.0, help="fault: share of requests failed")
    ap.add_argument("--error-status", type=int, default=500)
    ap.add_argument("--slow-start-seconds", type=float, default=0.0,
                    help="fault: answer 503 for this long after start")
    return ap


def _admin_port(value: str) -> int | str:
    if value == "same":
        return value
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number or `same`, got {value!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is out of range")
    return port


def _normalise(argv: list[str]) -> tuple[list[str], list[str]]:
    """vLLM also takes --snake_case flags; drop the ignored ones, with a note."""
    out, notes = [], []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a.startswith("--"):
            name, eq, val = a.partition("=")
            name = "--" + name[2:].replace("_", "-")
            a = name + eq + val
            if name in IGNORED_VLLM_FLAGS:
                takes = IGNORED_VLLM_FLAGS[name]
                skip = 1 + (1 if takes and not eq and i + 1 < len(argv) else 0)
                notes.append(" ".join(argv[i:i + skip]))
                i += skip
                continue
        out.append(a)
        i += 1
    return out, notes


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    argv = list(sys.argv[1:] if argv is None else argv)
    argv, notes = _normalise(argv)
    ap = build_parser()
    ns = ap.parse_args(argv)
    pos = list(ns.positional)
    if pos and pos[0] == "serve":
        pos = pos[1:]
    if len(pos) > 1:
        ap.error(f"unexpected arguments: {' '.join(pos[1:])}")
    if pos:
        if ns.model and ns.model != pos[0]:
            ap.error("model given both positionally and with --model")
        ns.model = pos[0]
    if not ns.model:
        ap.error("--model is required")
    ns.served_model_name = ns.served_model_name or [ns.model]
    try:
        ns.adapters = parse_lora_modules(ns.lora_modules)
    except ValueError as e:
        ap.error(str(e))
    for flag in ("max_loras", "servers", "max_waiting"):
        if getattr(ns, flag) < 1:
            ap.error(f"--{flag.replace('_', '-')} must be >= 1")
    for flag in ("max_cpu_loras", "max_num_seqs", "num_gpu_blocks", "block_size", "max_model_len",
                 "max_num_batched_tokens", "tensor_parallel_size"):
        v = getattr(ns, flag)
        if v is not None and v < 1:
            ap.error(f"--{flag.replace('_', '-')} must be >= 1")
    if ns.stream_coalesce_ms < 0:
        ap.error("--stream-coalesce-ms must be >= 0")
    if ns.time_scale <= 0:
        ap.error("--time-scale must be > 0")
    if not 0 <= ns.error_rate <= 1:
        ap.error("--error-rate must be in [0, 1]")
    if ns.port < 0 or (ns.port and ns.port + ns.servers - 1 > 65535):
        ap.error(f"--port {ns.port} with --servers {ns.servers} is out of range (0 picks free ports)")
    if ns.admin_port is None:
        ns.admin_port = 0
    if isinstance(ns.admin_port, int) and ns.admin_port:
        if ns.admin_port + ns.servers - 1 > 65535:
            ap.error(f"--admin-port {ns.admin_port} with --servers {ns.servers} is out of range")
        if ns.port and ns.admin_port < ns.port + ns.servers and ns.port < ns.admin_port + ns.servers:
            ap.error(f"--admin-port {ns.admin_port} overlaps the serving ports {ns.port}..{ns.port + ns.servers - 1}")
    ns.notes = notes
    return ns


def instance_name(i: int, servers: int, pod_name: str | None, served: str, port: int,
                  env: Mapping[str, str] | None = None) -> str:
    """--pod-name PREFIX -> PREFIX-i. Without it, a lone server in Kubernetes is named after
    its pod ($POD_NAME, else $HOSTNAME, which Kubernetes sets to the pod name); otherwise
    <served>-<port>-i."""
    if env is None:
        env = os.environ
    if pod_name is None and servers == 1:
        if env.get("POD_NAME"):
            return env["POD_NAME"]
        if env.get("KUBERNETES_SERVICE_HOST") and env.get("HOSTNAME"):
            return env["HOSTNAME"]
    prefix = pod_name or f"{default_pod_prefix(served)}-{port}"
    return f"{prefix}-{i}"


def default_pod_prefix(served: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", served.lower()).strip("-") or "sim"
