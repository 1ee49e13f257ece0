"""Linear contrastive learning with random masking: closed form and stochastic-gradient solvers."""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import torch

from contrastive.augment.masking import RandomMask
from contrastive.linear.data import RandomState, as_rng
from contrastive.losses.linear_spectral import linear_spectral_contrastive_loss

__all__ = ["LinearContrastive", "NotFittedError", "masked_contrastive_matrix"]


class NotFittedError(ValueError, AttributeError):
    """Raised when a method that needs a fitted estimator is called before ``fit`` (as in scikit-learn)."""


def masked_contrastive_matrix(X: Any, mask_prob: float = 0.5, complementary: bool = True) -> np.ndarray:
    r"""Expected target matrix :math:`\bar M` (d, d) of Ji et al.'s linear loss under random masking.

    For views :math:`x^{(1)} = A x`, :math:`x^{(2)} = B x` the loss of
    :class:`~contrastive.losses.linear_spectral.LinearSpectralContrastiveLoss`
    over all n samples equals :math:`-\operatorname{tr}(W M W^\top) + \frac{\lambda}{2}\|W^\top W\|_F^2`
    with :math:`M = \frac1n\sum_i \operatorname{sym}(x^{(1)}_i x^{(2)\top}_i)
    - \frac{1}{n(n-1)}\sum_{i\ne j}\operatorname{sym}(x^{(1)}_i x^{(2)\top}_j)`.
    :math:`M` enters linearly, so the loss averaged over the masks is the same
    expression with :math:`\bar M = \mathbb{E}[M]`. With keep probability p,
    :math:`S = \sum_i x_i x_i^\top` and :math:`s = \sum_i x_i`:

    * complementary masks (:math:`B = I - A`): :math:`\mathbb{E}[a_k(1-a_l)] = p(1-p)\,[k\ne l]`
      within a sample and :math:`p(1-p)` across samples, so
      :math:`\bar M = p(1-p)\big(\Delta(S)/n - (ss^\top - S)/(n(n-1))\big)`, where :math:`\Delta`
      zeroes the diagonal: the noise variances on the diagonal drop out;
    * independent masks: :math:`\bar M = p^2\big(S/n - (ss^\top - S)/(n(n-1))\big)`, i.e.
      :math:`p^2` times the unbiased sample covariance (the PCA target).
    """
    x = _as_data(X)
    _check_mask_prob(mask_prob)
    n = x.shape[0]
    second = x.T @ x
    total = x.sum(axis=0)
    cross = (np.outer(total, total) - second) / (n * (n - 1))
    p = float(mask_prob)
    if complementary:
        off = second / n
        np.fill_diagonal(off, 0.0)
        m = p * (1.0 - p) * (off - cross)
    else:
        m = p * p * (second / n - cross)
    return 0.5 * (m + m.T)


