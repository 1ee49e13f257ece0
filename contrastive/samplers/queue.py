"""A MoCo-style memory queue: past keys kept as extra negatives."""

from __future__ import annotations

import torch

from contrastive._validation import check_embeddings

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

    def __len__(self) -> int:
        """Return how many keys the queue holds now."""
        return int(self.count)

    @torch.no_grad()
    def enqueue(self, keys: Tensor) -> None:
        """Append ``keys`` (detached), overwriting the oldest entries once full."""
        keys = check_embeddings(keys, "keys").detach()
        size, dim = self.keys.shape
        if keys.shape[1] != dim:
            raise ValueError(
                f"keys must have dimension {dim} to fit the queue, got shape {tuple(keys.shape)}"
            )
        keys = keys[-size:].to(self.keys.dtype)
        start = int(self.pointer)
        positions = (start + torch.arange(keys.shape[0], device=self.keys.device)) % size
        self.keys[positions] = keys
        self.pointer.fill_((start + keys.shape[0]) % size)
        self.count.fill_(min(size, int(self.count) + keys.shape[0]))

    def negatives(self) -> Tensor:
        """Return the stored keys, shape ``(len(self), dim)``, without gradient."""
        return self.keys[: int(self.count)].detach()

    def forward(self) -> Tensor:
        """Alias of :meth:`negatives`."""
        return self.negatives()

    def extra_repr(self) -> str:
        """Show capacity and fill."""
        return f"size={self.keys.shape[0]}, dim={self.keys.shape[1]}, count={int(self.count)}"
