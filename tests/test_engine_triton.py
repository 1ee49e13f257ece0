"""The Triton engine equals the reference on values and gradients, run by Triton's interpreter on the CPU.

Without CUDA this module sets ``TRITON_INTERPRET=1`` before anything imports the kernels,
so every launch runs in the interpreter (fp32, small shapes that are not multiples of the
tile, D not a power of two). With CUDA (and the interpreter off) the same checks run
compiled on the GPU; ``test_engine_triton_gpu.py`` adds half precision and larger shapes.
"""

from __future__ import annotations

import dataclasses
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import contextlib  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import types  # noqa: E402
from collections import Counter  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402

import pytest  # noqa: E402
from hypothesis import Phase, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

pytest.importorskip("triton")

from contrastive.engine import (  # noqa: E402
    dispatch,
    dual_row_stats,  # noqa: E402
    reference_row_stats,
    triton_launch,
)
from contrastive.engine import triton as triton_engine  # noqa: E402
from contrastive.engine.triton import (  # noqa: E402
    DualTritonRowStats,
    SymmetricTritonRowStats,
    TritonRowStats,
)
from contrastive.functional import clip, infonce, nt_xent, supcon  # noqa: E402
from contrastive.samplers import DebiasedSampler, HardNegativeSampler, UniformSampler  # noqa: E402
from tests.strategies import EngineProblem, engine_problems, gaussian, labels, seeds  # noqa: E402

DEVICE = torch.device(
    "cuda" if torch.cuda.is_available() and not triton_engine.interpreter_enabled() else "cpu"
)
#: Tolerance relative to max(1, largest magnitude): fp32 kernels against an fp64 reference.
FP32_TOLERANCE = 2e-4
#: Interpreted kernels are slow: a failing example is reported as found, without minutes of shrinking.
NO_SHRINK = (Phase.explicit, Phase.reuse, Phase.generate)

Tensor = torch.Tensor


# ---------------------------------------------------------------------------------------------------------
# helpers (also used by the compiled GPU module)
# ---------------------------------------------------------------------------------------------------------


def assert_close(ours: Tensor, expected: Tensor, rtol: float) -> None:
    """Assert equal infinities and finite entries within ``rtol`` times max(1, largest magnitude)."""
    a, b = ours.detach().double().cpu(), expected.detach().double().cpu()
    assert a.shape == b.shape
    assert torch.equal(torch.isinf(a), torch.isinf(b))
    assert not torch.isnan(a).any()
    a, b = a[torch.isfinite(a)], b[torch.isfinite(b)]
    if a.numel():
        scale = max(1.0, float(b.abs().max()))
        assert float((a - b).abs().max()) <= rtol * scale, float((a - b).abs().max()) / scale


def weighted_sum(stats: tuple[Tensor, Tensor, Tensor], seed: int) -> Tensor:
    """A scalar touching every statistic with seeded random weights (empty sets skipped)."""
    total = torch.zeros((), dtype=torch.float64, device=stats[0].device)
    for k, x in enumerate(stats):
        w = gaussian(tuple(x.shape), seed + k).to(device=x.device, dtype=x.dtype)
        total = (
            total
            + (torch.where(torch.isfinite(x), x, torch.zeros((), dtype=x.dtype, device=x.device)) * w).sum()
        )
    return total


