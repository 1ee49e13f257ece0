"""Linear contrastive learning (Ji et al.): data model, sin-theta distance, closed form and sgd solvers."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from contrastive.linear import (
    LinearContrastive,
    NotFittedError,
    masked_contrastive_matrix,
    noise_profile,
    sin_theta_distance,
    spiked_covariance,
)
from contrastive.losses.linear_spectral import linear_spectral_contrastive_loss


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():  # type: ignore[no-untyped-def]
    """Train the tiny sgd encoders on one thread: on a shared 2-core machine, thread hand-offs dominate."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --- strategies -------------------------------------------------------------------------------

seeds = st.integers(0, 2**31 - 1)
keep_probs = st.sampled_from([0.2, 0.5, 0.7])


@st.composite
def small_data(draw: st.DrawFn, n: int, d: int) -> np.ndarray:
    """An (n, d) float64 data matrix with a drawn scale and offset (the loss must not need centred data)."""
    rng = np.random.default_rng(draw(seeds))
    scale = draw(st.sampled_from([0.5, 1.0, 2.0]))
    offset = draw(st.sampled_from([0.0, 1.0]))
    return rng.standard_normal((n, d)) * scale + offset


def objective(weight: torch.Tensor, target: np.ndarray, reg: float) -> torch.Tensor:
    """The expected loss -tr(W M W^T) + reg/2 ||W^T W||_F^2 for the expected target M."""
    m = torch.as_tensor(target)
    return -torch.trace(weight @ m @ weight.T) + reg / 2 * (weight.T @ weight).square().sum()


def pca_basis(x: np.ndarray, r: int) -> np.ndarray:
    """Top-r eigenvectors (d, r) of the sample covariance."""
    _, vecs = np.linalg.eigh(np.cov(x, rowvar=False))
    return vecs[:, ::-1][:, :r]


# --- sin-theta distance -------------------------------------------------------------------------


def test_sin_theta_of_a_plane_rotation_is_the_sine_of_the_angle() -> None:
    for theta in (0.0, 0.3, math.pi / 4, math.pi / 2):
        u = np.array([[1.0], [0.0], [0.0]])
        v = np.array([[math.cos(theta)], [math.sin(theta)], [0.0]])
        assert sin_theta_distance(u, v) == pytest.approx(math.sin(theta), abs=1e-12)
        assert sin_theta_distance(u, v, norm="spectral") == pytest.approx(math.sin(theta), abs=1e-12)


def test_sin_theta_of_orthogonal_subspaces_is_sqrt_r_and_of_equal_spans_is_zero() -> None:
    eye = np.eye(6)
    assert sin_theta_distance(eye[:, :3], eye[:, 3:]) == pytest.approx(math.sqrt(3))
    assert sin_theta_distance(eye[:, :3], eye[:, 3:], norm="spectral") == pytest.approx(1.0)
    mixed = eye[:, :3] @ np.array(
        [[2.0, 1.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 3.0]]
    )  # same span, not orthonormal
    assert sin_theta_distance(eye[:, :3], mixed) == pytest.approx(0.0, abs=1e-7)
    assert sin_theta_distance(torch.eye(6)[:, :2], eye[:, :2]) == pytest.approx(0.0, abs=1e-7)


@given(seeds, st.integers(1, 4), st.integers(1, 4))
def test_sin_theta_equals_the_projector_distance_and_is_symmetric(seed, r1, r2) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    u, v = rng.standard_normal((8, r1)), rng.standard_normal((8, r2))
    qu, qv = np.linalg.qr(u)[0], np.linalg.qr(v)[0]
    projector = np.linalg.norm(qu @ qu.T - qv @ qv.T) / math.sqrt(2)
    assert sin_theta_distance(u, v) == pytest.approx(projector, abs=1e-9)
    assert sin_theta_distance(v, u) == pytest.approx(sin_theta_distance(u, v), abs=1e-12)
    assert 0.0 <= sin_theta_distance(u, v, norm="spectral") <= 1.0 + 1e-12


