"""The hot path of a training loop: no host reads with ``validate_args=False``, and it compiles.

Host reads are counted by patching the ways a tensor's value reaches Python
(``Tensor.item/__bool__/__int__/__float__/__index__/tolist`` and ``torch.equal``).
"""

from __future__ import annotations

import collections
import contextlib
from collections.abc import Callable, Iterator

import pytest
import torch

import contrastive as cl
from contrastive.samplers import MemoryQueue

READS = ("item", "__bool__", "__int__", "__float__", "__index__", "tolist")


@contextlib.contextmanager
def counting_host_reads() -> Iterator[collections.Counter]:
    """Count every read of a tensor's value into Python while the block runs."""
    counts: collections.Counter = collections.Counter()
    originals = {name: getattr(torch.Tensor, name) for name in READS}
    original_equal = torch.equal

    def counted(name: str, method: Callable) -> Callable:
        def wrapper(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
            counts[name] += 1
            return method(self, *args, **kwargs)

        return wrapper

    def equal(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        counts["torch.equal"] += 1
        return original_equal(*args, **kwargs)

    try:
        for name, method in originals.items():
            setattr(torch.Tensor, name, counted(name, method))
        torch.equal = equal
        yield counts
    finally:
        for name, method in originals.items():
            setattr(torch.Tensor, name, method)
        torch.equal = original_equal


def _losses(validate_args: bool, block_size: int | None) -> dict[str, Callable]:
    """Every built-in softmax loss and the samplers, as ``f(z1, z2, y) -> loss`` on the chunked backend."""
    options = {"validate_args": validate_args, "block_size": block_size, "backend": "chunked"}
    queue = MemoryQueue(16, 8, init="random", generator=torch.Generator().manual_seed(0))
    nt_xent = cl.get_loss("nt_xent", **options)
    supcon = cl.get_loss("supcon", **options)
    infonce = cl.get_loss("infonce", **options)
    moco = cl.get_loss("infonce", in_batch_negatives=False, **options)
    clip = cl.get_loss("clip", **options)
    hard = cl.get_loss("nt_xent", sampler=cl.get_sampler("hard", beta=1.0, tau_plus=0.1), **options)
    debiased = cl.get_loss("supcon", sampler=cl.get_sampler("debiased", tau_plus=0.1), **options)
    jaccard = cl.get_loss("supcon", positive_weighting="jaccard", **options)
    hard_multi = cl.get_loss("supcon", sampler=cl.get_sampler("hard", beta=1.0, tau_plus=0.1), **options)
    learnable = cl.get_loss("nt_xent", temperature=torch.nn.Parameter(torch.tensor(0.2)), **options)
    dclw = cl.get_loss("dcl", weight_sigma=0.5, **options)
    smoothed = cl.get_loss("clip", label_smoothing=0.1, **options)
    spectral = cl.get_loss("spectral", validate_args=validate_args)
    linear = cl.get_loss("linear_spectral", validate_args=validate_args)
    return {
        "nt_xent": lambda a, b, y: nt_xent(a, b),
        "supcon": lambda a, b, y: supcon(a, b, labels=y),
        "infonce+queue": lambda a, b, y: infonce(a, b, negatives=queue),
        "moco": lambda a, b, y: moco(a, b, negatives=queue),
        "clip": lambda a, b, y: clip(a, b),
        "hard": lambda a, b, y: hard(a, b),
        "debiased": lambda a, b, y: debiased(a, b, labels=y),
        "supcon multi-label": lambda a, b, y: supcon(a, b, labels=_multi_hot(y)),
        "supcon jaccard+queue": lambda a, b, y: jaccard(a, b, labels=_multi_hot(y), negatives=queue),
        "supcon multi-label hard": lambda a, b, y: hard_multi(a, b, labels=_multi_hot(y).bool()),
        "learnable temperature": lambda a, b, y: learnable(a, b),
        "dclw": lambda a, b, y: dclw(a, b),
        "weighted supcon": lambda a, b, y: supcon(a, b, labels=y, weights=(y + 1.0) / 3),
        "smoothed weighted clip": lambda a, b, y: smoothed(a, b, weights=(y + 1.0) / 3),
        "spectral": lambda a, b, y: spectral(a, b),
        "linear_spectral": lambda a, b, y: linear(a, b),
    }


def _multi_hot(y: torch.Tensor) -> torch.Tensor:
    """Multi-hot labels (B, 4) from class ids: the class, plus label 3 for even samples."""
    hot = torch.nn.functional.one_hot(y, 4)
    hot[::2, 3] = 1
    return hot


def _inputs(batch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(batch)
    z1 = torch.randn(batch, 8, generator=g).requires_grad_()
    z2 = torch.randn(batch, 8, generator=g).requires_grad_()
    return z1, z2, torch.randint(0, 3, (batch,), generator=g)


def _reads(fn: Callable, batch: int) -> collections.Counter:
    z1, z2, y = _inputs(batch)
    fn(z1, z2, y)  # the first call loads the registry; count a steady-state step
    with counting_host_reads() as counts:
        fn(z1, z2, y).backward()
    return counts


@pytest.mark.parametrize("block_size", [None, 4], ids=["one tile", "tiles"])
@pytest.mark.parametrize("name", list(_losses(False, None)))
def test_without_validation_forward_and_backward_read_nothing_from_the_device(
    name: str, block_size: int | None
) -> None:
    assert _reads(_losses(False, block_size)[name], 12) == collections.Counter()


@pytest.mark.parametrize("name", list(_losses(True, None)))
def test_with_validation_the_number_of_host_reads_does_not_grow_with_the_batch(name: str) -> None:
    small = _reads(_losses(True, 8)[name], 8)
    large = _reads(_losses(True, 8)[name], 64)  # 8 times the batch, 64 times the tiles
    limit = 9 if "weighted" in name else 8  # checking the weights (finite, >= 0) is one more read
    assert small == large and 0 < sum(small.values()) <= limit


def test_the_counter_sees_a_host_read() -> None:
    with counting_host_reads() as counts:
        bool(torch.tensor(True))
        torch.equal(torch.zeros(1), torch.zeros(1))
    assert counts == collections.Counter({"__bool__": 1, "torch.equal": 1})


COMPILE_CASES = [(name, None) for name in _losses(False, None)] + [("nt_xent", 8), ("hard", 8), ("clip", 8)]


@pytest.mark.parametrize("name, block_size", COMPILE_CASES)
def test_the_loss_compiles_with_fullgraph_and_equals_eager(name: str, block_size: int | None) -> None:
    torch._dynamo.reset()
    fn = _losses(False, block_size)[name]
    z1, z2, y = _inputs(12)
    eager = fn(z1, z2, y)
    eager_grads = torch.autograd.grad(eager, (z1, z2))
    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    value = compiled(z1, z2, y)
    grads = torch.autograd.grad(value, (z1, z2))
    assert torch.allclose(value, eager, rtol=1e-5, atol=1e-6)
    for g, e in zip(grads, eager_grads, strict=True):
        assert torch.allclose(g, e, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::FutureWarning:torch._inductor.*")
def test_nt_xent_compiles_with_inductor_and_equals_eager() -> None:
    torch._dynamo.reset()
    fn = _losses(False, None)["nt_xent"]
    z1, z2, y = _inputs(12)
    eager_grads = torch.autograd.grad(fn(z1, z2, y), (z1, z2))
    grads = torch.autograd.grad(torch.compile(fn, fullgraph=True)(z1, z2, y), (z1, z2))
    for g, e in zip(grads, eager_grads, strict=True):
        assert torch.allclose(g, e, rtol=1e-4, atol=1e-6)


def test_import_loads_neither_the_linear_estimators_nor_developer_tooling() -> None:
    import subprocess
    import sys

    code = ("import sys, contrastive; "
            "print(sorted(m for m in sys.modules if m.startswith(('contrastive.linear', 'tools', 'triton'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    import contrastive

    assert contrastive.linear.__name__ == "contrastive.linear"
