"""Run the plan: capacity per scenario, then every router x load level on a fresh pool; raw JSON out."""
from __future__ import annotations

import json
import platform
import random
import subprocess
import time
import traceback
from pathlib import Path

import psutil

from . import arrivals, loadgen, routers
from .plan import MODEL, Scenario
from .procs import REPO
from .routers.base import Setup, wait_serving
from .simpool import SimPool
from .stats import summarize


def _log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _busy_cores() -> float:
    t = psutil.cpu_times()
    return t.user + t.system + getattr(t, "nice", 0.0)


def compact(records: list[dict]) -> list[list]:
    """Per-request rows for the raw JSON: [status, ttft_ms, e2e_ms, output_tokens, pod]."""
    def ms(x):
        return None if x is None else round(x * 1000, 1)
    return [[r["status"], ms(r["ttft"]), ms(r["e2e"]), r["output_tokens"], r["pod"],
             r["tags"].get("criticality")] for r in records]


def warm_up(sc: Scenario, url) -> None:
    if sc.warmup is None:
        return
    # As many at once as there are servers: SGLang's and vLLM's cache-aware policies place a group
    # on the least-loaded worker, so a sequential warm-up would pile every group onto one worker.
    loop = loadgen.new_loop()
    try:
        loop.run_until_complete(loadgen.run_closed(url, sc.warmup(), sc.sims.servers))
    finally:
        loop.close()


def measure_capacity(sc: Scenario, workdir: Path, seed: int) -> dict:
    """Closed-loop saturation run (after the warm-up) through sc.capacity_router: completed requests/s."""
    with SimPool(sc.sims, workdir / "capacity") as pool:
        r = routers.make(sc.capacity_router)
        try:
            url = r.start(Setup(pool.addresses, workdir / "capacity", MODEL, sc.classes))
            wait_serving(url, MODEL)
            warm_up(sc, url)
            reqs = sc.make(sc.capacity_count, seed + 999)
            loop = loadgen.new_loop()
            try:
                res = loop.run_until_complete(loadgen.run_closed(url, reqs, sc.capacity_concurrency))
            finally:
                loop.close()
        finally:
            r.stop()
    s = summarize(res.records, res.wall)
    rps = s["ok"] / res.wall if res.wall > 0 else 0.0
    return {"method": f"closed loop, concurrency {sc.capacity_concurrency}, {sc.capacity_count} requests, "
                      f"through {sc.capacity_router}", "requests_per_s": rps,
            "output_tokens_per_s": s["output_tokens_per_s"], "ttft_p90": s["ttft_p90"], "errors": s["errors"]}


def run_level(sc: Scenario, router_name: str, url, pool: SimPool, router, level: float, capacity: dict | None,
              seed: int) -> dict:
    if sc.mode == "open":
        rate = level * capacity["requests_per_s"]
        count = int(min(sc.max_count, max(sc.min_count, rate * sc.duration)))
        reqs = sc.make(count, seed)
        offsets = arrivals.poisson_offsets(rate, count, random.Random(seed))
    else:
        rate = None
        count = int(level * sc.per_level_count)
        reqs = sc.make(count, seed)
    q0, h0 = pool.prefix_cache()
    by0 = router.cpu_by_process() if router else {}
    sim0, rt0, busy0 = pool.cpu_seconds(), sum(by0.values()), _busy_cores()
    loop = loadgen.new_loop()
    try:
        if sc.mode == "open":
            res = loop.run_until_complete(loadgen.run_open(url, reqs, offsets))
        else:
            res = loop.run_until_complete(loadgen.run_closed(url, reqs, int(level)))
    finally:
        loop.close()
    q1, h1 = pool.prefix_cache()
    by1 = router.cpu_by_process() if router else {}
    sim1, rt1, busy1 = pool.cpu_seconds(), sum(by1.values()), _busy_cores()
    s = summarize(res.records, res.wall)
    s["prefix_cache_hit_rate"] = (h1 - h0) / (q1 - q0) if q1 > q0 else None
    wall = res.wall or 1e-9
    # The picker's own CPU (the ext_proc server, apart from its proxy) per request it was sent:
    # process CPU seconds over the run, as for the router's cores, over every request of the level.
    picker = getattr(router, "picker_process", None)
    s["picker_cpu_ms_per_request"] = ((by1[picker] - by0[picker]) / len(res.records) * 1e3
                                      if picker in by0 and picker in by1 and res.records else None)
    pods: dict[str, int] = {}
    for r in res.records:
        if r["pod"]:
            pods[r["pod"]] = pods.get(r["pod"], 0) + 1
    return {
        "scenario": sc.name, "router": router_name, "mode": sc.mode, "level": level,
        "rate_per_s": rate, "count": count, "summary": s,
        "cores": {"loadgen": res.cpu / wall, "sims": (sim1 - sim0) / wall, "router": (rt1 - rt0) / wall,
                  "machine_busy": (busy1 - busy0) / wall,
                  "router_processes": {n: (by1[n] - by0[n]) / wall for n in by1 if n in by0}},
        "loadgen_max_send_lag_s": res.max_lag,
        "requests_per_pod": pods,
        "requests": compact(res.records),
    }


