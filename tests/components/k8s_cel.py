"""Evaluate the CRDs' CEL rules (`x-kubernetes-validations`) on a rendered object, as the API
server does on create: schema defaults applied first, each rule run with `self` bound to the
value at the node that declares it. Transition rules (`oldSelf`) apply only on update and are
skipped. Kubernetes' string extensions the CRDs use (split, trim, upperAscii, lowerAscii) are
supplied; any other unknown function surfaces as an evaluation error, never as a pass."""
from __future__ import annotations

import copy
from functools import lru_cache

import celpy
from celpy import celtypes

_ENV = celpy.Environment()


def _split(s, sep):
    return celtypes.ListType([celtypes.StringType(p) for p in str(s).split(str(sep))])


_FUNCTIONS = {
    "split": _split,
    "trim": lambda s: celtypes.StringType(str(s).strip()),
    "upperAscii": lambda s: celtypes.StringType(str(s).upper()),
    "lowerAscii": lambda s: celtypes.StringType(str(s).lower()),
}


@lru_cache(maxsize=None)
def _program(rule: str):
    return _ENV.program(_ENV.compile(rule), functions=_FUNCTIONS)


def apply_defaults(schema: dict, value):
    """Structural-schema defaulting: fill absent properties that declare a `default`."""
    if isinstance(value, dict):
        for key, sub in (schema.get("properties") or {}).items():
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
            if key in value:
                apply_defaults(sub, value[key])
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key, item in value.items():
                if key not in (schema.get("properties") or {}):
                    apply_defaults(extra, item)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            apply_defaults(schema["items"], item)
    return value


def cel_errors(schema: dict, obj: dict) -> list[str]:
    obj = apply_defaults(schema, copy.deepcopy(obj))
    errors: list[str] = []

    def walk(node: dict, value, path: str) -> None:
        for rule in node.get("x-kubernetes-validations") or []:
            if "oldSelf" in rule["rule"]:
                continue
            try:
                result = _program(rule["rule"]).evaluate({"self": celpy.json_to_cel(value)})
            except Exception as err:  # noqa: BLE001 a rule we cannot run is reported, not passed
                errors.append(f"{path or '(root)'}: cannot evaluate {rule['rule']!r}: {type(err).__name__}")
                continue
            if isinstance(result, celpy.CELEvalError):
                errors.append(f"{path or '(root)'}: cannot evaluate {rule['rule']!r}: {result.args[0]}")
            elif not bool(result):
                errors.append(f"{path or '(root)'}: {rule.get('message') or rule['rule']}")
        if isinstance(value, dict):
            props = node.get("properties") or {}
            for key, item in value.items():
                if key in props:
                    walk(props[key], item, f"{path}.{key}" if path else key)
                elif isinstance(node.get("additionalProperties"), dict):
                    walk(node["additionalProperties"], item, f"{path}.{key}" if path else key)
        elif isinstance(value, list) and isinstance(node.get("items"), dict):
            for i, item in enumerate(value):
                walk(node["items"], item, f"{path}[{i}]")

    walk(schema, obj, "")
    return errors
