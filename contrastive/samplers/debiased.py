"""The debiased sampler of Chuang et al. (2020): corrects the negative sum for false negatives."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch

from contrastive._validation import check_unit_interval
from contrastive.engine import RowStats
from contrastive.engine.explog import exp, log
from contrastive.hookspecs import hookimpl
from contrastive.samplers.base import Sampler

Tensor = torch.Tensor


def debiased_log_negative(
    log_negative_sum: Tensor, stats: RowStats, temperature: float | Tensor, tau_plus: float
) -> Tensor:
    r"""Return :math:`\log \max\big((S - \tau^+ |N|\,\bar p)/(1-\tau^+),\ |N| e^{-1/\tau}\big)` per anchor.

    ``log_negative_sum`` is :math:`\log S`; :math:`\bar p` is the mean of the positives'
    exponentials. Computed in log space so that it is finite wherever the result is.
    With ``tau_plus == 0`` it returns ``log_negative_sum`` unchanged (no correction, no clamp).
    """
    if tau_plus == 0.0:
        return log_negative_sum
    dtype = log_negative_sum.dtype
    known = stats.known_counts
    if known is not None and known[1] > 0:  # the same counts for every anchor, known in Python
        log_neg, log_pos = math.log(known[1]), math.log(max(known[0], 1))
    else:  # one log call for both (on the CPU each transcendental call costs a thread wake-up)
        log_neg, log_pos = log(torch.stack([stats.neg_count, stats.pos_count.clamp(min=1)]).to(dtype)).unbind(0)
    log_correction = stats.pos_lse + (log_neg - log_pos + math.log(tau_plus))  # log(τ⁺ |N| p̄)
    inv_tau = 1.0 / temperature
    floor = log_neg - (inv_tau.to(dtype) if isinstance(inv_tau, Tensor) else inv_tau)
    return DebiasedLog.apply(log_negative_sum, log_correction, floor, -math.log1p(-tau_plus))


class DebiasedLog(torch.autograd.Function):
    r"""``max(log(e^L - e^C) + c, floor)`` per anchor, with its gradient written out.

    ``forward(L, C, floor, c)``: ``L``, ``C`` ``(n,)``; ``floor`` a float or a tensor that
    broadcasts to ``(n,)``; ``c`` a float. ``log(e^L - e^C) = L + log(1 - e^{C-L})``; where it
    loses to the floor, or ``C >= L`` (then ``1 - e^{C-L} <= 0`` and the comparison with the floor
    is False), the floor is taken. The derivatives of the kept branch are ``1/u`` for ``L`` and
    ``1 - 1/u`` for ``C`` (``u = 1 - e^{C-L}``). About half the operations of the same formula
    in autograd, where each branch needs a ``where`` with a finite dummy (a small loss on the
    CPU costs its operation count).
    """

    @staticmethod
    def forward(ctx, log_sum, log_correction, floor, shift):  # type: ignore[override]  # noqa: ANN001, ANN205
        """Form the candidate ``L + log(1 - e^{C-L}) + c`` and keep it where it beats the floor."""
        u = torch.rsub(exp(log_correction - log_sum), 1.0)
        candidate = log(u).add_(log_sum).add_(shift)
        kept = candidate > floor
        ctx.save_for_backward(u, kept)
        ctx.floor_shape = floor.shape if isinstance(floor, Tensor) else None
        return torch.where(kept, candidate, floor)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]  # noqa: ANN001, ANN205
        """``dL = g/u``, ``dC = g - g/u`` on the kept rows; the floor takes ``g`` elsewhere."""
        u, kept = ctx.saved_tensors
        zero = torch.zeros((), dtype=grad.dtype, device=grad.device)
        on_kept = torch.where(kept, grad, zero)
        grad_sum = torch.where(kept, grad / u, zero)
        grad_floor = None
        if ctx.needs_input_grad[2]:
            grad_floor = torch.where(kept, zero, grad).sum_to_size(ctx.floor_shape)
        return grad_sum, on_kept - grad_sum, grad_floor, None


class DebiasedSampler(Sampler):
    r"""Debiased negatives (Chuang et al., 2020, "Debiased Contrastive Learning", NeurIPS).

    With class prior :math:`\tau^+` (``tau_plus``) of a negative secretly being a positive,

    .. math::

        N_g(i) = \max\Big(\frac{\sum_{j\in N(i)} e^{s_{ij}} - \tau^+ |N(i)|\, \bar p_i}{1-\tau^+},
                          \ |N(i)|\, e^{-1/\tau}\Big),
        \qquad \bar p_i = \frac{1}{|P(i)|}\sum_{p\in P(i)} e^{s_{ip}}.

    The clamp :math:`e^{-1/\tau}` is the smallest :math:`e^{s}` for unit-norm embeddings
    (cosine -1), so it assumes ``normalize=True``. ``tau_plus=0`` is the uniform sampler.
    ``draw`` picks negatives uniformly: debiasing corrects the estimate, not the draw.
    """

    uniform_options: ClassVar[dict[str, Any] | None] = {"tau_plus": 0.0}

    exponents = (1.0,)

    def __init__(self, tau_plus: float = 0.1) -> None:
        """Create the sampler with class prior ``tau_plus`` in [0, 1)."""
        super().__init__()
        self.tau_plus = check_unit_interval(tau_plus, "tau_plus")

    def log_negative_term(self, stats: RowStats, temperature: float | Tensor) -> Tensor:
        """Return the log of the debiased negative term."""
        return debiased_log_negative(stats.neg_lse_at(1.0), stats, temperature, self.tau_plus)

    def is_uniform(self) -> bool:
        """With ``tau_plus=0`` the correction and the clamp vanish."""
        return self.tau_plus == 0.0

    def extra_repr(self) -> str:
        """Show ``tau_plus``."""
        return f"tau_plus={self.tau_plus}"


@hookimpl
def register_samplers(register) -> None:  # noqa: ANN001
    """Register ``debiased``."""
    register("debiased", DebiasedSampler)
