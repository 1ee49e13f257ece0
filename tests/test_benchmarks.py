"""The GPU benchmark script runs end to end (``--smoke``: tiny sizes through Triton's interpreter)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

pytest.importorskip("triton")
SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_triton.py"


def load_script():  # noqa: ANN201 - a module
    """Import ``benchmarks/bench_triton.py`` as a module."""
    spec = importlib.util.spec_from_file_location("bench_triton", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_the_triton_benchmark_smoke_run_records_every_loss_method_and_tile_setting(tmp_path: Path) -> None:
    bench = load_script()
    argv = [
        "--smoke",
        "--losses",
        "clip",
        "nt_xent",
        "supcon",
        "--dtypes",
        "fp32",
        "--tiles",
        "default",
        "columns=atomic",
        "--sizes",
        "48",
        "--dims",
        "20",
        "--out",
        str(tmp_path),
    ]
    assert bench.main(argv) == 0
    report = json.loads((tmp_path / "triton.json").read_text())
    seen = {(r["loss"], r["method"], r["tiles"]): r["status"] for r in report["records"]}
    assert seen == {
        ("clip", "contrastive-triton", "default"): "ok",
        ("clip", "contrastive-triton", "columns=atomic"): "ok",
        ("clip", "torch-materialised", "-"): "ok",
        ("nt_xent", "contrastive-triton", "default"): "ok",
        ("nt_xent", "contrastive-triton", "columns=atomic"): "ok",
        ("nt_xent", "torch-materialised", "-"): "ok",
        ("supcon", "contrastive-triton", "default"): "ok",
        ("supcon", "contrastive-triton", "columns=atomic"): "ok",
    }
    assert report["environment"]["interpreted"] is True
    assert "INTERPRETED" in (tmp_path / "triton.md").read_text()


def test_model_flops_count_the_square_of_the_anchor_count() -> None:
    bench = load_script()
    assert bench.model_flops("clip", 1000, 256) == 6.0 * 1000 * 1000 * 256
    assert bench.model_flops("nt_xent", 1000, 256) == 6.0 * 2000 * 2000 * 256