def stats_and_grads(
    function: Callable[..., tuple[Tensor, Tensor, Tensor]],
    problem: EngineProblem,
    dtype: torch.dtype,
    device: torch.device,
    seed: int = 0,
) -> tuple[tuple[Tensor, ...], list[Tensor]]:
    """Run a row-statistics function on ``problem`` cast to ``dtype``; return statistics and gradients."""
    anchors = problem.anchors.to(device=device, dtype=dtype).requires_grad_()
    candidates = (
        anchors if problem.symmetric else problem.candidates.to(device=device, dtype=dtype).requires_grad_()
    )
    temperature = torch.tensor(problem.temperature, dtype=torch.float64, device=device, requires_grad=True)
    a_labels = problem.anchor_labels.to(device)
    if function is reference_row_stats:
        out = reference_row_stats(
            anchors,
            candidates,
            a_labels,
            problem.candidate_labels.to(device),
            problem.anchor_index.to(device),
            temperature,
            problem.exponents,
        )[:3]
    else:
        inv_tau = (1.0 / temperature).to(torch.float64 if dtype == torch.float64 else torch.float32)
        if problem.symmetric:
            out = SymmetricTritonRowStats.apply(
                anchors, a_labels, inv_tau, problem.exponents, problem.block_size
            )
        else:
            out = TritonRowStats.apply(
                anchors,
                candidates,
                a_labels,
                problem.candidate_labels.to(device),
                problem.anchor_index.to(device),
                inv_tau,
                problem.exponents,
                problem.block_size,
            )
    leaves = [anchors, temperature] + ([] if problem.symmetric else [candidates])
    return out, list(torch.autograd.grad(weighted_sum(out, seed), leaves))


def conditioned(tolerance: float, problem: EngineProblem) -> float:
    """Scale ``tolerance`` (meant for ``|γ s| <= 200``) by the largest possible ``|γ s_ij|`` of ``problem``.

    Rounding ``s`` to the input precision moves every ``e^{γ s}`` by a relative
    ``eps·|γ s|``, so the attainable accuracy degrades linearly with that bound.
    """
    bound = (
        float(problem.anchors.norm(dim=1).max() * problem.candidates.norm(dim=1).max()) / problem.temperature
    )
    return tolerance * max(1.0, bound * max(1.0, *map(abs, problem.exponents)) / 200.0)


def check_against_reference(
    problem: EngineProblem,
    dtype: torch.dtype,
    device: torch.device,
    value_tol: float,
    grad_tol: float,
    seed: int = 0,
) -> None:
    """Assert the Triton functions equal the fp64 reference on ``problem`` (inputs cast to ``dtype`` first).

    The tolerances are relative to max(1, largest magnitude), for ``|γ s| <= 200`` (see :func:`conditioned`).
    """
    value_tol, grad_tol = conditioned(value_tol, problem), conditioned(grad_tol, problem)
    cast = problem.anchors.to(dtype).double(), problem.candidates.to(dtype).double()
    exact = EngineProblem(
        cast[0],
        cast[0] if problem.symmetric else cast[1],
        problem.anchor_labels,
        problem.candidate_labels,
        problem.anchor_index,
        problem.temperature,
        problem.exponents,
        problem.block_size,
        problem.symmetric,
    )
    ref, ref_grads = stats_and_grads(reference_row_stats, exact, torch.float64, device, seed)
    out, grads = stats_and_grads(TritonRowStats, problem, dtype, device, seed)
    for ours, expected in zip(out, ref, strict=True):
        assert ours.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
        assert_close(ours, expected, value_tol)
    for ours, expected, leaf_dtype in zip(
        grads, ref_grads, [dtype, torch.float64, dtype][: len(grads)], strict=True
    ):
        assert ours.dtype == leaf_dtype
        assert_close(ours, expected, grad_tol)


def problem(
    m: int,
    n: int,
    d: int,
    *,
    symmetric: bool = False,
    exponents: tuple[float, ...] = (1.0,),
    temperature: float = 0.2,
    classes: int = 7,
    block: int | None = None,
    seed: int = 0,
) -> EngineProblem:
    """A seeded problem: unit-norm rows, ``classes`` labels, queue-like (-1) candidates, random self."""
    g = torch.Generator().manual_seed(seed)
    anchors = torch.nn.functional.normalize(gaussian((m, d), seed), dim=1)
    a_labels = torch.randint(0, classes, (m,), generator=g)
    if symmetric:
        return EngineProblem(
            anchors, anchors, a_labels, a_labels, torch.arange(m), temperature, exponents, block, True
        )
    candidates = torch.nn.functional.normalize(gaussian((n, d), seed + 1), dim=1)
    c_labels = torch.randint(-1, classes, (n,), generator=g)
    anchor_index = torch.randint(-1, n, (m,), generator=g)
    return EngineProblem(
        anchors, candidates, a_labels, c_labels, anchor_index, temperature, exponents, block, False
    )


