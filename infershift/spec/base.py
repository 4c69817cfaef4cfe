"""Shared pydantic base: camelCase keys as Pulumi config uses them, unknown keys rejected."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

# Kubernetes object names (RFC 1123 label); every key of a named map becomes one.
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
# Gateway API Duration (GEP-2257), e.g. "24h", "1h30m", "500ms".
DURATION = re.compile(r"^([0-9]{1,5}(h|m|s|ms)){1,4}$")
# Kubernetes resource quantity, e.g. "20Mi", "30Gi", "500m".
QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E|m)?$")


def _quantity(value: str) -> str:
    if not QUANTITY.match(value):
        raise ValueError(f"{value!r} is not a Kubernetes quantity like '20Mi' or '500m'")
    return value


def _duration(value: str) -> str:
    if not DURATION.match(value):
        raise ValueError(f"{value!r} is not a Gateway API duration like '24h', '1h30m' or '50ms'")
    return value


# Strings checked where they are declared, so every field of these kinds says the same thing.
Quantity = Annotated[str, AfterValidator(_quantity)]
Duration = Annotated[str, AfterValidator(_duration)]


@dataclass(frozen=True)
class Problem:
    """One config problem and the config path it is at."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"infershift:{self.path}: {self.message}"


class Spec(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        frozen=True,
    )


def check_name(value: str, what: str) -> str:
    if not DNS_LABEL.match(value):
        raise ValueError(
            f"{what} {value!r} is not a valid Kubernetes name "
            "(lowercase letters, digits and '-', at most 63 characters)"
        )
    return value


def duration_seconds(value: str) -> float:
    """Gateway API duration to seconds ("1h30m" -> 5400.0)."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    return sum(float(n) * units[u] for n, u in re.findall(r"([0-9]+)(ms|h|m|s)", value))


def quantity_bytes(value: str) -> int:
    """Kubernetes quantity to bytes ("20Mi" -> 20971520)."""
    m = re.match(r"^([0-9.]+)([A-Za-z]*)$", value)
    if not m:
        raise ValueError(f"not a quantity: {value!r}")
    number, suffix = float(m.group(1)), m.group(2)
    binary = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40, "Pi": 1 << 50, "Ei": 1 << 60}
    decimal = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18, "m": 0.001}
    factor = binary.get(suffix) or decimal.get(suffix)
    if factor is None:
        raise ValueError(f"unknown quantity suffix in {value!r}")
    return int(number * factor)
