r"""The negative-sampler protocol: how the negative term of a loss is formed from row statistics.

A sampler is a small ``torch.nn.Module`` with two duties.

1. **In the loss.** Every engine-based loss computes, for anchor :math:`i`,

   .. math::

       L_i = -\frac{1}{|P(i)|}\sum_{p \in P(i)} s_{ip}
             + \log\Big(\sum_{p \in P(i)} e^{s_{ip}} + N_g(i)\Big),

   and the sampler supplies :math:`\log N_g(i)` from the :class:`~contrastive.engine.RowStats`
   through :meth:`Sampler.log_negative_term`. The statistics it receives hold
   ``neg_lse[:, e]`` :math:`= \log\sum_{j\in N(i)} e^{\gamma_e s_{ij}}` for each
   :math:`\gamma_e` in :attr:`Sampler.exponents`, so a new sampler needs no new kernel.
   Where a sampler needs "the positive" (debiasing), an anchor with several
   positives uses the mean of their exponentials,
   :math:`\frac{1}{|P(i)|}\sum_{p} e^{s_{ip}} = e^{\mathrm{pos\_lse}_i - \log|P(i)|}`;
   with one positive this is exactly the published two-view formula.

2. **For mining.** :meth:`Sampler.draw` returns ``k`` negative indices per anchor
   drawn from the sampler's distribution over negatives (``negative_log_weights``),
   never a positive and never the anchor itself.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from contrastive.engine import RowStats

Tensor = torch.Tensor


class Sampler(torch.nn.Module):
    """Base class of negative samplers: subclasses set ``exponents`` and implement ``log_negative_term``."""

    #: The exponents γ whose negative log-sum-exps the sampler reads from the row statistics.
    exponents: tuple[float, ...] = (1.0,)

    #: Options under which this sampler is exactly the uniform denominator (``None``: no such
    #: options). The conformance kit (:func:`contrastive.testing.check_sampler`) checks the claim.
    uniform_options: ClassVar[dict[str, Any] | None] = None

    def log_negative_term(self, stats: RowStats, temperature: float | Tensor) -> Tensor:
        """Return log N_g per anchor, shape ``(M,)``, from the row statistics."""
        raise NotImplementedError

    def is_uniform(self) -> bool:
        """Whether N_g is exactly the sum over negatives (then losses use the engine's joint statistics).

        Decided from the sampler's options, never from data; False unless a subclass knows better.
        """
        return False

    def negative_log_weights(self, similarities: Tensor) -> Tensor:
        """Return unnormalised log-probabilities of drawing each candidate (uniform: zeros)."""
        return torch.zeros_like(similarities)

    def forward(self, stats: RowStats, temperature: float | Tensor) -> Tensor:
        """Alias of :meth:`log_negative_term`."""
        return self.log_negative_term(stats, temperature)

    @torch.no_grad()
    def draw(
        self,
        similarities: Tensor,
        positive_mask: Tensor,
        k: int,
        generator: torch.Generator | None = None,
        anchor_index: Tensor | None = None,
    ) -> Tensor:
        """Return ``(M, k)`` candidate indices drawn i.i.d. (with replacement) from the negatives.

        ``similarities`` are the scores :math:`s_{ij}` (already divided by τ), shape
        ``(M, N)``; ``positive_mask`` marks the positives. The anchor itself is
        excluded through ``anchor_index`` (its column, or -1); when that is None and
        the matrix is square, the diagonal is taken to be the anchors.
        """
        if similarities.dim() != 2:
            raise ValueError(
                f"similarities must be 2-D (anchors, candidates), got shape {tuple(similarities.shape)}"
            )
        if positive_mask.shape != similarities.shape or positive_mask.dtype != torch.bool:
            raise ValueError(
                f"positive_mask must be a bool tensor of shape {tuple(similarities.shape)}, "
                f"got {positive_mask.dtype} of shape {tuple(positive_mask.shape)}"
            )
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive int, got {k!r}")
        m, n = similarities.shape
        forbidden = positive_mask.clone()
        if anchor_index is None and m == n:
            anchor_index = torch.arange(m, device=similarities.device)
        if anchor_index is not None:
            rows = torch.nonzero(anchor_index >= 0).squeeze(1)
            forbidden[rows, anchor_index[rows]] = True
        empty = forbidden.all(dim=1)
        if bool(empty.any()):
            raise ValueError(f"anchor {int(torch.nonzero(empty)[0])} has no negative to draw from")
        logits = self.negative_log_weights(similarities.float()).masked_fill(forbidden, float("-inf"))
        probs = torch.softmax(logits, dim=1)
        return torch.multinomial(probs, k, replacement=True, generator=generator)
