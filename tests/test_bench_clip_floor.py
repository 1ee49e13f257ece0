"""The CLIP floor benchmark: both floors run the same products, and the smoke run writes its table."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_clip_floor.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_clip_floor", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_the_recompute_floor_forms_the_products_of_the_materialised_floor_tile_by_tile() -> None:
    bench = _bench()
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(50, 8, generator=g, dtype=torch.float64), torch.randn(50, 8, generator=g, dtype=torch.float64)
    tiled, whole = bench.recompute_floor(x, y, 16), bench.materialised_floor(x, y)  # 16 does not divide 50
    for a, b in zip(tiled, whole, strict=True):
        torch.testing.assert_close(a, b)


def test_the_clip_floor_smoke_run_writes_every_column(tmp_path: Path) -> None:
    out = tmp_path / "clip_floor"
    assert _bench().main(["--smoke", "--threads", "1", "--output", str(out)]) == 0
    row = json.loads(out.with_suffix(".json").read_text())["rows"][0]
    assert row["size"] == 256 and all(row[k] > 0 for k in ("ours", "recompute floor", "materialised floor"))
    assert "| 256 |" in out.with_suffix(".md").read_text()
