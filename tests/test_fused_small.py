"""The fused small-problem path (``contrastive.losses.fused``) equals the reference backend.

``backend="auto"`` on the CPU takes the fused Functions below ``FUSED_ELEMENTS``; every test
compares its value and gradients with ``backend="reference"`` (the materialised spec).
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import contrastive as cl
from contrastive.losses import fused

TOL = {torch.float64: 1e-10, torch.float32: 2e-5}


def _run(name: str, backend: str, tensors: list[torch.Tensor], call, **options):  # noqa: ANN001, ANN202
    """Return the loss and the gradients of ``tensors`` (and of the loss's parameters)."""
    loss = cl.get_loss(name, backend=backend, **options)
    if name == "clip":
        loss = loss.to(tensors[0].dtype if tensors[0].dtype == torch.float64 else torch.float32)
    leaves = [t.detach().clone().requires_grad_(t.requires_grad) for t in tensors]
    value = call(loss, leaves)
    params = [p for p in loss.parameters() if p.requires_grad]
    wrt = [t for t in leaves if t.requires_grad] + params
    return value.detach(), [g.detach() for g in torch.autograd.grad(value, wrt)]


def _assert_matches(name: str, tensors: list[torch.Tensor], call, dtype=torch.float64, tol=None, **options):  # noqa: ANN001
    """Assert that auto (fused) and reference agree on value and gradients; return the fused value."""
    tol = TOL[dtype] if tol is None else tol
    value, grads = _run(name, "auto", tensors, call, **options)
    ref_value, ref_grads = _run(name, "reference", tensors, call, **options)
    assert value.dtype == ref_value.dtype
    torch.testing.assert_close(value, ref_value, rtol=tol, atol=tol)
    for g, r in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, r, rtol=tol, atol=tol)
    return value


def _views(seed: int, n_views: int, batch: int, dim: int, dtype=torch.float64) -> list[torch.Tensor]:  # noqa: ANN001
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, dim, generator=g, dtype=dtype).requires_grad_() for _ in range(n_views)]


def test_the_fused_path_is_taken() -> None:
    """Small CPU problems go through the fused Functions (and the chunked engine is not called)."""
    calls = []
    original = fused.FusedMultiview.forward

    def spy(*args):  # noqa: ANN002, ANN202
        calls.append(1)
        return original(*args)

    fused.FusedMultiview.forward = staticmethod(spy)
    try:
        cl.get_loss("nt_xent")(*_views(0, 2, 8, 4, torch.float32))
    finally:
        fused.FusedMultiview.forward = staticmethod(original)
    assert calls == [1]


@given(seed=st.integers(0, 2**16), n_views=st.integers(2, 4), batch=st.integers(1, 9), dim=st.integers(1, 6),
       temperature=st.floats(0.05, 2.0), weighted=st.booleans(), normalize=st.booleans())
