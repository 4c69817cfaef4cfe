"""Pairing and statistics of the shadow report on recorded answer lines (testdata/answers.jsonl:
the pickers' format, with other log lines, a `kubectl logs --prefix` prefix, an unpaired answer on
each side, a shadow error, a rejection, different lengths and texts, a duplicate), and the CLI."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from infershift.shadow import compare
from infershift.shadow.__main__ import main

LOG = Path(__file__).resolve().parent / "testdata" / "answers.jsonl"


@pytest.fixture(scope="module")
def stats():
    return compare.compare(compare.pair(compare.read([LOG])))


def test_lines_are_read_and_paired_by_request_id():
    answers = compare.read([LOG])
    assert len(answers) == 12  # the other lines skipped, the prefixed one read
    p = compare.pair(answers)
    assert sorted(x.primary.request_id for x in p.pairs) == ["r1", "r2", "r3", "r6"]
    assert sorted(a.request_id for a in p.primaries) == ["r4", "r7"]
    assert [a.request_id for a in p.shadows] == ["r5"]
    assert p.duplicates == 1
    r1 = next(x for x in p.pairs if x.primary.request_id == "r1")
    assert r1.primary.text == "the cat sat on the mat" and r1.primary.tokens == 10  # the first one is kept
    assert r1.primary.pool == "llama2-pool" and r1.shadow.pool == "llama2-candidate-pool"


def test_per_target_model(stats):
    assert list(stats) == ["(rejected)", "sql-lora", "tweet-summary", compare.ALL]
    sql = stats["sql-lora"]
    assert (sql.pairs, sql.compared, sql.unpaired_primary, sql.unpaired_shadow) == (3, 2, 1, 1)
    assert (sql.primary_answers, sql.primary_errors, sql.shadow_answers, sql.shadow_errors) == (4, 0, 4, 1)
    assert sql.primary_error_rate == 0 and sql.shadow_error_rate == 0.25
    # deltas over the two pairs both answered 200: TTFT +0.05 and +0.2 s, e2e +0.2 and +0.2 s
    assert sql.ttft_delta(0.5) == pytest.approx(0.125) and sql.ttft_delta(0.9) == pytest.approx(0.185)
    assert sql.e2e_delta(0.5) == pytest.approx(0.2) and sql.e2e_delta(0.9) == pytest.approx(0.2)
    assert sql.length_ratio == pytest.approx((1.2 + 0.5) / 2)  # 12/10 and 5/10
    assert sql.exact_match == 0.5
    assert sql.overlap == pytest.approx((1 + 2 / 6) / 2)  # {a b c d} vs {a b x y}: 2 shared of 6
    tweet = stats["tweet-summary"]
    assert (tweet.pairs, tweet.exact_match, tweet.overlap, tweet.length_ratio) == (1, 1.0, 1.0, 1.0)
    assert tweet.ttft_delta(0.5) == pytest.approx(-0.1) and tweet.e2e_delta(0.5) == pytest.approx(-0.2)
    rejected = stats["(rejected)"]
    assert (rejected.unpaired_primary, rejected.primary_error_rate, rejected.pairs) == (1, 1.0, 0)
    total = stats[compare.ALL]
    assert (total.pairs, total.compared, total.unpaired_primary, total.unpaired_shadow) == (4, 3, 2, 1)
    assert total.primary_error_rate == pytest.approx(1 / 6) and total.shadow_error_rate == pytest.approx(1 / 5)
    assert total.exact_match == pytest.approx(2 / 3)


def test_overlap_and_quantiles():
    assert compare.jaccard("The cat sat.", "sat the CAT") == 1.0  # words, any order, any case
    assert compare.jaccard("", "") == 1.0 and compare.jaccard("a", "") == 0.0
    assert compare.jaccard("a b", "b c") == pytest.approx(1 / 3)
    assert compare.quantile([], 0.5) is None
    assert compare.quantile([3.0, 1.0, 2.0], 0.5) == 2.0 and compare.quantile([0.0, 10.0], 0.9) == 9.0


def test_gate(stats):
    gate = compare.Gate(min_exact_match=0.9, max_ttft_delta_p90=0.1, max_error_rate_delta=0.1)
    failed = gate.check(stats["sql-lora"])
    assert any(f.startswith("exact match 0.5 <") for f in failed)
    assert any(f.startswith("TTFT delta p90 0.185 >") for f in failed)
    assert any(f.startswith("error rate delta 0.25 >") for f in failed)
    assert gate.check(stats["tweet-summary"]) == []
    assert compare.Gate(min_pairs=2).check(stats["tweet-summary"]) == ["1 compared pairs < 2"]
    assert compare.Gate(max_unpaired_share=0.2).check(stats["sql-lora"]) == ["unpaired share 0.4 > 0.2"]


def test_cli_writes_the_report_and_gates(tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["report", "--logs", str(LOG), "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert "| sql-lora | 3 | 1/1 | 0.0%/25.0% | +125.0/+185.0 | +200.0/+200.0 | 0.85 | 50.0% | 0.67 |" in md
    assert (out / "shadow.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((out / "summary.json").read_text())
    assert {m["model"] for m in summary["models"]} == {"(rejected)", "sql-lora", "tweet-summary", compare.ALL}
    assert main(["report", "--logs", str(LOG), "--min-exact-match", "0.9"]) == 1
    assert "gate failed for sql-lora" in capsys.readouterr().out
    # on the totals only: 2 of 3 compared pairs identical
    assert main(["report", "--logs", str(LOG), "--min-exact-match", "0.6", "--gate-on", "all"]) == 0
    assert main(["report", "--logs", str(tmp_path / "missing.jsonl")]) == 2
