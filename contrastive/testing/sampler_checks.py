"""``check_sampler``: the invariants every negative-sampler plugin must keep.

A sampler follows :class:`contrastive.samplers.Sampler`: ``exponents``,
``log_negative_term(stats, temperature)``, ``negative_log_weights(similarities)``
and ``draw(similarities, positive_mask, k, generator=None)``. The invariants:

* ``draw`` never returns a positive or the anchor itself, and its indices are in range;
* the drawing distribution sums to one over the negatives, and draws follow it;
* inside ``nt_xent`` the loss and gradients are finite, and the ``reference`` and
  ``chunked`` engine backends agree on both;
* where the sampler declares ``uniform_options`` (options under which it is the
  uniform denominator), it then equals the uniform sampler.
"""

from __future__ import annotations

from typing import Any

import torch
from hypothesis import strategies as st

from contrastive.testing import strategies as cst
from contrastive.testing._runner import (
    DEFAULT_MAX_EXAMPLES,
    ConformanceReport,
    Subject,
    check_once,
    check_property,
    resolve,
)

Tensor = torch.Tensor


@st.composite
def _draw_problems(draw: st.DrawFn) -> tuple[Tensor, Tensor, int, int]:
    n = draw(st.integers(2, 12))
    sims = cst.gaussian((n, n), draw(cst.seeds()), draw(st.floats(0.1, 5.0)), torch.float32)
    g = torch.Generator().manual_seed(draw(cst.seeds()))
    positive = torch.rand(n, n, generator=g) < draw(st.floats(0.0, 0.9))
    positive[torch.arange(n), (torch.arange(n) + 1) % n] = False  # every anchor keeps one negative
    return sims, positive, draw(st.integers(1, 20)), draw(cst.seeds())


def _forbidden(positive: Tensor) -> Tensor:
    return positive | torch.eye(positive.shape[0], dtype=torch.bool)


def _never_positive(subject: Subject, n: int) -> None:
    def check(example: tuple[Tensor, Tensor, int, int]) -> None:
        sims, positive, k, seed = example
        drawn = subject.prototype.draw(sims, positive, k, generator=torch.Generator().manual_seed(seed))
        assert tuple(drawn.shape) == (sims.shape[0], k), f"draw returned shape {tuple(drawn.shape)}"
        assert not drawn.is_floating_point(), f"draw returned {drawn.dtype} indices"
        assert bool(((drawn >= 0) & (drawn < sims.shape[1])).all()), "draw returned an index out of range"
        hit = _forbidden(positive).gather(1, drawn.long())
        assert not bool(hit.any()), (
            f"draw returned a positive or the anchor at {torch.nonzero(hit)[:3].tolist()}"
        )

    check_property(subject, "draw never returns a positive or the anchor", _draw_problems(), check, n)


def _distribution(subject: Subject) -> None:
    def check() -> None:
        sampler = subject.prototype
        sims = cst.gaussian((5, 5), 3, 1.5, torch.float32)
        positive = torch.zeros(5, 5, dtype=torch.bool)
        positive[0, 1] = positive[2, 3] = True
        forbidden = _forbidden(positive)
        logits = sampler.negative_log_weights(sims).float().masked_fill(forbidden, float("-inf"))
        probs = torch.softmax(logits, dim=1)
        assert torch.allclose(probs.sum(dim=1), torch.ones(5), atol=1e-6), "probabilities do not sum to one"
        assert not bool(probs[forbidden].any()), "positive or anchor has probability mass"
        draws = 4000
        drawn = sampler.draw(sims, positive, draws, generator=torch.Generator().manual_seed(0))
        freq = torch.zeros(5, 5).scatter_add_(1, drawn.long(), torch.ones(5, draws)) / draws
        tv = 0.5 * (freq - probs).abs().sum(dim=1)
        assert bool((tv < 0.05).all()), f"draw frequencies differ from the distribution (TV {tv.tolist()})"

    check_once(subject, "draws follow a distribution that sums to one over the negatives", check)


def _loss(sampler: Any, views: list[Tensor], backend: str) -> tuple[Tensor, list[Tensor]]:
    from contrastive import get_loss

    loss = get_loss("nt_xent", temperature=0.5, sampler=sampler, backend=backend)
    leaves = [v.detach().clone().requires_grad_(True) for v in views]
    value = loss(*leaves)
    value.backward()
    return value.detach(), [v.grad for v in leaves]


def _inside_losses(subject: Subject, n: int) -> None:
    def check(views: list[Tensor]) -> None:
        ref, ref_grads = _loss(subject.prototype, views, "reference")
        assert torch.isfinite(ref), f"nt_xent with this sampler is {ref}"
        assert all(torch.isfinite(g).all() for g in ref_grads), "gradients are not finite"
        chunked, grads = _loss(subject.prototype, views, "chunked")
        assert torch.allclose(ref, chunked, rtol=1e-9, atol=1e-10), f"backends disagree: {ref} vs {chunked}"
        for a, b in zip(ref_grads, grads, strict=True):
            assert torch.allclose(a, b, rtol=1e-7, atol=1e-10), "backends disagree on gradients"

    check_property(
        subject,
        "finite inside nt_xent, and engine backends agree",
        cst.views(min_views=2, max_views=3, max_batch=8, max_dim=5),
        check,
        n,
    )


def _uniform_reduction(subject: Subject, n: int) -> None:
    options = getattr(subject.prototype, "uniform_options", None)
    if options is None:
        subject.skip("equals the uniform sampler at its uniform_options", "it declares no uniform_options")
        return
    reduced = subject.fresh(**options) if subject.factory is not None else type(subject.prototype)(**options)

    def check(views: list[Tensor]) -> None:
        value, _ = _loss(reduced, views, "chunked")
        uniform, _ = _loss("uniform", views, "chunked")
        assert torch.allclose(value, uniform, rtol=1e-10, atol=1e-12), f"{value} != uniform {uniform}"

    check_property(
        subject, f"equals the uniform sampler at {options}", cst.views(min_views=2, max_views=3), check, n
    )


def check_sampler(sampler: Any, max_examples: int = DEFAULT_MAX_EXAMPLES) -> ConformanceReport:
    """Check that ``sampler`` (a registered name, a class or an instance) keeps every sampler invariant.

    Returns the :class:`~contrastive.testing.ConformanceReport` of what was checked.
    Raises :class:`~contrastive.testing.ConformanceError` (an ``AssertionError``)
    naming the first broken invariant and hypothesis' minimal failing example.
    """
    subject = resolve("sampler", sampler)
    _never_positive(subject, max_examples)
    _distribution(subject)
    _inside_losses(subject, max_examples)
    _uniform_reduction(subject, max_examples)
    return subject.finish()
