"""The CPU loss benchmark runs end to end in its smoke mode and writes its tables."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_losses.py"


def test_the_loss_benchmark_smoke_run_times_ours_against_the_materialised_loss(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("bench_losses", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "losses"
    argv = ["--smoke", "--families", "nt_xent", "hard", "--implementations", "ours", "torch",
            "--threads", "1", "--output", str(out)]
    assert bench.main(argv) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    cells = {(r["family"], r["implementation"], r["size"]) for r in report["timing"] if "seconds" in r}
    assert cells == {(f, i, s) for f in ("nt_xent", "hard") for i in ("ours", "torch") for s in (16, 64)}
    torch_rows = [r for r in report["timing"] if r["implementation"] == "torch"]
    assert all(r["ours_over_this"] > 0 for r in torch_rows)
    assert "## nt_xent" in out.with_suffix(".md").read_text()


def test_the_materialised_peers_equal_our_losses() -> None:
    spec = importlib.util.spec_from_file_location("bench_losses", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    import torch

    import contrastive as cl

    z1, z2, y = bench.inputs("supcon", 24)
    assert torch.allclose(bench.materialised_nt_xent(z1, z2), cl.get_loss("nt_xent")(z1, z2), atol=1e-5)
    assert torch.allclose(bench.materialised_supcon(z1, z2, y), cl.get_loss("supcon")(z1, z2, labels=y), atol=1e-5)
    hard = cl.get_loss("nt_xent", sampler=cl.get_sampler("hard", beta=1.0, tau_plus=0.1))
    assert torch.allclose(bench.materialised_hard(z1, z2), hard(z1, z2), atol=1e-5)


def test_the_table_gives_the_time_of_ours_at_sizes_measured_only_by_a_memory_cell() -> None:
    spec = importlib.util.spec_from_file_location("bench_losses", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    report = json.loads((SCRIPT.parent / "results" / "losses.json").read_text())
    report["memory"] = [m for m in report["memory"] if m["size"] != 262144]  # one large size left
    text = bench.markdown(report)
    large = next(m for m in report["memory"] if m["size"] == 65536)
    bound = bench.bound_seconds("nt_xent", 65536, report["rates"])
    assert f"| 65,536 | ours | {large['seconds_single']:,.1f} | {bound:,.1f} |" in text
    assert "| 16,384 | ours |" not in text  # a timed size keeps its row in the timing table only
