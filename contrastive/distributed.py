r"""Losses across ranks on ``torch.distributed``: gather with gradient, rank offsets, the gradient contract.

**The gradient contract.** Every engine-based loss takes ``gather="auto" | True | False``.
When it gathers, a world of :math:`W` ranks holds the global batch split in rank order,
rank :math:`r` holding :math:`n_r` samples (sizes may differ). Anchors stay local; the
candidates are the views of *all* ranks, gathered in rank order **with gradient**; labels
and pair ids are global, so positives are found across ranks. Rank :math:`r` returns

.. math::

    \ell_r = \frac{W}{|A|} \sum_{i \in A_r} L_i ,

where :math:`A` is the set of anchors of the global batch that enter the mean (all of
them; for SupCon those with a positive), :math:`A_r` its local part and :math:`|A|` is
all-reduced without gradient. Therefore

* :math:`\frac1W\sum_r \ell_r = \mathcal{L}`, the single-process loss on the global batch
  (with equal local batches :math:`\ell_r` is simply the local mean);
* the backward of the gather sums over ranks the gradients that reach each rank's rows, so
  rank :math:`r` receives :math:`\partial\ell/\partial z_r = W\,\partial\mathcal{L}/\partial z_r`
  for its own embeddings, and DDP's *averaging* of parameter gradients gives exactly the
  single-process gradient :math:`\partial\mathcal{L}/\partial\theta`. Do not divide or multiply
  the loss by the world size yourself.

Additive losses (``spectral``, ``linear_spectral``) all-reduce their sums with gradient
instead of gathering; every rank returns :math:`\mathcal{L}` itself and, by the same
backward, receives :math:`W\,\partial\mathcal{L}/\partial z_r`.

The collectives are PyTorch's differentiable functional collectives
(``torch.distributed._functional_collectives``, the replacement PyTorch names for the
deprecated ``torch.distributed.nn.functional``); they run on ``gloo`` (CPU) and ``nccl`` (GPU).
All collectives use the default (world) process group.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple, TypeVar

import torch
import torch.distributed as dist

Tensor = torch.Tensor
T = TypeVar("T")

__all__ = [
    "GATHER_CHOICES",
    "BatchLayout",
    "agreed_layout",
    "all_gather_rows",
    "all_reduce_max",
    "all_reduce_sum",
    "batch_layout",
    "check_gather",
    "count_across_ranks",
    "should_gather",
    "shard_bounds",
    "world",
]

GATHER_CHOICES = ("auto", True, False)


def check_gather(gather: object) -> str | bool:
    """Return ``gather`` if it is ``"auto"``, ``True`` or ``False``; else raise ValueError naming it."""
    if not (gather == "auto" and isinstance(gather, str)) and not isinstance(gather, bool):
        raise ValueError(f"gather must be 'auto', True or False, got {gather!r}")
    return gather


def world() -> tuple[int, int]:
    """Return ``(rank, world_size)`` of the initialised default process group, else ``(0, 1)``."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def should_gather(gather: object) -> bool:
    """Whether a loss with option ``gather`` gathers: ``auto`` does when more than one rank is initialised.

    ``True`` without an initialised process group is a ValueError (there is nothing to gather from).
    """
    gather = check_gather(gather)
    if gather is False:
        return False
    initialised = dist.is_available() and dist.is_initialized()
    if gather is True:
        if not initialised:
            raise ValueError(
                "gather=True needs an initialised torch.distributed process group "
                "(torch.distributed.init_process_group, or launch with torchrun); got none; "
                "use gather='auto' or False for a single process"
            )
        return True
    return initialised and dist.get_world_size() > 1


class BatchLayout(NamedTuple):
    """How the global batch is split over the ranks: this rank and every rank's number of rows."""

    rank: int
    sizes: tuple[int, ...]

    @property
    def world_size(self) -> int:
        """Number of ranks."""
        return len(self.sizes)

    @property
    def offset(self) -> int:
        """Index of this rank's first row in the global batch (the rows of lower ranks come first)."""
        return sum(self.sizes[: self.rank])

    @property
    def total(self) -> int:
        """Number of rows of the global batch."""
        return sum(self.sizes)

    def offsets(self) -> tuple[int, ...]:
        """The first global row of every rank."""
        return tuple(sum(self.sizes[:r]) for r in range(len(self.sizes)))

    def scaled(self, factor: int) -> BatchLayout:
        """The layout of ``factor`` rows per sample (e.g. the stacked views of each rank)."""
        return BatchLayout(self.rank, tuple(factor * n for n in self.sizes))


