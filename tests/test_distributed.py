"""Losses across 2 and 3 gloo processes equal one process on the global batch, in value and gradient.

The gradient convention verified here (the contract of :mod:`contrastive.distributed`): a
tiny linear encoder is replicated on every rank; each rank encodes its share of the global
batch, computes its loss with ``gather=True``/``"auto"`` and back-propagates. Then

* the mean over ranks of the rank losses equals the single-process loss of the global batch;
* the mean over ranks of the parameter gradients (what DDP's all-reduce produces) equals
  the single-process parameter gradient (the logit scale's too, for CLIP);
* each rank's gradient w.r.t. its own embeddings, divided by the world size, equals the
  single-process gradient w.r.t. those rows of the global batch;

all to 1e-6 in float64; and one step through ``DistributedDataParallel`` itself leaves
the single-process gradient in the parameters. Processes start once per test (spawn,
``file://`` rendezvous in ``tmp_path``), run every check and report back through files;
a hung group fails the test through the collective timeout and the join timeout, it
never hangs the suite.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import contrastive.distributed as cd
from contrastive import functional as F
from contrastive.engine.triton import triton_available
from contrastive.losses.clip import ClipLoss
from contrastive.losses.infonce import InfoNCELoss
from contrastive.losses.linear_spectral import LinearSpectralContrastiveLoss
from contrastive.losses.nt_xent import NTXentLoss
from contrastive.losses.spectral import SpectralContrastiveLoss
from contrastive.losses.supcon import SupConLoss
from contrastive.registry import get_sampler
from contrastive.samplers import MemoryQueue

Tensor = torch.Tensor
JOIN_TIMEOUT_S = 150.0  # per spawned group; the collectives themselves time out sooner
COLLECTIVE_TIMEOUT_S = 60.0
TOL = {"rtol": 1e-6, "atol": 1e-6}
D_IN, D = 6, 5
SAMPLERS = ("uniform", "hard", "debiased")
SAMPLER_OPTIONS: dict[str, dict[str, float]] = {
    "uniform": {},
    "hard": {"beta": 0.7, "tau_plus": 0.1},
    "debiased": {"tau_plus": 0.05},
}


# ---------------------------------------------------------------- process plumbing


def _entry(
    target: Callable[[int, int], Any], rank: int, world_size: int, folder: str, timeout: float
) -> None:
    """Join a gloo group through a file in ``folder``, run ``target`` and write its outcome."""
    warnings.simplefilter("error", FutureWarning)  # e.g. a deprecated collective
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"file://{folder}/rendezvous",
        rank=rank,
        world_size=world_size,
        timeout=timedelta(seconds=timeout),
    )
    outcome: dict[str, Any]
    try:
        outcome = {"ok": True, "result": target(rank, world_size)}
    except Exception as exc:  # reported to the test, then the process fails
        outcome = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()}
    Path(folder, f"rank{rank}.json").write_text(json.dumps(outcome))
    if not outcome["ok"]:
        # leave without the interpreter's teardown: a group whose peer is gone can abort in gloo's
        # destructors ("terminate called without an active exception", SIGABRT) after the error
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)
    dist.destroy_process_group()


def _spawn(
    target: Callable[[int, int], Any], world_size: int, folder: Path, timeout: float = COLLECTIVE_TIMEOUT_S
) -> list[Any]:
    """Run ``target(rank, world_size)`` on ``world_size`` gloo processes; return the outcomes by rank."""
    context = mp.get_context("spawn")
    processes = [
        context.Process(target=_entry, args=(target, rank, world_size, str(folder), timeout))
        for rank in range(world_size)
    ]
    for process in processes:
        process.start()
    deadline = time.monotonic() + JOIN_TIMEOUT_S
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
    hung = [rank for rank, process in enumerate(processes) if process.is_alive()]
    for process in processes:
        if process.is_alive():
            process.kill()
            process.join()
    assert not hung, f"ranks {hung} did not finish within {JOIN_TIMEOUT_S} s"
    outcomes = []
    for rank, process in enumerate(processes):
        report = folder / f"rank{rank}.json"
        missing = {"ok": False, "error": f"no report (exit code {process.exitcode})"}
        outcomes.append(json.loads(report.read_text()) if report.exists() else missing)
    return outcomes


# ---------------------------------------------------------------- the equivalence checks (run on every rank)


def _sizes(world_size: int) -> tuple[int, ...]:
    """Equal shares on 2 ranks, unequal ones (1, 4, 3) on 3 ranks: a 1-sample shard is supported."""
    return (4, 4) if world_size == 2 else (1, 4, 3)


def _sampler(name: str) -> Any:
    return get_sampler(name, **SAMPLER_OPTIONS[name])


class Case(NamedTuple):
    """One check: ``loss(views, labels, gather)`` on ``views`` views; ``params`` besides the encoder's."""

    name: str
    views: int
    loss: Callable[[list[Tensor], Tensor, str | bool], Tensor]
    params: tuple[Tensor, ...] = ()