def test_sin_theta_rejects_bad_bases() -> None:
    with pytest.raises(ValueError, match="same ambient dimension"):
        sin_theta_distance(np.eye(4)[:, :2], np.eye(5)[:, :2])
    with pytest.raises(ValueError, match="linearly independent columns"):
        sin_theta_distance(np.ones((4, 2)), np.eye(4)[:, :2])
    with pytest.raises(ValueError, match="norm must be 'fro' or 'spectral'"):
        sin_theta_distance(np.eye(4)[:, :2], np.eye(4)[:, :2], norm="nuclear")  # type: ignore[arg-type]


# --- spiked covariance model ----------------------------------------------------------------------


def test_spiked_covariance_has_the_stated_population_covariance() -> None:
    x, u = spiked_covariance(40_000, 6, 2, signal_std=1.5, noise_std=1.0, noise_ratio=4.0, random_state=0)
    assert x.shape == (40_000, 6) and u.shape == (6, 2)
    np.testing.assert_allclose(u.T @ u, np.eye(2), atol=1e-12)
    sigma = noise_profile(6, 1.0, "heteroskedastic", 4.0)
    np.testing.assert_allclose(sigma, np.linspace(1.0, 0.25, 6))
    expected = 1.5**2 * u @ u.T + np.diag(sigma**2)
    np.testing.assert_allclose(np.cov(x, rowvar=False), expected, atol=0.06)


