"""GradCache leaves the gradient of one full-batch backward in ``.grad``, however the batch is chunked.

References are computed in the same process: the full batch through the encoder with a
graph (models without batch-coupled layers), or, where randomness or per-chunk BatchNorm
makes the chunking part of the model, the same chunks run one after another with a graph.
Models are tiny and float64 (float32 where rounding is the point), so the file runs in seconds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
from hypothesis import given
from hypothesis import strategies as st

import contrastive as cl
from contrastive.distributed import BatchLayout
from contrastive.gradcache import CachedStep, cached_backward

Tensor = torch.Tensor
D_IN, D = 6, 5
TOL64 = {"rtol": 1e-9, "atol": 1e-11}


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """The models are tiny: on a loaded machine a second intra-op thread only waits for a core."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def mlp(dropout: float = 0.0, dtype: torch.dtype = torch.float64, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    layers: list[torch.nn.Module] = [torch.nn.Linear(D_IN, 16), torch.nn.Tanh()]
    if dropout:
        layers.append(torch.nn.Dropout(dropout))
    return torch.nn.Sequential(*layers, torch.nn.Linear(16, D)).to(dtype)


def small_cnn(dropout: float = 0.0, norm: str = "group", seed: int = 0) -> torch.nn.Module:
    """Two 3x3 convolutions on 3x6x6 images; ``norm`` is 'group' (no batch coupling) or 'batch'."""
    torch.manual_seed(seed)
    norm_layer = torch.nn.GroupNorm(2, 4) if norm == "group" else torch.nn.BatchNorm2d(4)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1),
        norm_layer,
        torch.nn.ReLU(),
        torch.nn.Dropout2d(dropout),
        torch.nn.Conv2d(4, 8, 3, stride=2, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(8, D),
    ).double()