def _weights(labels: Tensor) -> Tensor:
    """Per-sample weights that follow the samples (a function of their labels), some of them zero."""
    return (labels.abs() % 3).to(torch.float64) / 2  # labels -7, 3, 13, 99: weights 0.5, 0, 0.5, 0


def _cases(encoder: torch.nn.Linear, queue: MemoryQueue, negatives: Tensor) -> list[Case]:
    """Every engine-based loss with each sampler, their variants, and the additive losses."""
    cases = []
    for name in SAMPLERS:
        s = _sampler(name)
        clip = ClipLoss(logit_scale=1.2).double()
        cases += [
            Case(
                f"nt_xent/{name}",
                2,
                lambda z, y, g, s=s: NTXentLoss(0.3, sampler=s, block_size=3, gather=g)(*z),
            ),
            Case(
                f"supcon/{name}", 2, lambda z, y, g, s=s: SupConLoss(0.5, sampler=s, gather=g)(*z, labels=y)
            ),
            Case(f"infonce/{name}", 2, lambda z, y, g, s=s: InfoNCELoss(0.2, sampler=s, gather=g)(*z)),
            Case(
                f"clip/{name}",
                2,
                lambda z, y, g, s=s, t=clip: F.clip(*z, logit_scale=t.logit_scale, sampler=s, block_size=2, gather=g),
                (clip.logit_scale,),
            ),
        ]
    clip = ClipLoss(logit_scale=0.8).double()
    hard = _sampler("hard")
    cases += [
        Case("nt_xent/3 views", 3, lambda z, y, g: F.nt_xent(*z, temperature=0.4, gather=g)),
        Case("nt_xent/reference", 2, lambda z, y, g: F.nt_xent(*z, backend="reference", gather=g)),
        Case(
            "nt_xent/negatives", 2, lambda z, y, g: F.nt_xent(*z, negatives=negatives, block_size=3, gather=g)
        ),
        Case("supcon/one view", 1, lambda z, y, g: F.supcon(*z, labels=y, temperature=0.3, gather=g)),
        Case(
            "supcon/multi-label jaccard",
            2,
            lambda z, y, g: F.supcon(*z, labels=_multi_hot(y), positive_weighting="jaccard", block_size=3,
                                     gather=g),
        ),
        Case(
            "supcon/multi-label negatives",
            1,
            lambda z, y, g: F.supcon(*z, labels=_multi_hot(y), negatives=negatives, sampler=hard, gather=g),
        ),
        Case(
            "supcon/contrast one",
            3,
            lambda z, y, g: F.supcon(*z, labels=y, contrast_mode="one", base_temperature=0.07, gather=g),
        ),
        Case(
            "infonce/queue only",
            2,
            lambda z, y, g: F.infonce(*z, queue, in_batch_negatives=False, sampler=hard, gather=g),
        ),
        Case("infonce/queue and batch", 2, lambda z, y, g: F.infonce(*z, queue, gather=g)),
        Case("clip/labels", 2, lambda z, y, g: F.clip(*z, y, logit_scale=clip.logit_scale, gather=g), (clip.logit_scale,)),
        Case("dcl", 2, lambda z, y, g: F.dcl(*z, temperature=0.3, block_size=3, gather=g)),
        Case("dclw/labels", 2, lambda z, y, g: F.dcl(*z, labels=y, weight_sigma=0.5, weights=_weights(y), gather=g)),
        Case("supcon/weights", 2, lambda z, y, g: F.supcon(*z, labels=y, weights=_weights(y), gather=g)),
        Case(
            "infonce/smoothing, weights",
            2,
            lambda z, y, g: F.infonce(*z, queue, label_smoothing=0.2, weights=_weights(y), gather=g),
        ),
        Case(
            "clip/smoothing, weights",
            2,
            lambda z, y, g: F.clip(*z, logit_scale=clip.logit_scale, label_smoothing=0.1, weights=_weights(y),
                                   gather=g),
            (clip.logit_scale,),
        ),
        Case("spectral", 2, lambda z, y, g: SpectralContrastiveLoss(gather=g)(*z)),
        Case("spectral/mu", 2, lambda z, y, g: F.spectral(*z, mu=0.5, gather=g)),
        Case(
            "linear_spectral",
            2,
            lambda z, y, g: LinearSpectralContrastiveLoss(reg=0.3, gather=g)(*z, weight=encoder.weight),
        ),
    ]
    if triton_available():  # under TRITON_INTERPRET=1 without a GPU
        cases.append(
            Case(
                "nt_xent/triton", 2, lambda z, y, g: F.nt_xent(*z, backend="triton", block_size=16, gather=g)
            )
        )
    return cases


