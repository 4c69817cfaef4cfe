"""A model server's container command line -> what the local simulator must mimic.

Understands every form the guides use: `python3 -m vllm.entrypoints.openai.api_server ARGS`,
`vllm serve MODEL ARGS` (also inside `sh -c "..."`), and the project's own simulator image
(`python -m infershift.sim ARGS`). An argument it does not understand is kept and reported,
never fatal: the simulator only needs names, adapters and sizes.
"""
from __future__ import annotations

import json
import shlex
from dataclasses import dataclass

# Flags whose value the simulator uses.
_VALUE = {
    "--model": "model", "--served-model-name": "served", "--max-loras": "max_loras",
    "--max-cpu-loras": "max_cpu_loras", "--tensor-parallel-size": "tp", "--tensor-parallel": "tp", "-tp": "tp",
    "--max-model-len": "max_model_len", "--max-num-seqs": "max_num_seqs", "--port": "port",
    "--gpu-memory-utilization": "gpu_memory_utilization", "--profile": "profile",
}
# Flags that take a value the simulator does not need (kept out of the "not understood" list).
_IGNORED_VALUE = {
    "--host", "--chat-template", "--download-dir", "--dtype", "--kv-cache-dtype", "--load-format",
    "--max-log-len", "--max-lora-rank", "--pipeline-parallel-size", "-pp", "--quantization", "--revision",
    "--swap-space", "--tokenizer", "--tool-call-parser", "--uvicorn-log-level", "--generation-config",
    "--max-num-batched-tokens", "--block-size", "--seed", "--api-key", "--data-parallel-size", "-dp",
    "--distributed-executor-backend", "--reasoning-parser", "--num-gpu-blocks-override", "--lora-dtype",
}
# Flags without a value the simulator may ignore.
_IGNORED_SWITCH = {
    "--enable-lora", "--enforce-eager", "--trust-remote-code", "--disable-log-requests", "--disable-log-stats",
    "--enable-prefix-caching", "--enable-chunked-prefill", "--enable-auto-tool-choice",
    "--disable-custom-all-reduce", "--no-enable-prefix-caching", "--enable-reasoning",
}
VLLM_MODULES = ("vllm.entrypoints.openai.api_server",)
SIM_MODULE = "infershift.sim"


@dataclass(frozen=True)
class ModelServer:
    """One Deployment's model server, as its command line describes it."""

    engine: str  # "vllm" | "infershift-sim"
    model: str
    served_names: tuple[str, ...]
    lora_modules: tuple[tuple[str, str], ...] = ()
    max_loras: int | None = None
    max_cpu_loras: int | None = None
    tensor_parallel_size: int = 1
    max_model_len: int | None = None
    max_num_seqs: int | None = None
    gpu_memory_utilization: float | None = None
    port: int = 8000
    profile: str | None = None  # the simulator image's own --profile
    not_understood: tuple[str, ...] = ()

    @property
    def serves(self) -> tuple[str, ...]:
        return (*self.served_names, *(name for name, _ in self.lora_modules))


class NotAModelServer(ValueError):
    """The container runs something other than vLLM or the simulator."""


def _split_eq(tokens: list[str]) -> list[str]:
    out = []
    for t in tokens:
        if t.startswith("--") and "=" in t:
            flag, _, value = t.partition("=")
            out += [flag, value]
        else:
            out.append(t)
    return out


def _normal(flag: str) -> str:
    # vLLM accepts --gpu_memory_utilization as well as --gpu-memory-utilization (seed 002 does).
    return "--" + flag[2:].replace("_", "-") if flag.startswith("--") else flag


def argv_of(container: dict) -> list[str]:
    """The container's full argv; `sh -c "..."` (and bash) unwrapped."""
    argv = [str(x) for x in (container.get("command") or [])] + [str(x) for x in (container.get("args") or [])]
    if len(argv) >= 3 and argv[0].rsplit("/", 1)[-1] in ("sh", "bash") and argv[1] in ("-c", "-lc", "-ec"):
        try:
            argv = shlex.split(argv[2]) + argv[3:]
        except ValueError as e:
            raise NotAModelServer(f"cannot parse the shell command: {e}") from None
    return argv


