"""InfoNCE (with extra negatives and the memory queue) and CLIP against their materialised forms."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from contrastive.functional import clip, infonce, nt_xent
from contrastive.losses.clip import ClipLoss
from contrastive.losses.infonce import InfoNCELoss
from contrastive.samplers import MemoryQueue
from tests.strategies import gaussian, seeds, temperatures, views


def materialised_infonce(q, k, negatives, temperature, in_batch):
    """Cross entropy over [in-batch keys | extra negatives] (retrieval) or [positive | negatives] (MoCo)."""
    q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
    n = F.normalize(negatives, dim=1) if negatives is not None else q[:0]
    if in_batch:
        logits = torch.cat([q @ k.T, q @ n.T], dim=1) / temperature
        return F.cross_entropy(logits, torch.arange(q.shape[0]))
    logits = torch.cat([(q * k).sum(1, keepdim=True), q @ n.T], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long))


@given(
    vs=views(min_views=2, max_views=2),
    temperature=temperatures(0.05, 5.0),
    seed=seeds(),
    n_negatives=st.integers(0, 7),
    in_batch=st.booleans(),
    backend=st.sampled_from(["reference", "chunked"]),
)
def test_infonce_matches_the_materialised_cross_entropy(
    vs, temperature, seed, n_negatives, in_batch, backend
) -> None:
    q, k = vs
    negatives = gaussian((n_negatives, q.shape[1]), seed) if n_negatives else None
    if not in_batch and negatives is None:
        with pytest.raises(ValueError, match="negatives"):
            infonce(q, k, negatives, in_batch_negatives=False)
        return
    ours = infonce(
        q, k, negatives, temperature=temperature, in_batch_negatives=in_batch, backend=backend, block_size=3
    )
    assert torch.allclose(ours, materialised_infonce(q, k, negatives, temperature, in_batch), rtol=1e-10)


@given(
    vs=views(min_views=2, max_views=2),
    scale=st.floats(1.0, 100.0),
    backend=st.sampled_from(["reference", "chunked"]),
)
def test_clip_matches_the_symmetric_cross_entropy(vs, scale: float, backend: str) -> None:
    image, text = vs
    logits = scale * F.normalize(image, dim=1) @ F.normalize(text, dim=1).T
    target = torch.arange(image.shape[0])
    expected = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
    for block in (4, None):
        ours = clip(image, text, logit_scale=math.log(scale), backend=backend, block_size=block)
        assert torch.allclose(ours, expected, rtol=1e-10)


@given(vs=views(min_views=2, max_views=2), scale=st.floats(1.0, 100.0))
def test_clip_is_symmetric_in_its_modalities(vs, scale: float) -> None:
    image, text = vs
    theta = math.log(scale)
    assert torch.allclose(clip(image, text, logit_scale=theta), clip(text, image, logit_scale=theta), rtol=1e-12)


def test_clip_logit_scale_is_learnable_initialised_like_clip_and_capped_by_a_clamp() -> None:
    loss_fn = ClipLoss()
    assert isinstance(loss_fn.logit_scale, torch.nn.Parameter)
    assert math.isclose(float(loss_fn.logit_scale.detach()), math.log(1 / 0.07), rel_tol=1e-6)
    image, text = gaussian((6, 4), 0, dtype=torch.float32), gaussian((6, 4), 1, dtype=torch.float32)
    loss_fn(image, text).backward()
    assert loss_fn.logit_scale.grad is not None and float(loss_fn.logit_scale.grad) != 0.0
    # the cap is applied to the parameter, not inside forward: θ above the cap still has a gradient ...
    with torch.no_grad():
        loss_fn.logit_scale.fill_(10.0)
    loss_fn.logit_scale.grad = None
    loss_fn(image, text).backward()
    assert float(loss_fn.logit_scale.grad) != 0.0
    # ... and the clamp (after an optimiser step, as CLIP does) brings it back to log(100)
    optimizer = torch.optim.SGD(loss_fn.parameters(), lr=0.0)
    handle = loss_fn.register_clamp(optimizer)
    optimizer.step()
    assert math.isclose(float(loss_fn.scale().detach()), 100.0, rel_tol=1e-6)
    handle.remove()
    with torch.no_grad():
        loss_fn.logit_scale.fill_(3.0)
    optimizer.step()
    assert float(loss_fn.logit_scale.detach()) == 3.0


def test_clip_module_and_function_read_logit_scale_alike() -> None:
    # the same number means the same thing everywhere: θ, the log of the multiplier
    image, text = gaussian((6, 4), 6, dtype=torch.float32), gaussian((6, 4), 7, dtype=torch.float32)
    module = ClipLoss(logit_scale=2.5)
    assert torch.allclose(module(image, text), clip(image, text, logit_scale=2.5))
    assert torch.allclose(module(image, text), clip(image, text, logit_scale=module.logit_scale))


def test_clip_logit_scale_gradient_matches_finite_differences() -> None:
    image, text = gaussian((5, 3), 2), gaussian((5, 3), 3)
    theta = torch.tensor(1.5, dtype=torch.float64, requires_grad=True)
    for block in (2, None):
        assert torch.autograd.gradcheck(lambda t: clip(image, text, logit_scale=t, block_size=block), (theta,))


def test_clip_with_shared_labels_treats_them_as_positives() -> None:
    image, text = gaussian((4, 3), 4), gaussian((4, 3), 5)
    theta = math.log(5.0)
    unique = clip(image, text, torch.tensor([9, 8, 7, 6]), logit_scale=theta)
    assert torch.allclose(unique, clip(image, text, logit_scale=theta), rtol=1e-12)
    shared = clip(image, text, torch.tensor([0, 0, 1, 1]), logit_scale=theta)
    assert torch.isfinite(shared) and not torch.allclose(shared, unique)


def test_memory_queue_is_first_in_first_out() -> None:
    queue = MemoryQueue(size=4, dim=2)
    assert len(queue) == 0 and queue.negatives().shape == (0, 2)
    queue.enqueue(torch.tensor([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0]]))
    assert len(queue) == 3
    queue.enqueue(torch.tensor([[4.0, 0.0], [5.0, 0.0]]))
    assert len(queue) == 4
    assert sorted(queue.negatives()[:, 0].tolist()) == [2.0, 3.0, 4.0, 5.0]
    queue.enqueue(torch.arange(12.0).view(6, 2))
    assert sorted(queue.negatives()[:, 0].tolist()) == [4.0, 6.0, 8.0, 10.0]


def test_memory_queue_stores_detached_keys_and_random_init_is_full_of_unit_vectors() -> None:
    queue = MemoryQueue(size=3, dim=2)
    keys = torch.ones(2, 2, requires_grad=True)
    queue.enqueue(keys * 2)
    assert not queue.negatives().requires_grad
    random = MemoryQueue(size=5, dim=3, init="random", generator=torch.Generator().manual_seed(0))
    assert len(random) == 5
    assert torch.allclose(random.negatives().norm(dim=1), torch.ones(5))


@given(vs=views(min_views=2, max_views=2), seed=seeds(), temperature=temperatures(0.05, 2.0))
def test_infonce_with_a_queue_is_moco(vs, seed: int, temperature: float) -> None:
    q, k = vs
    queue = MemoryQueue(size=6, dim=q.shape[1], dtype=torch.float64)
    queue.enqueue(gaussian((9, q.shape[1]), seed))
    ours = InfoNCELoss(temperature=temperature, in_batch_negatives=False)(q, k, queue)
    expected = materialised_infonce(q, k, queue.negatives(), temperature, in_batch=False)
    assert torch.allclose(ours, expected, rtol=1e-10)


@given(vs=views(min_views=2, max_views=3), seed=seeds(), temperature=temperatures(0.05, 2.0))
def test_nt_xent_with_extra_negatives_adds_them_to_every_denominator(
    vs, seed: int, temperature: float
) -> None:
    extra = gaussian((5, vs[0].shape[1]), seed)
    z = F.normalize(torch.cat(vs), dim=1)
    n = F.normalize(extra, dim=1)
    b, v = vs[0].shape[0], len(vs)
    logits = torch.cat([z @ z.T, z @ n.T], dim=1) / temperature
    logits[:, : v * b].fill_diagonal_(float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    ids = torch.arange(b).repeat(v)
    positive = (ids[:, None] == ids[None, :]) & ~torch.eye(v * b, dtype=torch.bool)
    expected = (-torch.where(positive, log_prob[:, : v * b], 0.0).sum(1) / positive.sum(1)).mean()
    queue = MemoryQueue(size=5, dim=extra.shape[1], dtype=torch.float64)
    queue.enqueue(extra)
    for negatives in (extra, queue):
        assert torch.allclose(
            nt_xent(*vs, temperature=temperature, negatives=negatives, block_size=4), expected, rtol=1e-10
        )


def test_infonce_gradients_pass_gradcheck_in_float64() -> None:
    q, k = gaussian((4, 3), 6).requires_grad_(), gaussian((4, 3), 7).requires_grad_()
    negatives = gaussian((3, 3), 8).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda a, b, n: infonce(a, b, n, temperature=0.4, block_size=2), (q, k, negatives)
    )


def test_infonce_with_one_tensor_as_query_and_key_equals_two_equal_tensors() -> None:
    q = gaussian((6, 4), 8, dtype=torch.float32)
    same = infonce(q, q, normalize=False)
    assert torch.isfinite(same) and torch.equal(same, infonce(q, q.clone(), normalize=False))


def test_clip_loss_checks_its_engine_options_like_every_engine_loss() -> None:
    with pytest.raises(ValueError, match="backend"):
        ClipLoss(backend="nonsense")
    with pytest.raises(ValueError, match="validate_args"):
        ClipLoss(validate_args="yes")
