"""Multi-label SupCon: multi-hot labels ``(B, K)``, positives sharing a label, optional Jaccard weights.

Every backend (the chunked engine, and the Triton kernels under ``TRITON_INTERPRET=1``)
must equal the materialised reference on values and gradients; the reference must equal
the obviously right O(N²) formula written here; one label per row must be integer SupCon.
"""

from __future__ import annotations

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from contrastive import NoPositiveWarning  # noqa: E402
from contrastive.engine import row_stats  # noqa: E402
from contrastive.engine.multilabel import pack_bits  # noqa: E402
from contrastive.engine.triton import triton_available  # noqa: E402
from contrastive.functional import supcon  # noqa: E402
from contrastive.losses.supcon import SupConLoss  # noqa: E402
from contrastive.samplers import DebiasedSampler, HardNegativeSampler, MemoryQueue  # noqa: E402
from tests.strategies import gaussian, seeds  # noqa: E402

Tensor = torch.Tensor
BACKENDS = ["chunked"] + (["triton"] if triton_available() else [])
SAMPLERS = {
    "uniform": lambda: "uniform",
    "hard": lambda: HardNegativeSampler(beta=0.7, tau_plus=0.1),
    "debiased": lambda: DebiasedSampler(tau_plus=0.1),
}


def multi_hot(batch: int, classes: int, density: float, seed: int) -> Tensor:
    """Random multi-hot rows; row 0 has no label at all."""
    hot = torch.rand(batch, classes, generator=torch.Generator().manual_seed(seed)) < density
    hot[0] = False
    return hot


def leaves(batch: int, views: int, dim: int, seed: int) -> list[Tensor]:
    """Views as float64 leaves that require grad."""
    return [gaussian((batch, dim), seed + v, dtype=torch.float64).requires_grad_() for v in range(views)]


def value_and_grads(loss: Tensor, inputs: list[Tensor]) -> tuple[Tensor, ...]:
    """The loss and its gradients with respect to ``inputs``."""
    return (loss.detach(), *torch.autograd.grad(loss, inputs))


def assert_same(ours: tuple[Tensor, ...], expected: tuple[Tensor, ...], tol: float = 1e-10) -> None:
    """Values and gradients equal within ``tol`` times max(1, largest magnitude)."""
    for a, b in zip(ours, expected, strict=True):
        scale = max(1.0, float(b.abs().max()))
        assert float((a - b).abs().max()) <= tol * scale, (a, b)


def materialised_supcon(views: list[Tensor], labels: Tensor, temperature: float, jaccard: bool) -> Tensor:
    """The obviously right multi-label SupCon: the whole matrix, every anchor, L2-normalised views."""
    z = torch.nn.functional.normalize(torch.cat(views), dim=1)
    y = labels.double().repeat(len(views), 1)
    sim = z @ z.T / temperature
    n = z.shape[0]
    eye = torch.eye(n, dtype=torch.bool)
    inter = y @ y.T
    union = y.sum(1)[:, None] + y.sum(1)[None, :] - inter
    positive = (inter > 0) & ~eye
    weight = torch.where(positive, inter / union.clamp(min=1) if jaccard else torch.ones_like(inter),
                         torch.zeros_like(inter))
    log_prob = sim - torch.logsumexp(sim.masked_fill(eye, float("-inf")), dim=1, keepdim=True)
    losses = []
    for i in range(n):
        if positive[i].any():
            losses.append(-(weight[i] * log_prob[i].masked_fill(~positive[i], 0.0)).sum() / weight[i].sum())
    return torch.stack(losses).mean()


# ------------------------------------------------------------------------------------------- the engine


@st.composite
def multilabel_problems(draw: st.DrawFn, max_rows: int = 12) -> dict:
    """A ``row_stats`` problem with multi-hot labels: symmetric or with own columns, any density, block."""
    symmetric = draw(st.booleans())
    m = draw(st.integers(1, max_rows))
    k = draw(st.sampled_from([1, 2, 3, 5, 70]))  # 70: two bitset words in the kernels
    d = draw(st.integers(1, 5))
    density = draw(st.sampled_from([0.0, 0.2, 0.5, 1.0]))
    a_labels = multi_hot(m, k, density, draw(seeds()))
    anchors = gaussian((m, d), draw(seeds()), dtype=torch.float64)
    problem = {"anchors": anchors, "anchor_labels": a_labels, "symmetric": symmetric,
               "temperature": draw(st.sampled_from([0.1, 0.5, 2.0])),
               "exponents": tuple(draw(st.lists(st.sampled_from([1.0, 0.5, 2.0]), min_size=1, max_size=2,
                                                unique=True))),
               "block_size": draw(st.sampled_from([None, 1, 3, 16])),
               "positive_weighting": draw(st.sampled_from(["binary", "jaccard"]))}
    if not symmetric:
        n = draw(st.integers(1, max_rows))
        seed = draw(seeds())
        c_labels = torch.cat([a_labels, multi_hot(n, k, density, seed)])[
            torch.randperm(m + n, generator=torch.Generator().manual_seed(seed))[:n]]
        problem.update(candidates=gaussian((n, d), seed + 1, dtype=torch.float64), candidate_labels=c_labels,
                       anchor_index=torch.randint(-1, n, (m,), generator=torch.Generator().manual_seed(seed)))
    return problem


