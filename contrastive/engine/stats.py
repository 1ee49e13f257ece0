"""The row statistics: the O(N) summary of a similarity matrix that every loss is built from."""

from __future__ import annotations

from typing import NamedTuple

import torch

Tensor = torch.Tensor


class RowStats(NamedTuple):
    r"""Per-anchor statistics of :math:`s_{ij} = \langle z_i, c_j \rangle / \tau`.

    With positives :math:`P(i)` (candidates with the anchor's label, the anchor
    itself excluded) and negatives :math:`N(i)` (candidates with another label):

    * ``neg_lse[i, e]`` :math:`= \log \sum_{j \in N(i)} e^{\gamma_e s_{ij}}`, shape ``(M, E)``,
    * ``pos_lse[i]`` :math:`= \log \sum_{j \in P(i)} e^{s_{ij}}`, shape ``(M,)``,
    * ``pos_sum[i]`` :math:`= \sum_{j \in P(i)} s_{ij}`, shape ``(M,)``,
    * ``pos_count[i]`` :math:`= |P(i)|` and ``neg_count[i]`` :math:`= |N(i)|` (integer, no gradient),
    * ``exponents`` the :math:`\gamma_e`, one per column of ``neg_lse``.

    The log-sum-exp of an empty set is :math:`-\infty` (with zero gradient).
    """

    neg_lse: Tensor
    pos_lse: Tensor
    pos_sum: Tensor
    pos_count: Tensor
    neg_count: Tensor
    exponents: tuple[float, ...]

    def neg_lse_at(self, exponent: float) -> Tensor:
        """Return the ``(M,)`` column of ``neg_lse`` computed with exponent ``exponent``."""
        for e, gamma in enumerate(self.exponents):
            if gamma == exponent:
                return self.neg_lse[:, e]
        raise ValueError(
            f"exponent={exponent!r} was not computed; the statistics hold exponents {self.exponents!r}"
        )


def label_counts(
    anchor_labels: Tensor, candidate_labels: Tensor, anchor_index: Tensor
) -> tuple[Tensor, Tensor]:
    """Return ``(pos_count, neg_count)`` per anchor in O((M + N) log N), without comparing all pairs."""
    sorted_labels = torch.sort(candidate_labels).values
    same = torch.searchsorted(sorted_labels, anchor_labels, right=True) - torch.searchsorted(
        sorted_labels, anchor_labels
    )
    has_self = anchor_index >= 0
    self_label = candidate_labels[anchor_index.clamp(min=0)]
    self_counted = has_self & (self_label == anchor_labels)
    pos_count = same - self_counted.long()
    neg_count = candidate_labels.numel() - same
    return pos_count, neg_count