def _multi_hot(y: Tensor) -> Tensor:
    """Multi-hot labels computed row by row from the class ids (so a rank's rows are its slice)."""
    return torch.stack([y > 0, y == -7, y == 99, y % 20 == 13], dim=1)


def _compare(found: Tensor, expected: Tensor, what: str, failures: list[str]) -> None:
    try:
        torch.testing.assert_close(found, expected, **TOL)
    except AssertionError as exc:
        failures.append(
            f"{what}: {str(exc).splitlines()[0]} (found {found.flatten()[:4].tolist()}, "
            f"expected {expected.flatten()[:4].tolist()})"
        )


def _loss_equivalence(rank: int, world_size: int) -> list[str]:
    """Every case: rank losses, parameter gradients and embedding gradients against one process."""
    sizes = _sizes(world_size)
    layout = cd.BatchLayout(rank, sizes)
    first, n = layout.offset, sizes[rank]
    gen = torch.Generator().manual_seed(7)  # the same data and model on every rank
    encoder = torch.nn.Linear(D_IN, D, bias=False, dtype=torch.float64)
    with torch.no_grad():
        encoder.weight.copy_(torch.randn(D, D_IN, generator=gen, dtype=torch.float64))
    x = torch.randn(3, layout.total, D_IN, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, 3, (layout.total,), generator=gen) * 10 - 7  # sparse, negative ids
    labels[0] = 99  # a class seen once: with one view that anchor has no positive
    queue = MemoryQueue(size=6, dim=D, init="random", dtype=torch.float64, generator=gen)
    negatives = torch.randn(4, D, generator=gen, dtype=torch.float64)
    failures: list[str] = []
    for case in _cases(encoder, queue, negatives):
        params = [encoder.weight, *case.params]
        z_all = [encoder(x[v]) for v in range(case.views)]
        single = case.loss(z_all, labels, False)
        expected = torch.autograd.grad(single, params + z_all)
        z_local = [encoder(x[v, first : first + n]) for v in range(case.views)]
        gather: str | bool = "auto" if case.name.startswith(("nt_xent/", "spectral")) else True
        mine = case.loss(z_local, labels[first : first + n], gather)
        grads = torch.autograd.grad(mine, params + z_local)
        mean_loss = mine.detach().clone()
        dist.all_reduce(mean_loss)
        _compare(mean_loss / world_size, single.detach(), f"{case.name}: mean of the rank losses", failures)
        for i, (g, e) in enumerate(zip(grads[: len(params)], expected[: len(params)], strict=True)):
            g = g.clone()
            dist.all_reduce(g)  # what DDP does, before dividing by the world size
            _compare(g / world_size, e, f"{case.name}: averaged gradient of parameter {i}", failures)
        for v, (g, e) in enumerate(zip(grads[len(params) :], expected[len(params) :], strict=True)):
            _compare(g / world_size, e[first : first + n], f"{case.name}: gradient of view {v}", failures)
    return failures


