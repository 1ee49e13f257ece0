"""Spectral contrastive loss (HaoChen et al.) and the linear contrastive loss of Ji et al."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from contrastive.losses import linear_spectral, spectral
from contrastive.losses.linear_spectral import (
    LinearSpectralContrastiveLoss,
    linear_spectral_contrastive_loss,
    weight_penalty,
)
from contrastive.losses.spectral import (
    SpectralContrastiveLoss,
    SpectralStatistics,
    clip_norm,
    spectral_contrastive_loss,
    spectral_loss_from_statistics,
    spectral_statistics,
)

# --- strategies -------------------------------------------------------------------------------


@st.composite
def view_pairs(
    draw: st.DrawFn, min_batch: int = 2, max_batch: int = 12, max_dim: int = 6
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two float64 views (B, D) of equal shape, drawn from a seeded Gaussian with a drawn scale."""
    b = draw(st.integers(min_batch, max_batch))
    d = draw(st.integers(1, max_dim))
    scale = draw(st.sampled_from([0.1, 1.0, 3.0]))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    z = torch.randn(2, b, d, generator=g, dtype=torch.float64) * scale
    if draw(st.booleans()):  # some zero rows: the norm clip must handle them
        z[0, 0] = 0.0
    return z[0].clone(), z[1].clone()


mus = st.one_of(st.none(), st.sampled_from([0.5, 1.0, 4.0]))


def orthogonal(d: int, seed: int) -> torch.Tensor:
    """A random d x d orthogonal matrix."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    return q


# --- references: the materialised B x B forms --------------------------------------------------


def spectral_materialised(z1: torch.Tensor, z2: torch.Tensor, mu: float | None) -> torch.Tensor:
    """The spectral loss written with the full B x B similarity matrix."""
    if mu is not None:
        z1, z2 = clip_norm(z1, mu), clip_norm(z2, mu)
    b = z1.shape[0]
    sim = z1 @ z2.T
    off = ~torch.eye(b, dtype=torch.bool)
    return -2 * sim.diagonal().mean() + sim[off].square().sum() / (b * (b - 1))


def linear_materialised(z1: torch.Tensor, z2: torch.Tensor, weight: torch.Tensor, reg: float) -> torch.Tensor:
    """Ji et al.'s linear loss written with the full B x B similarity matrix and ||W W^T||_F^2."""
    b = z1.shape[0]
    sim = z1 @ z2.T
    off = ~torch.eye(b, dtype=torch.bool)
    return (
        -sim.diagonal().mean() + sim[off].sum() / (b * (b - 1)) + reg / 2 * (weight @ weight.T).square().sum()
    )


