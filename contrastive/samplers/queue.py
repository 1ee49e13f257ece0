"""A MoCo-style memory queue: past keys kept as extra negatives."""

from __future__ import annotations

import torch
import torch.distributed as dist

from contrastive._validation import check_embeddings
from contrastive.distributed import all_gather_rows, batch_layout, should_gather

Tensor = torch.Tensor


class MemoryQueue(torch.nn.Module):
    r"""A first-in first-out queue of the last ``size`` keys (He et al., 2020, "Momentum Contrast", CVPR).

    The keys are stored detached, so they act as constant negatives :math:`\{c_j\}` appended
    to the candidates: :math:`N(i) \leftarrow N(i) \cup \{\text{queue}\}`. Pass the queue as
    ``negatives=`` to ``infonce`` or ``nt_xent``, then ``enqueue`` the current keys::

        queue = MemoryQueue(size=65536, dim=128)
        loss = infonce(q, k, negatives=queue, in_batch_negatives=False)
        queue.enqueue(k)

    ``init="random"`` fills the queue with random unit vectors, as MoCo does, so that the
    first steps already have negatives; ``init="empty"`` starts empty.

    **Distributed.** Under ``torch.distributed`` (``enqueue(keys, gather="auto")``) every
    rank enqueues the keys of all ranks, gathered in rank order (local batch sizes may
    differ), so every rank holds the same queue, as MoCo's ``concat_all_gather`` does, and
    the queue may be passed as ``negatives=`` on every rank. A random initial fill must be
    the same on every rank too: pass a ``generator`` seeded alike on every rank, or call
    :meth:`broadcast` once after the process group is initialised.
    """

    def __init__(
        self,
        size: int,
        dim: int,
        init: str = "empty",
        dtype: torch.dtype = torch.float32,
        generator: torch.Generator | None = None,
    ) -> None:
        """Create a queue holding up to ``size`` keys of dimension ``dim``."""
        super().__init__()
        for name, value in (("size", size), ("dim", dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if init not in ("empty", "random"):
            raise ValueError(f"init must be 'empty' or 'random', got {init!r}")
        keys = torch.zeros(size, dim, dtype=dtype)
        if init == "random":
            keys = torch.nn.functional.normalize(torch.randn(size, dim, generator=generator).to(dtype), dim=1)
        self.register_buffer("keys", keys)
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))
        self.register_buffer("count", torch.full((), size if init == "random" else 0, dtype=torch.long))
        # Python copies of pointer and count: the hot path (negatives, enqueue) never reads the buffers
        self._pointer, self._count = 0, size if init == "random" else 0
        self.register_load_state_dict_post_hook(lambda module, _: module._sync_from_buffers())

    def _sync_from_buffers(self) -> None:
        """Refresh the Python copies of pointer and count from the buffers (after loading or broadcasting)."""
        self._pointer, self._count = int(self.pointer), int(self.count)

    def __len__(self) -> int:
        """Return how many keys the queue holds now."""
        return self._count

    @torch.no_grad()
    def enqueue(self, keys: Tensor, gather: str | bool = "auto", validate_args: bool = True) -> None:
        """Append ``keys`` (detached), overwriting the oldest entries once full.

        ``validate_args=False`` skips the finiteness check, the one read from the device.

        ``gather`` (``"auto"``: when more than one rank is initialised) appends the keys
        of all ranks in rank order instead, so that every rank's queue stays the same;
        every rank must then call ``enqueue``.
        """
        keys = check_embeddings(keys, "keys", finite=validate_args).detach()
        if should_gather(gather):  # widths are compared across ranks first, so all ranks agree on errors
            keys = all_gather_rows(keys, batch_layout(keys, "keys"))
        size, dim = self.keys.shape
        if keys.shape[1] != dim:
            raise ValueError(
                f"keys must have dimension {dim} to fit the queue, got shape {tuple(keys.shape)}"
            )
        keys = keys[-size:].to(self.keys.dtype)
        start = self._pointer
        positions = (start + torch.arange(keys.shape[0], device=self.keys.device)) % size
        self.keys[positions] = keys
        self._pointer, self._count = (start + keys.shape[0]) % size, min(size, self._count + keys.shape[0])
        self.pointer.fill_(self._pointer)
        self.count.fill_(self._count)

    @torch.no_grad()
    def broadcast(self, src: int = 0) -> None:
        """Copy rank ``src``'s queue (keys, pointer, fill) to every rank; all ranks must call it."""
        if not (dist.is_available() and dist.is_initialized()):
            raise ValueError(
                "broadcast needs an initialised torch.distributed process group "
                "(torch.distributed.init_process_group, or launch with torchrun); got none"
            )
        for buffer in (self.keys, self.pointer, self.count):
            dist.broadcast(buffer, src)
        self._sync_from_buffers()

    def negatives(self) -> Tensor:
        """Return the stored keys, shape ``(len(self), dim)``, without gradient."""
        return self.keys[: self._count].detach()

    def forward(self) -> Tensor:
        """Alias of :meth:`negatives`."""
        return self.negatives()

    def extra_repr(self) -> str:
        """Show capacity and fill."""
        return f"size={self.keys.shape[0]}, dim={self.keys.shape[1]}, count={self._count}"
