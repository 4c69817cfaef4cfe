"""The rollout controller: it only edits stack config.

For each step it writes the two weights and the rollout's `status:` with the same edits
`pulumi config set --path` makes (spec/config_path.py, one atomic write), has them applied
(`Applier`: the local stack live, or `pulumi up` through the Automation API), watches the gates
over the step's window for at least `dwell` and `minRequests` canary responses, then advances,
or rolls back (canary 0 %) / pauses and stops with the reason. The stack file therefore always
says what the weights are and why. A person's edit of those weights, or of the status, while it
runs, pauses it (their edit stays).
"""
from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

from infershift import spec as stackspec
from infershift.spec.checks import shadow_target
from infershift.spec.config_path import format_path, set_many_in_file
from infershift.spec.rollouts import Rollout

from . import shadow_gate
from .decide import StepResult, judge
from .metrics import Side, Snapshot, Source, window
from .shadow_gate import AnswerSource, ShadowResult
from .window import Window


class RolloutError(RuntimeError):
    """The rollout cannot run (unknown name, finished, weights not what its status says)."""


class Applier(Protocol):
    def apply(self, stack_file: Path) -> str:
        """Make the stack file's config live; a message; raise on failure."""
        ...


class NoApply:
    """Nothing to do: a running local stack (`devstack up`) applies edits of its file itself."""

    def __init__(self, settle: float = 1.0):
        self.settle = settle

    def apply(self, stack_file: Path) -> str:
        time.sleep(self.settle)
        return f"left to the stack's own watcher ({self.settle:g}s to settle)"


class LocalApply:
    """The local stack in this process (`infershift.devstack.stack.LocalStack`): apply live."""

    def __init__(self, stack):
        self.stack = stack

    def apply(self, stack_file: Path) -> str:
        result = self.stack.apply()
        if not result.ok:
            raise RolloutError(f"the local stack did not apply the edit: {result.message}")
        return result.message


@dataclass
class Step:
    """One poll of one step: what the table, the report and the PNG show."""

    at: float
    step: int
    """-1: the pinned first step."""
    canary_percent: int
    result: StepResult

    def to_json(self) -> dict:
        return {"at": self.at, "step": self.step, "canaryPercent": self.canary_percent, **self.result.to_json()}


@dataclass
class Outcome:
    phase: str
    message: str
    history: list[Step] = field(default_factory=list)
    windows: list[dict] = field(default_factory=list)
    """Per finished step: its canary and stable windows (JSON), for reports and recorded series."""
    shadow: ShadowResult | None = None
    """The shadow phase's last judgement (`shadowFirst`), if it ran."""


def _now() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _read(stack_file: Path) -> dict:
    return stackspec.config_values(yaml.safe_load(stack_file.read_text()) or {})


def _dig(values: dict, path: list[str]) -> Any:
    node: Any = values
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _weight(values: dict, path: list[str]) -> int | None:
    v = _dig(values, path)
    if isinstance(v, str) and v.strip().isdigit():
        return int(v)
    return v if isinstance(v, int) and not isinstance(v, bool) else None