@contextlib.contextmanager
def routed_to_triton() -> Iterator[Counter]:
    """Count the calls that ``backend="triton"`` makes to the Triton functions through dispatch."""
    calls: Counter = Counter()
    with pytest.MonkeyPatch.context() as patch:
        for cls in (TritonRowStats, SymmetricTritonRowStats, DualTritonRowStats):

            def counted(*args: object, _original: Callable = cls.apply, _name: str = cls.__name__) -> object:
                calls[_name] += 1
                return _original(*args)

            patch.setattr(cls, "apply", counted)
        assert dispatch.resolve_backend("triton", DEVICE) == "triton"
        yield calls


@pytest.fixture
def triton_backend() -> Iterator[Counter]:
    """:func:`routed_to_triton` as a fixture."""
    with routed_to_triton() as calls:
        yield calls


def loss_and_grads(
    loss: Callable[..., Tensor], inputs: list[Tensor], backend: str, dtype: torch.dtype
) -> tuple[Tensor, list[Tensor]]:
    """Loss value and gradients with respect to every input (copies cast to ``dtype``)."""
    leaves = [x.to(device=DEVICE, dtype=dtype if x.dim() else torch.float64).requires_grad_() for x in inputs]
    value = loss(*leaves, backend=backend)
    return value.detach(), list(torch.autograd.grad(value, leaves))


def check_loss(
    loss: Callable[..., Tensor],
    inputs: list[Tensor],
    calls: Counter,
    dtype: torch.dtype = torch.float32,
    rtol: float = FP32_TOLERANCE,
) -> None:
    """Assert ``loss`` with ``backend="triton"`` equals the fp64 reference backend on value and gradients."""
    before = sum(calls.values())
    value, grads = loss_and_grads(loss, inputs, "triton", dtype)
    assert sum(calls.values()) > before, "backend='triton' did not reach the Triton engine"
    exact = [x.to(dtype).double() if x.dim() else x.double() for x in inputs]
    ref_value, ref_grads = loss_and_grads(loss, exact, "reference", torch.float64)
    assert_close(value, ref_value, rtol)
    for ours, expected in zip(grads, ref_grads, strict=True):
        assert_close(ours, expected, rtol)


# ---------------------------------------------------------------------------------------------------------
# the engine functions against the reference
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "case",
    [
        problem(37, 130, 70, exponents=(0.5, 1.5)),  # hard sampler's pair, queue labels
        problem(
            130, 37, 20, exponents=(1.0,), classes=3, block=32
        ),  # several anchor tiles, one short candidate
        problem(130, 130, 70, symmetric=True, exponents=(1.0, 2.0), classes=40),
        problem(41, 41, 33, symmetric=True, exponents=(1.0,), classes=1),  # one class: no negatives at all
        problem(
            23, 50, 9, exponents=(1.0, 0.0, 0.5, 2.0, 1.5), temperature=0.05
        ),  # more exponents than one launch
    ],
    ids=["general-2exp", "general-tall", "symmetric-2exp", "symmetric-one-class", "five-exponents"],
)
def test_triton_row_stats_equal_the_reference_in_float32(case: EngineProblem) -> None:
    check_against_reference(case, torch.float32, DEVICE, FP32_TOLERANCE, FP32_TOLERANCE)


@settings(max_examples=8, phases=NO_SHRINK)
@given(case=engine_problems(dtype=st.just(torch.float32), max_rows=40, max_dim=12))
def test_triton_row_stats_equal_the_reference_on_random_problems(case: EngineProblem) -> None:
    check_against_reference(case, torch.float32, DEVICE, FP32_TOLERANCE, FP32_TOLERANCE)


