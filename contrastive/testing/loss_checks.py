"""``check_loss``: the invariants every contrastive loss plugin must keep.

A loss is called the way every loss in this library is: ``loss(z1, z2)`` with two
views of shape ``(B, D)``, positionally. Two views are all a loss must accept; the
built-in NT-Xent and SupCon take any number, and a loss that takes more should, but one
that takes exactly two is conforming as long as a third view is refused with a clear
error. The invariants:

* returns a scalar floating tensor;
* three views give a finite scalar, or raise ValueError or TypeError with a message;
* finite value and gradients, also at extreme temperatures (1e-3 and 10), at large and
  tiny norms (x1e4, x1e-4) and in half precision (bf16, fp16; within 0.1 + 5 % of the
  float32 value);
* a half-precision (fp16, bf16) view with an all-zero row gives a finite value and
  finite gradients, within the same tolerance of the float32 value of that input;
* a loss that normalises its inputs (its ``normalize`` attribute is ``True``, as for the
  built-in engine losses by default) is scale invariant for every finite input its dtype
  holds: views multiplied by powers of two whose squares overflow or underflow the dtype
  (2^±70 in float32 and bfloat16, 2^±540 in float64, 2^±8 in float16) give the same
  value and finite gradients scaled by the inverse factor. A loss without such an
  attribute (e.g. ``spectral``, quadratic in the embeddings) or with ``normalize=False``
  skips this check and says so in the report's ``skipped``;
* invariant to permuting the samples of all views jointly;
* autograd gradients equal finite differences in float64;
* device and dtype follow the input (value and gradients);
* malformed input (views of different shapes, 1-D views, NaN) raises ValueError or TypeError;
* a deep copy and a ``state_dict`` round trip give the same value.

The extreme-temperature checks build the loss with ``temperature=1e-3`` and ``10``. They
run when the loss is given by registered name or class and its constructor names a
``temperature`` keyword, or as an instance with an ``hparams`` mapping (rebuilt as
``type(loss)(**{**loss.hparams, "temperature": t})``). A constructor without
``temperature`` (a fixed or learnable scale, like CLIP's) skips them and says so in the
report's ``skipped``; an instance without ``hparams`` whose class takes ``temperature``
skips them too, with a :class:`~contrastive.testing.ConformanceWarning`.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from hypothesis import strategies as st

from contrastive.testing import strategies as cst
from contrastive.testing._runner import (
    DEFAULT_MAX_EXAMPLES,
    ConformanceError,
    ConformanceReport,
    Subject,
    check_once,
    check_property,
    resolve,
)

Tensor = torch.Tensor


def _two_views(
    dtype: torch.dtype = torch.float64, max_batch: int = 8, max_dim: int = 6, scale: float | None = None
) -> st.SearchStrategy[list[Tensor]]:
    return cst.views(
        min_views=2, max_views=2, min_batch=2, max_batch=max_batch, max_dim=max_dim, dtype=dtype, scale=scale
    )


def _value_and_grads(loss: Any, views: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
    leaves = [v.detach().clone().requires_grad_(True) for v in views]
    value = loss(*leaves)
    if not isinstance(value, Tensor):
        raise AssertionError(f"the loss returned {type(value).__name__}, not a tensor")
    value.backward()
    grads = [torch.zeros_like(v) if v.grad is None else v.grad for v in leaves]
    return value.detach(), grads


def _assert_finite(value: Tensor, grads: list[Tensor]) -> None:
    assert torch.isfinite(value).all(), f"the loss is not finite: {value}"
    for i, g in enumerate(grads):
        assert torch.isfinite(g).all(), f"the gradient of view {i} is not finite"


def _assert_close(a: Tensor, b: Tensor, rtol: float, atol: float, what: str) -> None:
    a64, b64 = a.detach().double(), b.detach().double()
    assert torch.allclose(a64, b64, rtol=rtol, atol=atol), f"{what}: {a64.tolist()} != {b64.tolist()}"


def _scalar(subject: Subject, n: int) -> None:
    def check(views: list[Tensor]) -> None:
        value = subject.prototype(*views)
        assert isinstance(value, Tensor), f"the loss returned {type(value).__name__}, not a tensor"
        assert value.dim() == 0, f"the loss returned shape {tuple(value.shape)}, not a scalar"
        assert value.is_floating_point(), f"the loss returned dtype {value.dtype}"

    check_property(subject, "returns a scalar", _two_views(), check, n)


def _more_views(subject: Subject) -> None:
    views = [cst.gaussian((6, 5), seed) for seed in (1, 2, 3)]

    def check() -> None:
        try:
            value = subject.prototype(*views)
        except (ValueError, TypeError) as exc:
            assert str(exc), "three views raised an error without a message"
            return
        assert isinstance(value, Tensor) and value.dim() == 0, "three views did not give a scalar tensor"
        assert torch.isfinite(value), f"three views gave a non-finite loss {value}"

    check_once(subject, "three views give a finite scalar or a clear error", check)


def _finite(subject: Subject, n: int) -> None:
    check_property(
        subject,
        "finite value and gradients",
        _two_views(),
        lambda v: _assert_finite(*_value_and_grads(subject.prototype, v)),
        n,
    )
    for t in (1e-3, 10.0):
        invariant = f"finite value and gradients at temperature={t}"
        if subject.skip_unless_buildable(invariant, "temperature"):
            continue
        loss = subject.fresh(temperature=t)
        check_property(
            subject,
            invariant,
            _two_views(torch.float32),
            lambda v, loss=loss: _assert_finite(*_value_and_grads(loss, v)),
            n,
        )
    for scale in (1e4, 1e-4):
        check_property(
            subject,
            f"finite value and gradients at norms x{scale:g}",
            _two_views(torch.float32, scale=scale),
            lambda v: _assert_finite(*_value_and_grads(subject.prototype, v)),
            n,
        )


def _half_precision(subject: Subject, n: int) -> None:
    def check(example: tuple[list[Tensor], torch.dtype]) -> None:
        views, dtype = example
        value, grads = _value_and_grads(subject.prototype, [v.to(dtype) for v in views])
        _assert_finite(value, grads)
        assert all(g.dtype == dtype for g in grads), f"gradients are {[g.dtype for g in grads]}, not {dtype}"
        reference = subject.prototype(*[v.to(dtype).float() for v in views])
        _assert_close(value, reference, rtol=0.05, atol=0.1, what=f"{dtype} value far from float32")

    strategy = st.tuples(
        _two_views(torch.float32, scale=1.0), st.sampled_from([torch.bfloat16, torch.float16])
    )
    check_property(subject, "half precision is finite and close to float32", strategy, check, n)


def _zero_row(subject: Subject, n: int) -> None:
    def check(example: tuple[list[Tensor], int, int, torch.dtype]) -> None:
        views, which, row, dtype = example
        half = [v.to(dtype) for v in views]
        half[which][row % half[which].shape[0]] = 0
        value, grads = _value_and_grads(subject.prototype, half)
        _assert_finite(value, grads)
        reference = subject.prototype(*[v.float() for v in half])
        _assert_close(value, reference, rtol=0.05, atol=0.1, what=f"{dtype} value far from float32")

    strategy = st.tuples(
        _two_views(torch.float32, scale=1.0),
        st.integers(0, 1),
        st.integers(0, 63),
        st.sampled_from([torch.float16, torch.bfloat16]),
    )
    check_property(subject, "a zero row in half precision is finite and close to float32", strategy, check, n)


#: Per dtype, the exponent k of the factors 2^k and 2^-k of the scale check: the scaled views
#: stay finite, their squares overflow (or underflow) the dtype; powers of two scale exactly.
SCALE_EXPONENTS = {torch.float32: 70, torch.bfloat16: 70, torch.float64: 540, torch.float16: 8}
SCALE_INVARIANCE = "invariant to the input scale when normalize=True"


def _scale_invariance(subject: Subject, n: int) -> None:
    normalize = getattr(subject.prototype, "normalize", None)
    if normalize is not True:
        subject.skip(
            SCALE_INVARIANCE,
            "normalize=False: the loss does not normalise its inputs"
            if normalize is False
            else "the loss has no 'normalize' attribute that is True, so it does not declare that it "
            "normalises its inputs (losses such as 'spectral' are not scale invariant by definition)",
        )
        return

    def one(views: list[Tensor], dtype: torch.dtype, factor: float) -> None:
        scaled = [(v.double() * factor).to(dtype) for v in views]
        base = [(s.double() / factor).to(dtype) for s in scaled]  # exact: the same directions
        value, grads = _value_and_grads(subject.prototype, scaled)
        _assert_finite(value, grads)
        expected, expected_grads = _value_and_grads(subject.prototype, base)
        rtol, atol = (0.05, 0.1) if dtype in (torch.float16, torch.bfloat16) else (1e-4, 1e-5)
        _assert_close(value, expected, rtol, atol, f"{dtype} value at views x{factor:.3g} differs")
        for i, (g, e) in enumerate(zip(grads, expected_grads, strict=True)):
            peak = float(e.double().abs().max()) if e.numel() else 0.0
            _assert_close(g.double() * factor, e, rtol, atol * max(1.0, peak),
                          f"{dtype} gradient of view {i} at views x{factor:.3g} is not the unscaled one "
                          "divided by the factor")

    def check(views: list[Tensor]) -> None:
        for dtype, k in SCALE_EXPONENTS.items():
            for factor in (2.0**k, 2.0**-k):
                one(views, dtype, factor)

    check_property(subject, SCALE_INVARIANCE, _two_views(torch.float32, scale=1.0), check, n)


def _permutation(subject: Subject, n: int) -> None:
    def check(example: tuple[list[Tensor], int]) -> None:
        views, seed = example
        perm = torch.randperm(views[0].shape[0], generator=torch.Generator().manual_seed(seed))
        _assert_close(
            subject.prototype(*views),
            subject.prototype(*[v[perm] for v in views]),
            rtol=1e-9,
            atol=1e-9,
            what="permuted value differs",
        )

    check_property(
        subject, "invariant to jointly permuting samples", st.tuples(_two_views(), cst.seeds()), check, n
    )


def _gradcheck(subject: Subject, n: int) -> None:
    def check(views: list[Tensor]) -> None:
        leaves = tuple(v.detach().clone().requires_grad_(True) for v in views)
        torch.autograd.gradcheck(lambda *v: subject.prototype(*v), leaves, eps=1e-6, atol=1e-5, rtol=1e-4)

    check_property(
        subject,
        "autograd gradients equal finite differences (float64)",
        _two_views(max_batch=5, max_dim=4, scale=1.0),
        check,
        n,
    )


def _device_and_dtype(subject: Subject, n: int) -> None:
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

    def check(example: tuple[list[Tensor], torch.dtype, str]) -> None:
        views, dtype, device = example
        loss = copy.deepcopy(subject.prototype).to(device)
        value, grads = _value_and_grads(loss, [v.to(dtype=dtype, device=device) for v in views])
        assert value.dtype == dtype, f"{dtype} input gave a {value.dtype} loss"
        assert value.device.type == device, f"input on {device} gave a loss on {value.device}"
        for g in grads:
            assert (g.dtype, g.device.type) == (dtype, device), f"gradient is {g.dtype} on {g.device}"

    strategy = st.tuples(
        _two_views(), st.sampled_from([torch.float32, torch.float64]), st.sampled_from(devices)
    )
    check_property(subject, "device and dtype follow the input", strategy, check, n)


def _malformed(subject: Subject) -> None:
    z = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
    nan = z.clone()
    nan[2, 1] = float("nan")
    cases = {
        "views of different shapes": (z, torch.randn(7, 4)),
        "1-D views": (z[:, 0], z[:, 1]),
        "NaN in the embeddings": (nan, z),
    }
    for what, views in cases.items():

        def check(views: tuple[Tensor, ...] = views, what: str = what) -> None:
            try:
                subject.prototype(*views)
            except (ValueError, TypeError) as exc:
                assert str(exc), f"{what}: the error has no message"
                return
            raise AssertionError(f"{what}: no ValueError or TypeError was raised")

        check_once(subject, f"clear error on malformed input ({what})", check)


def _copies(subject: Subject) -> None:
    views = [cst.gaussian((6, 5), seed) for seed in (1, 2)]

    def check() -> None:
        original = copy.deepcopy(subject.prototype)  # never change the caller's instance
        with torch.no_grad():
            for p in original.parameters() if isinstance(original, torch.nn.Module) else ():
                if p.is_floating_point():
                    p.add_(0.125)
        value = original(*views)
        _assert_close(copy.deepcopy(original)(*views), value, 0.0, 1e-12, "a deep copy gives another value")
        if isinstance(original, torch.nn.Module):
            restored = subject.fresh()
            restored.load_state_dict(original.state_dict())
            _assert_close(restored(*views), value, 0.0, 1e-12, "a state_dict round trip gives another value")

    check_once(subject, "deep copy and state_dict round trip", check)


def check_loss(loss: Any, max_examples: int = DEFAULT_MAX_EXAMPLES) -> ConformanceReport:
    """Check that ``loss`` (a registered name, a class or an instance) keeps every loss invariant.

    Returns the :class:`~contrastive.testing.ConformanceReport` of what was checked and
    what was skipped (see the module notes on instances and ``temperature``). Raises
    :class:`~contrastive.testing.ConformanceError` (an ``AssertionError``) naming the
    first broken invariant and hypothesis' minimal failing example.
    """
    subject = resolve("loss", loss)
    if not callable(subject.prototype):
        raise ConformanceError(f"loss {subject.name!r} is not callable")
    _scalar(subject, max_examples)
    _more_views(subject)
    _finite(subject, max_examples)
    _half_precision(subject, max_examples)
    _zero_row(subject, max_examples)
    _scale_invariance(subject, max_examples)
    _permutation(subject, max_examples)
    _gradcheck(subject, max_examples)
    _device_and_dtype(subject, max_examples)
    _malformed(subject)
    _copies(subject)
    return subject.finish()
