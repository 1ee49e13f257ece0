r"""Representation-quality metrics: geometry of the embedding and probes on frozen features.

Geometry (Wang & Isola 2020; Graf et al. 2021; Roy & Vetterli 2007):
:func:`alignment`, :func:`uniformity`, :func:`effective_rank`,
:func:`simplex_distance`, :func:`class_collapse`. Probes on frozen features:
:func:`linear_probe_accuracy` (multinomial logistic regression, L-BFGS) and
:func:`knn_accuracy` (cosine-similarity weighted k nearest neighbours).

Everything here is plain torch and runs on the tensors' device.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def _check_2d(name: str, z: Tensor, min_rows: int = 1) -> None:
    if not isinstance(z, Tensor) or z.dim() != 2 or not z.is_floating_point():
        raise ValueError(f"{name} must be a 2-D floating tensor (N, D), got {_describe(z)}")
    if z.shape[0] < min_rows:
        raise ValueError(f"{name} needs at least {min_rows} rows, got shape {tuple(z.shape)}")


def _describe(x: object) -> str:
    if isinstance(x, Tensor):
        return f"shape {tuple(x.shape)} and dtype {x.dtype}"
    return repr(x)


def _check_labels(name: str, labels: Tensor, n: int) -> None:
    if not isinstance(labels, Tensor) or labels.dim() != 1 or labels.dtype.is_floating_point:
        raise ValueError(f"{name} must be a 1-D integer tensor, got {_describe(labels)}")
    if labels.shape[0] != n:
        raise ValueError(f"{name} has {labels.shape[0]} entries, expected {n} (one per row)")


def alignment(z1: Tensor, z2: Tensor, alpha: float = 2.0, normalize: bool = True) -> Tensor:
    r"""Mean distance between positive pairs, :math:`\mathbb{E}\,\lVert f(x) - f(y)\rVert_2^{\alpha}`.

    Lower is better; Wang & Isola (2020) use :math:`\alpha = 2` on unit vectors.
    """
    _check_2d("z1", z1)
    _check_2d("z2", z2)
    if z1.shape != z2.shape:
        raise ValueError(f"z1 and z2 must have the same shape, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0, got {alpha!r}")
    if normalize:
        z1, z2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
    return (z1 - z2).norm(dim=1).pow(alpha).mean()


def uniformity(z: Tensor, t: float = 2.0, normalize: bool = True, block_size: int = 4096) -> Tensor:
    r"""Log of the mean Gaussian potential, :math:`\log \mathbb{E}_{i<j}\, e^{-t \lVert z_i - z_j \rVert^2}`.

    Lower is better (more uniform on the sphere); Wang & Isola (2020), :math:`t = 2`.
    Computed in blocks of ``block_size`` rows, never holding all pairs at once.
    """
    _check_2d("z", z, min_rows=2)
    if not t > 0:
        raise ValueError(f"t must be > 0, got {t!r}")
    if normalize:
        z = F.normalize(z, dim=1)
    n = z.shape[0]
    sq = (z * z).sum(dim=1)
    parts = []
    for start in range(0, n, block_size):
        rows = z[start : start + block_size]
        d2 = (sq[start : start + block_size, None] + sq[None, :] - 2 * rows @ z.T).clamp_min(0)
        idx = torch.arange(start, start + rows.shape[0], device=z.device)
        upper = idx[:, None] < torch.arange(n, device=z.device)[None, :]
        parts.append(torch.logsumexp((-t * d2).masked_fill(~upper, -math.inf).flatten(), dim=0))
    pairs = n * (n - 1) / 2
    return torch.logsumexp(torch.stack(parts), dim=0) - math.log(pairs)


def effective_rank(z: Tensor, eps: float = 1e-12) -> Tensor:
    r"""Effective rank (Roy, Vetterli 2007): :math:`\exp(-\sum_k p_k \log p_k)`, :math:`p_k \propto \sigma_k`.

    Between 1 (all embeddings on a line) and :math:`\min(N, D)`; computed on centred embeddings.
    """
    _check_2d("z", z, min_rows=2)
    sigma = torch.linalg.svdvals((z - z.mean(dim=0)).double())
    total = sigma.sum()
    if total <= eps:
        return torch.ones((), dtype=z.dtype, device=z.device)
    p = sigma / total
    entropy = -(p * torch.log(p.clamp_min(eps))).sum()
    return entropy.exp().to(z.dtype)


def _class_means(z: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    classes, inverse = torch.unique(labels, return_inverse=True)
    sums = torch.zeros(classes.numel(), z.shape[1], dtype=z.dtype, device=z.device)
    sums.index_add_(0, inverse, z)
    counts = torch.bincount(inverse, minlength=classes.numel()).to(z.dtype)
    return sums / counts[:, None], inverse


def simplex_distance(z: Tensor, labels: Tensor, normalize: bool = True) -> Tensor:
    r"""Distance of the class means from a regular simplex (Graf et al. 2021).

    With :math:`\mu_k` the unit-normalised class means of the (normalised) embeddings
    and :math:`G_{kl} = \langle \mu_k, \mu_l \rangle`, returns
    :math:`\lVert G - G^\star \rVert_F / \lVert G^\star \rVert_F` where
    :math:`G^\star = \tfrac{K}{K-1} I - \tfrac{1}{K-1} \mathbf{1}\mathbf{1}^\top` is the
    Gram matrix of a regular simplex, the optimum of supervised contrastive losses.
    0 means the means form a regular simplex.
    """
    _check_2d("z", z, min_rows=2)
    _check_labels("labels", labels, z.shape[0])
    if normalize:
        z = F.normalize(z, dim=1)
    means, _ = _class_means(z, labels)
    k = means.shape[0]
    if k < 2:
        raise ValueError(f"labels must contain at least 2 classes, got {k}")
    mu = F.normalize(means, dim=1)
    gram = mu @ mu.T
    eye = torch.eye(k, dtype=z.dtype, device=z.device)
    target = (k * eye - torch.ones_like(eye)) / (k - 1)
    return (gram - target).norm() / target.norm()


def class_collapse(z: Tensor, labels: Tensor, normalize: bool = True) -> Tensor:
    r"""Mean squared distance to the class mean, :math:`\mathbb{E}\,\lVert z_i - \mu_{y_i}\rVert^2`.

    0 means every class has collapsed to a single point (Graf et al. 2021).
    """
    _check_2d("z", z)
    _check_labels("labels", labels, z.shape[0])
    if normalize:
        z = F.normalize(z, dim=1)
    means, inverse = _class_means(z, labels)
    return (z - means[inverse]).pow(2).sum(dim=1).mean()


def _check_probe_inputs(train_z: Tensor, train_y: Tensor, test_z: Tensor, test_y: Tensor) -> None:
    _check_2d("train_z", train_z)
    _check_2d("test_z", test_z)
    _check_labels("train_y", train_y, train_z.shape[0])
    _check_labels("test_y", test_y, test_z.shape[0])
    if train_z.shape[1] != test_z.shape[1]:
        raise ValueError(
            "train_z and test_z must have the same feature dimension, "
            f"got {train_z.shape[1]} and {test_z.shape[1]}"
        )


def linear_probe_accuracy(
    train_z: Tensor,
    train_y: Tensor,
    test_z: Tensor,
    test_y: Tensor,
    weight_decay: float = 1e-4,
    max_iter: int = 200,
) -> float:
    r"""Test accuracy of a multinomial logistic regression fitted on frozen features.

    Features are standardised with the training statistics; the model minimises
    cross-entropy plus ``weight_decay`` :math:`\cdot \lVert W \rVert^2` by full-batch
    L-BFGS (deterministic: no random initialisation).
    """
    _check_probe_inputs(train_z, train_y, test_z, test_y)
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
    classes, y = torch.unique(train_y, return_inverse=True)
    x = train_z.detach().double()
    mean, std = x.mean(dim=0), x.std(dim=0, unbiased=False).clamp_min(1e-8)
    x = (x - mean) / std
    weight = torch.zeros(x.shape[1], classes.numel(), dtype=x.dtype, device=x.device, requires_grad=True)
    bias = torch.zeros(classes.numel(), dtype=x.dtype, device=x.device, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [weight, bias], lr=1.0, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe"
    )

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(x @ weight + bias, y) + weight_decay * weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    with torch.no_grad():
        logits = ((test_z.detach().double() - mean) / std) @ weight + bias
        predicted = classes[logits.argmax(dim=1)]
    return (predicted == test_y.to(predicted.device)).double().mean().item()


def knn_accuracy(
    train_z: Tensor,
    train_y: Tensor,
    test_z: Tensor,
    test_y: Tensor,
    k: int = 20,
    temperature: float = 0.07,
    block_size: int = 1024,
) -> float:
    r"""Test accuracy of a cosine-similarity k-nearest-neighbour classifier on frozen features.

    Each of the ``k`` most similar training points votes for its class with weight
    :math:`e^{s/\tau}` (``temperature`` :math:`\tau`; Wu et al. 2018). Test points
    are processed in blocks of ``block_size``.
    """
    _check_probe_inputs(train_z, train_y, test_z, test_y)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    k = min(k, train_z.shape[0])
    classes, y = torch.unique(train_y, return_inverse=True)
    train = F.normalize(train_z.detach().float(), dim=1)
    test = F.normalize(test_z.detach().float(), dim=1)
    correct = 0
    for start in range(0, test.shape[0], block_size):
        sims, idx = (test[start : start + block_size] @ train.T).topk(k, dim=1)
        votes = torch.zeros(sims.shape[0], classes.numel(), device=test.device)
        votes.scatter_add_(1, y[idx], (sims / temperature).exp())
        predicted = classes[votes.argmax(dim=1)]
        correct += (predicted == test_y[start : start + block_size].to(predicted.device)).sum().item()
    return correct / test.shape[0]
