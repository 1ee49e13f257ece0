"""Deliberately broken plugins: each keeps every invariant of the kit but one.

``GoodLoss`` is a small, correct materialised NT-Xent; every broken loss changes
exactly one thing about it. The same for the sampler and augmentation families.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from contrastive.functional import unit_rows
from contrastive.samplers import Sampler

Tensor = torch.Tensor


class GoodLoss(torch.nn.Module):
    """Two-view NT-Xent, materialised, with input checks: passes the whole kit."""

    normalize = True  # it L2-normalises (scale-safely), so the kit checks its scale invariance

    def __init__(self, temperature: float = 0.5) -> None:
        super().__init__()
        self.temperature = temperature

    def check(self, z1: Tensor, z2: Tensor) -> None:
        for z in (z1, z2):
            if z.dim() != 2 or not bool(torch.isfinite(z).all()):
                raise ValueError("views must be finite (B, D) tensors")
        if z1.shape != z2.shape:
            raise ValueError("views must have one shape")

    def logits(self, z1: Tensor, z2: Tensor) -> Tensor:
        z = torch.cat([z1, z2])
        z = unit_rows(z.float() if z.dtype in (torch.float16, torch.bfloat16) else z)
        return (z @ z.T / self.temperature).fill_diagonal_(float("-inf"))

    def per_anchor(self, z1: Tensor, z2: Tensor) -> Tensor:
        self.check(z1, z2)
        b = z1.shape[0]
        logits = self.logits(z1, z2)
        target = torch.cat([torch.arange(b, 2 * b), torch.arange(b)])
        return F.cross_entropy(logits, target, reduction="none")

    def forward(self, z1: Tensor, z2: Tensor) -> Tensor:
        return self.per_anchor(z1, z2).mean().to(z1.dtype)


class NotScalarLoss(GoodLoss):
    def forward(self, z1: Tensor, z2: Tensor) -> Tensor:
        return self.per_anchor(z1, z2).to(z1.dtype)


class OverflowsAtLowTemperature(GoodLoss):
    """Softmax written with exp/sum instead of log-sum-exp."""

    def per_anchor(self, z1: Tensor, z2: Tensor) -> Tensor:
        self.check(z1, z2)
        b = z1.shape[0]
        e = self.logits(z1, z2).exp()
        target = torch.cat([torch.arange(b, 2 * b), torch.arange(b)])
        return -torch.log(e[torch.arange(2 * b), target] / e.sum(dim=1))


class UnnormalisedLoss(GoodLoss):
    """Forgets to normalise and goes through exp/log: fine at unit norms, overflows at large ones."""

    def __init__(self) -> None:  # a fixed temperature, so only the norm check can catch it
        super().__init__(0.5)

    def logits(self, z1: Tensor, z2: Tensor) -> Tensor:
        z = (
            torch.cat([z1, z2]).float()
            if z1.dtype in (torch.float16, torch.bfloat16)
            else torch.cat([z1, z2])
        )
        return (z @ z.T / (1e3 * self.temperature)).exp().log().fill_diagonal_(float("-inf"))


class HalfPrecisionOverflow(GoodLoss):
    """Scales in the input dtype before normalising: fp16 overflows."""

    def forward(self, z1: Tensor, z2: Tensor) -> Tensor:
        return super().forward(z1 * 1e5, z2 * 1e5)


class HalfPrecisionZeroRowNaN(GoodLoss):
    """Normalises in the input dtype: fp16's eps (1e-12) underflows to 0, so a zero row is 0/0 = NaN."""

    def logits(self, z1: Tensor, z2: Tensor) -> Tensor:
        z = F.normalize(torch.cat([z1, z2]), dim=1).float()
        return (z @ z.T / self.temperature).fill_diagonal_(float("-inf"))


class ClaimsToNormalizeLoss(GoodLoss):
    """Says ``normalize = True`` but uses raw inner products: the logits overflow at large scales."""

    def logits(self, z1: Tensor, z2: Tensor) -> Tensor:
        z = torch.cat([z1, z2])
        z = z.float() if z.dtype in (torch.float16, torch.bfloat16) else z
        return (z @ z.T / self.temperature).fill_diagonal_(float("-inf"))


class PositionDependentLoss(GoodLoss):
    def forward(self, z1: Tensor, z2: Tensor) -> Tensor:
        return super().forward(z1, z2) + 0.01 * unit_rows(z1)[0, 0]  # scale invariant, not permutation


class _ScaledGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):  # type: ignore[override]
        return x.clone()

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        return 2 * grad


class WrongGradientLoss(GoodLoss):
    def forward(self, z1: Tensor, z2: Tensor) -> Tensor:
        return super().forward(_ScaledGradient.apply(z1), z2)


class DtypeChangingLoss(GoodLoss):
    """Always answers in float64."""

    def forward(self, z1: Tensor, z2: Tensor) -> Tensor:
        return self.per_anchor(z1, z2).mean().double()


class UncheckedLoss(GoodLoss):
    def check(self, z1: Tensor, z2: Tensor) -> None:
        pass

    def forward(self, z1: Tensor, z2: Tensor) -> Tensor:
        if z1.dim() != 2 or z1.shape != z2.shape:
            return (z1.sum() - z2.sum()).pow(2)  # silently accepts malformed views
        return super().forward(z1, z2)


