"""The row statistics: the O(N) summary of a similarity matrix that every loss is built from."""

from __future__ import annotations

from typing import NamedTuple

import torch

Tensor = torch.Tensor
#: Largest number of elements summed per label with a flattened (1-D) ``index_add``.
FLAT_INDEX_ADD = 2**17


class RowStats(NamedTuple):
    r"""Per-anchor statistics of :math:`s_{ij} = \langle z_i, c_j \rangle / \tau`.

    With positives :math:`P(i)` (candidates with the anchor's label, the anchor
    itself excluded) and negatives :math:`N(i)` (candidates with another label);
    with multi-hot labels, :math:`P(i)` are the candidates sharing at least one label
    with the anchor, :math:`N(i)` those sharing none, the anchor's own column in neither:

    * ``neg_lse[i, e]`` :math:`= \log \sum_{j \in N(i)} e^{\gamma_e s_{ij}}`, shape ``(M, E)``,
    * ``pos_lse[i]`` :math:`= \log \sum_{j \in P(i)} e^{s_{ij}}`, shape ``(M,)``,
    * ``pos_sum[i]`` :math:`= \sum_{j \in P(i)} s_{ij}`, shape ``(M,)``,
    * ``pos_count[i]`` :math:`= |P(i)|` and ``neg_count[i]`` :math:`= |N(i)|` (integer, no gradient),
    * ``exponents`` the :math:`\gamma_e`, one per column of ``neg_lse``,
    * ``all_lse[i]`` :math:`= \log \sum_{j \in P(i) \cup N(i)} e^{s_{ij}}`, shape ``(M,)``,
    * ``pos_weight[i]`` :math:`= \sum_{j \in P(i)} w_{ij}` when the positives are weighted
      (multi-hot labels with ``positive_weighting="jaccard"``, then ``pos_sum[i]``
      :math:`= \sum_{j \in P(i)} w_{ij} s_{ij}`); None when every weight is 1 (then it is ``pos_count``),
    * ``known_counts`` :math:`= (|P(i)|, |N(i)|)` when every anchor has these counts and they
      are known in Python (the pair positives of a single process); consumers may then skip
      their guards for empty sets. None (the default): read ``pos_count`` and ``neg_count``.

    Statistics computed with ``joint=True`` (the uniform denominator, which needs no
    label mask inside the tiles) hold ``all_lse`` and leave ``neg_lse`` and ``pos_lse``
    None; the default (``joint=False``) leaves ``all_lse`` None.
    The log-sum-exp of an empty set is :math:`-\infty` (with zero gradient).
    """

    neg_lse: Tensor | None
    pos_lse: Tensor | None
    pos_sum: Tensor
    pos_count: Tensor
    neg_count: Tensor
    exponents: tuple[float, ...]
    all_lse: Tensor | None = None
    pos_weight: Tensor | None = None
    known_counts: tuple[int, int] | None = None

    def neg_lse_at(self, exponent: float) -> Tensor:
        """Return the ``(M,)`` column of ``neg_lse`` computed with exponent ``exponent``."""
        if self.neg_lse is None:
            raise ValueError(
                "these statistics were computed with joint=True (only all_lse, for the uniform "
                "denominator); compute them with joint=False to read neg_lse"
            )
        for e, gamma in enumerate(self.exponents):
            if gamma == exponent:
                return self.neg_lse[:, e]
        raise ValueError(
            f"exponent={exponent!r} was not computed; the statistics hold exponents {self.exponents!r}"
        )


def label_ids(*labels: Tensor) -> tuple[Tensor, ...]:
    """Map integer label tensors to ids in ``[0, total length)``: equal labels, equal ids (no host sync).

    Unlike ``torch.unique`` the ids need not be consecutive, so nothing of data-dependent
    size is built and no value is read back from the device.
    """
    ordered = torch.sort(labels[0] if len(labels) == 1 else torch.cat(labels)).values  # one tensor: no copy
    return tuple(torch.searchsorted(ordered, x) for x in labels)


def label_groups(labels: Tensor) -> tuple[Tensor, Tensor]:
    """Return :func:`label_ids` of one label tensor and each entry's group size (entries with its label).

    One sort and two binary searches (the size is the distance between the label's first
    and past-last places in the sorted labels); nothing is read back from the device.
    """
    ordered = torch.sort(labels).values
    ids = torch.searchsorted(ordered, labels)
    return ids, torch.searchsorted(ordered, labels, right=True).sub_(ids)


def label_counts(
    anchor_labels: Tensor, candidate_labels: Tensor, anchor_index: Tensor
) -> tuple[Tensor, Tensor]:
    """Return ``(pos_count, neg_count)`` per anchor in O((M + N) log N), without comparing all pairs."""
    return LabelStructure.of(anchor_labels, candidate_labels, anchor_index).counts()


