"""Fuzzing every built-in loss (issue 15): no NaN or Inf on valid input, clear errors on invalid input.

One drawn :class:`Case` is a loss (its functional form), a dtype, an input scale from
~1e-30 to ~1e30 (bounded by what the dtype holds finite, with some all-zero rows), a
temperature (or the loss's own scalar: CLIP's ``logit_scale``, spectral's ``mu``,
linear_spectral's ``reg``) of any real number type, labels, a number of views and, for
the engine losses, a sampler. Properties:

* valid input: the value and the gradients contain no NaN, and no Inf where the true
  value, computed in float64 from the same input, is finite in the dtype (an fp32 spectral
  loss of rows of norm 1e12 is ~1e48: it may overflow, but must not be NaN);
* invalid input: the only errors are ValueError or TypeError, and the message names an
  offending argument.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import contrastive as cl
import contrastive.functional as F
from contrastive import NoPositiveWarning

Tensor = torch.Tensor
ENGINE = ("nt_xent", "supcon", "dcl", "infonce", "clip")
SPECTRAL = ("spectral", "linear_spectral")
DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
#: log10 of the input scale per dtype: from ~1e-30 to ~1e30, within what the dtype holds.
LOG_SCALE = {torch.float16: (-7.0, 4.0), torch.bfloat16: (-30.0, 30.0), torch.float32: (-30.0, 30.0),
             torch.float64: (-30.0, 30.0)}
#: The name of each loss's scalar hyperparameter (what an invalid value must be reported as).
SCALAR = {"nt_xent": "temperature", "supcon": "temperature", "dcl": "temperature", "infonce": "temperature",
          "clip": "logit_scale", "spectral": "mu", "linear_spectral": "reg"}
#: The argument names a malformed first view (NaN) may be reported as, per loss.
FIRST_VIEW = {"nt_xent": "views", "supcon": "views", "dcl": "views", "infonce": "query",
              "clip": "image_features",
              "spectral": "z1", "linear_spectral": "z1"}


class Invalid:
    """An invalid argument, with the names an error about it may use."""

    def __init__(self, value: Any, *names: str) -> None:
        self.value, self.names = value, names

    def __repr__(self) -> str:
        return f"Invalid({self.value!r})"


@dataclass
class Case:
    """One fuzzed call."""

    loss: str
    dtype: torch.dtype
    views: list[Tensor]
    scalar: Any  # the temperature (or logit_scale, mu, reg); an Invalid when invalid
    labels: Any  # None, a tensor, or an Invalid
    sampler: str

    def invalid_names(self) -> set[str]:
        """The argument names an error may name; empty when the call is valid."""
        names: set[str] = set()
        for part in (self.scalar, self.labels):
            if isinstance(part, Invalid):
                names.update(part.names)
        n, batch = len(self.views), self.views[0].shape[0]
        if not all(bool(torch.isfinite(v).all()) for v in self.views):
            names.update({FIRST_VIEW[self.loss], "views", "embeddings"})
        if self.loss == "nt_xent" and n < 2:
            names.add("views")
        if self.loss in ("supcon", "dcl") and n < 2 and self.labels is None:
            names.update({"views", "labels"})
        if self.loss == "infonce" and n < 2:
            names.add("key")
        if self.loss == "clip" and n < 2:
            names.add("text_features")
        if self.loss in SPECTRAL and (n != 2 or batch < 2):
            names.update({"views", "rows", "pairs"})
        return names


def _temperature_value(t: Any) -> float | None:
    """``t`` as a float if the library must accept its type, else None."""
    if isinstance(t, bool) or isinstance(t, str) or t is None:
        return None
    if isinstance(t, Tensor):
        return float(t) if t.numel() == 1 else None
    if isinstance(t, np.ndarray):
        return float(t) if t.shape == () else None
    return float(t)


@st.composite
def temperatures(draw: st.DrawFn, dtype: torch.dtype, edge: bool = False) -> Any:
    """A temperature of any real number type, valid (for ``dtype``'s accumulation) or Invalid.

    ``edge``: only tiny valid temperatures (down to the engine's bound, ~1.3e-29 in float32).
    """
    if edge:
        return draw(st.sampled_from([1e-5, 1e-6, 1e-21, 1e-25, 2e-29]))
    magnitude = draw(st.one_of(
        st.floats(-30, 30).map(lambda u: 10.0**u),
        st.sampled_from([3.5e-39, 2e-39, 1e-40, 1e-300, 1e30, 1.0, 2.0,
                         0.0, -0.1, math.nan, math.inf, -math.inf]),
    ))
    wrap = draw(st.sampled_from(["float", "int", "np.float32", "np.float64", "np.array", "tensor32",
                                 "tensor64",
                                 "tensor(1,)"]))
    t: Any = {
        "float": magnitude,
        "int": int(magnitude) if math.isfinite(magnitude) else magnitude,
        "np.float32": np.float32(magnitude),
        "np.float64": np.float64(magnitude),
        "np.array": np.array(magnitude),
        "tensor32": torch.tensor(magnitude, dtype=torch.float32),
        "tensor64": torch.tensor(magnitude, dtype=torch.float64),
        "tensor(1,)": torch.tensor([magnitude], dtype=torch.float64),
    }[wrap]
    if draw(st.integers(0, 19)) == 0:  # not a number at all
        t = draw(st.sampled_from(["0.1", None, True, torch.tensor([0.1, 0.2]), np.array([0.1, 0.2])]))
    value = _temperature_value(t)
    compute = torch.float64 if dtype == torch.float64 else torch.float32  # the accumulation dtype
    bound = torch.finfo(compute).max / 2.0**32  # the engine keeps sums of similarities finite
    ok = value is not None and math.isfinite(value) and value > 0 and 1.0 / value <= bound
    return t if ok else Invalid(t, "temperature")


@st.composite
def logit_scales(draw: st.DrawFn) -> Any:
    """CLIP's θ (the log of 1/τ): valid when finite and within ±log(float32 max / 2^32) ~ ±66.5."""
    theta = draw(st.one_of(st.floats(-80, 88), st.sampled_from([88.8, 1e3, math.nan, math.inf, -math.inf])))
    t: Any = draw(st.sampled_from([theta, torch.tensor(theta)]))
    if draw(st.integers(0, 19)) == 0:
        t = draw(st.sampled_from(["1.0", True, torch.tensor([1.0, 2.0])]))
        return Invalid(t, "logit_scale")
    return t if math.isfinite(theta) and abs(theta) < 66.5 else Invalid(t, "logit_scale")


@st.composite
def positives(draw: st.DrawFn, name: str, optional: bool) -> Any:
    """spectral's ``mu`` (None or > 0) or linear_spectral's ``reg`` (> 0), or Invalid."""
    if optional and draw(st.booleans()):
        return None
    value = draw(st.one_of(st.floats(-30, 30).map(lambda u: 10.0**u),
                           st.sampled_from([0.0, -1.0, math.nan, math.inf, "1.0", True])))
    ok = isinstance(value, float) and math.isfinite(value) and value > 0
    return value if ok else Invalid(value, name)


@st.composite
def labels_for(draw: st.DrawFn, batch: int, multi_hot: bool) -> Any:
    """None, integer class labels ``(batch,)``, multi-hot rows (``multi_hot``: SupCon, DCL), or Invalid."""
    kind = draw(st.sampled_from(["none", "none", "classes", "classes", "multi-hot",
                                 "shape", "float", "2-d", "bool", "list"]))
    k = draw(st.integers(1, max(1, batch)))
    classes = torch.arange(batch) % k
    dtype = draw(st.sampled_from([torch.int64, torch.int32, torch.uint8]))
    tags = torch.randint(0, 2, (batch, k), generator=torch.Generator().manual_seed(draw(st.integers(0, 99))))
    return {
        "none": None,
        "classes": classes.to(dtype),
        "multi-hot": tags.to(draw(st.sampled_from([torch.bool, torch.uint8, torch.float32]))) if multi_hot else
        Invalid(tags, "labels"),
        "shape": Invalid(torch.arange(batch + 1), "labels"),
        "float": Invalid(classes.float(), "labels"),
        "2-d": Invalid(classes[:, None] + 2, "labels"),  # not 0/1, nor a class vector
        "bool": Invalid(classes > 0, "labels"),
        "list": Invalid(classes.tolist(), "labels"),
    }[kind]


def _views(draw: st.DrawFn, dtype: torch.dtype, n: int, log_scale: tuple[float, float], nan: bool
           ) -> list[Tensor]:
    batch, dim = draw(st.integers(1, 6)), draw(st.integers(1, 5))
    scale = 10.0 ** draw(st.floats(*log_scale))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    views = []
    for _ in range(n):
        v = (torch.randn(batch, dim, generator=g, dtype=torch.float64).clamp(-4, 4) * scale).to(dtype)
        v[torch.rand(batch, generator=g) < draw(st.sampled_from([0.0, 0.0, 0.3]))] = 0  # some zero rows
        views.append(v)
    if nan:
        views[0][0, 0] = math.nan
    return views


@st.composite
def cases(draw: st.DrawFn, losses: tuple[str, ...] = ENGINE + SPECTRAL, valid: bool = True,
          hard_spectral: bool | None = False, edge: bool = False) -> Case:
    """A fuzzed call; ``valid=False`` makes at least one part invalid.

    ``hard_spectral``: False leaves out, True draws only, the spectral-family cases the lead's
    fix addresses (float16, or inputs above 1e4 in float32/bfloat16); None draws all.
    """
    loss = draw(st.sampled_from(losses))
    dtype = draw(st.sampled_from(DTYPES))
    log_scale = LOG_SCALE[dtype]
    if loss in SPECTRAL and hard_spectral is not None:
        if hard_spectral and dtype == torch.float64:
            dtype = draw(st.sampled_from(DTYPES[:3]))
        if dtype != torch.float64 and dtype != torch.float16:
            log_scale = (4.0, 30.0) if hard_spectral else (-30.0, 4.0)
        if not hard_spectral and dtype == torch.float16:
            dtype = torch.float32
            log_scale = (-30.0, 4.0)
    for _ in range(50):  # redraw the parts until the case is valid / invalid as asked
        if loss in ENGINE:
            fewest = 1 if loss in ("supcon", "dcl") or not valid else 2
            n = 2 if valid and loss == "clip" else draw(st.integers(fewest, 4))
        else:
            n = draw(st.integers(1, 3)) if not valid else 2
        nan = not valid and draw(st.integers(0, 5)) == 0
        views = _views(draw, dtype, n, log_scale, nan)
        if loss in SPECTRAL and valid and views[0].shape[0] < 2:
            views = [torch.cat([v, v]) for v in views]
        batch = views[0].shape[0]
        scalar = (draw(temperatures(dtype, edge)) if loss in ("nt_xent", "supcon", "dcl", "infonce") else
                  draw(logit_scales()) if loss == "clip" else
                  draw(positives("mu", optional=True)) if loss == "spectral" else
                  draw(positives("reg", False)))
        labels = draw(labels_for(batch, loss != "clip")) if loss in ("supcon", "dcl", "clip") else None
        sampler = draw(st.sampled_from(["uniform", "hard", "debiased"])) if loss in ENGINE else "uniform"
        case = Case(loss, dtype, views, scalar, labels, sampler)
        if bool(case.invalid_names()) != valid:
            return case
    assume(False)  # pragma: no cover (rare: every redraw had the other validity)
    raise AssertionError("unreachable")  # pragma: no cover


def call(case: Case, views: list[Tensor]) -> Tensor:
    """Call the functional form of ``case.loss`` on ``views``."""
    scalar = case.scalar.value if isinstance(case.scalar, Invalid) else case.scalar
    labels = case.labels.value if isinstance(case.labels, Invalid) else case.labels
    engine = {"sampler": case.sampler}
    if case.loss == "nt_xent":
        return F.nt_xent(*views, temperature=scalar, **engine)
    if case.loss == "supcon":
        return F.supcon(*views, labels=labels, temperature=scalar, **engine)
    if case.loss == "dcl":
        return F.dcl(*views, labels=labels, temperature=scalar, **engine)
    if case.loss == "infonce":
        negatives = torch.cat(views[2:]) if len(views) > 2 else None
        return F.infonce(*views[:2], negatives, temperature=scalar, **engine)
    if case.loss == "clip":
        return F.clip(*views[:2], labels, logit_scale=scalar, **engine)
    if len(views) != 2:  # the modules take *views and say how many they need
        return cl.get_loss(case.loss)(*views)
    if case.loss == "spectral":
        return F.spectral(*views, mu=scalar, gather=False)
    return F.linear_spectral(*views, reg=scalar, gather=False)


def value_and_grads(case: Case, views: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
    leaves = [v.detach().clone().requires_grad_(True) for v in views]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoPositiveWarning)  # a one-sample, one-view batch: zero loss
        value = call(case, leaves)
    value.backward()
    return value.detach(), [torch.zeros_like(v) if v.grad is None else v.grad for v in leaves]


def assert_no_nan_and_finite_where_true_value_is(x: Tensor, truth: Tensor, what: str) -> None:
    """No NaN in ``x``; no Inf where the float64 ``truth`` is well inside ``x``'s dtype's range."""
    assert not torch.isnan(x).any(), f"{what} has NaN: {x}"
    assert not torch.isnan(truth).any(), f"{what}: the float64 ground truth has NaN: {truth}"
    # a gradient row is as accurate as its largest entry allows: a row with an entry beyond the
    # dtype may overflow elsewhere too (rounding errors are relative to that entry)
    magnitude = truth.abs().amax(dim=-1, keepdim=True).expand_as(truth) if truth.dim() else truth.abs()
    inside = magnitude < torch.finfo(x.dtype).max / 16
    assert torch.isfinite(x[inside]).all(), f"{what} overflows where the true value is finite: {x} vs {truth}"


def gradient_overflows(case: Case) -> bool:
    """Whether the float64 gradient exceeds the accumulation dtype's range (then no finite answer exists)."""
    compute = torch.float64 if case.dtype == torch.float64 else torch.float32
    _, grads = value_and_grads(case, [v.double() for v in case.views])
    return any(bool((g.abs() > torch.finfo(compute).max / 16).any()) for g in grads)


def terms_fit(case: Case) -> bool:
    r"""Whether the spectral losses' individual terms fit the accumulation dtype (always True for others).

    The spectral loss sums :math:`\langle z^{(1)}_i, z^{(2)}_j\rangle^2` over all pairs (degree 4 in
    the input), linear_spectral :math:`\langle z^{(1)}_i, z^{(2)}_j\rangle` (degree 2). Where those
    terms exceed the dtype, a finite result only exists by exact cancellation (zero rows, say),
    which float arithmetic does not reproduce: the loss may be ±inf there, but never NaN.
    """
    if case.loss not in SPECTRAL:
        return True
    compute = torch.float64 if case.dtype == torch.float64 else torch.float32
    peak = max(float(v.double().abs().max()) for v in case.views)
    n, d = case.views[0].shape
    term = peak * peak * d
    total = n * n * term * term if case.loss == "spectral" else n * n * term
    return math.isfinite(total) and total < torch.finfo(compute).max / 16


def well_conditioned(case: Case) -> bool:
    """Whether the softmax losses' logits are accurate to ~0.01 in the accumulation dtype."""
    if case.loss not in ENGINE or isinstance(case.scalar, Invalid):
        return True
    t = math.exp(-float(case.scalar)) if case.loss == "clip" else _temperature_value(case.scalar)
    compute = torch.float64 if case.dtype == torch.float64 else torch.float32
    return t is not None and torch.finfo(compute).eps / t < 1e-2


def check_valid(case: Case) -> None:
    value, grads = value_and_grads(case, case.views)
    # the engine losses answer half-precision input in their float32 accumulation dtype
    assert value.dim() == 0 and value.dtype in (case.dtype, torch.float32), (value.dtype, value.shape)
    assert all(g.dtype == case.dtype for g in grads), [g.dtype for g in grads]
    truth, truth_grads = value_and_grads(case, [v.double() for v in case.views])
    if not terms_fit(case):
        assert not torch.isnan(value) and not any(torch.isnan(g).any() for g in grads), (value, grads)
        return
    assert_no_nan_and_finite_where_true_value_is(value, truth, "the loss")
    # the gradients come back in the input's dtype: where any true entry is beyond it (float16 at
    # a tiny temperature), the others carry rounding errors of that size; and where the rounding
    # of a similarity, times 1/τ, exceeds ~0.01 the softmax itself is decided by rounding (its
    # float64 ground truth may pick another argmax): only NaN is wrong then
    beyond = any(bool((t.abs() > torch.finfo(case.dtype).max / 16).any()) for t in truth_grads)
    beyond = beyond or not well_conditioned(case)
    for i, (g, t) in enumerate(zip(grads, truth_grads, strict=True)):
        if beyond:
            assert not torch.isnan(g).any(), f"the gradient of view {i} has NaN: {g}"
        else:
            assert_no_nan_and_finite_where_true_value_is(g, t, f"the gradient of view {i}")


@settings(max_examples=150, deadline=None)
@given(cases(hard_spectral=None))
def test_valid_input_gives_no_nan_and_no_inf_where_the_true_value_is_finite(case: Case) -> None:
    assume(case.loss not in ENGINE or not gradient_overflows(case))
    check_valid(case)


@settings(max_examples=100, deadline=None)
@given(cases(valid=False, hard_spectral=None))
def test_invalid_input_raises_value_or_type_error_naming_the_argument(case: Case) -> None:
    names = case.invalid_names()
    with pytest.raises((ValueError, TypeError)) as caught:
        value_and_grads(case, case.views)
    message = str(caught.value)
    error = f"{type(caught.value).__name__}({message!r})"
    assert any(name in message for name in names), f"{error} names none of {names}"


# Directed at what 669c337 fixed: before it the spectral losses computed in the input dtype,
# so fp16 overflowed (rows of norm ~30 already overflow the Gram products) and float32 gave NaN
# from input scale ~1e9 (inf - inf in the negative term).
@settings(max_examples=50, deadline=None)
@given(cases(losses=SPECTRAL, hard_spectral=True))
def test_spectral_losses_in_float16_and_at_large_scales_give_no_nan(case: Case) -> None:
    check_valid(case)


# Tiny temperatures, down to the engine's bound on 1/τ: fuzzing found NaN here before the rows
# reached the chunked engine in float32 (fp16 gradients of ~1/τ overflowed) and before the bound
# left room for sums of similarities. Where the true gradient itself exceeds the accumulation
# dtype (tiny inputs at a tiny τ) no finite answer exists, and such cases are not drawn.
@settings(max_examples=30, deadline=None)
@given(cases(losses=ENGINE, edge=True))
def test_engine_losses_at_tiny_temperatures_give_no_nan(case: Case) -> None:
    assume(not gradient_overflows(case))
    check_valid(case)


# Found by fuzzing wider logit scales: θ = -800 passed the logit_scale check but math.exp(800)
# raised OverflowError (a float θ) or gave temperature=inf, reported as 'temperature' (a tensor θ).
@pytest.mark.parametrize("theta", [-800.0, torch.tensor(-800.0)], ids=["float", "tensor"])
def test_clip_with_a_hugely_negative_logit_scale_gives_a_value_or_a_clear_error(theta: Any) -> None:
    z = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    try:
        value = F.clip(z, z.flip(0), logit_scale=theta)
    except (ValueError, TypeError) as exc:
        assert "logit_scale" in str(exc)
    else:
        assert torch.isfinite(value)