def _ddp_step_is_the_single_process_step(rank: int, world_size: int) -> list[str]:
    """Through ``DistributedDataParallel`` itself: its averaged gradient is the global-batch gradient."""
    sizes = _sizes(world_size)
    first, n = cd.BatchLayout(rank, sizes).offset, sizes[rank]
    gen = torch.Generator().manual_seed(11)
    x = torch.randn(2, sum(sizes), D_IN, generator=gen, dtype=torch.float64)
    failures: list[str] = []
    losses = {
        "nt_xent": (NTXentLoss(0.3, gather=False), NTXentLoss(0.3)),
        "spectral": (SpectralContrastiveLoss(gather=False), SpectralContrastiveLoss()),
    }
    for name, (single, distributed) in losses.items():
        torch.manual_seed(5)  # the same encoder on every rank
        encoder = torch.nn.Linear(D_IN, D, dtype=torch.float64)
        expected = torch.autograd.grad(single(*(encoder(v) for v in x)), list(encoder.parameters()))
        ddp = torch.nn.parallel.DistributedDataParallel(encoder)
        distributed(*(ddp(v[first : first + n]) for v in x)).backward()
        for i, (p, e) in enumerate(zip(encoder.parameters(), expected, strict=True)):
            _compare(p.grad, e, f"DDP, {name}: gradient of parameter {i}", failures)
    return failures


def _queue_is_the_same_everywhere(rank: int, world_size: int) -> list[str]:
    """Enqueue unequal shares under DDP: every rank's queue is the single-process queue of the global keys."""
    sizes = _sizes(world_size)
    layout = cd.BatchLayout(rank, sizes)
    gen = torch.Generator().manual_seed(3)
    shared, single = (
        MemoryQueue(size=7, dim=D, dtype=torch.float64),
        MemoryQueue(size=7, dim=D, dtype=torch.float64),
    )
    failures: list[str] = []
    for _ in range(3):  # wraps around the 7 slots
        keys = torch.randn(layout.total, D, generator=gen, dtype=torch.float64)
        shared.enqueue(keys[layout.offset : layout.offset + sizes[rank]])
        single.enqueue(keys, gather=False)
    for name in ("keys", "pointer", "count"):
        mine = getattr(shared, name)
        everyone = [torch.empty_like(mine) for _ in range(world_size)]
        dist.all_gather(everyone, mine)
        if not all(torch.equal(other, everyone[0]) for other in everyone):
            failures.append(f"queue {name} differs between ranks")
        if not torch.equal(mine, getattr(single, name)):
            failures.append(f"queue {name} differs from the single-process queue")
    torch.manual_seed(rank)
    random = MemoryQueue(size=4, dim=D, init="random")  # differs per rank until broadcast
    random.broadcast()
    everyone = [torch.empty_like(random.keys) for _ in range(world_size)]
    dist.all_gather(everyone, random.keys)
    if not all(torch.equal(other, everyone[0]) for other in everyone):
        failures.append("broadcast left different random queues")
    return failures


