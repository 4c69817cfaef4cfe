"""The shadow report on the local stack: requests through a mirror's route, then the answer lines
its pools' pickers wrote meanwhile (devstack turns `answerLog` on for every mirror's pools)."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from infershift.devstack.traffic import Tally, burst, chat_body

from .compare import Answer, parse_line


@dataclass
class Run:
    mirror: str
    tally: Tally        # what the clients saw (the primary's answers)
    answers: list[Answer]
    sources: list[str]


def mirror_model(spec, mirror: str) -> str:
    """A model name clients send to the mirror's primary pool: its first routed model, else the
    served name of a service it selects."""
    pool = spec.mirrors[mirror].backend
    if spec.pools[pool].models:
        return next(iter(spec.pools[pool].models))
    svc = next(iter(spec.pool_services(pool).values()))
    return svc.served_model_name or svc.model


def mirror_url(stack, mirror: str) -> str:
    m = stack.spec.mirrors[mirror]
    base = stack.url(m.listener) if m.listener else stack.url()
    chat = "/v1/chat/completions"
    return base + (chat if any(chat.startswith(p.rstrip("/") + "/") or chat == p for p in m.paths) else m.paths[0])


def _sizes(paths: list[Path]) -> dict[Path, int]:
    return {p: p.stat().st_size if p.exists() else 0 for p in paths}


def _read_since(offsets: dict[Path, int]) -> list[Answer]:
    out = []
    for p, off in offsets.items():
        if not p.exists():
            continue
        with open(p, "rb") as f:
            f.seek(off)
            for raw in f.read().decode(errors="replace").splitlines():
                a = parse_line(raw)
                if a is not None:
                    out.append(a)
    return out


def run(stack, mirror: str, requests: int = 100, *, stream: bool = False, max_tokens: int = 16,
        concurrency: int = 8, settle: float = 10.0) -> Run:
    """`requests` chat requests through the mirror's route of a running LocalStack; returns the
    answers its pickers logged for them (waits up to `settle` seconds for the shadow copies, which
    finish after the client has the primary's answer)."""
    spec = stack.spec
    assert spec is not None, "a stack file's local stack"
    m = spec.mirrors[mirror]
    logs = stack.answer_logs()
    before = _sizes(logs)
    body = chat_body(mirror_model(spec, mirror), max_tokens=max_tokens)
    if stream:
        body = {**body, "stream": True, "stream_options": {"include_usage": True}}
    tally = burst(mirror_url(stack, mirror), body, requests, concurrency=concurrency)
    want_shadow = requests * m.percent // 100
    deadline = time.monotonic() + settle
    last, still = -1, 0
    while True:
        answers = _read_since(before)
        shadows = sum(a.shadow for a in answers)
        primaries = len(answers) - shadows
        done = primaries >= tally.total and shadows >= want_shadow
        still = still + 1 if len(answers) == last else 0
        if done or still >= 20 or time.monotonic() > deadline:
            break
        last = len(answers)
        time.sleep(0.1)
    return Run(mirror, tally, answers, [str(p) for p in logs])
