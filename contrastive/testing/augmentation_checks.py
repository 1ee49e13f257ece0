"""``check_augmentation``: the invariants every augmentation plugin must keep.

An augmentation is called as ``aug(x, generator=seed)`` on a batch: images
``(B, C, H, W)`` with values in [0, 1], or vectors ``(B, d)``. An augmentation
may declare ``input_kind = "images"`` or ``"vectors"``; otherwise the kit tries
RGB images, grey images and vectors in turn and uses the first it accepts. The
invariants:

* shape kept (or the one ``aug.output_shape(x.shape)`` announces), dtype and
  device kept, images stay in [0, 1];
* the same seed gives the same batch, for ``aug(x)`` and for ``aug.views(x, n=2)``;
* the input is not modified.
"""

from __future__ import annotations

from typing import Any

import torch
from hypothesis import strategies as st

from contrastive.testing import strategies as cst
from contrastive.testing._runner import (
    DEFAULT_MAX_EXAMPLES,
    ConformanceError,
    ConformanceReport,
    Subject,
    check_property,
    resolve,
)

Tensor = torch.Tensor
_PROBES: dict[str, tuple[int, ...]] = {
    "rgb images": (2, 3, 12, 12),
    "grey images": (2, 1, 12, 12),
    "vectors": (2, 10),
}


def _input_kind(subject: Subject) -> str:
    declared = getattr(subject.prototype, "input_kind", None)
    if declared == "vectors":
        return "vectors"
    errors = []
    for kind, shape in _PROBES.items():
        if declared == "images" and kind == "vectors":
            continue
        try:
            subject.prototype(torch.rand(shape, generator=torch.Generator().manual_seed(0)), generator=0)
            return kind
        except (ValueError, TypeError) as exc:
            errors.append(f"{kind} {shape}: {exc}")
    raise ConformanceError(
        f"augmentation {subject.name!r} accepts none of the kit's inputs: " + "; ".join(errors)
    )


@st.composite
def _batches(draw: st.DrawFn, kind: str) -> tuple[Tensor, int]:
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    b = draw(st.integers(1, 4))
    if kind == "vectors":
        shape: tuple[int, ...] = (b, draw(st.integers(1, 16)))
    else:
        channels = 3 if kind == "rgb images" else 1
        shape = (b, channels, draw(st.integers(4, 20)), draw(st.integers(4, 20)))
    g = torch.Generator().manual_seed(draw(cst.seeds()))
    return torch.rand(shape, generator=g, dtype=torch.float64).to(dtype), draw(cst.seeds())


def _expected_shape(aug: Any, x: Tensor) -> tuple[int, ...]:
    announce = getattr(aug, "output_shape", None)
    return tuple(announce(x.shape)) if callable(announce) else tuple(x.shape)


def _kept(subject: Subject, kind: str, n: int) -> None:
    def check(example: tuple[Tensor, int]) -> None:
        x, seed = example
        before = x.clone()
        y = subject.prototype(x, generator=seed)
        assert torch.equal(x, before), "the input was modified"
        assert tuple(y.shape) == _expected_shape(subject.prototype, x), (
            f"shape {tuple(x.shape)} -> {tuple(y.shape)}"
        )
        assert y.dtype == x.dtype, f"dtype {x.dtype} -> {y.dtype}"
        assert y.device == x.device, f"device {x.device} -> {y.device}"
        if kind != "vectors":
            assert bool(((y >= 0) & (y <= 1)).all()), f"values left [0, 1]: [{y.min()}, {y.max()}]"

    check_property(subject, "shape, dtype, device and range kept", _batches(kind), check, n)


def _reproducible(subject: Subject, kind: str, n: int) -> None:
    def check(example: tuple[Tensor, int]) -> None:
        x, seed = example
        aug = subject.prototype
        assert torch.equal(aug(x, generator=seed), aug(x, generator=seed)), "same seed, different batch"
        first, second = aug.views(x, n=2, generator=seed), aug.views(x, n=2, generator=seed)
        assert len(first) == 2, f"views(x, n=2) returned {len(first)} views"
        assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True)), (
            "same seed, different views"
        )

    check_property(subject, "reproducible under a seed", _batches(kind), check, n)


def check_augmentation(augmentation: Any, max_examples: int = DEFAULT_MAX_EXAMPLES) -> ConformanceReport:
    """Check that ``augmentation`` (a registered name, a class or an instance) keeps every invariant.

    Returns the :class:`~contrastive.testing.ConformanceReport` of what was checked.
    Raises :class:`~contrastive.testing.ConformanceError` (an ``AssertionError``)
    naming the first broken invariant and hypothesis' minimal failing example.
    """
    subject = resolve("augmentation", augmentation)
    kind = _input_kind(subject)
    _kept(subject, kind, max_examples)
    _reproducible(subject, kind, max_examples)
    return subject.finish()