def _all_checks(rank: int, world_size: int) -> dict[str, Any]:
    assert cd.should_gather("auto") and cd.world() == (rank, world_size)
    return {
        "losses": _loss_equivalence(rank, world_size),
        "queue": _queue_is_the_same_everywhere(rank, world_size),
        "ddp": _ddp_step_is_the_single_process_step(rank, world_size),
        "mismatch": _width_mismatch_is_an_error_on_every_rank(rank, world_size),
    }


def _width_mismatch_is_an_error_on_every_rank(rank: int, world_size: int) -> list[str]:
    z = torch.randn(3, D + (rank == 1), dtype=torch.float64)
    try:
        F.nt_xent(z, z.flip(0))
    except ValueError as exc:
        return [] if "same width on every rank" in str(exc) else [f"unexpected message: {exc}"]
    return ["no ValueError for views of different widths on different ranks"]


@pytest.mark.slow
@pytest.mark.parametrize("world_size", [2, 3])
def test_rank_losses_and_gradients_average_to_the_single_process_global_batch(
    world_size: int, tmp_path: Path
) -> None:
    outcomes = _spawn(_all_checks, world_size, tmp_path)
    for rank, outcome in enumerate(outcomes):
        assert outcome["ok"], f"rank {rank}: {outcome.get('trace', outcome['error'])}"
        for check, failures in outcome["result"].items():
            assert failures == [], f"rank {rank}, {check}:\n" + "\n".join(failures)


# ---------------------------------------------------------------- failure, options, layout


def _rank_one_raises(rank: int, world_size: int) -> float:
    """Rank 1 raises and then lingers (its process stays up); rank 0 waits in a loss's gather."""
    if rank == 1:
        try:
            raise RuntimeError("rank 1 fails on purpose")
        finally:
            time.sleep(60)  # a rank that does not die does not close its connections either
    started = time.monotonic()
    z = torch.randn(4, D)
    NTXentLoss()(z, z.flip(0))
    return time.monotonic() - started


@pytest.mark.slow
def test_when_one_rank_raises_the_others_end_with_an_error_not_a_hang(tmp_path: Path) -> None:
    started = time.monotonic()
    context = mp.get_context("spawn")
    processes = [
        context.Process(target=_entry, args=(_rank_one_raises, rank, 2, str(tmp_path), 5.0))
        for rank in range(2)
    ]
    for process in processes:
        process.start()
    processes[0].join(JOIN_TIMEOUT_S)
    survivor_alive = processes[0].is_alive()
    for process in processes:
        process.kill()
        process.join()
    assert not survivor_alive, "rank 0 hung instead of failing"
    assert processes[0].exitcode == 1
    outcome = json.loads((tmp_path / "rank0.json").read_text())
    assert not outcome["ok"] and outcome["error"], outcome
    assert time.monotonic() - started < 60, "rank 0 ended only after rank 1 gave up"