def _engine_args(argv: list[str]) -> tuple[str, list[str], str | None]:
    """(engine, the engine's own arguments, positional model of `vllm serve MODEL`)."""
    for i, tok in enumerate(argv):
        base = tok.rsplit("/", 1)[-1]
        if base == "vllm" and i + 1 < len(argv) and argv[i + 1] == "serve":
            rest = argv[i + 2:]
            if rest and not rest[0].startswith("-"):
                return "vllm", rest[1:], rest[0]
            return "vllm", rest, None
        if tok == "-m" and i + 1 < len(argv):
            if argv[i + 1] in VLLM_MODULES:
                return "vllm", argv[i + 2:], None
            if argv[i + 1] == SIM_MODULE:
                rest = argv[i + 2:]
                if rest[:1] == ["serve"] and len(rest) > 1:
                    return "infershift-sim", rest[2:], rest[1]
                return "infershift-sim", rest, None
    raise NotAModelServer(f"not a vLLM server or the simulator: {shlex.join(argv)[:120]}")


def _lora_module(text: str) -> tuple[str, str] | None:
    text = text.strip()
    if text.startswith("{"):
        try:
            d = json.loads(text)
        except json.JSONDecodeError:
            return None
        return (str(d["name"]), str(d.get("path", ""))) if isinstance(d, dict) and d.get("name") else None
    name, sep, path = text.partition("=")
    return (name, path) if sep and name else None


def parse(container: dict, env: dict[str, str] | None = None) -> ModelServer:
    """The model server a container runs. Raises NotAModelServer for anything else."""
    argv = argv_of(container)
    engine, args, positional = _engine_args(argv)
    args = _split_eq(args)
    env = env or {}
    values: dict[str, object] = {}
    served: list[str] = []
    loras: list[tuple[str, str]] = []
    unknown: list[str] = []
    i = 0
    while i < len(args):
        raw = args[i]
        flag = _normal(raw)
        has_value = i + 1 < len(args) and not args[i + 1].startswith("--")
        if flag in ("--served-model-name", "--lora-modules"):
            j = i + 1
            while j < len(args) and not args[j].startswith("--"):
                if flag == "--served-model-name":
                    served.append(args[j])
                else:
                    mod = _lora_module(args[j])
                    if mod is None:
                        unknown.append(f"--lora-modules {args[j]}")
                    else:
                        loras.append(mod)
                j += 1
            i = j
            continue
        if flag in _VALUE and has_value:
            values[_VALUE[flag]] = _expand(args[i + 1], env)
            i += 2
            continue
        if flag in _IGNORED_VALUE and has_value:
            i += 2
            continue
        if flag in _IGNORED_SWITCH:
            i += 1
            continue
        if flag.startswith("-"):
            # Unknown: keep the flag and, when it looks like it has one, its value.
            unknown.append(f"{raw} {args[i + 1]}" if has_value else raw)
            i += 2 if has_value else 1
            continue
        if positional is None and engine == "vllm" and not values.get("model"):
            positional = raw
        else:
            unknown.append(raw)
        i += 1
    model = str(values.get("model") or positional or "")
    if not model:
        raise NotAModelServer("the command line names no model (--model or `vllm serve MODEL`)")

    def num(key: str, kind=int):
        v = values.get(key)
        if v is None:
            return None
        try:
            return kind(v)
        except ValueError:
            unknown.append(f"{key}={v}")
            return None

    return ModelServer(
        engine=engine, model=model, served_names=tuple(served) or (model,), lora_modules=tuple(loras),
        max_loras=num("max_loras"), max_cpu_loras=num("max_cpu_loras"),
        tensor_parallel_size=num("tp") or 1, max_model_len=num("max_model_len"),
        max_num_seqs=num("max_num_seqs"), gpu_memory_utilization=num("gpu_memory_utilization", float),
        port=num("port") or int(env.get("PORT", 8000) or 8000), profile=values.get("profile"),  # type: ignore[arg-type]
        not_understood=tuple(unknown),
    )


def _expand(value: str, env: dict[str, str]) -> str:
    # `$(VAR)` in args is expanded by Kubernetes from the container's env.
    for k, v in env.items():
        value = value.replace(f"$({k})", v)
    return value
