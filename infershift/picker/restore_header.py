"""The hand-over from the request-path stream to the response-path stream (a separate ext_proc
stream, possibly to another picker replica): what to restore and what the telemetry needs, carried
with the request as Envoy dynamic metadata so no state is shared between streams."""
from __future__ import annotations

import json
from dataclasses import dataclass


@dataclass(frozen=True)
class Handover:
    target_model: str
    client_model: str
    picked: str       # the endpoint the picker chose (ip:port), to compare with the one that served
    started: float    # wall-clock seconds when the picker saw the request (TTFB / latency)
    # the request's upstream metric labels and id (telemetry: running requests, per-priority series)
    priority: str = "0"
    fairness: str = "default-flow"
    request_id: str = ""
    # the answer log (answers.py): None while it is off; on, whether this request is a mirrored copy
    shadow: bool | None = None

    @property
    def restore(self) -> bool:
        return self.target_model != self.client_model


def encode(h: Handover) -> str:
    # JSON keeps any model name intact; ASCII-only so it is a valid header value
    v = [2, h.target_model, h.client_model, h.picked, round(h.started, 6), h.priority, h.fairness, h.request_id]
    if h.shadow is not None:  # version 3: the answer log is on (one more field, the shadow flag)
        v[0] = 3
        v.append(h.shadow)
    return json.dumps(v, separators=(",", ":"))


def decode(value: str) -> Handover | None:
    """None for anything that is not a header this picker version wrote (ignored, never an error)."""
    try:
        v = json.loads(value)
        if isinstance(v, list) and len(v) == 5 and v[0] == 1 and all(isinstance(x, str) for x in v[1:4]) \
                and isinstance(v[4], (int, float)):
            return Handover(v[1], v[2], v[3], float(v[4]))
        if isinstance(v, list) and len(v) == 8 and v[0] == 2 and all(isinstance(x, str) for x in v[1:4]) \
                and isinstance(v[4], (int, float)) and all(isinstance(x, str) for x in v[5:]):
            return Handover(v[1], v[2], v[3], float(v[4]), v[5], v[6], v[7])
        if isinstance(v, list) and len(v) == 9 and v[0] == 3 and all(isinstance(x, str) for x in v[1:4]) \
                and isinstance(v[4], (int, float)) and all(isinstance(x, str) for x in v[5:8]) \
                and isinstance(v[8], bool):
            return Handover(v[1], v[2], v[3], float(v[4]), v[5], v[6], v[7], v[8])
    except ValueError:
        pass
    return None