def test_triton_row_stats_are_exact_in_float64() -> None:
    case = problem(29, 70, 19, exponents=(0.5, 1.5, 1.0), block=16)
    check_against_reference(case, torch.float64, DEVICE, 1e-11, 1e-11)
    check_against_reference(
        problem(29, 29, 19, symmetric=True, block=16), torch.float64, DEVICE, 1e-11, 1e-11
    )


@pytest.mark.slow
def test_triton_gradients_pass_gradcheck_in_float64() -> None:
    case = problem(6, 9, 3, exponents=(1.0, 2.0), classes=2, temperature=0.7)
    a = case.anchors.to(DEVICE).requires_grad_()
    c = case.candidates.to(DEVICE).requires_grad_()
    inv_tau = torch.tensor(1.3, dtype=torch.float64, device=DEVICE, requires_grad=True)
    labels_a, labels_c = case.anchor_labels.to(DEVICE), case.candidate_labels.to(DEVICE)
    index = case.anchor_index.to(DEVICE)

    def scalar(a: Tensor, c: Tensor, t: Tensor) -> Tensor:
        general = TritonRowStats.apply(a, c, labels_a, labels_c, index, t, case.exponents, 16)
        symmetric = SymmetricTritonRowStats.apply(a, labels_a, t, case.exponents, 16)
        return weighted_sum(general, 1) + weighted_sum(symmetric, 2)

    assert torch.autograd.gradcheck(scalar, (a, c, inv_tau))


def test_half_precision_inputs_accumulate_in_float32_and_get_gradients_in_their_dtype() -> None:
    case = problem(37, 45, 20, exponents=(1.0,), temperature=0.5)
    check_against_reference(case, torch.bfloat16, DEVICE, 2e-3, 3e-2)
    check_against_reference(case, torch.float16, DEVICE, 2e-3, 4e-3)


def test_cpu_tensors_never_reach_a_kernel_without_the_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert not triton_engine.can_launch(torch.device("cpu"))
    assert not triton_engine.auto_prefers_triton(torch.device("cpu"), torch.float32)
    z = gaussian((4, 3), 0, dtype=torch.float32)
    with pytest.raises(ValueError, match="TRITON_INTERPRET"):
        TritonRowStats.apply(
            z, z, torch.arange(4), torch.arange(4), torch.arange(4), torch.tensor(1.0), (1.0,), None
        )


def test_auto_prefers_triton_only_for_cuda_tensors_of_supported_dtypes() -> None:
    cuda = torch.device("cuda")
    assert triton_engine.auto_prefers_triton(cuda, torch.bfloat16)
    assert triton_engine.auto_prefers_triton(cuda, torch.float32)
    assert not triton_engine.auto_prefers_triton(cuda, torch.float64)
    assert not triton_engine.auto_prefers_triton(torch.device("cpu"), torch.float32)


