"""Every row of docs/guide/migrating.rst: our one-liner against the library it replaces.

Where the other library is installed (pytorch-metric-learning is in the test extra;
open_clip and lightly may be), both sides are computed and compared; the test skips
when it is absent. Libraries that are not installable packages (SupContrast, HaoChen
et al.'s spectral code, solo-learn, MoCo v3) are compared with a small re-derivation of
their loss written here from their published formulas and documented behaviour: each
such function says so. The differences the guide states are asserted as measured values.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F

import contrastive as cl

Tensor = torch.Tensor
B, D = 6, 5


def _views(n: int, seed: int = 0, batch: int = B) -> list[Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [F.normalize(torch.randn(batch, D, generator=g, dtype=torch.float64), dim=1) for _ in range(n)]


def _close(a: Tensor | float, b: Tensor | float) -> bool:
    a, b = (float(x.detach()) if isinstance(x, Tensor) else float(x) for x in (a, b))
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


# -- re-derivations from published formulas (not the other projects' code) ----------------


def supcontrast_loss(
    views: list[Tensor], labels: Tensor, temperature: float, base_temperature: float
) -> Tensor:
    """SupContrast's SupConLoss (Khosla et al.'s reference code), re-derived from its documented behaviour.

    Anchors are all V*B embeddings; log-softmax over every other embedding; the mean over an
    anchor's positives (0 for an anchor without positives, whose positive count is taken
    as 1), times -(temperature / base_temperature), averaged over all V*B anchors.
    """
    z = torch.cat(views)
    y = labels.repeat(len(views))
    n = z.shape[0]
    logits = (z @ z.T / temperature).masked_fill(torch.eye(n, dtype=torch.bool), float("-inf"))
    log_prob = logits.log_softmax(dim=1).masked_fill(torch.eye(n, dtype=torch.bool), 0.0)
    positive = (y[:, None] == y[None, :]) & ~torch.eye(n, dtype=torch.bool)
    mean_pos = (log_prob * positive).sum(1) / positive.sum(1).clamp(min=1)
    return (-(temperature / base_temperature) * mean_pos).mean()


def sum_inside_log_loss(views: list[Tensor], labels: Tensor, temperature: float) -> Tensor:
    """solo-learn's simclr_loss_func re-derived: the positives summed inside the log (L_in).

    mean over anchors of -log( sum_p e^{s_ip} / sum_{a != i} e^{s_ia} ).
    """
    z = torch.cat(views)
    y = labels.repeat(len(views))
    n = z.shape[0]
    eye = torch.eye(n, dtype=torch.bool)
    logits = (z @ z.T / temperature).masked_fill(eye, float("-inf"))
    positive = (y[:, None] == y[None, :]) & ~eye
    return -(logits.masked_fill(~positive, float("-inf")).logsumexp(1) - logits.logsumexp(1)).mean()


def pair_based_nt_xent(views: list[Tensor], labels: Tensor, temperature: float) -> Tensor:
    """PML's NTXentLoss re-derived: one term per positive pair, the other positives left out.

    mean over positive pairs (a, p) of -log( e^{s_ap} / (e^{s_ap} + sum_{n in N(a)} e^{s_an}) ).
    """
    z = torch.cat(views)
    y = labels.repeat(len(views))
    n = z.shape[0]
    s = z @ z.T / temperature
    positive = (y[:, None] == y[None, :]) & ~torch.eye(n, dtype=torch.bool)
    negative = y[:, None] != y[None, :]
    neg_lse = s.masked_fill(~negative, float("-inf")).logsumexp(1, keepdim=True)
    per_pair = -(s - torch.logaddexp(s, neg_lse))
    return per_pair[positive].mean()


def mocov3_loss(query: Tensor, key: Tensor, temperature: float) -> Tensor:
    """MoCo v3's contrastive loss (Chen, Xie and He, 2021; also solo-learn's mocov3_loss_func), re-derived.

    cross-entropy of q_i against all keys (its own key the target), multiplied by 2*temperature.
    """
    logits = F.normalize(query, dim=1) @ F.normalize(key, dim=1).T / temperature
    return F.cross_entropy(logits, torch.arange(query.shape[0])) * (2 * temperature)


def moco_v2_loss(query: Tensor, key: Tensor, queue: Tensor, temperature: float) -> Tensor:
    """MoCo v2's loss (He et al.; solo-learn's moco_loss_func), re-derived: own key against the queue only.

    cross-entropy over [<q_i, k_i>, <q_i, queue_j> for all j] / temperature, target 0.
    """
    q, k, queue = (F.normalize(x, dim=1) for x in (query, key, queue))
    logits = torch.cat([(q * k).sum(1, keepdim=True), q @ queue.T], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long))


def haochen_spectral_loss(z1: Tensor, z2: Tensor, mu: float) -> Tensor:
    """HaoChen et al.'s spectral contrastive loss as their code computes it, re-derived from the paper's form.

    Rows with norm above sqrt(mu) are rescaled to sqrt(mu); then
    (-2/B sum_i <z1_i, z2_i> + 1/(B(B-1)) sum_{i != j} <z1_i, z2_j>^2) / mu.
    """
    radius = math.sqrt(mu)
    z1, z2 = (
        torch.where(z.norm(dim=1, keepdim=True) < radius, z, F.normalize(z, dim=1) * radius) for z in (z1, z2)
    )
    b = z1.shape[0]
    cross = z1 @ z2.T
    off = ~torch.eye(b, dtype=torch.bool)
    return (-2 * cross.diagonal().mean() + cross[off].square().sum() / (b * (b - 1))) / mu


def truncating_bank_update(bank: Tensor, pointer: int, batch: Tensor) -> int:
    """lightly's MemoryBankModule update re-derived from its documented behaviour; returns the new pointer.

    A batch that reaches the end of the bank fills it up to the end, the rest of the batch
    is dropped and the pointer goes back to 0.
    """
    size = bank.shape[0]
    if pointer + batch.shape[0] >= size:
        bank[pointer:] = batch[: size - pointer]
        return 0
    bank[pointer : pointer + batch.shape[0]] = batch
    return pointer + batch.shape[0]


# -- pytorch-metric-learning ---------------------------------------------------------------


def test_pml_nt_xent_equals_ours_with_two_views() -> None:
    losses = pytest.importorskip("pytorch_metric_learning.losses")
    z1, z2 = _views(2)
    ours = cl.get_loss("nt_xent", temperature=0.5)(z1, z2)
    theirs = losses.NTXentLoss(temperature=0.5)(torch.cat([z1, z2]), torch.arange(B).repeat(2))
    assert _close(ours, theirs)


def test_pml_nt_xent_differs_from_ours_with_three_views() -> None:
    losses = pytest.importorskip("pytorch_metric_learning.losses")
    views, ids = _views(3), torch.arange(B)
    theirs = losses.NTXentLoss(temperature=0.5)(torch.cat(views), ids.repeat(3))
    assert _close(theirs, pair_based_nt_xent(views, ids, 0.5))  # PML: one term per positive pair
    ours = cl.get_loss("nt_xent", temperature=0.5)(*views)
    assert abs(float(ours) - float(theirs)) > 1e-2  # ours keeps the other positives in the denominator


@pytest.mark.parametrize("n_views", [2, 3])
def test_pml_supcon_equals_ours(n_views: int) -> None:
    losses = pytest.importorskip("pytorch_metric_learning.losses")
    views, y = _views(n_views), torch.tensor([0, 0, 1, 1, 2, 2])
    ours = cl.get_loss("supcon", temperature=0.5)(*views, labels=y)
    theirs = losses.SupConLoss(temperature=0.5)(torch.cat(views), y.repeat(n_views))
    assert _close(ours, theirs)


def test_pml_returns_zero_without_negatives_where_ours_is_the_positive_term() -> None:
    losses = pytest.importorskip("pytorch_metric_learning.losses")
    (z1, z2), same = _views(2), torch.zeros(B, dtype=torch.long)
    assert float(losses.NTXentLoss(temperature=0.5)(torch.cat([z1, z2]), same.repeat(2))) == 0.0
    assert float(losses.SupConLoss(temperature=0.5)(torch.cat([z1, z2]), same.repeat(2))) == 0.0
    ours = cl.get_loss("supcon", temperature=0.5)(z1, z2, labels=same)
    assert float(ours) > 0.1  # -mean s_ip + log sum_p e^{s_ip}: > 0 unless all positives are equal


# -- SupContrast (re-derived) --------------------------------------------------------------


def test_supcontrast_scaling_is_our_base_temperature() -> None:
    views, y = _views(2), torch.tensor([0, 0, 1, 1, 2, 2])
    theirs = supcontrast_loss(views, y, temperature=0.1, base_temperature=0.07)
    assert _close(cl.get_loss("supcon", temperature=0.1, base_temperature=0.07)(*views, labels=y), theirs)
    plain = cl.get_loss("supcon", temperature=0.1)(*views, labels=y)  # base_temperature=None: no scaling
    assert _close(plain * (0.1 / 0.07), theirs)


@pytest.mark.parametrize("n_views", [2, 3])
def test_supcontrast_without_labels_is_our_nt_xent_times_the_factor(n_views: int) -> None:
    views = _views(n_views, seed=1)
    theirs = supcontrast_loss(views, torch.arange(B), temperature=0.1, base_temperature=0.07)
    assert _close(cl.get_loss("nt_xent", temperature=0.1)(*views) * (0.1 / 0.07), theirs)


def test_supcontrast_counts_anchors_without_positives_as_zero_where_we_leave_them_out() -> None:
    (z,), y = _views(1), torch.tensor([0, 0, 1, 2, 3, 3])  # samples 2 and 3 have no positive
    theirs = supcontrast_loss([z], y, temperature=0.1, base_temperature=0.1)
    ours = cl.get_loss("supcon", temperature=0.1)(z, labels=y)
    assert not _close(ours, theirs)
    assert _close(ours * 4 / 6, theirs)  # 4 of the 6 anchors have a positive


# -- solo-learn (re-derived) ---------------------------------------------------------------


def test_solo_learn_simclr_equals_ours_with_two_views_and_differs_with_three() -> None:
    ids = torch.arange(B)
    two, three = _views(2), _views(3)
    assert _close(cl.get_loss("nt_xent", temperature=0.2)(*two), sum_inside_log_loss(two, ids, 0.2))
    ours3 = cl.get_loss("nt_xent", temperature=0.2)(*three)
    assert abs(float(ours3) - float(sum_inside_log_loss(three, ids, 0.2))) > 1e-2


def test_mocov3_multiplies_infonce_by_two_temperatures() -> None:
    q, k = _views(2, seed=3)
    ours = cl.get_loss("infonce", temperature=0.2)(q, k)  # in-batch keys are the negatives
    assert _close(ours * (2 * 0.2), mocov3_loss(q, k, 0.2))


def test_moco_v2_is_infonce_against_the_queue() -> None:
    q, k = _views(2, seed=7)
    (queue,) = _views(1, seed=8, batch=10)
    ours = cl.get_loss("infonce", temperature=0.2, in_batch_negatives=False)(q, k, negatives=queue)
    assert _close(ours, moco_v2_loss(q, k, queue, 0.2))


# -- HaoChen et al. (re-derived) -----------------------------------------------------------


@pytest.mark.parametrize("mu", [1.0, 0.25])
def test_haochen_spectral_loss_is_ours_divided_by_mu(mu: float) -> None:
    g = torch.Generator().manual_seed(4)
    z1, z2 = (torch.randn(B, D, generator=g, dtype=torch.float64) for _ in range(2))
    ours = cl.get_loss("spectral", mu=mu)(z1, z2)
    assert _close(ours / mu, haochen_spectral_loss(z1, z2, mu))


# -- lightly -------------------------------------------------------------------------------


def test_memory_queue_is_a_ring_buffer_where_lightly_truncates() -> None:
    first, second = _views(2, seed=5, batch=3)
    queue = cl.MemoryQueue(size=5, dim=D, dtype=torch.float64)
    queue.enqueue(first)
    queue.enqueue(second)
    ours = queue.negatives()
    assert torch.equal(ours[:3], torch.cat([second[2:], first[1:]]))  # second[2] wrapped round
    assert torch.equal(ours[3:], second[:2])
    bank = torch.zeros(5, D, dtype=torch.float64)
    pointer = truncating_bank_update(bank, truncating_bank_update(bank, 0, first), second)
    assert pointer == 0
    assert torch.equal(bank, torch.cat([first, second[:2]]))  # second[2] dropped, first[0] kept


def test_lightly_memory_bank_truncates() -> None:
    memory_bank = pytest.importorskip("lightly.models.modules.memory_bank")
    first, second = _views(2, seed=5, batch=3)
    module = memory_bank.MemoryBankModule(size=(5, D), feature_dim_first=False).double()
    for batch in (first, second):
        module(batch, update=True)
    bank = torch.zeros(5, D, dtype=torch.float64)
    truncating_bank_update(bank, truncating_bank_update(bank, 0, first), second)
    assert torch.equal(module.bank[3:], bank[3:]) and torch.equal(module.bank[:3], bank[:3])


def test_lightly_nt_xent_equals_ours() -> None:
    ntx = pytest.importorskip("lightly.loss.ntx_ent_loss")
    z1, z2 = _views(2)
    assert _close(cl.get_loss("nt_xent", temperature=0.5)(z1, z2), ntx.NTXentLoss(temperature=0.5)(z1, z2))


@pytest.mark.parametrize("sigma", [None, 0.5], ids=["DCLLoss", "DCLWLoss"])
def test_lightly_dcl_and_dclw_equal_ours(sigma: float | None) -> None:
    dcl = pytest.importorskip("lightly.loss.dcl_loss")  # 1.6.0: one log-sum-exp over all negatives
    z1, z2 = _views(2, seed=4)
    theirs = dcl.DCLLoss(temperature=0.2) if sigma is None else dcl.DCLWLoss(temperature=0.2, sigma=sigma)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # lightly copy-constructs its weights with torch.tensor
        expected = theirs(z1, z2)
    assert _close(cl.get_loss("dcl", temperature=0.2, weight_sigma=sigma)(z1, z2), expected)


def test_lightly_memory_bank_loss_is_infonce_against_the_bank() -> None:
    ntx = pytest.importorskip("lightly.loss.ntx_ent_loss")
    out0, out1 = _views(2, seed=9)
    theirs_loss = ntx.NTXentLoss(temperature=0.5, memory_bank_size=(10, D)).double()
    bank = theirs_loss.memory_bank.bank.clone()  # (K, D): lightly's random initial keys
    theirs = theirs_loss(out0, out1)  # inputs without grad: lightly does not update its bank
    ours = cl.get_loss("infonce", temperature=0.5, in_batch_negatives=False)(out0, out1, negatives=bank)
    # lightly's keys were normalised in float32; ours normalises them again in float64
    assert math.isclose(float(ours), float(theirs), rel_tol=1e-6)


# -- open_clip -----------------------------------------------------------------------------


def test_open_clip_loss_equals_our_clip_module_at_its_own_scale() -> None:
    open_clip_loss = pytest.importorskip("open_clip.loss")
    image, text = _views(2, seed=6)
    ours = cl.ClipLoss()
    theirs = open_clip_loss.ClipLoss()(image, text, ours.scale())  # open_clip passes exp(logit_scale)
    # the scale is a float32 parameter: agreement to float32 precision
    assert math.isclose(float(ours(image, text).detach()), float(theirs.detach()), rel_tol=1e-6)
    # the parameter is the log of the multiplier, as open_clip's model.logit_scale
    assert math.isclose(float(ours.logit_scale.detach().exp()), 1 / 0.07, rel_tol=1e-6)
