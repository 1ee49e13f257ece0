"""The gradient-caching benchmark runs end to end (``--smoke``: two tiny sizes in-process, in seconds)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_gradcache.py"


def load_script():  # noqa: ANN201 - a module
    """Import ``benchmarks/bench_gradcache.py`` as a module."""
    spec = importlib.util.spec_from_file_location("bench_gradcache", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_smoke_run_measures_both_modes_at_each_size_with_the_same_gradients(tmp_path: Path) -> None:
    bench = load_script()
    assert bench.main(["--smoke", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "gradcache.json").read_text())
    rows = {(r["mode"], r["size"]): r for r in report["results"]}
    assert set(rows) == {(m, s) for m in ("plain", "cached") for s in (64, 160)}
    for size in (64, 160):
        plain, cached = rows[("plain", size)], rows[("cached", size)]
        assert cached["chunk_size"] == 48 and cached["forward_cpu_seconds"] > 0
        assert abs(cached["loss"] - plain["loss"]) < 1e-5 * abs(plain["loss"])
        assert abs(cached["grad_norm"] - plain["grad_norm"]) < 1e-4 * plain["grad_norm"]
    table = (tmp_path / "gradcache.md").read_text()
    assert "| 160 |" in table and "Largest B within 4 GiB" in table and report["machine"]["commit"] in table
    assert (tmp_path / "gradcache.png").stat().st_size > 0


def test_the_budget_verdict_takes_the_largest_size_that_ran_within_it() -> None:
    bench = load_script()
    rows = [
        {"mode": "plain", "size": 256, "peak_rss_bytes": 1 << 30},
        {"mode": "plain", "size": 512, "peak_rss_bytes": 5 << 30},
        {"mode": "plain", "size": 1024, "error": "not run (over budget at 512)"},
        {"mode": "cached", "size": 1024, "peak_rss_bytes": 2 << 30},
    ]
    assert bench.largest_within(rows, "plain", 4 << 30) == 256
    assert bench.largest_within(rows, "cached", 4 << 30) == 1024
    assert bench.largest_within(rows, "cached", 1 << 30) is None