def test_spiked_covariance_is_reproducible_and_homoskedastic_noise_is_flat() -> None:
    a = spiked_covariance(50, 5, 2, random_state=3)
    b = spiked_covariance(50, 5, 2, random_state=np.random.default_rng(3))
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[0], spiked_covariance(50, 5, 2, random_state=4)[0])
    np.testing.assert_array_equal(noise_profile(4, 2.0, "homoskedastic"), np.full(4, 2.0))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n": 0, "d": 3, "r": 1}, "n must be a positive int"),
        ({"n": 5, "d": 3, "r": 4}, "r must be at most d"),
        ({"n": 5, "d": 3, "r": 1, "noise": "pink"}, "noise must be 'heteroskedastic' or 'homoskedastic'"),
        ({"n": 5, "d": 3, "r": 1, "noise_ratio": 0.5}, "noise_ratio must be >= 1"),
        ({"n": 5, "d": 3, "r": 1, "signal_std": -1.0}, "signal_std must be a finite number >= 0"),
        ({"n": 5, "d": 3, "r": 1, "random_state": "seed"}, "random_state must be None, an int seed"),
    ],
)
def test_spiked_covariance_rejects_bad_arguments(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        spiked_covariance(**kwargs)  # type: ignore[arg-type]


# --- the expected loss and its closed-form minimiser ------------------------------------------------


def _masks(d: int) -> np.ndarray:
    return np.array(list(itertools.product([0.0, 1.0], repeat=d)))


@pytest.mark.slow
@given(small_data(n=3, d=3), keep_probs, seeds)
def test_loss_averaged_over_all_complementary_masks_is_the_target_objective(x, p, seed) -> None:  # type: ignore[no-untyped-def]
    # Enumerate every mask of every sample (8**3 draws) and weight each by its probability.
    weight = torch.randn(2, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    xt = torch.as_tensor(x)
    masks = torch.as_tensor(_masks(3))
    probs = p ** masks.sum(1) * (1 - p) ** (3 - masks.sum(1))
    expected = torch.zeros((), dtype=torch.float64)
    for idx in itertools.product(range(8), repeat=3):
        a = masks[list(idx)]
        v1, v2 = xt * a, xt * (1 - a)
        loss = linear_spectral_contrastive_loss(v1 @ weight.T, v2 @ weight.T, weight=weight, reg=0.7)
        expected += probs[list(idx)].prod() * loss
    target = masked_contrastive_matrix(x, mask_prob=p, complementary=True)
    torch.testing.assert_close(expected, objective(weight, target, 0.7))


@pytest.mark.slow
@given(small_data(n=2, d=2), keep_probs, seeds)
def test_loss_averaged_over_all_independent_masks_is_the_covariance_objective(x, p, seed) -> None:  # type: ignore[no-untyped-def]
    weight = torch.randn(1, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    xt = torch.as_tensor(x)
    masks = torch.as_tensor(_masks(2))
    probs = p ** masks.sum(1) * (1 - p) ** (2 - masks.sum(1))
    expected = torch.zeros((), dtype=torch.float64)
    for idx in itertools.product(range(4), repeat=4):  # view-1 and view-2 masks of both samples
        a, b = masks[list(idx[:2])], masks[list(idx[2:])]
        loss = linear_spectral_contrastive_loss(
            (xt * a) @ weight.T, (xt * b) @ weight.T, weight=weight, reg=1.0
        )
        expected += probs[list(idx)].prod() * loss
    target = masked_contrastive_matrix(x, mask_prob=p, complementary=False)
    torch.testing.assert_close(expected, objective(weight, target, 1.0))
    np.testing.assert_allclose(target, p * p * np.cov(x, rowvar=False), atol=1e-12)


@given(small_data(n=30, d=6), keep_probs, st.integers(1, 4), st.sampled_from([0.3, 1.0, 4.0]), seeds)
def test_closed_form_is_a_global_minimiser_of_the_expected_loss(x, p, r, reg, seed) -> None:  # type: ignore[no-untyped-def]
    model = LinearContrastive(r, mask_prob=p, reg=reg).fit(x)
    target = masked_contrastive_matrix(x, mask_prob=p)
    w_star = torch.tensor(model.weight_, requires_grad=True)
    best = objective(w_star, target, reg)
    # Eckart-Young: the minimum is -||top-r positive part of M||_F^2 / (2 reg)
    theta = np.sort(np.linalg.eigvalsh(target))[::-1][:r]
    assert best.item() == pytest.approx(-np.square(np.clip(theta, 0, None)).sum() / (2 * reg), abs=1e-10)
    (grad,) = torch.autograd.grad(best, w_star)
    assert grad.abs().max().item() < 1e-9
    rng = np.random.default_rng(seed)
    for _ in range(5):
        other = torch.as_tensor(model.weight_ + 0.3 * rng.standard_normal(model.weight_.shape) * rng.random())
        assert objective(other, target, reg).item() >= best.item() - 1e-12
        random_w = torch.as_tensor(rng.standard_normal(model.weight_.shape))
        assert objective(random_w, target, reg).item() >= best.item() - 1e-12


@pytest.mark.slow
@settings(max_examples=8)  # each example trains an encoder (~0.5 s)
@given(st.integers(6, 12), st.integers(1, 3), keep_probs, seeds)
def test_sgd_converges_to_the_closed_form_subspace(d, r, p, seed) -> None:  # type: ignore[no-untyped-def]
    x, _ = spiked_covariance(1024, d, r, signal_std=2.0, noise_std=1.0, random_state=seed)
    closed = LinearContrastive(r, mask_prob=p).fit(x)
    sgd = LinearContrastive(
        r, mask_prob=p, solver="sgd", max_iter=150, batch_size=512, random_state=seed
    ).fit(x)
    assert sin_theta_distance(closed.components_.T, sgd.components_.T) < 0.1
    # and to the same scale of W (the minimiser is unique up to a rotation Q: compare W^T W)
    np.testing.assert_allclose(sgd.weight_.T @ sgd.weight_, closed.weight_.T @ closed.weight_, atol=0.05)
    assert sgd.loss_curve_[-1] < sgd.loss_curve_[0]


def test_contrastive_learning_recovers_the_signal_where_pca_fails_under_heteroskedastic_noise() -> None:
    x, u = spiked_covariance(20_000, 40, 3, signal_std=1.0, noise_std=2.0, noise_ratio=10.0, random_state=0)
    contrastive = sin_theta_distance(u, LinearContrastive(3).fit(x).components_.T)
    pca = sin_theta_distance(u, pca_basis(x, 3))
    assert contrastive < 0.3
    assert pca > 1.0


def test_independent_masks_reduce_to_pca() -> None:
    x, _ = spiked_covariance(500, 10, 2, noise="homoskedastic", random_state=1)
    model = LinearContrastive(2, complementary=False).fit(x)
    assert sin_theta_distance(model.components_.T, pca_basis(x, 2)) < 1e-8


# --- estimator API ----------------------------------------------------------------------------------


def test_estimator_attributes_and_transform() -> None:
    x, _ = spiked_covariance(300, 8, 2, signal_std=2.0, random_state=0)
    model = LinearContrastive(2, reg=0.5)
    assert model.fit(x) is model
    assert model.components_.shape == (2, 8) and model.weight_.shape == (2, 8)
    np.testing.assert_allclose(model.components_ @ model.components_.T, np.eye(2), atol=1e-10)
    assert np.all(np.diff(model.eigenvalues_) <= 0)
    np.testing.assert_allclose(np.square(model.weight_).sum(1), model.eigenvalues_ / 0.5)
    assert np.all((model.explained_variance_ratio_ > 0) & (model.explained_variance_ratio_ < 1))
    np.testing.assert_allclose(model.explained_variance_, np.var(x @ model.components_.T, axis=0, ddof=1))
    np.testing.assert_allclose(model.transform(x), x @ model.weight_.T)
    np.testing.assert_allclose(LinearContrastive(2, reg=0.5).fit_transform(x), model.transform(x))
    np.testing.assert_allclose(model.transform(torch.as_tensor(x[:3])), model.transform(x[:3]))
    assert model.n_features_in_ == 8 and model.n_iter_ is None
    assert repr(model) == "LinearContrastive(n_components=2, reg=0.5)"


def test_estimator_errors() -> None:
    x = np.random.default_rng(0).standard_normal((20, 4))
    with pytest.raises(NotFittedError, match="not fitted yet"):
        LinearContrastive(2).transform(x)
    with pytest.raises(ValueError, match="n_components must be at most n_features=4"):
        LinearContrastive(5).fit(x)
    with pytest.raises(ValueError, match="X must have 4 features"):
        LinearContrastive(2).fit(x).transform(x[:, :3])
    with pytest.raises(ValueError, match="X must be a 2-D"):
        LinearContrastive(1).fit(x[0])
    with pytest.raises(ValueError, match="unknown parameter 'alpha'"):
        LinearContrastive(1).set_params(alpha=1)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_components": 0}, "n_components must be a positive int"),
        ({"mask_prob": 1.0}, r"mask_prob must be in the open interval \(0, 1\)"),
        ({"reg": 0.0}, "reg must be a positive finite number"),
        ({"solver": "lbfgs"}, "solver must be 'closed_form' or 'sgd', got solver='lbfgs'"),
        ({"batch_size": 1}, "batch_size must be an int >= 2"),
        ({"max_iter": 0}, "max_iter must be an int >= 1"),
        ({"learning_rate": -1.0}, "learning_rate must be a positive finite number"),
        ({"random_state": 1.5}, "random_state must be None, an int seed"),
    ],
)
def test_estimator_rejects_bad_parameters_at_fit(kwargs: dict[str, object], match: str) -> None:
    params: dict[str, object] = {"n_components": 1, **kwargs}
    model = LinearContrastive(**params)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=match):
        model.fit(np.ones((5, 3)) + np.arange(15).reshape(5, 3) ** 2)


@pytest.mark.slow
def test_estimator_works_with_scikit_learn_clone_and_pipeline() -> None:
    sklearn_base = pytest.importorskip("sklearn.base")
    pipeline = pytest.importorskip("sklearn.pipeline")
    preprocessing = pytest.importorskip("sklearn.preprocessing")
    model = LinearContrastive(2, mask_prob=0.4, random_state=0)
    cloned = sklearn_base.clone(model)
    assert cloned.get_params() == model.get_params() and cloned is not model
    x, _ = spiked_covariance(100, 6, 2, random_state=0)
    out = pipeline.make_pipeline(preprocessing.StandardScaler(), model).fit_transform(x)
    assert out.shape == (100, 2)