def grads(fn, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:  # type: ignore[no-untyped-def]
    """Gradients of the scalar ``fn(*tensors)`` with respect to each tensor."""
    leaves = [t.detach().clone().requires_grad_(True) for t in tensors]
    return torch.autograd.grad(fn(*leaves), leaves)


# --- spectral ----------------------------------------------------------------------------------


@given(view_pairs(), mus)
def test_spectral_loss_matches_materialised_form_in_value_and_gradient(pair, mu) -> None:  # type: ignore[no-untyped-def]
    z1, z2 = pair
    torch.testing.assert_close(spectral_contrastive_loss(z1, z2, mu=mu), spectral_materialised(z1, z2, mu))
    ours = grads(lambda a, b: spectral_contrastive_loss(a, b, mu=mu), z1, z2)
    ref = grads(lambda a, b: spectral_materialised(a, b, mu), z1, z2)
    for g_ours, g_ref in zip(ours, ref, strict=True):
        assert torch.isfinite(g_ours).all()
        torch.testing.assert_close(g_ours, g_ref)


@given(view_pairs(), mus, st.integers(0, 2**31 - 1))
def test_spectral_loss_is_invariant_to_permuting_the_pairs(pair, mu, seed) -> None:  # type: ignore[no-untyped-def]
    z1, z2 = pair
    perm = torch.randperm(z1.shape[0], generator=torch.Generator().manual_seed(seed))
    torch.testing.assert_close(
        spectral_contrastive_loss(z1[perm], z2[perm], mu=mu), spectral_contrastive_loss(z1, z2, mu=mu)
    )


@given(view_pairs(), mus, st.integers(0, 2**31 - 1))
def test_spectral_loss_is_invariant_to_rotating_the_embedding(pair, mu, seed) -> None:  # type: ignore[no-untyped-def]
    z1, z2 = pair
    q = orthogonal(z1.shape[1], seed)
    torch.testing.assert_close(
        spectral_contrastive_loss(z1 @ q, z2 @ q, mu=mu), spectral_contrastive_loss(z1, z2, mu=mu)
    )


@given(view_pairs(), mus)
def test_spectral_loss_is_symmetric_in_the_two_views(pair, mu) -> None:  # type: ignore[no-untyped-def]
    z1, z2 = pair
    torch.testing.assert_close(
        spectral_contrastive_loss(z2, z1, mu=mu), spectral_contrastive_loss(z1, z2, mu=mu)
    )


@given(view_pairs(min_batch=3), mus, st.data())
def test_spectral_statistics_of_shards_add_up_to_the_whole_batch(pair, mu, data) -> None:  # type: ignore[no-untyped-def]
    z1, z2 = pair
    b = z1.shape[0]
    cut = data.draw(st.integers(1, b - 1))  # a shard may hold a single pair
    parts = [spectral_statistics(z1[:cut], z2[:cut], mu=mu), spectral_statistics(z1[cut:], z2[cut:], mu=mu)]
    summed = SpectralStatistics(*(a + c for a, c in zip(*parts, strict=True)))
    whole = spectral_statistics(z1, z2, mu=mu)
    for got, want in zip(summed, whole, strict=True):
        torch.testing.assert_close(got, want)
    torch.testing.assert_close(
        spectral_loss_from_statistics(summed), spectral_contrastive_loss(z1, z2, mu=mu)
    )


@given(view_pairs(), st.sampled_from([0.25, 1.0, 9.0]))
def test_clip_norm_caps_row_norms_at_sqrt_mu_and_keeps_short_rows(pair, mu) -> None:  # type: ignore[no-untyped-def]
    z, _ = pair
    clipped = clip_norm(z, mu)
    norms = z.norm(dim=1)
    short = norms <= mu**0.5
    torch.testing.assert_close(clipped[short], z[short])
    torch.testing.assert_close(clipped[~short].norm(dim=1), torch.full_like(norms[~short], mu**0.5))
    # direction is preserved
    torch.testing.assert_close(clipped[~short] * norms[~short, None], z[~short] * mu**0.5)


def test_spectral_module_equals_functional_and_registers_under_its_name() -> None:
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(2, 8, 4, generator=g)
    loss = SpectralContrastiveLoss(mu=1.0)
    torch.testing.assert_close(loss(z1, z2), spectral_contrastive_loss(z1, z2, mu=1.0))
    assert "mu=1.0" in repr(loss)
    registered: dict[str, object] = {}
    spectral.register_losses(lambda name, factory, override=False: registered.__setitem__(name, factory))
    assert registered == {"spectral": SpectralContrastiveLoss}


def test_spectral_loss_of_identical_orthonormal_views_is_minus_two() -> None:
    # every positive pair has <z_i, z_i> = 1 and every cross pair <z_i, z_j> = 0
    z = torch.eye(4, dtype=torch.float64)
    assert spectral_contrastive_loss(z, z).item() == pytest.approx(-2.0)


@pytest.mark.parametrize(
    ("views", "kwargs", "match"),
    [
        ((torch.zeros(3, 2),), {}, "exactly 2 views, got 1"),
        ((torch.zeros(3, 2),) * 3, {}, "exactly 2 views, got 3"),
        ((torch.zeros(3, 2), torch.zeros(3, 3)), {}, "same shape"),
        ((torch.zeros(1, 2), torch.zeros(1, 2)), {}, "at least 2 rows"),
        ((torch.zeros(3), torch.zeros(3)), {}, "2-D"),
        ((torch.zeros(3, 2), torch.zeros(3, 2)), {"labels": torch.arange(3)}, "labels=None"),
    ],
)
def test_spectral_loss_rejects_bad_inputs_with_a_clear_message(views, kwargs, match) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=match):
        SpectralContrastiveLoss()(*views, **kwargs)


