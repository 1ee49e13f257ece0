"""The torchrun trainer is global-batch training: 2 gloo ranks equal one process, batch norm included."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from contrastive.train.syncbn import GlobalBatchNorm, sync_batch_norm

pytest.importorskip("sklearn", reason="--data digits needs the train extra (scikit-learn)")
# SGD, not Adam: Adam divides each gradient by its own magnitude, so parameters whose gradient is
# zero up to rounding (a conv bias right before batch norm) take full-size steps in random
# directions; with SGD every parameter, those biases included, must agree
ARGS = ["--data", "digits", "--epochs", "1", "--batch-size", "256", "--probe-every", "1", "--quiet",
        "--optimizer", "sgd"]


def _train(out: Path, ranks: int) -> subprocess.CompletedProcess[str]:
    launcher = (
        ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks)] if ranks > 1 else []
    )
    return subprocess.run(
        [sys.executable, *launcher, "-m", "contrastive", "train", *ARGS, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def test_two_gloo_ranks_train_the_cnn_like_one_process_on_the_global_batch(tmp_path: Path) -> None:
    for name, ranks in (("one", 1), ("two", 2)):
        result = _train(tmp_path / name, ranks)
        assert result.returncode == 0, result.stderr[-3000:]
    one, two = (
        json.loads((tmp_path / n / "metrics.jsonl").read_text().splitlines()[0]) for n in ("one", "two")
    )
    # per-rank batch norm differed in the 4th digit (3.45359 against 3.45321)
    assert two["loss"] == pytest.approx(one["loss"], abs=2e-5)
    a, b = (torch.load(tmp_path / n / "checkpoint.pt", weights_only=True)["model"] for n in ("one", "two"))
    assert a.keys() == b.keys()
    for key in a:  # the same steps: weights and running statistics
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-5, msg=key)


def test_sync_batch_norm_swaps_every_batch_norm_and_keeps_the_state() -> None:
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3),
        torch.nn.BatchNorm2d(4),
        torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3)),
    )
    model[1].running_mean.fill_(0.5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    swapped = sync_batch_norm(model, torch.device("cpu"))
    assert isinstance(swapped[1], GlobalBatchNorm) and isinstance(swapped[2][2], GlobalBatchNorm)
    after = swapped.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    x = torch.randn(5, 1, 3, 3)
    reference = torch.nn.BatchNorm2d(4)
    reference.load_state_dict(before := {k[2:]: v for k, v in before.items() if k.startswith("1.")})
    h = swapped[0](x)
    # without a process group it is plain batch norm
    torch.testing.assert_close(swapped[1](h), reference(h))