def engine_run(problem: dict, backend: str, joint: bool, seed: int) -> tuple:
    """Row statistics of ``problem`` and the gradients of a random scalar of them."""
    anchors = problem["anchors"].clone().requires_grad_()
    inputs = [anchors]
    options = {"temperature": problem["temperature"], "exponents": problem["exponents"], "joint": joint,
               "backend": backend, "positive_weighting": problem["positive_weighting"]}
    if backend != "reference":
        options["block_size"] = problem["block_size"]
    if problem["symmetric"]:
        stats = row_stats(anchors, None, problem["anchor_labels"], **options)
    else:
        candidates = problem["candidates"].clone().requires_grad_()
        inputs.append(candidates)
        stats = row_stats(anchors, candidates, problem["anchor_labels"], problem["candidate_labels"],
                          anchor_index=problem["anchor_index"], **options)
    parts = [x for x in (stats.neg_lse, stats.pos_lse, stats.all_lse) if x is not None] + [stats.pos_sum]
    total = sum((torch.where(torch.isfinite(x), x, 0.0) * gaussian(tuple(x.shape), seed + i, dtype=x.dtype)).sum()
                for i, x in enumerate(parts))
    return stats, torch.autograd.grad(total, inputs)


def assert_stats_equal(out, ref, joint: bool, tol: float = 1e-10) -> None:  # noqa: ANN001
    """Every statistic, count and weight of ``out`` equals the reference's."""
    assert torch.equal(out.pos_count, ref.pos_count) and torch.equal(out.neg_count, ref.neg_count)
    assert (out.pos_weight is None) == (ref.pos_weight is None)
    names = ["pos_sum", "pos_weight"] + (["all_lse"] if joint else ["neg_lse", "pos_lse"])
    for name in names:
        a, b = getattr(out, name), getattr(ref, name)
        if b is None:
            continue
        assert torch.equal(torch.isinf(a), torch.isinf(b)), name
        finite = torch.isfinite(b)
        scale = max([1.0] + b[finite].abs().tolist())
        assert torch.allclose(a[finite], b[finite], rtol=0, atol=tol * scale), name


@pytest.mark.parametrize("backend", BACKENDS)
@given(problem=multilabel_problems(), joint=st.booleans(), seed=seeds())
@settings(max_examples=25)
def test_every_backend_equals_the_reference_on_values_and_gradients(backend: str, problem: dict, joint: bool,
                                                                    seed: int) -> None:
    ref, ref_grads = engine_run(problem, "reference", joint, seed)
    out, grads = engine_run(problem, backend, joint, seed)
    assert_stats_equal(out, ref, joint)
    for g, e in zip(grads, ref_grads, strict=True):
        assert torch.allclose(g, e, rtol=0, atol=1e-9 * max(1.0, float(e.abs().max())))


def test_the_reference_masks_and_weights_are_the_label_sets() -> None:
    labels = torch.tensor([[1, 1, 0], [0, 1, 0], [0, 0, 1], [0, 0, 0], [1, 1, 0]])
    z = gaussian((5, 3), 0, dtype=torch.float64)
    stats = row_stats(z, None, labels, backend="reference", positive_weighting="jaccard")
    # row 0 shares with 1 (1/2) and 4 (2/2); row 3 has no label: no positive, a negative of everyone
    assert stats.pos_count.tolist() == [2, 2, 0, 0, 2]
    assert stats.neg_count.tolist() == [2, 2, 4, 4, 2]
    assert torch.allclose(stats.pos_weight, torch.tensor([1.5, 1.0, 0.0, 0.0, 1.5], dtype=torch.float64))
    sim = z @ z.T
    assert torch.allclose(stats.pos_sum[0], 0.5 * sim[0, 1] + sim[0, 4])


def test_bitsets_pack_63_labels_per_word() -> None:
    hot = torch.zeros(2, 70, dtype=torch.bool)
    hot[0, [0, 62]] = True
    hot[1, [63, 69]] = True
    assert pack_bits(hot).tolist() == [[1 + 2**62, 0], [0, 1 + 2**6]]


