"""Which client headers the gateway strips: every name in the routing namespaces
(`contract.ROUTING_HEADER_PREFIXES`) except the ones a stack declares client-facing. Standard
library only; the local stack's Envoy config and a cluster's ClientTrafficPolicy use the same regex.

Envoy's header_mutation (`remove_on_match`) and Envoy Gateway's `earlyRequestHeaders.removeOnMatch`
take a string matcher; an exception list needs a regex, and RE2 has no lookaround, so the regex is
built as the complement of the exceptions over a trie: at each point either a character no
exception continues with (then anything), or one that some exception does (then recurse), or the
end of the name unless an exception ends there.
"""
from __future__ import annotations

from collections.abc import Iterable

from infershift.contract import ROUTING_HEADER_PREFIXES


def _escape(c: str) -> str:
    return "\\" + c if c in "\\^$.|?*+()[]{}-/" else c


def _all_but(rest: set[str]) -> str:
    """A regex matching every string except those in `rest`."""
    if not rest:
        return ".*"
    firsts = sorted({r[0] for r in rest if r})
    if not firsts:  # only the empty string is excluded: anything that goes on
        return ".+"
    alts = ["[^" + "".join(_escape(c) for c in firsts) + "].*"]
    alts += [_escape(c) + _all_but({r[1:] for r in rest if r and r[0] == c}) for c in firsts]
    body = "(?:" + "|".join(alts) + ")"
    return body if "" in rest else body + "?"  # the name may end here unless an exception does


def strip_regex(keep: Iterable[str] = (), prefixes: Iterable[str] = ROUTING_HEADER_PREFIXES) -> str:
    """One regex (RE2 syntax, whole-name match, lower-case names) matching every header name that
    starts with one of `prefixes`, except the names in `keep`. Envoy refuses regexes whose RE2
    program is larger than 100 instructions unless its runtime allows more: `strip_matchers` splits."""
    keep = {k.lower() for k in keep}
    alts = []
    for p in prefixes:
        rest = {k[len(p):] for k in keep if k.startswith(p)}
        alts.append(_literal(p) + _all_but(rest))
    return "(?:" + "|".join(alts) + ")"


# What one regex may cost, in unescaped characters: RE2 compiles these to ~0.6 instructions per
# character (measured with Envoy 1.40), so this keeps every piece below Envoy's default limit of 100.
MAX_PIECE = 150


def strip_matchers(keep: Iterable[str] = (), prefixes: Iterable[str] = ROUTING_HEADER_PREFIXES) -> list[dict]:
    """The same set as `strip_regex` as a list of string matchers whose union it is: a prefix
    matcher for each namespace without an exception, else regexes small enough for Envoy's default
    RE2 limit. Each is `{"prefix": ...}` or `{"regex": ...}` (Envoy's StringMatcher `prefix` /
    `safe_regex.regex`; Envoy Gateway's StringMatch types Prefix / RegularExpression)."""
    keep = {k.lower() for k in keep}
    out: list[dict] = []
    for p in prefixes:
        rest = {k[len(p):] for k in keep if k.startswith(p)}
        if not rest:
            out.append({"prefix": p})
        else:
            out += [{"regex": r} for r in _pieces(p, rest)]
    return out


def _cost(regex: str) -> int:
    return len(regex.replace("\\", ""))


def _pieces(path: str, rest: set[str]) -> list[str]:
    whole = _literal(path) + _all_but(rest)
    if _cost(whole) <= MAX_PIECE:
        return [whole]
    firsts = sorted({r[0] for r in rest if r})
    if not firsts:
        return [_literal(path) + ".+"]
    # here: names that leave every exception at this character (or end here, if no exception does);
    # then, per character some exception goes on with, the names below it
    diverge = "[^" + "".join(_escape(c) for c in firsts) + "].*"
    out = [_literal(path) + (diverge if "" in rest else f"(?:{diverge})?")]
    for c in firsts:
        out += _pieces(path + c, {r[1:] for r in rest if r and r[0] == c})
    return out


def _literal(text: str) -> str:
    return "".join(_escape(c) for c in text)


def stripped(name: str, keep: Iterable[str] = (), prefixes: Iterable[str] = ROUTING_HEADER_PREFIXES) -> bool:
    """What `strip_regex` decides, in plain code (the tests compare the two)."""
    name = name.lower()
    return any(name.startswith(p) for p in prefixes) and name not in {k.lower() for k in keep}


def early_request_headers(keep: Iterable[str] = ()) -> dict:
    """Envoy Gateway's ClientTrafficPolicy `spec.headers.earlyRequestHeaders` that strips the same
    set before routing (the CRD's `removeOnMatch`: Prefix / RegularExpression string matches, at
    most 64). A route that does not allow the objective or fairness headers also needs them in its
    HTTPRoute rule's `RequestHeaderModifier.remove` (exact names)."""
    return {"removeOnMatch": [{"type": "Prefix", "value": m["prefix"]} if "prefix" in m
                              else {"type": "RegularExpression", "value": m["regex"]}
                              for m in strip_matchers(keep)]}