def _bad_input_cases() -> list[tuple[str, Callable[[bool], Any]]]:
    """A loss call per built-in loss; ``bad=True`` gives it an input that fails a local check."""
    z = torch.randn(3, D, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    spoiled = z.clone()
    spoiled[1, 2] = float("nan")
    labels = torch.tensor([0, 1, 0])

    def views(bad: bool) -> tuple[Tensor, Tensor]:
        return (spoiled if bad else z), z.flip(0)

    return [
        ("nt_xent", lambda bad: F.nt_xent(*views(bad))),
        ("supcon", lambda bad: F.supcon(*views(bad), labels=labels)),
        ("supcon labels", lambda bad: F.supcon(z, z.flip(0), labels=labels[:2] if bad else labels, gather=True)),
        ("infonce", lambda bad: F.infonce(*views(bad), gather=True)),
        ("clip", lambda bad: F.clip(*views(bad), gather=True)),
        ("spectral", lambda bad: F.spectral(*views(bad))),
        ("linear_spectral", lambda bad: F.linear_spectral(*views(bad))),
    ]


def _input_failure_reaches_every_rank(rank: int, world_size: int) -> dict[str, Any]:
    """Rank 1 passes a bad input to each loss; every rank must raise at once, naming rank 1 and the cause."""
    seen: dict[str, Any] = {}
    for name, call in _bad_input_cases():
        started = time.monotonic()
        try:
            call(rank == 1)
            seen[name] = {"error": None}
        except (ValueError, TypeError) as exc:
            seen[name] = {"error": f"{type(exc).__name__}: {exc}", "seconds": time.monotonic() - started}
        call(False)  # the group is still in step: the next call works on every rank
    return seen


@pytest.mark.slow
def test_a_local_input_failure_is_raised_on_every_rank_within_seconds(tmp_path: Path) -> None:
    outcomes = _spawn(_input_failure_reaches_every_rank, 3, tmp_path, timeout=30.0)
    for rank, outcome in enumerate(outcomes):
        assert outcome["ok"], f"rank {rank}: {outcome.get('trace', outcome['error'])}"
        for name, seen in outcome["result"].items():
            error = seen["error"]
            assert error is not None, f"rank {rank}, {name}: no error although rank 1 failed its check"
            assert error.startswith("ValueError: input check failed on rank 1 of 3 (rank 1: "), (rank, name, error)
            cause = "labels must have shape" if name == "supcon labels" else "NaN or Inf"
            assert cause in error, (rank, name, error)
            assert seen["seconds"] < 10, (rank, name, seen["seconds"])


def test_gather_option_is_checked_and_true_needs_a_process_group() -> None:
    with pytest.raises(ValueError, match="gather must be 'auto', True or False, got 'yes'"):
        NTXentLoss(gather="yes")
    with pytest.raises(ValueError, match="gather must be 'auto', True or False, got 1"):
        SpectralContrastiveLoss(gather=1)
    z = torch.randn(4, D)
    with pytest.raises(ValueError, match="gather=True needs an initialised torch.distributed process group"):
        F.nt_xent(z, z, gather=True)
    assert not cd.should_gather("auto") and cd.world() == (0, 1)
    torch.testing.assert_close(F.nt_xent(z, z.flip(0), gather="auto"), F.nt_xent(z, z.flip(0), gather=False))


def test_shards_concatenate_to_the_global_batch_in_rank_order() -> None:
    for total in range(0, 12):
        for world_size in range(1, 5):
            bounds = [cd.shard_bounds(total, r, world_size) for r in range(world_size)]
            assert bounds[0][0] == 0 and bounds[-1][1] == total
            assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:], strict=False))
            sizes = [stop - start for start, stop in bounds]
            assert sizes == [len(t) for t in torch.arange(total).tensor_split(world_size)]
    layout = cd.BatchLayout(2, (3, 5, 2))
    assert (layout.world_size, layout.offset, layout.total, layout.offsets()) == (3, 8, 10, (0, 3, 8))
    assert layout.scaled(2) == cd.BatchLayout(2, (6, 10, 4))
    with pytest.raises(ValueError, match="rank must be an int in \\[0, 1\\], got 2"):
        cd.shard_bounds(4, 2, 2)


# ---------------------------------------------------------------- the trainer under torchrun


def _torchrun(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [*command, "-m", "contrastive", "train", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


@pytest.mark.slow
def test_torchrun_trains_on_two_ranks_writes_from_rank_zero_and_resumes(tmp_path: Path) -> None:
    out = tmp_path / "run"
    tiny = ["--data", "spiked", "--batch-size", "250", "--quiet", "--out", str(out)]
    first = _torchrun(*tiny, "--epochs", "1")
    assert first.returncode == 0, first.stderr[-3000:]
    assert first.stdout.count("random-init encoder") == 1  # one report, from rank 0
    resumed = _torchrun("--resume", "--out", str(out), "--epochs", "2", "--quiet")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert all(r["loss"] == r["loss"] for r in records)  # finite, not NaN
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    summary = json.loads((out / "summary.json").read_text())
    assert state["epoch"] == summary["epochs"] == 2 and state["step"] == summary["steps"] > 0
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
