"""Hardware/model profiles: the numbers the engine's time model is built from.

Sources and the arithmetic behind each figure are in sim/README.md.
"""
from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Profile:
    name: str
    gpu: str
    model: str
    # Decode step: step_base + step_per_seq * sequences in the step (seconds).
    step_base: float
    step_per_seq: float
    # Per-request fixed latency before a request can be scheduled (HTTP, tokenising,
    # scheduling, detokenising: CPU-side work that does not occupy the GPU step).
    prefill_overhead: float
    # Prefill work inside a step: prefill_per_token * uncached prompt tokens.
    prefill_per_token: float
    num_gpu_blocks: int          # at --gpu-memory-utilization 0.9 and the profile's tensor_parallel
    # Memory, to rescale the KV cache for other TP sizes / utilisations (GB):
    gpu_memory: float = 24.0     # per GPU
    weights: float = 15.0        # whole model, split across TP ranks
    activations: float = 1.5     # per GPU reserve (activations, CUDA graphs)
    tensor_parallel: int = 1     # the TP size the numbers above are quoted for
    block_size: int = 16
    max_model_len: int = 8192
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192   # chunked-prefill token budget per step
    lora_load_seconds: float = 0.08      # adapter from disk into a GPU slot
    lora_cpu_load_seconds: float = 0.005  # adapter already in the CPU cache
    lora_step_factor: float = 1.1        # steps with adapters in the batch run slower
    ref_prompt_tokens: int = 256         # the prompt size the published TTFT is quoted for

    def itl(self, batch: int = 1) -> float:
        """Modelled inter-token latency for a pure decode step of `batch` sequences."""
        return self.step_base + self.step_per_seq * batch

    def ttft(self, prompt_tokens: int | None = None) -> float:
        """Modelled time to first token at batch 1, empty queue, no prefix hit."""
        p = self.ref_prompt_tokens if prompt_tokens is None else prompt_tokens
        return self.itl(1) + self.prefill_overhead + self.prefill_per_token * p

    def scaled(self, *, time_scale: float = 1.0, tensor_parallel: int | None = None,
               gpu_memory_utilization: float | None = None) -> Profile:
        """Apply the vLLM flags that change the numbers, and --time-scale.
        tensor_parallel defaults to the profile's own."""
        if time_scale <= 0:
            raise ValueError("time_scale must be > 0")
        if tensor_parallel is None:
            tensor_parallel = self.tensor_parallel
        if tensor_parallel < 1:
            raise ValueError("tensor_parallel_size must be >= 1")
        # Tensor parallelism splits weights and KV heads: steps get faster but
        # all-reduce costs eat part of it (~70% efficiency per doubling is typical),
        # and the KV cache gets the memory the extra GPUs add.
        tp_speed = (tensor_parallel / self.tensor_parallel) ** 0.75
        util = 0.9 if gpu_memory_utilization is None else gpu_memory_utilization
        if not 0 < util <= 1:
            raise ValueError("gpu_memory_utilization must be in (0, 1]")
        blocks = int(self.num_gpu_blocks * self.kv_gb(util, tensor_parallel)
                     / self.kv_gb(0.9, self.tensor_parallel))
        f = time_scale * tp_speed
        return replace(
            self,
            step_base=self.step_base / f,
            step_per_seq=self.step_per_seq / f,
            prefill_overhead=self.prefill_overhead / time_scale,
            prefill_per_token=self.prefill_per_token / f,
            lora_load_seconds=self.lora_load_seconds / time_scale,
            lora_cpu_load_seconds=self.lora_cpu_load_seconds / time_scale,
            num_gpu_blocks=max(blocks, 1),
            tensor_parallel=tensor_parallel,
        )

    def kv_gb(self, util: float, tp: int) -> float:
        """KV cache memory: what util * memory leaves after weights and activations
        (at least a sliver, so a tiny setting still starts, as a tight vLLM would)."""
        total = util * self.gpu_memory * tp
        return max(total - self.weights - self.activations * tp, 0.02 * total)


PROFILES: dict[str, Profile] = {
    # NVIDIA A10 (24 GB, 600 GB/s) + Qwen2.5-7B-Instruct, as on the seeds' ecs.gn7i nodes.
    "a10-7b": Profile(
        name="a10-7b", gpu="NVIDIA A10 24GB", model="Qwen2.5-7B-Instruct (bf16)",
        step_base=0.0290, step_per_seq=0.00025,
        prefill_overhead=0.030, prefill_per_token=0.00040,
        num_gpu_blocks=5000, gpu_memory=24, weights=15.2, activations=1.8,
    ),
    # NVIDIA H100 SXM (80 GB, 3.35 TB/s) + Llama-3.1-8B-Instruct.
    "h100-8b": Profile(
        name="h100-8b", gpu="NVIDIA H100 SXM 80GB", model="Llama-3.1-8B-Instruct (bf16)",
        step_base=0.01195, step_per_seq=0.00005,
        prefill_overhead=0.0368, prefill_per_token=0.00020,
        num_gpu_blocks=26000, gpu_memory=80, weights=16.1, activations=2.0,
    ),
    # NVIDIA L4 (24 GB, 300 GB/s) + Mistral-7B-Instruct.
    "l4-7b": Profile(
        name="l4-7b", gpu="NVIDIA L4 24GB", model="Mistral-7B-Instruct-v0.2 (bf16)",
        step_base=0.0540, step_per_seq=0.00040,
        prefill_overhead=0.035, prefill_per_token=0.00050,
        num_gpu_blocks=2500, gpu_memory=24, weights=14.5, activations=2.0,
    ),
    # NVIDIA A100 SXM 80 GB (2.0 TB/s) + Llama-3.1-8B-Instruct; an in-between point.
    "a100-8b": Profile(
        name="a100-8b", gpu="NVIDIA A100 SXM 80GB", model="Llama-3.1-8B-Instruct (bf16)",
        step_base=0.0105, step_per_seq=0.00008,
        prefill_overhead=0.040, prefill_per_token=0.00030,
        num_gpu_blocks=26000, gpu_memory=80, weights=16.1, activations=2.0,
    ),
    # 4x A10 with tensor parallel 4 + QwQ-32B (the seeds' reasoning-pool); numbers are for TP 4.
    "a10-32b": Profile(
        name="a10-32b", gpu="4x NVIDIA A10 24GB, tensor parallel 4", model="QwQ-32B (bf16)",
        step_base=0.0400, step_per_seq=0.00040,
        prefill_overhead=0.035, prefill_per_token=0.00050,
        num_gpu_blocks=3550, gpu_memory=24, weights=65.5, activations=1.5, tensor_parallel=4,
    ),
    # NVIDIA A10 + DeepSeek-R1-Distill-Qwen-1.5B (the seeds' small canary model).
    "a10-1.5b": Profile(
        name="a10-1.5b", gpu="NVIDIA A10 24GB", model="DeepSeek-R1-Distill-Qwen-1.5B (bf16)",
        step_base=0.0090, step_per_seq=0.00005,
        prefill_overhead=0.020, prefill_per_token=0.00005,
        num_gpu_blocks=36000, gpu_memory=24, weights=3.6, activations=1.5,
    ),
}


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; choose one of {', '.join(sorted(PROFILES))}") from None
