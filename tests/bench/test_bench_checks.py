"""The routing-quality check (bench/checks.py): infershift's prefix-cache hit rate against the
cache-aware references of the same run, and `python -m bench` exiting 1 when it fails."""
import json
import shutil
from pathlib import Path

import pytest

from bench import __main__ as bench_main
from bench import checks, runner

DATA = Path(__file__).parent / "data" / "recorded"
REAL_RUN = runner.run


def run(router, hit, level=0.8, scenario="shared-prefix"):
    return {"scenario": scenario, "router": router, "level": level, "summary": {"prefix_cache_hit_rate": hit}}


def test_fails_when_infershift_is_well_below_the_best_reference():
    runs = [run("infershift", 0.60), run("sglang-cache-aware", 0.94), run("omniscient", 0.93), run("envoy-lr", 0.46)]
    [r] = checks.prefix_affinity(runs, {"infershift", "sglang-cache-aware", "omniscient", "envoy-lr"})
    assert r.ok is False and r.reference == "sglang-cache-aware" and r.reference_hit_rate == 0.94
    assert "60% vs sglang-cache-aware 94%" in r.message and "FAILED" in r.message


def test_passes_within_the_gap_and_takes_the_best_reference_that_ran():
    runs = [run("infershift", 0.86), run("sglang-cache-aware", 0.97), run("omniscient", 0.94)]
    [r] = checks.prefix_affinity(runs, {"infershift", "omniscient"})  # SGLang's result is from an earlier command
    assert r.ok is True and r.reference == "omniscient"
    [r] = checks.prefix_affinity(runs, {"infershift", "omniscient", "sglang-cache-aware"})
    assert r.ok is False and r.reference == "sglang-cache-aware"  # 0.86 < 0.97 - 0.10


def test_not_checked_without_a_reference_or_without_infershift():
    runs = [run("infershift", 0.60), run("envoy-lr", 0.40), run("sglang-cache-aware", 0.94)]
    [r] = checks.prefix_affinity(runs, {"infershift", "envoy-lr"})
    assert r.ok is None and "not checked" in r.message
    assert checks.prefix_affinity(runs, {"sglang-cache-aware", "envoy-lr"}) == []
    # other scenarios and each level on its own
    more = runs + [run("infershift", 0.2, scenario="multi-turn"), run("infershift", 0.95, level=1.0),
                   run("omniscient", 0.94, level=1.0)]
    got = checks.prefix_affinity(more, {"infershift", "sglang-cache-aware", "omniscient"})
    assert [(r.level, r.ok) for r in got] == [(0.8, False), (1.0, True)]


@pytest.fixture
def recorded(tmp_path, monkeypatch):
    """`python -m bench --quick ...` with the runner replaced by a recorded quick run's results,
    infershift's shared-prefix hit rate set to the value given."""
    out = tmp_path / "run"

    def with_infershift_hit(hit):
        def fake_run(scs, out_dir, **kw):
            if out_dir.exists():  # a later command into the same directory: the runner keeps meta.json
                return REAL_RUN([], out_dir)
            shutil.copytree(DATA, out_dir)
            meta = json.loads((out_dir / "meta.json").read_text())
            meta["failures"] = []
            (out_dir / "meta.json").write_text(json.dumps(meta))
            p = out_dir / "raw" / "shared-prefix__infershift__0.8.json"
            r = json.loads(p.read_text())
            r["summary"]["prefix_cache_hit_rate"] = hit
            p.write_text(json.dumps(r))
            return meta

        monkeypatch.setattr(bench_main.runner, "run", fake_run)
        return out

    return with_infershift_hit


def test_quick_run_exits_1_when_prefix_affinity_is_lost(recorded, capsys):
    out = recorded(0.66)  # what the regression of issue 13 measured on the quick workload
    assert bench_main.main(["--quick", "--scenarios", "shared-prefix", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert ("routing-quality check: shared-prefix 0.8x: infershift prefix-cache hit rate 66% vs "
            "sglang-cache-aware 94% (allowed gap 10%): FAILED") in err
    meta = json.loads((out / "meta.json").read_text())
    assert [c["ok"] for c in meta["checks"]] == [False]
    text = (out / "REPORT.md").read_text()
    assert "## Routing-quality check" in text and "66% vs sglang-cache-aware 94%" in text


def test_quick_run_exits_0_when_infershift_keeps_affinity(recorded, capsys):
    out = recorded(0.93)
    assert bench_main.main(["--quick", "--scenarios", "shared-prefix", "--out", str(out)]) == 0
    assert "infershift prefix-cache hit rate 93% vs sglang-cache-aware 94% (allowed gap 10%): ok" in (
        capsys.readouterr().out)
    # a run of other scenarios, or of other routers, into the same directory keeps the recorded check
    assert bench_main.main(["--quick", "--scenarios", "overload", "--out", str(out)]) == 0
    assert [c["ok"] for c in json.loads((out / "meta.json").read_text())["checks"]] == [True]
    assert bench_main.main(["--quick", "--scenarios", "shared-prefix", "--routers", "envoy-lr", "--out", str(out)]) == 0
    assert [c["ok"] for c in json.loads((out / "meta.json").read_text())["checks"]] == [True]


def test_a_subset_without_a_reference_is_not_checked_and_does_not_fail(recorded, capsys):
    out = recorded(0.5)
    assert bench_main.main(["--quick", "--scenarios", "shared-prefix", "--routers", "infershift,envoy-lr",
                            "--out", str(out)]) == 0
    assert "not checked" in capsys.readouterr().out


def test_recorded_commit_ignores_the_output_directory(tmp_path, monkeypatch):
    import subprocess

    def git(*a):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *a], cwd=tmp_path, check=True,
                       capture_output=True)

    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "meta.json").write_text("{}")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("init", "-q")
    git("add", ".")
    git("commit", "-q", "-m", "c")
    monkeypatch.setattr(runner, "REPO", tmp_path)
    head = runner.source_commit(tmp_path / "results")
    assert head and "+" not in head
    (tmp_path / "results" / "meta.json").write_text('{"runs": []}')  # a run updating committed results
    assert runner.source_commit(tmp_path / "results") == head
    assert runner.source_commit() == head + "+modified"
    (tmp_path / "code.py").write_text("x = 2\n")
    assert runner.source_commit(tmp_path / "results") == head + "+modified"
