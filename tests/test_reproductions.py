"""The paper reproductions in ``benchmarks/reproduce_*.py``: each runs end to end in ``--smoke`` mode, and the
closed forms the scripts compare against are right."""

from __future__ import annotations

import importlib
import json
import math
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch

import contrastive as cl

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
pytest.importorskip("sklearn")  # the digits reproductions use the trainer's data


def script(name: str) -> ModuleType:
    """Import ``benchmarks/<name>.py`` (with ``benchmarks/`` on the path for its shared helpers)."""
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    return importlib.import_module(name)


def smoke(name: str, out: Path) -> tuple[dict[str, Any], str]:
    """Run a reproduction with ``--smoke`` into ``out``; return its JSON report and its markdown."""
    module = script(name)
    report = module.main(["--smoke", "--out", str(out)])
    stem = module.NAME
    on_disk = json.loads((out / f"{stem}.json").read_text())
    assert on_disk["config"]["smoke"] is True
    assert on_disk["machine"]["commit"]
    assert isinstance(on_disk["machine"]["load_average"], list)
    text = (out / f"{stem}.md").read_text()
    assert "| quantity | paper | ours |" in text or "paper (STL-10)" in text
    if importlib.util.find_spec("matplotlib") is not None:
        assert (out / f"{stem}.png").stat().st_size > 0
    return report, text


def test_spearman_is_one_for_monotone_minus_one_for_reversed_and_handles_ties() -> None:
    common = script("_repro_common")
    assert common.spearman([1, 2, 3, 4], [10, 20, 25, 100]) == pytest.approx(1.0)
    assert common.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert common.spearman([1, 1, 2], [0, 0, 5]) == pytest.approx(1.0)


def test_wang_isola_closed_form_matches_the_papers_special_cases_and_the_smoke_run(tmp_path: Path) -> None:
    module = script("reproduce_wang_isola")
    assert module.uniformity_closed_form(2) == pytest.approx(-1.5750, abs=5e-5)
    assert module.uniformity_closed_form(3) == pytest.approx(math.log((1 - math.exp(-8)) / 8), abs=1e-12)
    report, _ = smoke("reproduce_wang_isola", tmp_path)
    for rec in report["closed_form"].values():
        assert rec["measured"]["mean"] == pytest.approx(rec["closed_form"], abs=0.05)
    assert {r["step"] for r in report["training"]["runs"]} == set(report["config"]["checkpoints"])


def test_graf_lower_bound_is_supcon_at_class_collapse_onto_a_regular_simplex() -> None:
    module = script("reproduce_graf")
    k, m, tau = 4, 3, 0.5
    vertices = torch.eye(k, dtype=torch.float64) - 1.0 / k  # a regular simplex in R^k, centred
    labels = torch.arange(k).repeat_interleave(m)
    z = vertices[labels]
    value = cl.get_loss("supcon", temperature=tau)(z, z.clone(), labels=labels).item()
    assert value == pytest.approx(module.supcon_lower_bound(k, m, tau), abs=1e-10)
    # any other configuration costs more: perturb the collapsed embedding
    noisy = z + 0.05 * torch.randn(z.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert cl.get_loss("supcon", temperature=tau)(noisy, z, labels=labels).item() > value


def test_graf_smoke_run_tracks_every_metric(tmp_path: Path) -> None:
    report, _ = smoke("reproduce_graf", tmp_path)
    for per_loss in report["results"].values():
        sup = per_loss["supcon"]
        assert sup[-1]["supcon_minus_bound"]["mean"] < sup[0]["supcon_minus_bound"]["mean"]
        assert all(r["supcon_minus_bound"]["mean"] >= -1e-9 for r in sup)  # a lower bound


def test_haochen_population_loss_is_minimal_at_the_scaled_top_eigenvectors() -> None:
    module = script("reproduce_haochen")
    weights, _ = module.augmentation_graph(3, 5, 0.1, seed=0)
    values, vectors = module.spectrum(weights, 3)
    table = vectors * np.sqrt(values) / np.sqrt(weights.sum(axis=1))[:, None]  # F = D^{-1/2} V Λ^{1/2}
    assert module.population_loss(table, weights) == pytest.approx(-float((values**2).sum()), abs=1e-12)
    rotated = table @ np.linalg.qr(np.random.default_rng(1).standard_normal((3, 3)))[0]
    assert module.population_loss(rotated, weights) == pytest.approx(-float((values**2).sum()), abs=1e-12)
    assert module.population_loss(table * 1.1, weights) > module.population_loss(table, weights)


def test_haochen_smoke_run_moves_towards_the_eigenvectors(tmp_path: Path) -> None:
    report, _ = smoke("reproduce_haochen", tmp_path)
    curve = report["results"]["curve"]
    assert curve[-1]["subspace_distance"]["mean"] < curve[0]["subspace_distance"]["mean"]


def test_ji_downstream_smoke_run_puts_the_oracle_below_pca(tmp_path: Path) -> None:
    report, text = smoke("reproduce_ji_downstream", tmp_path)
    res = report["results"]
    last = str(report["config"]["ns"][-1])
    assert res["oracle"][last]["mean"] < res["pca"][last]["mean"]
    assert "cl_closed_form" in text


def test_ji_supcon_smoke_run_reports_both_tasks_for_every_method(tmp_path: Path) -> None:
    report, _ = smoke("reproduce_ji_supcon", tmp_path)
    ms = {str(m) for m in report["config"]["ms"]}
    for task in ("in_domain", "transfer"):
        for method in ("self-supervised", "supcon", "mix"):
            assert set(report["results"][task][method]) == ms
            assert all(0 <= v["mean"] <= 1 for v in report["results"][task][method].values())


def test_robinson_hard_sampler_at_beta_zero_is_the_debiased_sampler_the_script_reuses() -> None:
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(16, 8, generator=g), torch.randn(16, 8, generator=g)
    hard = cl.get_loss("nt_xent", temperature=0.5, sampler=cl.get_sampler("hard", beta=0.0, tau_plus=0.1))
    debiased = cl.get_loss("nt_xent", temperature=0.5, sampler=cl.get_sampler("debiased", tau_plus=0.1))
    torch.testing.assert_close(hard(z1, z2), debiased(z1, z2))


def test_robinson_smoke_run_covers_both_sweeps(tmp_path: Path) -> None:
    report, text = smoke("reproduce_robinson", tmp_path)
    assert set(report["results"]) == {f"beta={b:g}" for b in report["config"]["betas"]} | {
        "tau_plus=0",
        "tau_plus=0.05",
        "tau_plus=0.1",
    }
    assert "87.44" in text and "81.85" in text  # the papers' figures are printed beside ours


def test_simclr_smoke_run_covers_batch_sizes_and_queue_sizes(tmp_path: Path) -> None:
    report, _ = smoke("reproduce_simclr_batch", tmp_path)
    cfg, res = report["config"], report["results"]
    assert set(res["queue"]) == {str(s) for s in cfg["queue_sizes"]}
    for per in res["batch_size"].values():
        assert set(per) == {str(b) for b in cfg["batch_sizes"]}
