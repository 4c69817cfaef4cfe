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
    num_gpu_blocks: int          # at --gpu-memory-utilization 0.9, tensor parallel 1
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

    def scaled(self, *, time_scale: float = 1.0, tensor_parallel: int = 1,
               gpu_memory_utilization: float | None = None) -> "Profile":
        """Apply the vLLM flags that change the numbers, and --time-scale."""
        if time_scale <= 0:
            raise ValueError("time_scale must be > 0")
        if tensor_parallel < 1:
            raise ValueError("tensor_parallel_size must be >= 1")
        # Tensor parallelism splits weights and KV heads: compute gets faster but
        # all-reduce costs eat part of it (~70% efficiency per doubling is typical),
        # and the KV cache grows with the extra memory.
        tp_speed = tensor_parallel ** 0.75
        blocks = self.num_gpu_blocks * tensor_parallel
        if gpu_memory_utilization is not None:
            if not 0 < gpu_memory_utilization <= 1:
                raise ValueError("gpu_memory_utilization must be in (0, 1]")
            blocks = int(blocks * self._kv_share(gpu_memory_utilization) / self._kv_share(0.9))
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
        )

    def _kv_share(self, util: float) -> float:
        # KV gets what is left of util*memory after weights and activations.
        mem, fixed = _MEMORY[self.name]
        return max(util * mem - fixed, 0.05 * mem)


# name -> (GPU memory GB, weights + activation reserve GB); used to scale KV blocks.
_MEMORY = {
    "a10-7b": (24.0, 17.0),
    "h100-8b": (80.0, 18.0),
    "l4-7b": (24.0, 16.5),
    "a100-8b": (80.0, 18.0),
}

PROFILES: dict[str, Profile] = {
    # NVIDIA A10 (24 GB, 600 GB/s) + Qwen2.5-7B-Instruct, as on the seeds' ecs.gn7i nodes.
    "a10-7b": Profile(
        name="a10-7b", gpu="NVIDIA A10 24GB", model="Qwen2.5-7B-Instruct (bf16)",
        step_base=0.0290, step_per_seq=0.00025,
        prefill_overhead=0.030, prefill_per_token=0.00040,
        num_gpu_blocks=5000,
    ),
    # NVIDIA H100 SXM (80 GB, 3.35 TB/s) + Llama-3.1-8B-Instruct.
    "h100-8b": Profile(
        name="h100-8b", gpu="NVIDIA H100 SXM 80GB", model="Llama-3.1-8B-Instruct (bf16)",
        step_base=0.01195, step_per_seq=0.00005,
        prefill_overhead=0.0368, prefill_per_token=0.00020,
        num_gpu_blocks=26000, max_num_seqs=256,
    ),
    # NVIDIA L4 (24 GB, 300 GB/s) + Mistral-7B-Instruct.
    "l4-7b": Profile(
        name="l4-7b", gpu="NVIDIA L4 24GB", model="Mistral-7B-Instruct-v0.2 (bf16)",
        step_base=0.0540, step_per_seq=0.00040,
        prefill_overhead=0.035, prefill_per_token=0.00050,
        num_gpu_blocks=2500,
    ),
    # NVIDIA A100 SXM 80 GB (2.0 TB/s) + Llama-3.1-8B-Instruct; an in-between point.
    "a100-8b": Profile(
        name="a100-8b", gpu="NVIDIA A100 SXM 80GB", model="Llama-3.1-8B-Instruct (bf16)",
        step_base=0.0105, step_per_seq=0.00008,
        prefill_overhead=0.040, prefill_per_token=0.00030,
        num_gpu_blocks=26000,
    ),
}


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; choose one of {', '.join(sorted(PROFILES))}") from None
