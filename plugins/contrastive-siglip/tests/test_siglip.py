"""SigLIP plugin: equals the materialised definition, conforms to the kit, found through its entry point."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from contrastive_siglip import SigLipLoss, siglip_loss

import contrastive


def materialised(x: torch.Tensor, y: torch.Tensor, t: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The paper's definition with the whole B x B logit matrix."""
    x, y = F.normalize(x, dim=1), F.normalize(y, dim=1)
    logits = t * x @ y.T + b
    z = 2 * torch.eye(x.shape[0], dtype=x.dtype) - 1
    return -F.logsigmoid(z * logits).sum() / x.shape[0]


def test_tiled_loss_and_gradients_equal_the_materialised_definition() -> None:
    g = torch.Generator().manual_seed(0)
    for b, d, block in [(7, 5, 3), (16, 4, 16), (9, 3, 1), (33, 8, 8)]:
        x = torch.randn(b, d, generator=g, dtype=torch.float64, requires_grad=True)
        y = torch.randn(b, d, generator=g, dtype=torch.float64, requires_grad=True)
        t = torch.tensor(7.5, dtype=torch.float64, requires_grad=True)
        bias = torch.tensor(-3.0, dtype=torch.float64, requires_grad=True)
        ours = siglip_loss(x, y, t, bias, block_size=block)
        grads = torch.autograd.grad(ours, (x, y, t, bias))
        ref = materialised(x, y, t, bias)
        ref_grads = torch.autograd.grad(ref, (x, y, t, bias))
        assert torch.allclose(ours, ref, rtol=1e-12, atol=1e-12)
        for a, r in zip(grads, ref_grads, strict=True):
            assert torch.allclose(a, r, rtol=1e-10, atol=1e-12)


def test_learnable_scale_and_bias_get_gradients() -> None:
    loss = SigLipLoss()
    loss(torch.randn(6, 4), torch.randn(6, 4)).backward()
    assert loss.log_logit_scale.grad is not None and loss.log_logit_scale.grad != 0
    assert loss.logit_bias.grad is not None and loss.logit_bias.grad != 0


def test_registered_only_through_its_entry_point_and_conforms(contrastive_conformance) -> None:  # noqa: ANN001
    record = next(p for p in contrastive.plugins() if p.name == "siglip")
    assert record.ok and not record.builtin and record.distribution == "contrastive-siglip"
    assert record.losses == ("siglip",)
    assert isinstance(contrastive.get_loss("siglip"), SigLipLoss)
    contrastive_conformance.check_loss("siglip")