def run_router(sc: Scenario, name: str, workdir: Path, capacity: dict | None, seed: int) -> list[dict]:
    wd = workdir / sc.name / name
    wd.mkdir(parents=True, exist_ok=True)
    out = []
    with SimPool(sc.sims, wd) as pool:
        router = None if name == "direct" else routers.make(name)
        try:
            if router is None:
                url = pool.urls()
                wait_serving(url[0], MODEL)
            else:
                url = router.start(Setup(pool.addresses, wd, MODEL, sc.classes))
                wait_serving(url, MODEL)
            warm_up(sc, url)
            for i, level in enumerate(sc.levels):
                _log(f"{sc.name} / {name} / level {level}")
                out.append(run_level(sc, name, url, pool, router, level, capacity, seed + i))
        finally:
            if router is not None:
                router.stop()
    return out


def source_commit(out: Path | None = None) -> str | None:
    """The commit the bench and the picker ran from (REPO), '+modified' when the tree differs from it
    outside the output directory `out` (bench/results is committed, and updated by every run)."""
    paths = ["."]
    if out is not None and out.resolve().is_relative_to(REPO):
        paths.append(f":(exclude){out.resolve().relative_to(REPO)}")
    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO, capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", *paths], cwd=REPO,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+modified" if dirty else "")


def machine() -> dict:
    return {"cpus": psutil.cpu_count(), "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(), "platform": platform.platform(),
            "processor": platform.processor() or platform.machine()}


def run(plan: list[Scenario], out: Path, *, seed: int = 0, only_routers: set[str] | None = None,
        quick: bool = False, argv: list[str] | None = None) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    raw = out / "raw"
    raw.mkdir(exist_ok=True)
    work = out / "work"
    # A run into a directory that already holds results updates it: scenarios and routers run now
    # replace theirs, the rest are kept, and a scenario's measured capacity is reused so the load
    # levels stay comparable with the routers kept.
    old = json.loads((out / "meta.json").read_text()) if (out / "meta.json").exists() else None
    meta = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "quick": quick, "seed": seed,
            "argv": argv, "machine": machine(), "scenarios": {}, "failures": [], "skipped": [], "runs": []}
    if old:
        meta["scenarios"] = old.get("scenarios", {})
        meta["runs"] = old.get("runs", [{"started": old.get("started"), "argv": old.get("argv"),
                                         "wall_s": old.get("wall_s")}])
        meta["started"] = old.get("started", meta["started"])
        meta["failures"] = old.get("failures", [])
        meta["skipped"] = old.get("skipped", [])
        meta["checks"] = old.get("checks", [])  # bench/__main__.py replaces them when shared-prefix runs
    commit = source_commit(out)
    t0 = time.monotonic()
    for sc in plan:
        names = [n for n in sc.routers if only_routers is None or n in only_routers]
        meta["failures"] = [f for f in meta["failures"] if not (f["scenario"] == sc.name and f["router"] in names)]
        prev = meta["scenarios"].get(sc.name)
        for n in names:
            for f in raw.glob(f"{sc.name}__{n}__*.json"):
                f.unlink()
        info = {"mode": sc.mode, "levels": sc.levels, "routers": names, "notes": sc.notes,
                "servers": sc.sims.servers, "sim_processes": sc.sims.processes, "time_scale": sc.sims.time_scale,
                "profile": sc.sims.profile, "descriptions": {}}
        capacity = None
        if sc.mode == "open" and prev and prev.get("capacity"):
            capacity = dict(prev["capacity"], reused=True)
            _log(f"{sc.name}: reusing the measured capacity {capacity['requests_per_s']:.2f} req/s")
        elif sc.mode == "open":
            _log(f"{sc.name}: measuring capacity")
            capacity = measure_capacity(sc, work / sc.name, seed)
            _log(f"{sc.name}: capacity {capacity['requests_per_s']:.2f} req/s")
        info["capacity"] = capacity
        if prev:
            had = prev.get("routers", [])
            info["routers"] = [r for r in had if r not in names] + names
            info["descriptions"] = dict(prev.get("descriptions", {}))
        meta["skipped"] = [k for k in meta.get("skipped", []) if not (k["scenario"] == sc.name and k["router"] in names)]
        for name in names:
            if name != "direct":
                r = routers.make(name)
                info["descriptions"][name] = r.description
                why = r.unavailable()
                if why:  # a part this machine has not built: left out with the reason, not a failure
                    _log(f"{sc.name} / {name} SKIPPED: {why}")
                    meta["skipped"].append({"scenario": sc.name, "router": name, "reason": why})
                    continue
            try:
                runs = run_router(sc, name, work, capacity, seed)
            except Exception as e:  # a router that cannot run is reported, not faked
                _log(f"{sc.name} / {name} FAILED: {e}")
                meta["failures"].append({"scenario": sc.name, "router": name, "error": str(e)[-1500:],
                                         "trace": traceback.format_exc()[-3000:]})
                continue
            for r in runs:
                (raw / f"{sc.name}__{name}__{r['level']:g}.json").write_text(json.dumps(r, indent=None))
        meta["scenarios"][sc.name] = info
        # Written after every scenario, so a stopped run still leaves what it finished usable.
        (out / "meta.json").write_text(json.dumps(meta, indent=1))
    meta["runs"].append({"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - (time.monotonic() - t0))),
                         "argv": argv, "wall_s": time.monotonic() - t0, "commit": commit})
    meta["wall_s"] = sum(r.get("wall_s") or 0 for r in meta["runs"])
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
    return meta