def test_multi_hot_labels_need_one_width_and_both_sides_multi_hot() -> None:
    z = torch.randn(4, 3)
    with pytest.raises(ValueError, match="candidate_labels"):
        row_stats(z, z, torch.ones(4, 2), torch.ones(4, 3))
    with pytest.raises(ValueError, match="candidate_labels"):
        row_stats(z, z, torch.ones(4, 2), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="positive_weighting"):
        row_stats(z, None, torch.ones(4, 2), positive_weighting="cosine")


# --------------------------------------------------------------------------------------------- the loss


@st.composite
def loss_cases(draw: st.DrawFn) -> dict:
    """Views, integer labels, a sampler, a contrast mode, maybe queue negatives (small: Triton interprets)."""
    batch = draw(st.integers(2, 6))
    classes = draw(st.integers(1, 4))
    seed = draw(seeds())
    return {"views": leaves(batch, draw(st.integers(1, 3)), draw(st.integers(1, 4)), seed),
            "labels": torch.randint(0, classes, (batch,), generator=torch.Generator().manual_seed(seed)),
            "classes": classes, "seed": seed,
            "sampler": draw(st.sampled_from(sorted(SAMPLERS))),
            "contrast_mode": draw(st.sampled_from(["all", "one"])),
            "negatives": draw(st.booleans()),
            "temperature": draw(st.sampled_from([0.1, 0.5]))}


def run_loss(case: dict, labels: Tensor, backend: str, **options: object) -> tuple[Tensor, ...]:
    """SupCon of ``case`` with ``labels``: value and gradients of the views."""
    negatives = gaussian((3, case["views"][0].shape[1]), case["seed"] + 99, dtype=torch.float64)
    loss = supcon(*case["views"], labels=labels, temperature=case["temperature"], backend=backend,
                  sampler=SAMPLERS[case["sampler"]](), contrast_mode=case["contrast_mode"],
                  negatives=negatives if case["negatives"] else None, block_size=2 if backend != "reference"
                  else None, **options)
    return value_and_grads(loss, case["views"])


@pytest.mark.filterwarnings("ignore::contrastive.NoPositiveWarning")
@pytest.mark.parametrize("backend", ["reference", *BACKENDS])
@given(case=loss_cases(), weighting=st.sampled_from(["binary", "jaccard"]),
       dtype=st.sampled_from([torch.bool, torch.long, torch.float32]))
@settings(max_examples=20)
def test_one_label_per_row_is_integer_supcon(backend: str, case: dict, weighting: str,
                                             dtype: torch.dtype) -> None:
    one_hot = torch.nn.functional.one_hot(case["labels"], case["classes"]).to(dtype)
    expected = run_loss(case, case["labels"], "reference")
    assert_same(run_loss(case, one_hot, backend, positive_weighting=weighting), expected)


@pytest.mark.filterwarnings("ignore::contrastive.NoPositiveWarning")
@pytest.mark.parametrize("backend", ["reference", *BACKENDS])
@given(case=loss_cases(), weighting=st.sampled_from(["binary", "jaccard"]), density=st.sampled_from([0.3, 0.6]))
@settings(max_examples=20)
def test_every_backend_and_sampler_equals_the_reference_engine(backend: str, case: dict, weighting: str,
                                                               density: float) -> None:
    labels = multi_hot(case["labels"].numel(), 4, density, case["seed"])
    expected = run_loss(case, labels, "reference", positive_weighting=weighting)
    assert_same(run_loss(case, labels, backend, positive_weighting=weighting), expected)


@pytest.mark.parametrize("backend", ["reference", *BACKENDS])
@given(batch=st.integers(3, 8), views=st.integers(1, 3), seed=seeds(), jaccard=st.booleans(),
       density=st.sampled_from([0.3, 0.6]))
def test_the_loss_is_the_materialised_multilabel_formula(backend: str, batch: int, views: int, seed: int,
                                                         jaccard: bool, density: float) -> None:
    labels = multi_hot(batch, 5, density, seed)
    labels[1:3] = True  # share a label with every labelled row, so the batch has positives
    z = leaves(batch, views, 3, seed)
    weighting = "jaccard" if jaccard else "binary"
    ours = supcon(*z, labels=labels, temperature=0.3, backend=backend, positive_weighting=weighting)
    assert_same(value_and_grads(ours, z), value_and_grads(materialised_supcon(z, labels, 0.3, jaccard), z))


