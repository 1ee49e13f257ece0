"""The random_mask augmentation: complementary coupled views, reproducibility, keep rate."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from contrastive.augment import masking
from contrastive.augment.masking import RandomMask

# --- strategies -------------------------------------------------------------------------------


@st.composite
def vector_batches(draw: st.DrawFn) -> torch.Tensor:
    """A (B, d) batch of nonzero float vectors (nonzero so that masks are visible in the views)."""
    b, d = draw(st.integers(1, 16)), draw(st.integers(1, 24))
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    return torch.rand(b, d, generator=g).add_(0.5).to(dtype)


probs = st.sampled_from([0.0, 0.1, 0.5, 0.8, 1.0])
seeds = st.integers(0, 2**31 - 1)


@given(vector_batches(), probs, seeds)
def test_complementary_views_partition_the_coordinates(x, p, seed) -> None:  # type: ignore[no-untyped-def]
    v1, v2 = RandomMask(mask_prob=p).views(x, n=2, generator=seed)
    assert v1.dtype == x.dtype and v1.shape == x.shape
    torch.testing.assert_close(v1 + v2, x)
    assert not (v1 * v2).any()  # each coordinate lives in exactly one view
    kept = v1 != 0
    torch.testing.assert_close(v1, x * kept)


@given(vector_batches(), probs, seeds, st.booleans())
def test_views_are_reproducible_under_an_int_seed_or_a_generator(x, p, seed, complementary) -> None:  # type: ignore[no-untyped-def]
    aug = RandomMask(mask_prob=p, complementary=complementary)
    first = aug.views(x, n=2, generator=seed)
    again = aug.views(x, n=2, generator=seed)
    from_generator = aug.views(x, n=2, generator=torch.Generator().manual_seed(seed))
    for a, b, c in zip(first, again, from_generator, strict=True):
        assert torch.equal(a, b) and torch.equal(a, c)


def test_a_shared_generator_advances_between_calls() -> None:
    x = torch.ones(64, 64)
    g = torch.Generator().manual_seed(0)
    aug = RandomMask()
    assert not torch.equal(aug(x, generator=g), aug(x, generator=g))


@pytest.mark.parametrize("p", [0.1, 0.5, 0.75])
@pytest.mark.parametrize("complementary", [True, False])
def test_each_view_keeps_coordinates_at_the_stated_rate(p: float, complementary: bool) -> None:
    x = torch.ones(400, 500)
    n = x.numel()
    v1, v2 = RandomMask(mask_prob=p, complementary=complementary).views(x, generator=1)
    p2 = 1 - p if complementary else p
    for view, rate in ((v1, p), (v2, p2)):
        observed = view.mean().item()
        assert abs(observed - rate) < 5 * (rate * (1 - rate) / n) ** 0.5
    if not complementary:  # independent masks: both kept with probability p^2
        both = (v1 * v2).mean().item()
        assert abs(both - p * p) < 5 * (p * p * (1 - p * p) / n) ** 0.5


def test_independent_masks_give_any_number_of_views_and_forward_gives_one() -> None:
    x = torch.randn(5, 7)
    views = RandomMask(0.5, complementary=False).views(x, n=3, generator=0)
    assert len(views) == 3
    single = RandomMask(0.5)(x, generator=0)
    mask = RandomMask(0.5).mask(x, generator=0)
    torch.testing.assert_close(single, x * mask)
    assert set(mask.unique().tolist()) <= {0.0, 1.0}


def test_mask_prob_one_keeps_everything_and_zero_drops_everything() -> None:
    x = torch.randn(3, 4)
    keep, drop = RandomMask(1.0).views(x, generator=0)
    torch.testing.assert_close(keep, x)
    assert not drop.any()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mask_prob": 1.5}, "mask_prob must be a probability in"),
        ({"mask_prob": -0.1}, "mask_prob must be a probability in"),
        ({"mask_prob": True}, "mask_prob must be a probability in"),
        ({"complementary": 1}, "complementary must be a bool"),
    ],
)
def test_random_mask_rejects_bad_options(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        RandomMask(**kwargs)  # type: ignore[arg-type]


def test_random_mask_rejects_bad_inputs() -> None:
    aug = RandomMask()
    with pytest.raises(ValueError, match="exactly two views, got n=3"):
        aug.views(torch.ones(2, 3), n=3)
    with pytest.raises(ValueError, match=r"shape \(B, d\), got \(2, 3, 4\)"):
        aug(torch.ones(2, 3, 4))
    with pytest.raises(ValueError, match="floating-point"):
        aug(torch.ones(2, 3, dtype=torch.long))


def test_random_mask_registers_as_an_augmentation() -> None:
    registered: dict[str, object] = {}
    masking.register_augmentations(
        lambda name, factory, override=False: registered.__setitem__(name, factory)
    )
    assert registered == {"random_mask": RandomMask}
    assert "mask_prob=0.5, complementary=True" in repr(RandomMask())