@pytest.mark.parametrize("mu", [0, -1.0, float("nan"), True, "1"])
def test_spectral_loss_rejects_a_bad_mu(mu) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="mu must be a positive finite number"):
        SpectralContrastiveLoss(mu=mu)
    z = torch.randn(3, 2)
    with pytest.raises(ValueError, match="mu must be a positive finite number"):  # the function checks it too
        spectral_contrastive_loss(z, z.flip(0), mu=mu)


# --- linear_spectral ----------------------------------------------------------------------------


@given(view_pairs(), st.integers(1, 7), st.sampled_from([0.1, 1.0, 5.0]), st.integers(0, 2**31 - 1))
def test_linear_loss_matches_materialised_form_in_value_and_gradient(pair, d_in, reg, seed) -> None:  # type: ignore[no-untyped-def]
    z1, z2 = pair
    weight = torch.randn(
        z1.shape[1], d_in, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )
    ours = linear_spectral_contrastive_loss(z1, z2, weight=weight, reg=reg)
    torch.testing.assert_close(ours, linear_materialised(z1, z2, weight, reg))
    got = grads(lambda a, b, w: linear_spectral_contrastive_loss(a, b, weight=w, reg=reg), z1, z2, weight)
    want = grads(lambda a, b, w: linear_materialised(a, b, w, reg), z1, z2, weight)
    for g_ours, g_ref in zip(got, want, strict=True):
        torch.testing.assert_close(g_ours, g_ref)


@given(view_pairs(), st.integers(1, 7), st.integers(0, 2**31 - 1))
def test_linear_loss_without_weight_is_the_loss_minus_the_penalty(pair, d_in, seed) -> None:  # type: ignore[no-untyped-def]
    z1, z2 = pair
    weight = torch.randn(
        z1.shape[1], d_in, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )
    full = LinearSpectralContrastiveLoss(reg=2.0)(z1, z2, weight=weight)
    bare = LinearSpectralContrastiveLoss(reg=2.0)(z1, z2)
    torch.testing.assert_close(full - bare, weight_penalty(weight))  # reg / 2 = 1
    torch.testing.assert_close(weight_penalty(weight), weight_penalty(weight.T))


@given(view_pairs(), st.integers(0, 2**31 - 1))
def test_linear_loss_is_invariant_to_permuting_pairs_and_rotating_the_map(pair, seed) -> None:  # type: ignore[no-untyped-def]
    z1, z2 = pair
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(z1.shape[1], 5, generator=g, dtype=torch.float64)
    q = orthogonal(z1.shape[1], seed)
    perm = torch.randperm(z1.shape[0], generator=g)
    base = linear_spectral_contrastive_loss(z1, z2, weight=weight)
    # rotating the representation, f -> Q f, rotates both views and the map W -> Q W
    torch.testing.assert_close(linear_spectral_contrastive_loss(z1 @ q.T, z2 @ q.T, weight=q @ weight), base)
    torch.testing.assert_close(linear_spectral_contrastive_loss(z1[perm], z2[perm], weight=weight), base)


def test_linear_loss_module_registers_and_rejects_bad_inputs() -> None:
    registered: dict[str, object] = {}
    linear_spectral.register_losses(
        lambda name, factory, override=False: registered.__setitem__(name, factory)
    )
    assert registered == {"linear_spectral": LinearSpectralContrastiveLoss}
    z = torch.zeros(4, 3)
    loss = LinearSpectralContrastiveLoss()
    with pytest.raises(ValueError, match="exactly 2 views, got 3"):
        loss(z, z, z)
    with pytest.raises(ValueError, match=r"weight must be the \(r, d\) map with r = 3 rows"):
        loss(z, z, weight=torch.zeros(2, 5))
    with pytest.raises(ValueError, match="labels=None"):
        loss(z, z, labels=torch.arange(4))
    with pytest.raises(ValueError, match="reg must be a positive finite number"):
        LinearSpectralContrastiveLoss(reg=0.0)
    with pytest.raises(ValueError, match="at least 2 rows"):
        loss(z[:1], z[:1])