def test_nt_xent_equals_reference(seed: int, n_views: int, batch: int, dim: int, temperature: float,
                                  weighted: bool, normalize: bool) -> None:
    """NT-Xent with 2-4 views, optional per-sample weights and normalize off, value and gradients."""
    views = _views(seed, n_views, batch, dim)
    weights = torch.rand(batch, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    extra = [weights] if weighted else []

    def call(loss, leaves):  # noqa: ANN001, ANN202
        return loss(*leaves[:n_views], weights=leaves[n_views] if weighted else None)

    _assert_matches("nt_xent", views + extra, call, temperature=temperature, normalize=normalize)


@given(seed=st.integers(0, 2**16), n_views=st.integers(1, 3), batch=st.integers(2, 10), classes=st.integers(1, 12),
       weighted=st.booleans(), normalize=st.booleans())
def test_supcon_equals_reference(seed: int, n_views: int, batch: int, classes: int, weighted: bool,
                                 normalize: bool) -> None:
    """SupCon with labels (classes seen once included), one to three views, optional weights, normalize off."""
    _supcon_equals_reference(seed, n_views, batch, classes, weighted, normalize)


def _supcon_equals_reference(seed: int, n_views: int, batch: int, classes: int, weighted: bool,
                             normalize: bool = True) -> None:
    g = torch.Generator().manual_seed(seed)
    views = _views(seed, n_views, batch, 5)
    labels = torch.randint(0, classes, (batch,), generator=g)
    weights = torch.rand(batch, generator=g, dtype=torch.float64)

    def call(loss, leaves):  # noqa: ANN001, ANN202
        return loss(*leaves, labels=labels, weights=weights if weighted else None)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", cl.NoPositiveWarning)  # one view of distinct labels
        _assert_matches("supcon", views, call, temperature=0.2, normalize=normalize)


@given(seed=st.integers(0, 2**16), batch=st.integers(2, 12), labelled=st.booleans(), weighted=st.booleans(),
       learnable=st.booleans(), logit_scale=st.floats(-1.0, 4.6))
def test_clip_equals_reference(seed: int, batch: int, labelled: bool, weighted: bool, learnable: bool,
                               logit_scale: float) -> None:
    """CLIP with labels None or given, weights, a fixed or learnable logit scale (its gradient too)."""
    g = torch.Generator().manual_seed(seed)
    image, text = _views(seed, 2, batch, 6)
    labels = torch.randint(0, 3, (batch,), generator=g) if labelled else None
    weights = torch.rand(batch, generator=g, dtype=torch.float64) if weighted else None

    def call(loss, leaves):  # noqa: ANN001, ANN202
        return loss(*leaves, labels, weights=weights)

    _assert_matches("clip", [image, text], call, logit_scale=logit_scale, learnable=learnable)


@pytest.mark.parametrize("validate_args", [True, False])
@pytest.mark.parametrize("name", ["nt_xent", "supcon"])
def test_learnable_temperature_gets_the_reference_gradient(name: str, validate_args: bool) -> None:
    """A tensor temperature with gradient: its gradient equals the reference's (direct when the check read it)."""
    views = _views(3, 2, 6, 4)
    labels = torch.tensor([0, 0, 1, 1, 2, 3])
    results = []
    for backend in ("auto", "reference"):
        tau = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
        leaves = [v.detach().clone().requires_grad_() for v in views]
        loss = cl.get_loss(name, temperature=tau, backend=backend, validate_args=validate_args)
        value = loss(*leaves, labels=labels) if name == "supcon" else loss(*leaves)
        results.append((value, *torch.autograd.grad(value, [tau, *leaves])))
    for got, want in zip(*results, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(("name", "function"), [("nt_xent", "FusedMultiview"), ("clip", "FusedDual")])
def test_a_tensor_scale_read_by_the_checks_allows_direct_exponentials(name: str, function: str) -> None:
    """validate_args=True reads a tensor temperature (or logit scale) anyway: within the direct limit it is used."""
    seen = []
    cls = getattr(fused, function)
    original = cls.apply  # Function.apply, inherited: deleting the patch restores it (torch.compile knows it)

    def spy(*args):  # noqa: ANN002, ANN202
        seen.append(args[-1])  # the direct flag
        return original(*args)

    views = _views(5, 2, 4, 3, dtype=torch.float32)
    scale = {"temperature": torch.tensor(0.1)} if name == "nt_xent" else {}
    assert "apply" not in vars(cls)
    try:
        cls.apply = staticmethod(spy)
        for validate_args, big in ((True, False), (False, False), (True, True)):
            if big:
                scale = {"temperature": torch.tensor(0.01)} if name == "nt_xent" else {"logit_scale": 4.6}
            cl.get_loss(name, validate_args=validate_args, **scale)(*views)
    finally:
        del cls.apply
    assert seen == [True, False, False]  # read and small; not read; read but 1/τ = 100 > 40


@pytest.mark.parametrize("name", ["nt_xent", "supcon", "clip"])
def test_float32_matches_reference(name: str) -> None:
    """float32 inputs: fused and reference agree at float32 tolerance."""
    views = _views(5, 2, 16, 8, torch.float32)
    labels = torch.arange(16) % 5

    def call(loss, leaves):  # noqa: ANN001, ANN202
        return loss(*leaves, labels=labels) if name != "nt_xent" else loss(*leaves)

    _assert_matches(name, views, call, dtype=torch.float32)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", ["nt_xent", "clip"])
def test_half_inputs_accumulate_in_float32_with_zero_rows_and_huge_scales(name: str, dtype: torch.dtype) -> None:
    """fp16/bf16 inputs: the float32 loss of the float32 inputs; zero rows keep a zero gradient; x 1e19 (fp32)."""
    views = [v.detach().to(dtype) for v in _views(7, 2, 6, 5, torch.float32)]
    views[0][2] = 0
    views = [v.requires_grad_() for v in views]
    value, grads = _run(name, "auto", views, lambda loss, leaves: loss(*leaves))
    ref_value, ref_grads = _run(name, "reference", views, lambda loss, leaves: loss(*leaves))
    assert value.dtype == torch.float32 and grads[0].dtype == dtype
    torch.testing.assert_close(value, ref_value, rtol=1e-5, atol=1e-5)
    for g, r in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g.float(), r.float(), rtol=1e-2, atol=1e-3)
    assert torch.all(grads[0][2] == 0)
    big = [(v.detach().float() * 1e19).requires_grad_() for v in views]
    big_value, big_grads = _run(name, "auto", big, lambda loss, leaves: loss(*leaves))
    torch.testing.assert_close(big_value, value, rtol=1e-5, atol=1e-5)
    assert all(torch.isfinite(g).all() for g in big_grads) and torch.all(big_grads[0][2] == 0)


def test_no_positive_gives_a_connected_zero_and_one_warning() -> None:
    """One view of distinct labels: a zero loss with zero gradients, and a NoPositiveWarning."""
    x = torch.randn(5, 4, requires_grad=True)
    loss = cl.get_loss("supcon")
    with pytest.warns(cl.NoPositiveWarning, match="no anchor has a positive"):
        value = loss(x, labels=torch.arange(5))
    value.backward()
    assert value.item() == 0 and torch.all(x.grad == 0)
    with pytest.raises(ValueError, match="no anchor has a positive"):
        cl.get_loss("supcon", no_positive="raise")(x, labels=torch.arange(5))


def test_large_problems_and_other_options_leave_the_fused_path() -> None:
    """Above FUSED_ELEMENTS, with a block size, a sampler other than uniform or decoupled: not fused."""
    from contrastive.losses.base import EngineOptions

    x = torch.randn(4, 3)
    side = math.isqrt(fused.FUSED_ELEMENTS["multiview"])
    assert fused.fused_applies(EngineOptions(), side, side, None, x)
    assert not fused.fused_applies(EngineOptions(), side + 1, side + 1, None, x)
    dual = math.isqrt(fused.FUSED_ELEMENTS["dual"])
    assert fused.fused_applies(EngineOptions(), dual, dual, None, x, "dual")
    assert not fused.fused_applies(EngineOptions(), dual + 1, dual + 1, None, x, "dual")
    assert not fused.fused_applies(EngineOptions(block_size=8), 8, 8, None, x)
    assert not fused.fused_applies(EngineOptions(decoupled=True), 8, 8, None, x)
    assert not fused.fused_applies(EngineOptions(backend="reference"), 8, 8, None, x)
    assert not fused.fused_applies(EngineOptions(sampler="debiased"), 8, 8, None, x)
    assert not fused.fused_applies(EngineOptions(), 8, 8, torch.ones(4, requires_grad=True), x)
    assert not fused.fused_applies(EngineOptions(), 1, 1, None, x)


@pytest.mark.parametrize("name", ["nt_xent", "hard", "clip"])
def test_small_problems_run_on_one_thread_and_restore_the_count(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Forward and backward of a small fused problem see one thread; the count is back afterwards."""
    seen = []
    original = fused.on_one_thread

    def spy(elements, like, fn, *args):  # noqa: ANN001, ANN002, ANN202
        def body(*inner):  # noqa: ANN002, ANN202
            seen.append((elements, torch.get_num_threads()))
            return fn(*inner)
        return original(elements, like, body, *args)

    monkeypatch.setattr(fused, "on_one_thread", spy)
    if name == "hard":
        from contrastive.losses import fused_stats

        monkeypatch.setattr(fused_stats, "on_one_thread", spy)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        x, y = _views(0, 2, 16, 8, torch.float32)
        options = {"sampler": cl.get_sampler("hard", beta=1.0)} if name == "hard" else {}
        loss = cl.get_loss("clip" if name == "clip" else "nt_xent", **options)
        loss(x, y).backward()
        assert [threads for _, threads in seen] == [1, 1], seen  # forward and backward
        assert torch.get_num_threads() == 2
        seen.clear()
        big = 1 + math.isqrt(fused.SERIAL_ELEMENTS)  # rows (clip: pairs) above the limit
        x, y = _views(1, 2, big if name == "clip" else big // 2 + 1, 8, torch.float32)
        loss(x, y).backward()
        assert seen and all(elements > fused.SERIAL_ELEMENTS and threads == 2 for elements, threads in seen), seen
    finally:
        torch.set_num_threads(before)


def test_one_thread_restores_the_count_after_an_error() -> None:
    """An exception inside the serial region leaves the thread count as it was; large problems keep it."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        def boom() -> None:
            assert torch.get_num_threads() == 1
            raise RuntimeError("inside")

        with pytest.raises(RuntimeError, match="inside"):
            fused.on_one_thread(4, torch.zeros(1), boom)
        assert torch.get_num_threads() == 2
        assert fused.on_one_thread(fused.SERIAL_ELEMENTS + 1, torch.zeros(1), torch.get_num_threads) == 2
        assert fused.on_one_thread(4, torch.zeros(1, device="meta"), torch.get_num_threads) == 2  # not a CPU tensor
    finally:
        torch.set_num_threads(before)


def test_one_thread_and_the_pool_give_the_same_loss_and_gradients(monkeypatch: pytest.MonkeyPatch) -> None:
    """The serial region changes the schedule, not the numbers: float64 values and gradients agree."""
    tensors = _views(3, 2, 48, 16)
    labels = torch.arange(48) % 5

    def call(loss, leaves):  # noqa: ANN001, ANN202
        return loss(*leaves, labels=labels)

    serial = _run("supcon", "auto", tensors, call, temperature=0.2)
    monkeypatch.setattr(fused, "SERIAL_ELEMENTS", -1)
    pooled = _run("supcon", "auto", tensors, call, temperature=0.2)
    torch.testing.assert_close(serial[0], pooled[0], rtol=1e-12, atol=1e-12)
    for a, b in zip(serial[1], pooled[1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
