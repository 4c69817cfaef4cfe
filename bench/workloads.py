"""Workload generators: lists of chat requests with tags, deterministic by seed.

Text is random hex (4 characters per simulated token, the sim's tokenizer), so
prompts that share a prefix share it exactly and nothing else overlaps by chance.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

CHARS_PER_TOKEN = 4
CHAT_PATH = "/v1/chat/completions"


@dataclass
class BenchRequest:
    body: dict
    tags: dict = field(default_factory=dict)
    path: str = CHAT_PATH


def text(rng: random.Random, tokens: int) -> str:
    """`tokens` simulated tokens of random text."""
    return rng.randbytes(tokens * CHARS_PER_TOKEN // 2).hex()


def _body(model: str, messages: list[dict], output_tokens: int) -> dict:
    # ignore_eos/min_tokens are vLLM extensions: every answer has exactly output_tokens.
    return {"model": model, "messages": messages, "max_tokens": output_tokens,
            "min_tokens": output_tokens, "ignore_eos": True, "temperature": 0}


def _check_positive(**kw: int) -> None:
    for k, v in kw.items():
        if v <= 0:
            raise ValueError(f"{k} must be > 0, got {v}")


def shared_prefix(model: str, count: int, *, groups: int = 64, users: int = 16,
                  system_tokens: int = 2048, question_tokens: int = 128,
                  output_tokens: int = 256, seed: int = 0, sample_seed: int = 0) -> list[BenchRequest]:
    """Groups of users sharing a long system prompt, each asking short questions.

    The shape of SGLang's generated-shared-prefix: a request picks a group and a
    user uniformly; its prompt is the group's system prompt plus a fresh question.
    `seed` fixes the groups' prompts, `sample_seed` the questions and their order,
    so successive load levels reuse the same groups (and the caches they warmed).
    """
    _check_positive(count=count, groups=groups, users=users, system_tokens=system_tokens,
                    question_tokens=question_tokens, output_tokens=output_tokens)
    systems = group_prompts(groups, system_tokens, seed)
    rng = random.Random(f"{seed}:{sample_seed}")
    out = []
    for i in range(count):
        g = rng.randrange(groups)
        u = rng.randrange(users)
        msgs = [{"role": "system", "content": systems[g]},
                {"role": "user", "content": text(rng, question_tokens)}]
        out.append(BenchRequest(_body(model, msgs, output_tokens), {"group": g, "user": u}))
    return out


def group_prompts(groups: int, system_tokens: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [text(rng, system_tokens) for _ in range(groups)]


def shared_prefix_warmup(model: str, *, groups: int, system_tokens: int, seed: int = 0) -> list[BenchRequest]:
    """Each group's system prompt once (one output token): the same warm start for every router,
    so the measured run shows steady state rather than the first sight of each group."""
    rng = random.Random(f"{seed}:warmup")
    return [BenchRequest(_body(model, [{"role": "system", "content": p},
                                       {"role": "user", "content": text(rng, 8)}], 1), {"group": g})
            for g, p in enumerate(group_prompts(groups, system_tokens, seed))]


def multi_turn(model: str, count: int, *, active: int = 16, turns: int = 6,
               system_tokens: int = 256, question_tokens: int = 128, answer_tokens: int = 128,
               seed: int = 0) -> list[BenchRequest]:
    """Conversations that grow their own prefix: turn k resends turns 0..k-1.

    `active` conversations run at once. They take turns in rounds, each round in a
    fresh random order, so consecutive turns of one conversation are on average
    `active` arrivals apart, and no fixed rotation lines up with a round-robin
    balancer (a fixed order would hand each conversation to the same server under
    round robin whenever the server count divides `active`). A finished
    conversation is replaced by a new one. The assistant's earlier answers are
    client-side text of answer_tokens (the client's copy of the history).
    """
    _check_positive(count=count, active=active, turns=turns, question_tokens=question_tokens,
                    answer_tokens=answer_tokens)
    rng = random.Random(seed)
    convs: list[dict] = []
    next_id = 0

    def new_conv() -> dict:
        nonlocal next_id
        next_id += 1
        return {"id": next_id - 1, "turn": 0,
                "messages": [{"role": "system", "content": text(rng, system_tokens)}]}

    convs = [new_conv() for _ in range(active)]
    out = []
    order: list[int] = []
    while len(out) < count:
        if not order:
            order = list(range(active))
            rng.shuffle(order)
        slot = order.pop()
        c = convs[slot]
        c["messages"].append({"role": "user", "content": text(rng, question_tokens)})
        msgs = [dict(m) for m in c["messages"]]
        out.append(BenchRequest(_body(model, msgs, answer_tokens),
                                {"conversation": c["id"], "turn": c["turn"]}))
        c["messages"].append({"role": "assistant", "content": text(rng, answer_tokens)})
        c["turn"] += 1
        if c["turn"] >= turns:
            convs[slot] = new_conv()
    return out


def zipf_weights(n: int, s: float) -> list[float]:
    w = [1.0 / (k + 1) ** s for k in range(n)]
    total = sum(w)
    return [x / total for x in w]


def lora_mix(adapters: list[str], count: int, *, skew: float = 1.0, prompt_tokens: int = 256,
             output_tokens: int = 128, seed: int = 0) -> list[BenchRequest]:
    """Requests for LoRA adapters with Zipf(skew) popularity: adapters[0] most popular."""
    _check_positive(count=count, prompt_tokens=prompt_tokens, output_tokens=output_tokens)
    if not adapters:
        raise ValueError("adapters must not be empty")
    rng = random.Random(seed)
    weights = zipf_weights(len(adapters), skew)
    out = []
    for _ in range(count):
        a = rng.choices(adapters, weights)[0]
        msgs = [{"role": "user", "content": text(rng, prompt_tokens)}]
        out.append(BenchRequest(_body(a, msgs, output_tokens), {"adapter": a}))
    return out


def long_context(model: str, count: int, *, prompt_bytes: int = 220 * 1024, output_tokens: int = 8,
                 seed: int = 0) -> list[BenchRequest]:
    """Very large prompts (220 KB by default, the upstream picker's large-body test).

    One big shared body text with a unique tail per request keeps memory low; the
    gateway still reads, parses and hashes every byte of each.
    """
    _check_positive(count=count, prompt_bytes=prompt_bytes, output_tokens=output_tokens)
    rng = random.Random(seed)
    big = text(rng, max(prompt_bytes - 64, 4) // CHARS_PER_TOKEN)
    out = []
    for i in range(count):
        msgs = [{"role": "user", "content": big + text(rng, 16)}]
        out.append(BenchRequest(_body(model, msgs, output_tokens), {"index": i}))
    return out


def mixed_criticality(critical_model: str, sheddable_model: str, count: int, *,
                      critical_share: float = 0.5, prompt_tokens: int = 512, output_tokens: int = 128,
                      seed: int = 0) -> list[BenchRequest]:
    """Critical and sheddable traffic mixed; the class is the model name the client asks for
    (the gateway maps each name to the same base model with its criticality)."""
    _check_positive(count=count, prompt_tokens=prompt_tokens, output_tokens=output_tokens)
    if not 0 <= critical_share <= 1:
        raise ValueError(f"critical_share must be in [0, 1], got {critical_share}")
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        crit = rng.random() < critical_share
        model = critical_model if crit else sheddable_model
        msgs = [{"role": "user", "content": text(rng, prompt_tokens)}]
        out.append(BenchRequest(_body(model, msgs, output_tokens),
                                {"criticality": "Critical" if crit else "Sheddable"}))
    return out