def inputs(n_views: int, batch: int, shape: tuple[int, ...] = (D_IN,), seed: int = 1) -> list[Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return list(torch.randn(n_views, batch, *shape, generator=gen, dtype=torch.float64))


def params(*modules: Any) -> list[Tensor]:
    return [p for m in modules if isinstance(m, torch.nn.Module) for p in m.parameters()]


def grads_of(
    run: Callable[[], Any], modules: Sequence[Any], seed: int | None = None
) -> tuple[Any, list[Tensor | None]]:
    """Zero the gradients, run ``run`` (from random seed ``seed``) and return its result and the gradients."""
    for p in params(*modules):
        p.grad = None
    if seed is not None:
        torch.manual_seed(seed)
    out = run()
    return out, [None if p.grad is None else p.grad.clone() for p in params(*modules)]


def full_batch(encoders: Sequence[Any], loss: Any, views: Sequence[Any], chunk: int | None = None, **kw: Any):
    """``loss(*embeddings).backward()`` with every view encoded at once, or chunk by chunk (with a graph)."""

    def encode(e: Any, x: Tensor) -> Tensor:
        return e(x) if chunk is None else torch.cat([e(c) for c in x.split(chunk)])

    def run() -> Tensor:
        value = loss(*(encode(e, x) for e, x in zip(encoders, views, strict=True)), **kw)
        value.backward()
        return value.detach()

    return run


def assert_all_close(got: Sequence[Tensor | None], expected: Sequence[Tensor | None], **tol: Any) -> None:
    assert len(got) == len(expected)
    for i, (g, e) in enumerate(zip(got, expected, strict=True)):
        assert (g is None) == (e is None), f"gradient {i}: {g} vs {e}"
        if g is not None:
            torch.testing.assert_close(g, e, **(tol or TOL64), msg=lambda m, i=i: f"gradient {i}: {m}")


# ---------------------------------------------------------------- exactness


@pytest.mark.parametrize(
    ("model", "chunk_size"), [("mlp", c) for c in (1, 3, 4, 7, 10, 64)] + [("cnn", c) for c in (3, 4, 64)]
)
def test_gradients_equal_one_full_batch_backward(model: str, chunk_size: int) -> None:
    encoder = mlp() if model == "mlp" else small_cnn()
    views = inputs(2, 10, (D_IN,) if model == "mlp" else (3, 6, 6))
    loss = cl.get_loss("nt_xent", temperature=0.3)
    expected_loss, expected = grads_of(full_batch([encoder] * 2, loss, views), [encoder])
    value, got = grads_of(lambda: cl.GradCache(encoder, loss, chunk_size).backward(*views), [encoder])
    torch.testing.assert_close(value, expected_loss, **TOL64)
    assert_all_close(got, expected)


@given(batch=st.integers(2, 12), chunk_size=st.integers(1, 14), n_views=st.integers(2, 3))
def test_any_chunking_of_any_batch_gives_the_full_batch_gradient_of_supcon(
    batch: int, chunk_size: int, n_views: int
) -> None:
    encoder = mlp()
    views = inputs(n_views, batch, seed=batch)
    labels = torch.arange(batch) % 3
    loss = cl.get_loss("supcon", temperature=0.5)
    _, expected = grads_of(full_batch([encoder] * n_views, loss, views, labels=labels), [encoder])
    cache = cl.GradCache(encoder, loss, chunk_size)
    _, got = grads_of(lambda: cache.backward(*views, labels=labels), [encoder])
    assert_all_close(got, expected)


@pytest.mark.parametrize("name", cl.list_losses())
def test_every_registered_loss_gets_its_full_batch_gradient_its_own_parameters_included(name: str) -> None:
    loss = cl.get_loss(name).double()
    encoder, views = mlp(), inputs(2, 9)
    _, expected = grads_of(full_batch([encoder] * 2, loss, views), [encoder, loss])
    _, got = grads_of(lambda: cl.GradCache(encoder, loss, 4).backward(*views), [encoder, loss])
    assert_all_close(got, expected)


@pytest.mark.parametrize("sampler", ["hard", "debiased"])
def test_samplers_and_a_memory_queue_pass_through(sampler: str) -> None:
    loss = cl.get_loss("nt_xent", temperature=0.4, sampler=sampler)
    queue = cl.MemoryQueue(size=7, dim=D, init="random", dtype=torch.float64, generator=torch.Generator())
    encoder, views = mlp(), inputs(2, 8)
    _, expected = grads_of(full_batch([encoder] * 2, loss, views, negatives=queue), [encoder])
    cache = cl.GradCache(encoder, loss, 3)
    _, got = grads_of(lambda: cache.backward(*views, negatives=queue), [encoder])
    assert_all_close(got, expected)
    with torch.no_grad():
        torch.testing.assert_close(cache.embeddings[1], encoder(views[1]), **TOL64)
    queue.enqueue(cache.embeddings[1])  # MoCo's step: the keys of this batch become negatives
    assert len(queue) == 7 and torch.equal(queue.negatives()[:1], cache.embeddings[1][-7:-6])


def test_learnable_temperature_and_clip_logit_scale_get_the_full_batch_gradient() -> None:
    temperature = torch.nn.Parameter(torch.tensor(0.3, dtype=torch.float64))
    holder = torch.nn.ParameterList([temperature])
    loss = cl.get_loss("nt_xent", temperature=temperature)
    encoder, views = mlp(), inputs(2, 9)
    _, expected = grads_of(full_batch([encoder] * 2, loss, views), [encoder, holder])
    _, got = grads_of(lambda: cl.GradCache(encoder, loss, 2).backward(*views), [encoder, holder])
    assert expected[-1] is not None and float(expected[-1].abs()) > 1e-3
    assert_all_close(got, expected)

    clip = cl.ClipLoss(logit_scale=1.5).double()  # two encoders, one per modality
    image, text = mlp(seed=1), small_cnn(seed=2)
    pairs = [inputs(1, 7)[0], inputs(1, 7, (3, 6, 6))[0]]
    _, expected = grads_of(full_batch([image, text], clip, pairs), [image, text, clip])
    _, got = grads_of(lambda: cl.GradCache([image, text], clip, 3).backward(*pairs), [image, text, clip])
    assert float(expected[-1].abs()) > 1e-3  # the logit scale moves
    assert_all_close(got, expected)


def test_float32_gradients_equal_the_full_batch_to_rounding() -> None:
    encoder = mlp(dtype=torch.float32)
    views = [v.float() for v in inputs(2, 33)]
    loss = cl.get_loss("nt_xent", temperature=0.2)
    _, expected = grads_of(full_batch([encoder] * 2, loss, views), [encoder])
    _, got = grads_of(lambda: cl.GradCache(encoder, loss, 8).backward(*views), [encoder])
    assert_all_close(got, expected, rtol=1e-4, atol=1e-6)


def test_the_functional_form_returns_the_loss_and_embeddings_and_accumulates() -> None:
    encoder, views = mlp(), inputs(2, 6)
    loss = cl.get_loss("nt_xent")
    expected_loss, expected = grads_of(full_batch([encoder] * 2, loss, views), [encoder])
    _, once = grads_of(lambda: cached_backward(encoder, loss, *views, chunk_size=4), [encoder])
    step = cached_backward(encoder, loss, *views, chunk_size=4)  # on top of the first: gradients add up
    assert isinstance(step, CachedStep) and not step.loss.requires_grad
    torch.testing.assert_close(step.loss, expected_loss, **TOL64)
    assert [e.shape for e in step.embeddings] == [(6, D), (6, D)]
    assert_all_close([p.grad for p in encoder.parameters()], [2 * g for g in expected])
    assert_all_close(once, expected)


def test_views_may_be_mappings_of_keyword_inputs_and_frozen_encoders_are_not_rerun() -> None:
    class Bag(torch.nn.Module):
        """A tiny text encoder: masked mean of token embeddings."""

        def __init__(self) -> None:
            super().__init__()
            self.embed = torch.nn.Embedding(20, D, dtype=torch.float64)

        def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
            mask = attention_mask.unsqueeze(-1).to(torch.float64)
            return (self.embed(input_ids) * mask).sum(1) / mask.sum(1)

    torch.manual_seed(3)
    text, keys = Bag(), mlp(seed=4).requires_grad_(False)  # a momentum-style key encoder
    tokens = {"input_ids": torch.randint(0, 20, (9, 4)), "attention_mask": (torch.rand(9, 4) > 0.3).long()}
    tokens["attention_mask"][:, 0] = 1
    x = inputs(1, 9)[0]
    loss = cl.get_loss("infonce", temperature=0.3)
    calls = []
    keys.register_forward_hook(lambda *_: calls.append(1))
    _, expected = grads_of(lambda: loss(text(**tokens), keys(x)).backward(), [text])
    calls.clear()
    _, got = grads_of(lambda: cl.GradCache([text, keys], loss, 4).backward(tokens, x), [text])
    assert_all_close(got, expected)
    assert len(calls) == 3  # three chunks in the first pass, none re-run: it has nothing to train


# ---------------------------------------------------------------- randomness, BatchNorm, AMP, compile


@pytest.mark.parametrize(("model", "chunk_size"), [("mlp", 2), ("mlp", 3), ("mlp", 5), ("cnn", 3)])
def test_dropout_sees_the_same_masks_in_both_passes(model: str, chunk_size: int) -> None:
    encoder = mlp(dropout=0.4) if model == "mlp" else small_cnn(dropout=0.4)
    views = inputs(2, 7, (D_IN,) if model == "mlp" else (3, 6, 6))
    assert not torch.equal(encoder(views[0]), encoder(views[0]))  # dropout is active
    loss = cl.get_loss("nt_xent", temperature=0.3)
    _, expected = grads_of(full_batch([encoder] * 2, loss, views, chunk=chunk_size), [encoder], seed=5)
    after_reference = torch.get_rng_state()
    cache = cl.GradCache(encoder, loss, chunk_size, verify=True)
    _, got = grads_of(lambda: cache.backward(*views), [encoder], seed=5)
    assert_all_close(got, expected)
    assert torch.equal(torch.get_rng_state(), after_reference)  # the next step draws what it would have


def test_verify_catches_randomness_that_is_not_replayed() -> None:
    class Noisy(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear, self.gen = torch.nn.Linear(D_IN, D, dtype=torch.float64), torch.Generator()

        def forward(self, x: Tensor) -> Tensor:
            return self.linear(x) + torch.randn(x.shape[0], D, generator=self.gen, dtype=x.dtype)

    views, loss = inputs(2, 6), cl.get_loss("nt_xent")
    cl.GradCache(Noisy(), loss, 3).backward(*views)  # silently the wrong gradient without verify
    with pytest.raises(RuntimeError, match=r"re-forward of views\[0\], chunk 0 gave other embeddings"):
        cl.GradCache(Noisy(), loss, 3, verify=True).backward(*views)


def test_batch_norm_in_training_mode_is_an_error_and_fine_in_eval_mode() -> None:
    encoder, views = small_cnn(norm="batch"), inputs(2, 6, (3, 6, 6))
    loss = cl.get_loss("nt_xent")
    message = r"BatchNorm in training mode \(BatchNorm2d\).*batch_norm='per_chunk'"
    with pytest.raises(ValueError, match=message):
        cl.GradCache(encoder, loss, 3).backward(*views)
    encoder.eval()
    _, expected = grads_of(full_batch([encoder] * 2, loss, views), [encoder])
    _, got = grads_of(lambda: cl.GradCache(encoder, loss, 4).backward(*views), [encoder])
    assert_all_close(got, expected)
    sync = torch.nn.Sequential(torch.nn.Linear(D_IN, D), torch.nn.SyncBatchNorm(D))
    with pytest.raises(ValueError, match="not for SyncBatchNorm"):
        cl.GradCache(sync, loss, 3, batch_norm="per_chunk").backward(*inputs(2, 6))


def test_per_chunk_batch_norm_is_ghost_batch_norm_with_one_running_update_per_chunk() -> None:
    encoder, views = small_cnn(norm="batch"), inputs(2, 7, (3, 6, 6))
    twin = small_cnn(norm="batch")  # same initial weights and running statistics
    loss = cl.get_loss("nt_xent", temperature=0.3)
    _, expected = grads_of(full_batch([twin] * 2, loss, views, chunk=3), [twin])
    cache = cl.GradCache(encoder, loss, 3, batch_norm="per_chunk")
    _, got = grads_of(lambda: cache.backward(*views), [encoder])
    assert_all_close(got, expected)
    norm, twin_norm = encoder[1], twin[1]
    assert int(norm.num_batches_tracked) == 6  # 3 chunks of each view, not 12
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(norm, name), getattr(twin_norm, name), **TOL64)


def test_a_frozen_encoder_with_per_chunk_batch_norm_updates_its_statistics_once_per_chunk() -> None:
    keys = small_cnn(norm="batch", seed=3).requires_grad_(False)  # a momentum encoder: run once, not re-run
    query, x = mlp(), inputs(2, 7, (3, 6, 6))
    flat = [v.flatten(1)[:, :D_IN] for v in x]
    cl.GradCache([query, keys], cl.get_loss("infonce"), 3, batch_norm="per_chunk").backward(flat[0], x[1])
    assert int(keys[1].num_batches_tracked) == 3


def test_autocast_runs_both_passes_in_reduced_precision_and_a_scaler_scales_the_gradients() -> None:
    encoder = mlp(dtype=torch.float32)
    views = [v.float() for v in inputs(2, 16)]
    loss = cl.get_loss("nt_xent", temperature=0.5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, expected = grads_of(full_batch([encoder] * 2, loss, views), [encoder])
        cache = cl.GradCache(encoder, loss, 5)
        _, got = grads_of(lambda: cache.backward(*views), [encoder])
    assert cache.embeddings[0].dtype == torch.bfloat16
    assert all(g.dtype == torch.float32 for g in got)
    flat_got, flat_expected = (torch.cat([g.flatten() for g in gs]) for gs in (got, expected))
    assert float((flat_got - flat_expected).norm() / flat_expected.norm()) < 0.05  # bf16 rounding

    _, plain = grads_of(lambda: cl.GradCache(encoder, loss, 5).backward(*views), [encoder])
    scaler = torch.amp.GradScaler("cpu", init_scale=256.0)
    cache = cl.GradCache(encoder, loss, 5, scaler=scaler)
    value, scaled = grads_of(lambda: cache.backward(*views), [encoder])
    assert_all_close(scaled, [256.0 * g for g in plain], rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(value, loss(encoder(views[0]), encoder(views[1])).detach())  # unscaled


def test_a_compiled_encoder_gives_the_same_gradients_with_dropout() -> None:
    encoder = mlp(dropout=0.3, dtype=torch.float32)
    views = [v.float() for v in inputs(2, 10)]
    loss = cl.get_loss("nt_xent", temperature=0.3)
    _, expected = grads_of(full_batch([encoder] * 2, loss, views, chunk=4), [encoder], seed=2)
    compiled = torch.compile(encoder, backend="aot_eager")
    cache = cl.GradCache(compiled, loss, 4, verify=True)
    _, got = grads_of(lambda: cache.backward(*views), [encoder], seed=2)
    assert_all_close(got, expected, rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------- arguments


def test_arguments_are_checked_with_messages_that_say_what_would_be_right() -> None:
    encoder, loss, views = mlp(), cl.get_loss("nt_xent"), inputs(2, 4)
    with pytest.raises(ValueError, match="chunk_size must be a positive int .* got 0"):
        cl.GradCache(encoder, loss, 0)
    with pytest.raises(ValueError, match="batch_norm must be one of"):
        cl.GradCache(encoder, loss, 2, batch_norm="ignore")
    with pytest.raises(ValueError, match="got 3 encoders for 2 views"):
        cl.GradCache([encoder] * 3, loss, 2).backward(*views)
    with pytest.raises(ValueError, match="at least one view"):
        cl.GradCache(encoder, loss, 2).backward()
    with pytest.raises(TypeError, match=r"views\[1\] must be a tensor"):
        cl.GradCache(encoder, loss, 2).backward(views[0], [views[1]])
    with pytest.raises(ValueError, match=r"one non-empty batch size, got sizes \{'a': 4, 'b': 3\}"):
        cl.GradCache(encoder, loss, 2).backward({"a": views[0], "b": views[1][:3]}, views[1])
    with pytest.raises(ValueError, match=r"must return a tensor with one row per sample \(2, \.\.\.\), got"):
        cl.GradCache(lambda x: encoder(x).sum(), loss, 2).backward(*views)
    with pytest.raises(ValueError, match="loss must return a scalar tensor"):
        cl.GradCache(encoder, lambda *z: torch.stack(z), 2).backward(*views)
    with pytest.raises(ValueError, match="sync_loss_grads must be 'auto', True or False"):
        cached_backward(encoder, loss, *views, chunk_size=2, sync_loss_grads="yes")


# ---------------------------------------------------------------- DDP (2 gloo ranks)


def _ddp_checks(rank: int, world_size: int) -> list[str]:
    """On each rank: GradCache over DDP (and over the plain module) gives the single-process gradient."""
    from contrastive.losses.clip import ClipLoss
    from contrastive.losses.nt_xent import NTXentLoss
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
    from torch.nn.parallel import DistributedDataParallel as DDP

    sizes = (5, 3)  # unequal shares: 3 and 2 chunks of 2
    first, n = BatchLayout(rank, sizes).offset, sizes[rank]
    failures: list[str] = []

    def compare(got: Sequence[Tensor | None], expected: Sequence[Tensor | None], what: str) -> None:
        for i, (g, e) in enumerate(zip(got, expected, strict=True)):
            if g is None or not torch.allclose(g, e, rtol=1e-9, atol=1e-11):
                failures.append(f"{what}: parameter {i} differs ({g} vs {e})")

    x = inputs(2, sum(sizes))
    local = [v[first : first + n] for v in x]
    encoder = mlp()
    _, expected = grads_of(full_batch([encoder] * 2, NTXentLoss(0.3, gather=False), x), [encoder])

    ddp, syncs = DDP(encoder), []
    ddp.register_comm_hook(None, lambda state, bucket: (syncs.append(1), allreduce_hook(state, bucket))[1])
    _, got = grads_of(lambda: cl.GradCache(ddp, NTXentLoss(0.3), 2).backward(*local), [encoder])
    compare(got, expected, "DDP")
    # Without no_sync every chunk's backward all-reduces; with 3 chunks here and 2 on the other rank
    # the ranks then wait for each other until the collective times out.
    if len(syncs) != 1:
        failures.append(f"DDP all-reduced {len(syncs)} times in one step, expected once (no_sync elsewhere)")

    _, got = grads_of(lambda: cl.GradCache(encoder, NTXentLoss(0.3), 2).backward(*local), [encoder])
    for g in got:  # a plain module: average the gradients yourself, as DDP would
        dist.all_reduce(g)
        g /= world_size
    compare(got, expected, "plain module, all-reduced")

    image, text = mlp(seed=1), mlp(seed=2)
    single = ClipLoss(logit_scale=1.2, gather=False).double()
    _, expected = grads_of(full_batch([image, text], single, x), [image, text, single])
    clip = ClipLoss(logit_scale=1.2).double()
    encoders = [DDP(image), DDP(text)]
    _, got = grads_of(lambda: cl.GradCache(encoders, clip, 2).backward(*local), [image, text, clip])
    compare(got, expected, "CLIP, two DDP encoders and the logit scale")
    return failures


def test_two_gloo_ranks_with_chunks_give_the_single_process_gradient_of_the_global_batch(
    tmp_path: Path,
) -> None:
    from tests.test_distributed import _spawn

    outcomes = _spawn(_ddp_checks, 2, tmp_path)
    for rank, outcome in enumerate(outcomes):
        assert outcome["ok"], f"rank {rank}: {outcome.get('trace', outcome['error'])}"
        assert outcome["result"] == [], f"rank {rank}:\n" + "\n".join(outcome["result"])
