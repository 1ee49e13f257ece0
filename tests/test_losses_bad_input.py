"""Bad input to the losses is a ValueError that names the argument and its value."""

from __future__ import annotations

import pytest
import torch

from contrastive.functional import clip, infonce, nt_xent, supcon
from contrastive.losses.clip import ClipLoss
from contrastive.losses.infonce import InfoNCELoss
from contrastive.losses.nt_xent import NTXentLoss
from contrastive.losses.supcon import SupConLoss
from contrastive.samplers import MemoryQueue
from tests.strategies import gaussian

Z1, Z2 = gaussian((4, 3), 0), gaussian((4, 3), 1)


def _with(value: float, row: int = 1) -> torch.Tensor:
    z = Z1.clone()
    z[row, 0] = value
    return z


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: nt_xent(Z1, gaussian((4, 2), 2)), r"views\[1\] of shape \(4, 2\)"),
        (lambda: nt_xent(Z1, gaussian((5, 3), 2)), "same shape|one shape"),
        (lambda: nt_xent(Z1, Z2.float()), "dtype"),
        (lambda: nt_xent(Z1), "at least two views"),
        (lambda: supcon(Z1), "single view needs labels"),
        (lambda: nt_xent(Z1[:0], Z2[:0]), "at least one sample"),
        (lambda: nt_xent(Z1[0], Z2[0]), r"views\[0\] must be a 2-D"),
        (lambda: nt_xent(Z1, Z2, temperature=0.0), "temperature must be finite and > 0, got 0.0"),
        (lambda: nt_xent(Z1, Z2, temperature=-1.0), "temperature"),
        (lambda: nt_xent(Z1, Z2, temperature=torch.tensor(-0.5)), "temperature"),
        (lambda: nt_xent(_with(float("nan")), Z2), r"views\[0\] contains 1 NaN or Inf"),
        (lambda: nt_xent(Z1, _with(float("inf"))), r"views\[1\] contains 1 NaN or Inf"),
        (lambda: supcon(Z1, Z2, labels=torch.arange(3)), r"labels must have shape \(4,\).*\(3,\)"),
        (lambda: supcon(Z1, Z2, labels=torch.zeros(4)), "labels must have an integer dtype.*float32"),
        (lambda: supcon(Z1, Z2, labels=torch.ones(4, dtype=torch.bool)), "integer dtype.*bool"),
        (lambda: supcon(Z1, Z2, labels=[0, 1, 2, 3]), "labels must be a 1-D integer torch.Tensor"),
        (lambda: supcon(Z1, labels=torch.arange(4), no_positive="raise"), "no anchor has a positive"),
        (lambda: supcon(Z1, labels=torch.arange(4), no_positive="skip"), "no_positive"),
        (lambda: supcon(Z1, no_positive="raise", validate_args=False), "validate_args"),
        (lambda: supcon(Z1, Z2, contrast_mode="two"), "contrast_mode must be one of"),
        (lambda: supcon(Z1, Z2, base_temperature=0.0), "base_temperature"),
        (lambda: nt_xent(Z1, Z2, backend="gpu"), "backend must be one of"),
        (lambda: nt_xent(Z1, Z2, block_size=-3), "block_size"),
        (lambda: nt_xent(Z1, Z2, sampler="nope"), "nope"),
        (
            lambda: nt_xent(Z1, Z2, sampler="debiased", negatives=gaussian((2, 5), 3)),
            "negatives must have dimension 3",
        ),
        (lambda: infonce(Z1, Z2[:3]), "query and key must have one shape"),
        (lambda: infonce(Z1, Z2, gaussian((2, 3), 4).fill_(float("nan"))), "negatives contains"),
        (lambda: infonce(Z1[:0], Z2[:0]), "at least one sample"),
        (lambda: infonce(Z1, Z2, MemoryQueue(4, 3), in_batch_negatives=False), "needs negatives"),
        (lambda: clip(Z1, Z2, logit_scale=float("nan")), "logit_scale"),
        (lambda: clip(Z1, Z2, logit_scale=1e3), "logit_scale"),
        (lambda: clip(Z1, Z2[:2]), "image_features and text_features"),
        (lambda: clip(Z1, Z2, labels=torch.arange(5)), "labels"),
    ],
)
def test_bad_input_raises_value_error_naming_it(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize(
    "factory, match",
    [
        (lambda: NTXentLoss(temperature=0.0), "temperature"),
        (lambda: SupConLoss(contrast_mode="both"), "contrast_mode"),
        (lambda: InfoNCELoss(backend="cuda"), "backend"),
        (lambda: ClipLoss(logit_scale=float("inf")), "logit_scale"),
        (lambda: NTXentLoss(sampler="hard-ish"), "hard-ish"),
        (lambda: MemoryQueue(0, 3), "size"),
        (lambda: MemoryQueue(3, 3, init="zeros"), "init"),
    ],
)
def test_bad_options_raise_value_error_at_construction(factory, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        factory()


def test_triton_backend_on_cpu_without_the_interpreter_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("triton")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    z = gaussian((4, 3), 0, dtype=torch.float32)
    with pytest.raises(ValueError, match="TRITON_INTERPRET"):
        NTXentLoss(backend="triton")(z, z)


def test_queue_rejects_keys_of_another_dimension() -> None:
    with pytest.raises(ValueError, match="dimension 3"):
        MemoryQueue(4, 3).enqueue(gaussian((2, 5), 0))


def test_nt_xent_refuses_labels_and_points_to_supcon() -> None:
    import contrastive

    z = torch.randn(4, 3)
    with pytest.raises(ValueError, match="labels.*supcon"):
        contrastive.get_loss("nt_xent")(z, z, labels=torch.arange(4))
    assert torch.isfinite(contrastive.get_loss("nt_xent")(z, z, labels=None))