@pytest.mark.filterwarnings("ignore::contrastive.NoPositiveWarning")
@pytest.mark.parametrize("backend", ["reference", *BACKENDS])
@given(case=loss_cases(), groups=st.integers(1, 3))
@settings(max_examples=15)
def test_jaccard_equals_binary_when_every_positive_pair_overlaps_fully(backend: str, case: dict,
                                                                       groups: int) -> None:
    # each class carries a block of `groups` labels: two rows share all their labels or none
    labels = torch.nn.functional.one_hot(case["labels"], case["classes"]).repeat_interleave(groups, dim=1)
    jaccard = run_loss(case, labels, backend, positive_weighting="jaccard")
    assert_same(jaccard, run_loss(case, labels, backend, positive_weighting="binary"))


def test_jaccard_weights_partial_overlaps() -> None:
    labels = torch.tensor([[1, 1, 0], [0, 1, 0], [1, 1, 1], [0, 0, 1]])
    z = leaves(4, 2, 3, 5)
    binary = supcon(*z, labels=labels, backend="chunked")
    jaccard = supcon(*z, labels=labels, backend="chunked", positive_weighting="jaccard")
    assert not torch.allclose(binary, jaccard)
    assert_same(value_and_grads(jaccard, z), value_and_grads(materialised_supcon(z, labels, 0.1, True), z))


@pytest.mark.parametrize("backend", ["reference", *BACKENDS])
def test_rows_without_shared_labels_have_no_positive_and_follow_no_positive(backend: str) -> None:
    labels = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 0], [0, 0, 1]])  # pairwise disjoint, one view
    z = leaves(4, 1, 3, 0)
    with pytest.warns(NoPositiveWarning):
        loss = supcon(*z, labels=labels, backend=backend)
    assert float(loss.detach()) == 0.0
    loss.backward()  # connected to the graph
    with pytest.raises(ValueError, match="no anchor has a positive"):
        supcon(*z, labels=labels, backend=backend, no_positive="raise")
    # two views: each labelled row's positive is its other view; the unlabelled row has none
    two = leaves(4, 2, 3, 0)
    stats_loss = supcon(*two, labels=labels, backend=backend)
    assert_same(value_and_grads(stats_loss, two), value_and_grads(materialised_supcon(two, labels, 0.1, False), two))


def test_queue_negatives_are_never_positives() -> None:
    labels = torch.tensor([[1, 0], [1, 1], [0, 1]])
    z = leaves(3, 2, 4, 1)
    queue = MemoryQueue(5, 4, init="random", dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    loss = SupConLoss(0.2, backend="chunked", positive_weighting="jaccard")(*z, labels=labels, negatives=queue)
    reference = SupConLoss(0.2, backend="reference", positive_weighting="jaccard")(*z, labels=labels,
                                                                                 negatives=queue)
    assert_same(value_and_grads(loss, z), value_and_grads(reference, z))
    # the queue only adds to the denominator: the loss grows over the queue-free one
    assert float(loss.detach()) > float(supcon(*z, labels=labels, temperature=0.2, positive_weighting="jaccard").detach())


@pytest.mark.parametrize(
    "labels, match",
    [
        (torch.tensor([[0, 2], [1, 0], [1, 1]]), "only 0 and 1"),
        (torch.tensor([[0.5, 1.0], [1.0, 0.0], [1.0, 1.0]]), "only 0 and 1"),
        (torch.tensor([[float("nan"), 1.0], [1.0, 0.0], [1.0, 1.0]]), "only 0 and 1"),
        (torch.ones(4, 2), r"shape \(3,\) or multi-hot labels of shape \(3, K\)"),
        (torch.ones(3, 0), "K >= 1"),
        (torch.ones(3, 2, dtype=torch.complex64), "multi-hot labels"),
        (torch.ones(3, 2, 1), "labels"),
    ],
)
def test_bad_labels_raise_value_error_naming_labels(labels: Tensor, match: str) -> None:
    z = leaves(3, 2, 3, 0)
    with pytest.raises(ValueError, match="labels") as info:
        supcon(*z, labels=labels)
    assert info.match(match)


def test_bad_positive_weighting_raises_value_error() -> None:
    with pytest.raises(ValueError, match="positive_weighting"):
        SupConLoss(positive_weighting="overlap")
    with pytest.raises(ValueError, match="positive_weighting"):
        supcon(*leaves(3, 2, 3, 0), labels=torch.ones(3, 2), positive_weighting="overlap")


def test_without_validation_values_are_not_checked_but_shapes_are() -> None:
    z = leaves(3, 2, 3, 0)
    supcon(*z, labels=torch.tensor([[0, 2], [1, 0], [1, 1]]), validate_args=False)  # nonzero counts as 1
    with pytest.raises(ValueError, match="labels"):
        supcon(*z, labels=torch.ones(4, 2), validate_args=False)
