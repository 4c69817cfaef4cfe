"""A Deployment's model server -> the simulator command that stands in for its replicas."""
from __future__ import annotations

import re

from .ir import ServerGroup
from .modelserver import ModelServer


def profile_for(server: ModelServer) -> str:
    """A simulator profile for a server no stack file describes: by the model's size in its name
    and the tensor-parallel size (seed 004: QwQ-32B on 4 A10s, DeepSeek-R1 1.5B on one)."""
    text = f"{server.model} {' '.join(server.served_names)}".lower()
    size = re.search(r"(\d+(?:\.\d+)?)b\b", text)
    billions = float(size.group(1)) if size else None
    if billions is not None and billions >= 20 or server.tensor_parallel_size >= 4:
        return "a10-32b"
    if billions is not None and billions < 3:
        return "a10-1.5b"
    return "a10-7b"


def sim_argv(python: str, group: ServerGroup, *, profile: str, port: int, time_scale: float,
             seed: int, host: str = "127.0.0.1", admin_port: int = 0) -> list[str]:
    s = group.server
    argv = [
        python, "-m", "infershift.sim", "--profile", profile, "--model", s.model,
        "--served-model-name", *s.served_names,
        "--host", host, "--port", str(port), "--servers", str(group.replicas),
        "--admin-port", str(admin_port),  # faults and predictions: a port no route reaches
        "--pod-name", group.name, "--time-scale", f"{time_scale:g}", "--seed", str(seed),
    ]
    if s.tensor_parallel_size != 1 or s.engine == "vllm":
        # The simulator image's own default is the profile's TP size; vLLM's is 1.
        argv += ["--tensor-parallel-size", str(s.tensor_parallel_size)]
    if s.gpu_memory_utilization:
        argv += ["--gpu-memory-utilization", f"{s.gpu_memory_utilization:g}"]
    if s.max_model_len:
        argv += ["--max-model-len", str(s.max_model_len)]
    if s.max_num_seqs:
        argv += ["--max-num-seqs", str(s.max_num_seqs)]
    if s.lora_modules:
        if s.max_loras:
            argv += ["--max-loras", str(s.max_loras)]
        if s.max_cpu_loras:
            argv += ["--max-cpu-loras", str(s.max_cpu_loras)]
        argv += ["--lora-modules", *(f"{n}={p}" for n, p in s.lora_modules)]
    return argv


def pod_name(group: str, replica: int) -> str:
    """The name the simulator reports in x-inference-pod (its --pod-name PREFIX-i)."""
    return f"{group}-{replica}"