class ForgetsItsStateLoss(GoodLoss):
    """Keeps a random scale outside its state_dict."""

    def __init__(self, temperature: float = 0.5) -> None:
        super().__init__(temperature)
        self.register_buffer("scale", 1.0 + torch.rand(()), persistent=False)

    def forward(self, z1: Tensor, z2: Tensor) -> Tensor:
        return super().forward(z1, z2) * self.scale.to(z1.dtype)


BROKEN_LOSSES = {
    NotScalarLoss: "returns a scalar",
    OverflowsAtLowTemperature: "finite value and gradients at temperature=0.001",
    UnnormalisedLoss: "finite value and gradients at norms x10000",
    HalfPrecisionOverflow: "half precision",
    HalfPrecisionZeroRowNaN: "a zero row in half precision is finite and close to float32",
    ClaimsToNormalizeLoss: "invariant to the input scale when normalize=True",
    PositionDependentLoss: "invariant to jointly permuting samples",
    WrongGradientLoss: "autograd gradients equal finite differences",
    DtypeChangingLoss: "device and dtype follow the input",
    UncheckedLoss: "clear error on malformed input",
    ForgetsItsStateLoss: "deep copy and state_dict round trip",
}


class GoodSampler(Sampler):
    """Uniform negatives through the protocol: passes the kit."""

    exponents = (1.0,)
    uniform_options: dict = {}

    def log_negative_term(self, stats, temperature):  # type: ignore[no-untyped-def]
        return stats.neg_lse_at(1.0)


class DrawsPositivesSampler(GoodSampler):
    def draw(self, similarities, positive_mask, k, generator=None, anchor_index=None):  # type: ignore[no-untyped-def]
        m, n = similarities.shape
        return torch.randint(0, n, (m, k), generator=generator)


class SkewedDrawSampler(GoodSampler):
    """Claims uniform weights but draws the hardest negative half the time."""

    def draw(self, similarities, positive_mask, k, generator=None, anchor_index=None):  # type: ignore[no-untyped-def]
        drawn = super().draw(similarities, positive_mask, k, generator)
        forbidden = positive_mask | torch.eye(similarities.shape[0], dtype=torch.bool)
        hardest = similarities.masked_fill(forbidden, float("-inf")).argmax(dim=1, keepdim=True)
        coin = torch.rand(drawn.shape, generator=generator) < 0.5
        return torch.where(coin, hardest.expand_as(drawn), drawn)


class NaNSampler(GoodSampler):
    def log_negative_term(self, stats, temperature):  # type: ignore[no-untyped-def]
        return stats.neg_lse_at(1.0) + torch.log(stats.neg_lse_at(1.0) - 1e9)


class FalselyUniformSampler(GoodSampler):
    def log_negative_term(self, stats, temperature):  # type: ignore[no-untyped-def]
        return stats.neg_lse_at(1.0) + 0.5


BROKEN_SAMPLERS = {
    DrawsPositivesSampler: "draw never returns a positive or the anchor",
    SkewedDrawSampler: "draws follow a distribution",
    NaNSampler: "finite inside nt_xent",
    FalselyUniformSampler: "equals the uniform sampler",
}


class GoodAugmentation(torch.nn.Module):
    """Seeded brightness scaling of images, clipped to [0, 1]: passes the kit."""

    input_kind = "images"

    def forward(self, x: Tensor, generator: object = None) -> Tensor:
        g = torch.Generator().manual_seed(generator) if isinstance(generator, int) else generator
        if x.dim() != 4:
            raise ValueError("x must be (B, C, H, W)")
        factor = torch.rand(x.shape[0], 1, 1, 1, generator=g, dtype=torch.float64).to(x.dtype)
        return (x * (0.5 + factor)).clamp(0, 1)

    def views(self, x: Tensor, n: int = 2, generator: object = None) -> list[Tensor]:
        g = torch.Generator().manual_seed(generator) if isinstance(generator, int) else generator
        return [self(x, g) for _ in range(n)]


class ShapeChangingAugmentation(GoodAugmentation):
    def forward(self, x: Tensor, generator: object = None) -> Tensor:
        return super().forward(x, generator)[..., :-1]


class OutOfRangeAugmentation(GoodAugmentation):
    def forward(self, x: Tensor, generator: object = None) -> Tensor:
        return super().forward(x, generator) * 2


class InPlaceAugmentation(GoodAugmentation):
    def forward(self, x: Tensor, generator: object = None) -> Tensor:
        return x.mul_(0.5)


class UnseededAugmentation(GoodAugmentation):
    def forward(self, x: Tensor, generator: object = None) -> Tensor:
        return super().forward(x, None)


BROKEN_AUGMENTATIONS = {
    ShapeChangingAugmentation: "shape, dtype, device and range kept",
    OutOfRangeAugmentation: "shape, dtype, device and range kept",
    InPlaceAugmentation: "shape, dtype, device and range kept",
    UnseededAugmentation: "reproducible under a seed",
}
