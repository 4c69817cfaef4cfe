"""LoRA adapters: the registered set, GPU slots (max_loras) and a CPU cache
(max_cpu_loras). An adapter must sit in a GPU slot to run; loading one into a
slot costs time inside the step that first uses it, cheaper if it is still in
the CPU cache. A slot can be reused only when no running request uses it."""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


@dataclass
class Adapter:
    name: str
    path: str


class LoraSlots:
    def __init__(self, max_loras: int, max_cpu_loras: int, load_seconds: float,
                 cpu_load_seconds: float):
        if max_loras < 1:
            raise ValueError("max_loras must be >= 1")
        self.max_loras = max_loras
        self.max_cpu_loras = max(max_cpu_loras, max_loras)
        self.load_seconds = load_seconds
        self.cpu_load_seconds = cpu_load_seconds
        self.gpu: OrderedDict[str, None] = OrderedDict()   # LRU first
        self.cpu: OrderedDict[str, None] = OrderedDict()

    def can_place(self, name: str, in_use: set[str]) -> bool:
        """Could `name` run in a batch whose other adapters are `in_use`?"""
        if name in in_use:
            return True
        if len(in_use) >= self.max_loras:
            return False
        return True  # a slot not used by the batch exists (loaded idle ones can be evicted)

    def place(self, name: str, in_use: set[str]) -> float:
        """Put `name` in a GPU slot (evicting an idle one); returns the load time."""
        if name in self.gpu:
            self.gpu.move_to_end(name)
            return 0.0
        if len(self.gpu) >= self.max_loras:
            victim = next(n for n in self.gpu if n not in in_use)
            del self.gpu[victim]
        self.gpu[name] = None
        cost = self.cpu_load_seconds if name in self.cpu else self.load_seconds
        self.cpu[name] = None
        self.cpu.move_to_end(name)
        while len(self.cpu) > self.max_cpu_loras:
            self.cpu.popitem(last=False)
        return cost

    def forget(self, name: str) -> None:
        self.gpu.pop(name, None)
        self.cpu.pop(name, None)

    def copy(self) -> LoraSlots:
        c = LoraSlots(self.max_loras, self.max_cpu_loras, self.load_seconds, self.cpu_load_seconds)
        c.gpu = OrderedDict(self.gpu)
        c.cpu = OrderedDict(self.cpu)
        return c


def parse_lora_modules(items: list[str]) -> list[Adapter]:
    """vLLM's --lora-modules forms: `name=path` or JSON {"name":..., "path":...}."""
    import json

    out = []
    for item in items:
        item = item.strip()
        if item.startswith("{"):
            try:
                d = json.loads(item)
                out.append(Adapter(str(d["name"]), str(d["path"])))
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(f"--lora-modules: bad JSON entry {item!r}: {e}") from None
        elif "=" in item:
            name, path = item.split("=", 1)
            if not name or not path:
                raise ValueError(f"--lora-modules: expected name=path, got {item!r}")
            out.append(Adapter(name, path))
        else:
            raise ValueError(f"--lora-modules: expected name=path or JSON, got {item!r}")
    return out