class LabelStructure:
    """Label ids shared by the counts and the positive sums of one problem (computed once, no host sync).

    ``candidate_labels=None``: the anchors against themselves (every own column is a positive's place).
    """

    def __init__(self, a_ids: Tensor, c_ids: Tensor, self_positive: Tensor | None, symmetric: bool,
                 sizes: Tensor | None = None) -> None:
        """Hold the ids, which anchors have their own column among the candidates' positives and, when
        known (the symmetric problem), each anchor's label group size."""
        self.a_ids, self.c_ids, self.self_positive, self.symmetric = a_ids, c_ids, self_positive, symmetric
        self.sizes = sizes

    @classmethod
    def of(cls, anchor_labels: Tensor, candidate_labels: Tensor | None, anchor_index: Tensor | None
           ) -> LabelStructure:
        """Build the structure of a problem (``candidate_labels=None``: symmetric)."""
        if candidate_labels is None:
            ids, sizes = label_groups(anchor_labels)
            return cls(ids, ids, None, True, sizes)
        a_ids, c_ids = label_ids(anchor_labels, candidate_labels)
        own = None if anchor_index is None else self_is_positive(anchor_labels, candidate_labels, anchor_index)
        return cls(a_ids, c_ids, own, False)

    def swapped(self) -> LabelStructure:
        """The structure of the candidates against the anchors (the ids come from the same sorted labels)."""
        if self.symmetric or self.self_positive is not None:
            raise ValueError("only a problem without own columns can be swapped")
        return LabelStructure(self.c_ids, self.a_ids, None, False)

    def per_label(self, values: Tensor) -> Tensor:
        """Sum ``values`` (one row per candidate) per label id."""
        size = self.a_ids.numel() + (0 if self.symmetric else self.c_ids.numel())
        if values.dim() == 2 and values.numel() <= FLAT_INDEX_ADD:
            # small blocks: a 1-D index_add over the flattened rows beats the row-wise kernel on CPU
            # (measured 44 against 540 microseconds at 64 x 128); large ones are faster row-wise
            width = values.shape[1]
            index = (self.c_ids[:, None] * width + torch.arange(width, device=values.device)).reshape(-1)
            flat = values.new_zeros(size * width).index_add(0, index, values.reshape(-1))
            return flat.view(size, width)
        return values.new_zeros((size, *values.shape[1:])).index_add(0, self.c_ids, values)

    @staticmethod
    def label_rows(table: Tensor, ids: Tensor) -> Tensor:
        """Return ``table[ids]`` (rows), flattened for small blocks so that backward is a 1-D index_add."""
        width = table.shape[1]
        if ids.numel() * width <= FLAT_INDEX_ADD:
            index = (ids[:, None] * width + torch.arange(width, device=table.device)).reshape(-1)
            return table.reshape(-1).index_select(0, index).view(ids.numel(), width)
        return table.index_select(0, ids)  # index_select: its backward is an index_add, not an index_put

    def counts(self) -> tuple[Tensor, Tensor]:
        """Return ``(pos_count, neg_count)``."""
        same = self.per_label(torch.ones_like(self.c_ids))[self.a_ids] if self.sizes is None else self.sizes
        pos = same - 1 if self.symmetric else same
        if self.self_positive is not None:
            pos = pos - self.self_positive.long()
        return pos, self.c_ids.numel() - same

    def positive_sums(self, anchors: Tensor, candidates: Tensor | None, anchor_index: Tensor | None,
                      inv_tau: Tensor) -> Tensor:
        r"""Return ``pos_sum`` :math:`= \langle a_i, \sum_{j\in P(i)} c_j\rangle / \tau` in O((M + N)·D).

        The candidates are summed per label, so no tile is needed; differentiable in all inputs.
        """
        c = anchors if candidates is None else candidates
        if c.shape[0] == 0:
            return anchors.new_zeros(anchors.shape[0])
        total = (anchors * self.label_rows(self.per_label(c), self.a_ids)).sum(dim=1)
        if self.symmetric:
            total = total - (anchors * anchors).sum(dim=1)
        elif self.self_positive is not None:
            own = (anchors * c.index_select(0, anchor_index.clamp(min=0))).sum(dim=1)
            total = total - torch.where(self.self_positive, own, torch.zeros_like(own))
        return total * inv_tau


def self_is_positive(anchor_labels: Tensor, candidate_labels: Tensor, anchor_index: Tensor) -> Tensor:
    """Whether anchor i's own column (``anchor_index[i] >= 0``) carries its label, so is left out of P(i)."""
    if candidate_labels.numel() == 0:
        return torch.zeros_like(anchor_index, dtype=torch.bool)
    self_label = candidate_labels[anchor_index.clamp(min=0)]
    return (anchor_index >= 0) & (self_label == anchor_labels)
