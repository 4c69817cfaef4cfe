"""A stack's inference service -> the simulator command that stands in for its replicas."""
from __future__ import annotations

from infershift.spec.model import InferenceService


def sim_argv(python: str, name: str, svc: InferenceService, *, port: int, time_scale: float,
             seed: int, host: str = "127.0.0.1") -> list[str]:
    # The spec has already checked simProfile against the simulator's profiles.
    argv = [
        python, "-m", "infershift.sim", "--profile", svc.sim_profile, "--model", svc.model,
        "--served-model-name", svc.served_name,
        "--host", host, "--port", str(port), "--servers", str(svc.replicas),
        "--pod-name", name, "--time-scale", f"{time_scale:g}", "--seed", str(seed),
        "--tensor-parallel-size", str(svc.tensor_parallel_size),
        "--gpu-memory-utilization", f"{svc.gpu_memory_utilization:g}",
    ]
    if svc.max_model_len:
        argv += ["--max-model-len", str(svc.max_model_len)]
    if svc.max_num_seqs:
        argv += ["--max-num-seqs", str(svc.max_num_seqs)]
    if svc.lora:
        argv += ["--max-loras", str(svc.lora.max_loras)]
        if svc.lora.max_cpu_loras:
            argv += ["--max-cpu-loras", str(svc.lora.max_cpu_loras)]
        if svc.lora.modules:
            argv += ["--lora-modules", *(f"{n}={p}" for n, p in svc.lora.modules.items())]
    return argv


def pod_name(service: str, replica: int) -> str:
    """The name the simulator reports in x-inference-pod (its --pod-name PREFIX-i)."""
    return f"{service}-{replica}"