class LinearContrastive:
    r"""Linear contrastive learning with random masking (Ji, Deng, Nakada, Zou and Zhang, arXiv:2110.02473).

    Learns :math:`f(x) = Wx`, :math:`W \in \mathbb{R}^{r\times d}`, by minimising
    the linear contrastive loss

    .. math::

        \mathcal{L}(W) = -\frac1n\sum_i\langle W x^{(1)}_i, W x^{(2)}_i\rangle
            + \frac{1}{n(n-1)}\sum_{i\ne j}\langle W x^{(1)}_i, W x^{(2)}_j\rangle
            + \frac{\lambda}{2}\|WW^\top\|_F^2

    in expectation over random-mask views :math:`x^{(1)} = Ax`, :math:`x^{(2)} = (I - A)x`.
    That expectation is :math:`-\operatorname{tr}(\bar M P) + \frac{\lambda}{2}\|P\|_F^2 =
    \frac{\lambda}{2}\|P - \bar M/\lambda\|_F^2 + \text{const}` in :math:`P = W^\top W`
    (:func:`masked_contrastive_matrix`), so by Eckart-Young its minimisers are
    :math:`W = Q\,\operatorname{diag}(\sqrt{\theta_k^+/\lambda})\,u_k^\top` for the top-r
    eigenpairs :math:`(\theta_k, u_k)` of :math:`\bar M` and any orthogonal :math:`Q`.
    With complementary masks :math:`\bar M` is, up to :math:`O(1/n)` terms, :math:`p(1-p)`
    times the off-diagonal part of the sample covariance, which is why the
    heteroskedastic noise (diagonal) does not bias the recovered subspace as it biases PCA.

    ``solver="closed_form"`` computes this eigendecomposition; ``solver="sgd"``
    trains ``W`` with :func:`~contrastive.losses.linear_spectral.linear_spectral_contrastive_loss`
    on mini-batches of fresh :class:`~contrastive.augment.masking.RandomMask` views
    (Adam, cosine-annealed learning rate, data rescaled by one scalar, which
    rescales the minimiser exactly) and converges to the same subspace.

    Args:
        n_components: r, the dimension of the representation.
        mask_prob: p, the probability that view 1 keeps a coordinate (view 2 keeps the rest).
        reg: the penalty weight :math:`\lambda > 0`; it scales ``weight_``, not the subspace.
        solver: ``"closed_form"`` or ``"sgd"``.
        complementary: ``False`` draws independent masks for the two views; :math:`\bar M` is then
            :math:`p^2` times the sample covariance and the estimator reduces to PCA.
        max_iter, batch_size, learning_rate: epochs, mini-batch size and Adam step for ``sgd``.
        random_state: seed or ``numpy.random.Generator`` for the ``sgd`` initialisation and masks.

    Attributes (after ``fit``): ``components_`` (r, d) orthonormal rows spanning
    the row space of ``weight_``, ordered by ``eigenvalues_``; ``weight_`` (r, d)
    the learned map W; ``eigenvalues_`` (r,) the Rayleigh quotients
    :math:`u_k^\top \bar M u_k` (the eigenvalues for the closed form);
    ``explained_variance_`` (r,) the sample variance of the data along each
    component and ``explained_variance_ratio_`` its share of the total;
    ``n_features_in_``; for ``sgd`` also ``n_iter_`` (epochs) and ``loss_curve_``.
    """

    def __init__(
        self,
        n_components: int,
        mask_prob: float = 0.5,
        reg: float = 1.0,
        solver: Literal["closed_form", "sgd"] = "closed_form",
        *,
        complementary: bool = True,
        max_iter: int = 200,
        batch_size: int = 256,
        learning_rate: float = 0.05,
        random_state: RandomState = None,
    ) -> None:
        """Store the hyper-parameters; they are validated by :meth:`fit` (scikit-learn convention)."""
        self.n_components = n_components
        self.mask_prob = mask_prob
        self.reg = reg
        self.solver = solver
        self.complementary = complementary
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.random_state = random_state

    # scikit-learn's parameter protocol (so clone, GridSearchCV and Pipeline work without importing it)
    _param_names = (
        "n_components", "mask_prob", "reg", "solver", "complementary",
        "max_iter", "batch_size", "learning_rate", "random_state",
    )  # fmt: skip

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Return the constructor parameters as a dict."""
        return {name: getattr(self, name) for name in self._param_names}

    def set_params(self, **params: Any) -> LinearContrastive:
        """Set constructor parameters by name and return ``self``."""
        for name, value in params.items():
            if name not in self._param_names:
                raise ValueError(
                    f"unknown parameter {name!r} for LinearContrastive; valid: {', '.join(self._param_names)}"
                )
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        """Show the parameters that differ from their defaults, like scikit-learn."""
        defaults = LinearContrastive(self.n_components).get_params()
        shown = {k: v for k, v in self.get_params().items() if k == "n_components" or v != defaults[k]}
        return "LinearContrastive(" + ", ".join(f"{k}={v!r}" for k, v in shown.items()) + ")"

    def fit(self, X: Any, y: Any = None) -> LinearContrastive:
        """Learn the linear map from the (n, d) data ``X``; ``y`` is ignored."""
        self._validate_params()
        x = _as_data(X)
        n, d = x.shape
        r = self.n_components
        if r > d:
            raise ValueError(f"n_components must be at most n_features={d}, got n_components={r}")
        target = masked_contrastive_matrix(x, self.mask_prob, self.complementary)
        if self.solver == "closed_form":
            evals, evecs = np.linalg.eigh(target)
            order = np.argsort(evals)[::-1][:r]
            theta, basis = evals[order], evecs[:, order]
            weight = np.sqrt(np.clip(theta, 0.0, None) / self.reg)[:, None] * basis.T
            self.n_iter_ = None
        else:
            weight = self._fit_sgd(x)
        self.weight_ = weight
        # Orthonormal basis of the row space, ordered by the target's Rayleigh quotients.
        _, _, vt = np.linalg.svd(weight, full_matrices=False)
        rayleigh = np.einsum("kd,de,ke->k", vt, target, vt)
        order = np.argsort(rayleigh)[::-1]
        self.components_ = vt[order]
        self.eigenvalues_ = rayleigh[order]
        centred = x - x.mean(axis=0)
        total = float(np.square(centred).sum()) / (n - 1)
        self.explained_variance_ = np.square(centred @ self.components_.T).sum(axis=0) / (n - 1)
        self.explained_variance_ratio_ = self.explained_variance_ / total if total > 0 else np.zeros(r)
        self.n_features_in_ = d
        return self

    def transform(self, X: Any) -> np.ndarray:
        """Return the representation ``X @ weight_.T`` (n, r) of the (n, d) data ``X``."""
        if not hasattr(self, "weight_"):
            raise NotFittedError("this LinearContrastive instance is not fitted yet; call fit(X) first")
        x = _as_data(X, min_rows=1)
        if x.shape[1] != self.n_features_in_:
            raise ValueError(f"X must have {self.n_features_in_} features (as in fit), got shape {x.shape}")
        return x @ self.weight_.T

    def fit_transform(self, X: Any, y: Any = None) -> np.ndarray:
        """Fit to ``X`` and return its representation."""
        return self.fit(X, y).transform(X)

    def _fit_sgd(self, x: np.ndarray) -> np.ndarray:
        n, d = x.shape
        rng = as_rng(self.random_state)
        g = torch.Generator().manual_seed(int(rng.integers(2**62)))
        # One scalar rescaling keeps Adam's step size meaningful for any data scale: the loss on
        # x / c at W' equals c**-4 times the loss on x at c W', so the minimiser for x is c W'.
        scale = math.sqrt(float(np.square(x).mean())) or 1.0
        data = torch.as_tensor(x / scale, dtype=torch.float64)
        weight = torch.nn.Parameter(
            torch.randn(self.n_components, d, generator=g, dtype=torch.float64) / math.sqrt(d)
        )
        augment = RandomMask(self.mask_prob, complementary=self.complementary)
        batch = min(self.batch_size, n)
        steps_per_epoch = max(1, n // batch)  # drop the ragged last batch
        optimizer = torch.optim.Adam([weight], lr=self.learning_rate)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=self.max_iter * steps_per_epoch
        )
        self.loss_curve_: list[float] = []
        for _ in range(self.max_iter):
            order = torch.randperm(n, generator=g)
            total = 0.0
            for step in range(steps_per_epoch):
                xb = data[order[step * batch : (step + 1) * batch]]
                v1, v2 = augment.views(xb, n=2, generator=g)
                loss = linear_spectral_contrastive_loss(
                    v1 @ weight.T, v2 @ weight.T, weight=weight, reg=self.reg
                )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                total += loss.item()
            self.loss_curve_.append(total / steps_per_epoch * scale**4)
        self.n_iter_ = self.max_iter
        return weight.detach().numpy() * scale

    def _validate_params(self) -> None:
        r = self.n_components
        if isinstance(r, bool) or not isinstance(r, (int, np.integer)) or r < 1:
            raise ValueError(f"n_components must be a positive int, got n_components={r!r}")
        _check_mask_prob(self.mask_prob)
        if not _positive_number(self.reg):
            raise ValueError(
                f"reg must be a positive finite number (the penalty weight lambda), got reg={self.reg!r}"
            )
        if self.solver not in ("closed_form", "sgd"):
            raise ValueError(f"solver must be 'closed_form' or 'sgd', got solver={self.solver!r}")
        if not isinstance(self.complementary, bool):
            raise ValueError(f"complementary must be a bool, got complementary={self.complementary!r}")
        for name in ("max_iter", "batch_size"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, np.integer))
                or value < (2 if name == "batch_size" else 1)
            ):
                least = 2 if name == "batch_size" else 1
                raise ValueError(f"{name} must be an int >= {least}, got {name}={value!r}")
        if not _positive_number(self.learning_rate):
            raise ValueError(
                f"learning_rate must be a positive finite number, got learning_rate={self.learning_rate!r}"
            )
        as_rng(self.random_state)  # raises ValueError for anything but None, an int or a Generator


def _positive_number(value: Any) -> bool:
    return (
        not isinstance(value, bool)
        and isinstance(value, (int, float, np.floating))
        and math.isfinite(value)
        and value > 0
    )


def _check_mask_prob(mask_prob: float) -> None:
    if (
        isinstance(mask_prob, bool)
        or not isinstance(mask_prob, (int, float, np.floating))
        or not 0 < mask_prob < 1
    ):
        raise ValueError(
            "mask_prob must be in the open interval (0, 1) (the chance to keep a coordinate), "
            f"got mask_prob={mask_prob!r}"
        )


def _as_data(X: Any, min_rows: int = 2) -> np.ndarray:
    if hasattr(X, "detach"):  # a torch tensor
        X = X.detach().cpu().numpy()
    x = np.asarray(X, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < min_rows or x.shape[1] < 1:
        raise ValueError(
            f"X must be a 2-D (n_samples, n_features) array with at least {min_rows} rows, "
            f"got shape {x.shape}"
        )
    if not np.all(np.isfinite(x)):
        raise ValueError("X must be finite, got NaN or infinite entries")
    return x