@pytest.mark.slow
def test_the_engine_module_imports_without_triton() -> None:
    code = (
        "import sys; sys.modules['triton'] = None; sys.modules['triton.language'] = None\n"
        "import contrastive.engine.triton as t\n"
        "assert not t.triton_available() and not t.can_launch(__import__('torch').device('cuda'))\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# ---------------------------------------------------------------------------------------------------------
# dC by atomics in the row pass (CONTRASTIVE_TRITON_TILES=columns=atomic)
# ---------------------------------------------------------------------------------------------------------

ATOMIC_TILES = {"atomic": "columns=atomic", "atomic-16x16": "columns=atomic,block_m=16,block_n=16"}


def count_kernel_launches(monkeypatch: pytest.MonkeyPatch) -> Counter:
    """Count the launch code's kernel launches by kernel name (``"<name> atomic"`` with ATOMIC_COLUMNS on)."""
    launches: Counter = Counter()
    original = triton_launch._kernels

    def counted(kernel: object, name: str) -> object:
        class Launcher:
            def __getitem__(self, grid: tuple[int, ...]) -> Callable[..., object]:
                def run(*args: object, **kwargs: object) -> object:
                    launches[name + (" atomic" if kwargs.get("ATOMIC_COLUMNS") else "")] += 1
                    return kernel[grid](*args, **kwargs)  # type: ignore[index]

                return run

        return Launcher()

    def kernels() -> types.SimpleNamespace:
        module = original()
        names = [name for name in vars(module) if name.endswith("_kernel")]
        return types.SimpleNamespace(**{name: counted(getattr(module, name), name) for name in names})

    monkeypatch.setattr(triton_launch, "_kernels", kernels)
    return launches


@pytest.mark.slow
@pytest.mark.parametrize("tiles", sorted(ATOMIC_TILES), ids=str)
@pytest.mark.parametrize(
    "case",
    [
        problem(37, 130, 70, exponents=(0.5, 1.5)),  # two feature blocks of dC
        problem(130, 37, 20, exponents=(1.0,), classes=3, block=32),  # many anchor blocks per dC row
        problem(23, 50, 9, exponents=(1.0, 0.0, 0.5, 2.0, 1.5), temperature=0.05),  # two exponent groups
        problem(41, 41, 33, symmetric=True, exponents=(1.0, 2.0), classes=5),  # atomics do not apply
    ],
    ids=["general-2exp", "general-tall", "five-exponents", "symmetric"],
)
def test_atomic_columns_equal_the_reference_in_float32(
    case: EngineProblem, tiles: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONTRASTIVE_TRITON_TILES", ATOMIC_TILES[tiles])
    launches = count_kernel_launches(monkeypatch)
    check_against_reference(case, torch.float32, DEVICE, FP32_TOLERANCE, FP32_TOLERANCE)
    groups = -(-len(case.exponents) // 4)
    backward = {name: count for name, count in launches.items() if "backward" in name}
    if case.symmetric:
        assert backward == {"row_stats_backward_rows_kernel": groups}
    else:  # one pass per exponent group computes dA and dC, no column pass
        assert backward == {"row_stats_backward_rows_kernel atomic": groups}


@pytest.mark.slow
def test_atomic_columns_are_exact_in_float64(monkeypatch: pytest.MonkeyPatch) -> None:
    launches = count_kernel_launches(monkeypatch)
    for tiles in ATOMIC_TILES.values():
        monkeypatch.setenv("CONTRASTIVE_TRITON_TILES", tiles)
        for case in (
            problem(29, 70, 19, exponents=(0.5, 1.5, 1.0), block=16),
            problem(45, 33, 19, exponents=(0.5, 1.5, 1.0, 2.0, 0.25), seed=3),  # two exponent groups
        ):
            check_against_reference(case, torch.float64, DEVICE, 1e-11, 1e-11)
    assert launches["row_stats_backward_rows_kernel atomic"] == 2 * (1 + 2)
    assert "row_stats_backward_columns_kernel" not in launches


def test_the_default_backward_keeps_the_column_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CONTRASTIVE_TRITON_TILES", raising=False)
    launches = count_kernel_launches(monkeypatch)
    check_against_reference(
        problem(20, 30, 9, exponents=(1.0, 2.0)), torch.float32, DEVICE, FP32_TOLERANCE, FP32_TOLERANCE
    )
    assert launches["row_stats_backward_rows_kernel"] == launches["row_stats_backward_columns_kernel"] == 1
    assert "row_stats_backward_rows_kernel atomic" not in launches


@pytest.mark.parametrize("temperature_grad", [False, True], ids=["column-pass", "atomic-for-temperature"])
def test_atomic_columns_when_the_anchors_need_no_gradient(
    temperature_grad: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONTRASTIVE_TRITON_TILES", ATOMIC_TILES["atomic-16x16"])
    launches = count_kernel_launches(monkeypatch)
    case = problem(37, 50, 20, exponents=(0.5, 1.5))
    labels_a, labels_c = case.anchor_labels.to(DEVICE), case.candidate_labels.to(DEVICE)
    index = case.anchor_index.to(DEVICE)

    def gradients(triton: bool) -> tuple[Tensor, ...]:
        """Gradients of the candidates (and temperature) only: the anchors are constants (fp32 values)."""
        dtype = torch.float32 if triton else torch.float64
        anchors = case.anchors.float().to(device=DEVICE, dtype=dtype)
        candidates = case.candidates.float().to(device=DEVICE, dtype=dtype).requires_grad_()
        temperature = torch.tensor(
            case.temperature, dtype=torch.float64, device=DEVICE, requires_grad=temperature_grad
        )
        if triton:
            inv_tau = (1.0 / temperature).to(torch.float32)
            out = TritonRowStats.apply(
                anchors, candidates, labels_a, labels_c, index, inv_tau, case.exponents, None
            )
        else:
            out = reference_row_stats(
                anchors, candidates, labels_a, labels_c, index, temperature, case.exponents
            )[:3]
        leaves = [candidates] + ([temperature] if temperature_grad else [])
        return torch.autograd.grad(weighted_sum(out, 0), leaves)

    for ours, expected in zip(gradients(triton=True), gradients(triton=False), strict=True):
        assert_close(ours, expected, FP32_TOLERANCE)
    backward = {name: count for name, count in launches.items() if "backward" in name}
    if temperature_grad:  # d(1/τ) needs dS·C, so the row pass runs and adds dC on the way
        assert backward == {"row_stats_backward_rows_kernel atomic": 1}
    else:
        assert backward == {"row_stats_backward_columns_kernel": 1}


def test_an_unknown_column_mode_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONTRASTIVE_TRITON_TILES", "columns=sideways")
    with pytest.raises(ValueError, match=r"TileConfig\.columns .*'sideways'"):
        triton_engine.tile_config(torch.float32, 20, DEVICE)
    z = gaussian((4, 3), 0, dtype=torch.float32).to(DEVICE)
    with pytest.raises(ValueError, match=r"TileConfig\.columns"):
        TritonRowStats.apply(
            z, z, torch.arange(4), torch.arange(4), torch.arange(4), torch.tensor(1.0), (1.0,), None
        )


# ---------------------------------------------------------------------------------------------------------
# every engine-based loss and every sampler through the public API
# ---------------------------------------------------------------------------------------------------------

SAMPLERS = {
    "uniform": UniformSampler(),
    "debiased": DebiasedSampler(tau_plus=0.1),
    "hard": HardNegativeSampler(beta=1.0, tau_plus=0.1),
}


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_nt_xent_with_triton_equals_the_reference(sampler: str, triton_backend: Counter) -> None:
    views = [gaussian((65, 70), seed) for seed in (1, 2)]
    check_loss(
        lambda *v, backend: nt_xent(*v, temperature=0.2, sampler=SAMPLERS[sampler], backend=backend),
        views,
        triton_backend,
    )
    assert triton_backend["SymmetricTritonRowStats"] > 0


@pytest.mark.slow
@settings(max_examples=4, phases=NO_SHRINK)
@given(y=labels(43), seed=seeds())
def test_supcon_with_triton_equals_the_reference_on_random_label_patterns(y: Tensor, seed: int) -> None:
    views = [gaussian((43, 33), seed + k) for k in range(3)]
    with routed_to_triton() as calls:
        check_loss(lambda *v, backend: supcon(*v, labels=y, temperature=0.1, backend=backend), views, calls)


def test_supcon_contrast_mode_one_with_hard_sampler_uses_the_general_kernels(triton_backend: Counter) -> None:
    views = [gaussian((30, 20), k) for k in (3, 4)]
    y = torch.arange(30) % 4
    check_loss(
        lambda *v, backend: supcon(
            *v, labels=y, contrast_mode="one", temperature=0.3, sampler=SAMPLERS["hard"], backend=backend
        ),
        views,
        triton_backend,
    )
    assert triton_backend["TritonRowStats"] > 0


@pytest.mark.parametrize("in_batch", [True, False])
def test_infonce_with_extra_negatives_and_triton_equals_the_reference(
    in_batch: bool, triton_backend: Counter
) -> None:
    q, k, negatives = gaussian((37, 20), 5), gaussian((37, 20), 6), gaussian((50, 20), 7)
    check_loss(
        lambda q, k, n, backend: infonce(
            q,
            k,
            n,
            temperature=0.1,
            in_batch_negatives=in_batch,
            sampler=SAMPLERS["debiased"],
            backend=backend,
        ),
        [q, k, negatives],
        triton_backend,
    )


def test_clip_with_a_learnable_scale_and_triton_equals_the_reference(triton_backend: Counter) -> None:
    image, text = gaussian((37, 70), 8), gaussian((37, 70), 9)
    theta = torch.tensor(2.5, dtype=torch.float64)
    check_loss(
        lambda i, t, s, backend: clip(i, t, logit_scale=s, backend=backend), [image, text, theta], triton_backend
    )


@pytest.mark.parametrize("sampler", ["debiased", "hard"])
def test_samplers_on_nt_xent_with_extra_negatives_and_triton_equal_the_reference(
    sampler: str, triton_backend: Counter
) -> None:
    views = [gaussian((25, 20), seed) for seed in (11, 12)]
    extra = gaussian((19, 20), 13)
    check_loss(
        lambda a, b, n, backend: nt_xent(
            a, b, negatives=n, temperature=0.5, sampler=SAMPLERS[sampler], backend=backend
        ),
        views + [extra],
        triton_backend,
    )


# ---------------------------------------------------------------------------------------------------------
# both directions of one matrix (CLIP): one shared backward
# ---------------------------------------------------------------------------------------------------------


def dual_stats_and_grads(
    case: EngineProblem, dtype: torch.dtype, backend: str, need_anchors: bool = True
) -> tuple[list[Tensor], list[Tensor]]:
    """Both directions' statistics of ``case`` (its labels, no self) and the gradients of a weighted sum."""
    anchors = case.anchors.to(device=DEVICE, dtype=dtype).requires_grad_(need_anchors)
    candidates = case.candidates.to(device=DEVICE, dtype=dtype).requires_grad_()
    temperature = torch.tensor(case.temperature, dtype=torch.float64, device=DEVICE, requires_grad=True)
    rows, cols = dual_row_stats(
        anchors,
        candidates,
        case.anchor_labels.to(DEVICE),
        case.candidate_labels.to(DEVICE),
        temperature=temperature,
        exponents=case.exponents,
        backend=backend,
        block_size=case.block_size,
    )
    # the same positive and negative pairs, counted from either side
    assert int(rows.pos_count.sum()) == int(cols.pos_count.sum())
    assert int(rows.neg_count.sum()) == int(cols.neg_count.sum())
    total = weighted_sum(rows[:3], 1) + weighted_sum(cols[:3], 2)
    leaves = ([anchors] if need_anchors else []) + [candidates, temperature]
    return [*rows[:3], *cols[:3]], list(torch.autograd.grad(total, leaves))


@pytest.mark.slow
@pytest.mark.parametrize("tiles", ["", "columns=atomic", "block_m=16,block_n=16,columns=atomic"])
@pytest.mark.parametrize(
    "case",
    [
        problem(37, 41, 20, exponents=(1.0,), classes=11),
        problem(50, 23, 33, exponents=(0.5, 1.0, 1.5, 2.0, 3.0), classes=5, block=16),
    ],
    ids=["one-exponent", "two-exponent-groups"],
)
def test_dual_statistics_equal_two_reference_directions(
    case: EngineProblem, tiles: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONTRASTIVE_TRITON_TILES", tiles)
    case = dataclasses.replace(case, candidate_labels=case.candidate_labels.clamp(min=0))
    with routed_to_triton() as calls:
        out, grads = dual_stats_and_grads(case, torch.float32, "triton")
    assert calls == {"DualTritonRowStats": 1}
    exact = dataclasses.replace(
        case, anchors=case.anchors.float().double(), candidates=case.candidates.float().double()
    )
    ref, ref_grads = dual_stats_and_grads(exact, torch.float64, "reference")
    for ours, expected in zip(out + grads, ref + ref_grads, strict=True):
        assert_close(ours, expected, FP32_TOLERANCE)
    exact_out, exact_grads = dual_stats_and_grads(exact, torch.float64, "triton")
    for ours, expected in zip(exact_out + exact_grads, ref + ref_grads, strict=True):
        assert_close(ours, expected, 1e-11)


def test_dual_gradients_of_the_candidates_alone_equal_the_reference() -> None:
    case = problem(30, 45, 12, exponents=(1.0, 2.0), classes=4, block=16)
    case = dataclasses.replace(case, candidate_labels=case.candidate_labels.clamp(min=0))
    ours, grads = dual_stats_and_grads(case, torch.float64, "triton", need_anchors=False)
    ref, ref_grads = dual_stats_and_grads(case, torch.float64, "reference", need_anchors=False)
    for x, y in zip(ours + grads, ref + ref_grads, strict=True):
        assert_close(x, y, 1e-11)


def test_dual_backward_makes_one_row_and_one_column_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    launches = count_kernel_launches(monkeypatch)
    case = problem(20, 20, 8, exponents=(1.0,), classes=20)
    dual_stats_and_grads(
        dataclasses.replace(case, candidate_labels=case.anchor_labels), torch.float64, "triton"
    )
    assert launches == {
        "row_stats_forward_kernel": 2,
        "row_stats_backward_rows_kernel": 1,
        "row_stats_backward_columns_kernel": 1,
    }


@pytest.mark.slow
def test_dual_gradients_pass_gradcheck_in_float64() -> None:
    case = problem(6, 7, 3, exponents=(1.0, 2.0), classes=2, temperature=0.7)
    labels_a, labels_c = case.anchor_labels.to(DEVICE), case.candidate_labels.clamp(min=0).to(DEVICE)

    def scalar(a: Tensor, c: Tensor, t: Tensor) -> Tensor:
        out = DualTritonRowStats.apply(a, c, labels_a, labels_c, t, case.exponents, 16)
        return weighted_sum(out[:3], 1) + weighted_sum(out[3:], 2)

    leaves = (
        case.anchors.to(DEVICE).requires_grad_(),
        case.candidates.to(DEVICE).requires_grad_(),
        torch.tensor(1.3, dtype=torch.float64, device=DEVICE, requires_grad=True),
    )
    assert torch.autograd.gradcheck(scalar, leaves)


@pytest.mark.parametrize("backend", ["reference", "chunked", "triton"])
def test_dual_statistics_of_one_tensor_on_both_sides_keep_every_pair(backend: str) -> None:
    # no self column either way, whichever backend: row_stats' symmetric default must not kick in
    z = torch.nn.functional.normalize(gaussian((12, 5), 3), dim=1).to(DEVICE)
    y = (torch.arange(12) % 4).to(DEVICE)
    rows, cols = dual_row_stats(z, z, y, y, temperature=0.5, backend=backend)
    assert rows.pos_count.tolist() == cols.pos_count.tolist() == [3] * 12
    expected = torch.logsumexp(torch.where(y[:, None] == y[None, :], z @ z.T / 0.5, -torch.inf), dim=1)
    assert_close(rows.pos_lse, expected, 1e-12)
    assert_close(cols.pos_lse, expected, 1e-12)