class Controller:
    def __init__(self, stack_file: str | Path, name: str, source: Source, applier: Applier, *,
                 send_pinned: Callable[[str, str, int], tuple[int, int]] | None = None,
                 answers: AnswerSource | None = None, settle: float = 1.0, poll: float = 1.0, step_timeout: float | None = None,
                 log: Callable[[str], None] = lambda msg: print(msg, flush=True),
                 on_poll: Callable[[Step], None] | None = None):
        self.stack_file = Path(stack_file)
        self.name = name
        self.source = source
        self.applier = applier
        self.send_pinned = send_pinned
        self.answers = answers
        self.settle = settle
        self.poll = poll
        self.step_timeout = step_timeout
        self.log = log
        self.on_poll = on_poll
        self.spec = stackspec.load_file(self.stack_file)
        if name not in self.spec.rollouts:
            known = ", ".join(sorted(self.spec.rollouts)) or "none"
            raise RolloutError(f"{self.stack_file}: no rollout named {name!r} (rollouts: {known})")
        self.rollout: Rollout = self.spec.rollouts[name]
        ro = self.rollout
        if ro.route is not None:
            self.stable, self.canary = Side(ro.stable), Side(ro.canary)
        else:
            assert ro.pool is not None
            self.stable, self.canary = Side(ro.pool, ro.stable), Side(ro.pool, ro.canary)
        self.pools = sorted({self.stable.pool, self.canary.pool})
        self._expect: dict[str, Any] = {}
        self.baseline: Window | None = None
        self.history: list[Step] = []
        self.windows: list[dict] = []
        self.shadow: ShadowResult | None = None

    # --- config edits --------------------------------------------------------------------

    def _status_path(self, key: str) -> str:
        return format_path(["rollouts", self.name, "status", key])

    def weight_paths(self) -> dict[str, str]:
        ro = self.rollout
        return {"stable": format_path(list[str | int](ro.weight_path(ro.stable))),
                "canary": format_path(list[str | int](ro.weight_path(ro.canary)))}

    def edits(self, canary_percent: int | None, phase: str, step: int, message: str,
              extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """The `--path` edits of one transition: both weights (unless None: left as they are), `extra`
        (the shadow phase's mirror) and the status."""
        out: dict[str, Any] = dict(extra or {})
        if canary_percent is not None:
            paths = self.weight_paths()
            out[paths["canary"]] = canary_percent
            out[paths["stable"]] = 100 - canary_percent
        current = _read(self.stack_file)
        percent = canary_percent if canary_percent is not None else \
            _weight(current, self.rollout.weight_path(self.rollout.canary)) or 0
        out[self._status_path("phase")] = phase
        out[self._status_path("step")] = step
        out[self._status_path("canaryPercent")] = max(0, min(100, percent))
        out[self._status_path("message")] = message
        out[self._status_path("updated")] = _now()
        return out

    def write(self, canary_percent: int | None, phase: str, step: int, message: str, apply: bool = True,
              extra: dict[str, Any] | None = None) -> None:
        edits = self.edits(canary_percent, phase, step, message, extra)
        set_many_in_file(self.stack_file, edits)
        stackspec.load_file(self.stack_file)  # what was written validates (else: a bug here, loudly)
        self._expect = self._watched(_read(self.stack_file))
        weights = f"canary {canary_percent}% / stable {100 - canary_percent}%" if canary_percent is not None else \
            "weights unchanged"
        self.log(f"rollout {self.name}: {phase} step {step}: {weights}: {message}")
        if apply and (canary_percent is not None or extra):
            self.log(f"rollout {self.name}: applied: {self.applier.apply(self.stack_file)}")

    def _watched(self, values: dict) -> dict[str, Any]:
        ro = self.rollout
        return {"stable": _weight(values, ro.weight_path(ro.stable)),
                "canary": _weight(values, ro.weight_path(ro.canary)),
                "phase": _dig(values, ["rollouts", self.name, "status", "phase"]),
                "step": _dig(values, ["rollouts", self.name, "status", "step"])}

    def edited(self) -> str | None:
        """What a person changed since the controller's last write, or None."""
        try:
            now = self._watched(_read(self.stack_file))
        except (OSError, yaml.YAMLError):
            return None  # mid-write by an editor: look again next poll
        changed = [f"{k} {self._expect.get(k)!r} -> {v!r}" for k, v in now.items() if v != self._expect.get(k)]
        return ", ".join(changed) or None

    # --- one step --------------------------------------------------------------------------

    def _snap(self) -> dict[str, tuple[float, Snapshot]]:
        return self.source.snapshot(self.pools)

    def _windows(self, start: dict[str, tuple[float, Snapshot]]) -> tuple[Window, Window]:
        end = self._snap()
        return (window(start[self.canary.pool], end[self.canary.pool], self.canary),
                window(start[self.stable.pool], end[self.stable.pool], self.stable))

    def watch(self, step: int, percent: int, min_requests: int, pinned: int = 0) -> tuple[str, StepResult]:
        """Watch one step: 'pass', 'fail', 'edited' (a person's edit) or 'timeout'."""
        ro = self.rollout
        start = self._snap()
        began = time.monotonic()
        timeout = self.step_timeout if self.step_timeout is not None else max(60.0, 10 * ro.dwell_seconds)
        sent = False
        while True:
            if pinned and not sent and self.send_pinned is not None:
                assert ro.route is not None
                ok, failed = self.send_pinned(ro.route, ro.canary, pinned)
                self.log(f"rollout {self.name}: {pinned} pinned requests to {ro.canary}: {ok} ok, {failed} failed")
                sent = True
            else:
                time.sleep(self.poll)
            who = self.edited()
            canary, stable = self._windows(start)
            result = judge(ro.gates, canary, stable, min_requests, baseline=self.baseline)
            entry = Step(time.time(), step, percent, result)
            self.history.append(entry)
            if self.on_poll is not None:
                self.on_poll(entry)
            elapsed = time.monotonic() - began
            if who:
                return "edited", StepResult("wait", result.canary_requests, result.stable_requests, result.gates,
                                            f"edited while running: {who}")
            if result.verdict == "fail":
                self._keep(step, canary, stable)
                return "fail", result
            if result.verdict == "pass" and elapsed >= ro.dwell_seconds:
                self._keep(step, canary, stable)
                if stable.responses >= min_requests:
                    self.baseline = stable
                return "pass", result
            if elapsed > timeout:
                return "timeout", StepResult("wait", result.canary_requests, result.stable_requests, result.gates,
                                             f"no verdict within {timeout:g}s: {result.reason}")

    def _keep(self, step: int, canary: Window, stable: Window) -> None:
        self.windows.append({"step": step, "canary": canary.to_json(), "stable": stable.to_json()})

    # --- the plan --------------------------------------------------------------------------

    def check_weights(self) -> None:
        """The weights must be what the status says the controller last set (else someone edited them)."""
        ro = self.rollout
        values = _read(self.stack_file)
        canary = _weight(values, ro.weight_path(ro.canary))
        stable = _weight(values, ro.weight_path(ro.stable))
        status = ro.status
        if status is None or status.step < 0:
            return
        if (canary, stable) != (status.canary_percent, 100 - status.canary_percent):
            raise RolloutError(f"rollouts.{self.name}: the weights are canary {canary} / stable {stable}, not the "
                               f"{status.canary_percent}/{100 - status.canary_percent} its status records: someone "
                               "edited them; set them back or `abort`, then `run` again")

    def run(self) -> Outcome:
        ro = self.rollout
        status = ro.status
        if status is not None and status.phase in ("Promoted", "RolledBack", "Aborted"):
            raise RolloutError(f"rollouts.{self.name} is {status.phase} ({status.message}); remove its status to run "
                               "it again")
        self.check_weights()
        self._expect = self._watched(_read(self.stack_file))
        # a rollout that stopped (paused, or its controller died) goes on from the step it was at,
        # judged afresh
        first = max(status.step, 0) if status is not None else 0
        if ro.shadow_first is not None and (status is None or (status.step < 0
                                                               and status.phase not in ("Shadowed", "Pinned"))):
            done = self.shadow_phase()
            if done is not None:
                return done
        if ro.pin_first is not None and (status is None or status.step < 0):
            self.write(0, "Pinned", -1, f"{ro.pin_first.requests} requests through the pin header first")
            verdict, result = self.watch(-1, 0, ro.pin_first.requests, pinned=ro.pin_first.requests)
            done = self._after(verdict, result, -1, 0)
            if done is not None:
                return done
        for i in range(first, len(ro.steps)):
            percent = ro.steps[i]
            self.write(percent, "Progressing", i, f"step {i + 1} of {len(ro.steps)}: canary at {percent}%")
            verdict, result = self.watch(i, percent, ro.min_requests)
            done = self._after(verdict, result, i, percent)
            if done is not None:
                return done
        final = ro.steps[-1]
        self.write(None, "Promoted", len(ro.steps) - 1,
                   f"promoted: canary at {final}%, every step's gates passed", apply=False)
        return self._outcome("Promoted", f"canary at {final}%")

    def _outcome(self, phase: str, message: str) -> Outcome:
        return Outcome(phase, message, self.history, self.windows, self.shadow)

    # --- the shadow phase (shadowFirst) --------------------------------------------------------

    def _mirror_edits(self, percent: int, declare: bool = False) -> dict[str, Any]:
        """The route's mirror: its percent, and (switching on, or `declare`) what it copies to."""
        assert self.rollout.route is not None
        base: list[str | int] = ["routes", self.rollout.route, "mirror"]
        edits: dict[str, Any] = {format_path([*base, "percent"]): percent}
        if percent or declare:
            kind, target = shadow_target(self.spec, self.rollout)
            edits[format_path([*base, "kind"])] = kind
            edits[format_path([*base, "name"])] = target
            if kind == "Service":
                edits[format_path([*base, "record"])] = True
        return edits

    def shadow_phase(self) -> Outcome | None:
        """Mirror the route's requests to the canary (weight 0), pair the two pools' answers, judge;
        the mirror is set back to 0 % whatever the verdict. None: passed, go on."""
        ro = self.rollout
        sf = ro.shadow_first
        assert sf is not None and ro.route is not None
        if self.answers is None:
            raise RolloutError(f"rollouts.{self.name}.shadowFirst pairs the pickers' answer lines: give them "
                               "(--answers FILE... or --answers-command CMD; the local stack's are read itself)")
        kind, target = shadow_target(self.spec, ro)
        if kind == "Service":
            # the copies go through a shadow recorder (components/shadow_recorder.py): declare the
            # mirror at 0 % first, so the recorder is up (pulumi up waits for its Deployment)
            # before any copy is sent to it
            self.write(0, "Shadowing", -1, f"recorder for Service {target} (the canary's) declared",
                       extra=self._mirror_edits(0, declare=True))
        self.answers.start()
        self.write(0, "Shadowing", -1, f"{sf.percent}% of route {ro.route}'s requests mirrored to {kind} {target}; "
                                       f"comparing answers", extra=self._mirror_edits(sf.percent))
        # requests the gateway took before the mirror was live have no copy: count from here, plus a
        # settle for the gateway to take the route change
        since = time.time() + self.settle
        began = time.monotonic()
        timeout = self.step_timeout if self.step_timeout is not None else max(60.0, 10 * sf.dwell_seconds)
        last = ""
        while True:
            time.sleep(self.poll)
            who = self.edited()
            now = time.time()
            answers = self.answers.answers()
            result = shadow_gate.judge(sf, answers, ro.stable, target, since, now - shadow_gate.GRACE)
            self.shadow = result
            if result.reason != last:
                self.log(f"rollout {self.name}: shadow {result.verdict}: {result.reason}")
                last = result.reason
            elapsed = time.monotonic() - began
            if who:
                verdict, reason = "edited", f"edited while running: {who}"
                break
            if result.verdict == "fail":
                verdict, reason = "fail", result.reason
                break
            if result.verdict == "pass" and elapsed >= sf.dwell_seconds:
                verdict, reason = "pass", result.reason
                break
            if elapsed > timeout:
                verdict, reason = "timeout", f"no verdict within {timeout:g}s: {result.reason}"
                break
        off = self._mirror_edits(0)
        if verdict == "pass":
            self.write(None, "Shadowed", -1, f"shadow gate passed: {reason}", extra=off)
            return None
        if verdict == "fail" and ro.on_failure == "rollback":
            self.write(0, "RolledBack", -1, f"rolled back at the shadow phase: {reason}", extra=off)
            return self._outcome("RolledBack", reason)
        if verdict == "edited":
            self._expect = self._watched(_read(self.stack_file))
        self.write(None, "Paused", -1, f"paused at the shadow phase: {reason}", extra=off)
        return self._outcome("Paused", reason)

    def _after(self, verdict: str, result: StepResult, step: int, percent: int) -> Outcome | None:
        ro = self.rollout
        where = "pinned step" if step < 0 else f"step {step + 1} ({percent}%)"
        if verdict == "pass":
            self.log(f"rollout {self.name}: {where} passed: {result.reason} "
                     f"({result.canary_requests:.0f} canary, {result.stable_requests:.0f} stable responses)")
            return None
        if verdict == "edited":
            # the person's edit stays: only the status is written
            self._expect = self._watched(_read(self.stack_file))
            self.write(None, "Paused", step, f"paused at {where}: {result.reason}", apply=False)
            return self._outcome("Paused", result.reason)
        if verdict == "timeout" or ro.on_failure == "pause":
            self.write(None, "Paused", step, f"paused at {where}: {result.reason}", apply=False)
            return self._outcome("Paused", result.reason)
        self.write(0, "RolledBack", step, f"rolled back at {where}: {result.reason}")
        return self._outcome("RolledBack", result.reason)


def abort(stack_file: str | Path, name: str, applier: Applier | None = None,
          log: Callable[[str], None] = lambda msg: print(msg, flush=True)) -> None:
    """Canary to 0 %, status Aborted; a running controller sees the edit and stops."""
    from .metrics import MetricsPages

    c = Controller(stack_file, name, MetricsPages({}), applier or NoApply(0), log=log)
    c.write(0, "Aborted", c.rollout.status.step if c.rollout.status else -1, "aborted by a person")


def status(stack_file: str | Path, name: str | None = None) -> list[dict]:
    """Each rollout's status and the weights the stack file holds now."""
    spec = stackspec.load_file(Path(stack_file))
    values = _read(Path(stack_file))
    out = []
    for n, ro in spec.rollouts.items():
        if name is not None and n != name:
            continue
        st = ro.status
        out.append({"name": n, "what": f"route {ro.route}" if ro.route else f"pool {ro.pool} model {ro.model}",
                    "stable": ro.stable, "canary": ro.canary,
                    "weights": {ro.stable: _weight(values, ro.weight_path(ro.stable)),
                                ro.canary: _weight(values, ro.weight_path(ro.canary))},
                    "steps": ro.steps, "phase": st.phase if st else "Pending", "step": st.step if st else -1,
                    "message": st.message if st else "", "updated": st.updated if st else ""})
    if name is not None and not out:
        raise RolloutError(f"{stack_file}: no rollout named {name!r}")
    return out