def batch_layout(local: Tensor | None, name: str = "embeddings", failure: BaseException | None = None
                 ) -> BatchLayout:
    """All-gather every rank's row count of ``local`` (2-D) and whether its local input checks passed.

    ValueError on every rank if widths differ. A rank whose checks raised passes ``failure``
    (and ``local=None`` when it has no valid tensor); then every rank raises, in the same
    collective step, an error naming the failing rank(s) and the cause(s), instead of the
    others waiting in their next collective until the process group's timeout.
    """
    rank, world_size = world()
    rows, width = (0, -1) if local is None else (local.shape[0], local.shape[1] if local.dim() == 2 else -1)
    device = _collective_device() if local is None else local.device
    shape = torch.tensor([rows, width, failure is not None], dtype=torch.long, device=device)
    shapes = [torch.empty_like(shape) for _ in range(world_size)]
    dist.all_gather(shapes, shape)
    table = torch.stack(shapes).tolist()  # one read from the device for every rank's row
    failed = [r for r, (_, _, bad) in enumerate(table) if bad]
    if failed:
        _raise_on_every_rank(failure, failed, world_size)
    widths = [width for _, width, _ in table]
    if len(set(widths)) != 1:
        raise ValueError(
            f"{name} must have the same width on every rank, got widths {widths} on ranks 0..{world_size - 1}"
        )
    return BatchLayout(rank, tuple(rows for rows, _, _ in table))


def agreed_layout(check: Callable[[], T], rows: Callable[[T], Tensor], name: str, gather: object
                  ) -> tuple[T, BatchLayout]:
    """Run a loss's local input checks ``check`` and return their result with the batch layout.

    ``rows`` picks the tensor whose rows the layout counts. Without gathering the layout is
    one rank holding them. When gathering, a ValueError or TypeError from ``check`` is not
    raised at once (the other ranks would block in the first collective): it travels with
    the layout's all-gather and every rank raises it, naming the rank and the cause.
    """
    if not should_gather(gather):
        checked = check()
        return checked, BatchLayout(0, (rows(checked).shape[0],))
    try:
        checked = check()
    except (ValueError, TypeError) as exc:
        batch_layout(None, name, failure=exc)
        raise  # not reached: batch_layout raises on every rank once one reports a failure
    return checked, batch_layout(rows(checked), name)


def _collective_device() -> torch.device:
    """The device of tensors in collectives of the default group: the current GPU for NCCL, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _raise_on_every_rank(failure: BaseException | None, failed: list[int], world_size: int) -> None:
    """Exchange the failing ranks' causes (all ranks take part) and raise one error naming them."""
    causes: list[tuple[str, str] | None] = [None] * world_size
    mine = None if failure is None else (type(failure).__name__, str(failure))
    dist.all_gather_object(causes, mine)
    first = causes[failed[0]] or ("ValueError", "unknown cause")
    kind = TypeError if first[0] == "TypeError" else ValueError
    ranks = "rank" + ("s " if len(failed) > 1 else " ") + ", ".join(map(str, failed))
    detail = "; ".join(f"rank {r}: {(causes[r] or first)[1]}" for r in failed)
    raise kind(f"input check failed on {ranks} of {world_size} ({detail}); every rank raises this error") \
        from failure


def all_gather_rows(local: Tensor, layout: BatchLayout) -> Tensor:
    """Concatenate every rank's ``local`` rows in rank order, with gradient; sizes may differ.

    Rows are padded to the largest rank, gathered with a differentiable all-gather, and the
    padding is stripped. In backward, each rank receives the sum over ranks of the gradients
    that reach its rows.
    """
    if local.shape[0] != layout.sizes[layout.rank]:
        raise ValueError(
            f"local must have {layout.sizes[layout.rank]} rows on rank {layout.rank} as the layout says, "
            f"got shape {tuple(local.shape)}"
        )
    from torch.distributed import _functional_collectives as fc

    largest = max(layout.sizes)
    padded = local.contiguous()
    if local.shape[0] < largest:
        padded = torch.cat([padded, padded.new_zeros((largest - local.shape[0], *local.shape[1:]))])
    gathered = fc.all_gather_single(padded, 0, dist.group.WORLD)
    # narrow() keeps the lazy collective tensor; cat() waits for it and returns a plain tensor.
    return torch.cat([gathered.narrow(0, r * largest, n) for r, n in enumerate(layout.sizes)])


def all_reduce_sum(local: Tensor) -> Tensor:
    """Return the sum of ``local`` over ranks, with gradient (backward sums the gradients over ranks)."""
    from torch.distributed import _functional_collectives as fc

    total = fc.all_reduce(local.contiguous(), "sum", dist.group.WORLD)
    return total.clone()  # waits for the collective's lazy wrapper; a plain tensor in the same graph


def all_reduce_max(local: Tensor) -> Tensor:
    """Return the elementwise maximum of ``local`` over ranks (no gradient)."""
    from torch.distributed import _functional_collectives as fc

    return fc.all_reduce(local.detach().contiguous(), "max", dist.group.WORLD).clone()


def count_across_ranks(count: int | Tensor, device: torch.device | None = None) -> int:
    """Return the sum over ranks of an integer ``count`` (no gradient)."""
    value = torch.as_tensor(count, dtype=torch.long, device=device).detach().clone().reshape(())
    dist.all_reduce(value)
    return int(value)


def shard_bounds(total: int, rank: int, world_size: int) -> tuple[int, int]:
    """Return ``[start, stop)`` of ``rank``'s contiguous share of ``total`` rows (lower ranks get one more).

    The split is :func:`torch.tensor_split`'s, so the shards concatenated in rank order
    are the global batch in order, which is the order in which losses gather candidates.
    """
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size must be a positive int, got {world_size!r}")
    if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < world_size:
        raise ValueError(f"rank must be an int in [0, {world_size - 1}], got {rank!r}")
    base, extra = divmod(total, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)
