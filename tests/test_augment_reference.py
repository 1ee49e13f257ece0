"""Batched augmentations agree with per-image reference code, and their draws follow their distributions."""

from __future__ import annotations

import colorsys
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from contrastive.augment.blur import GaussianBlur
from contrastive.augment.color import RandomGrayscale, Solarize
from contrastive.augment.crop import RandomResizedCrop
from contrastive.augment.flip import HorizontalFlip
from contrastive.augment.jitter import ColorJitter, JitterParams
from contrastive.augment.pipelines import SimCLRAugmentation
from tests.strategies_augment import crop_ranges, image_batches, probabilities, seeds, strengths

FLOATS = (torch.float32, torch.float64)

# --- straightforward per-image references (float64, one image at a time) ---------------------


def ref_gray(img: torch.Tensor) -> torch.Tensor:
    """Luma of one (3, H, W) image as (1, H, W)."""
    if img.shape[0] == 1:
        return img
    return 0.299 * img[0:1] + 0.587 * img[1:2] + 0.114 * img[2:3]


def ref_hue(img: torch.Tensor, h: float) -> torch.Tensor:
    """Rotate the (I, Q) chroma of each pixel by -2 pi h in YIQ space."""
    if img.shape[0] == 1 or h == 0:
        return img
    t = torch.tensor(
        [[0.299, 0.587, 0.114], [0.595716, -0.274453, -0.321263], [0.211456, -0.522591, 0.311135]],
        dtype=torch.float64,
    )
    yiq = torch.einsum("ij,jhw->ihw", t, img)
    a = -2 * math.pi * h
    i = yiq[1] * math.cos(a) - yiq[2] * math.sin(a)
    q = yiq[1] * math.sin(a) + yiq[2] * math.cos(a)
    return torch.einsum("ij,jhw->ihw", torch.linalg.inv(t), torch.stack([yiq[0], i, q])).clamp(0, 1)


def ref_hue_hsv(img: torch.Tensor, h: float) -> torch.Tensor:
    """Shift the HSV hue of every pixel by h turns with the standard library's colorsys."""
    if img.shape[0] == 1 or h == 0:
        return img
    out = img.clone()
    for row in range(img.shape[1]):
        for col in range(img.shape[2]):
            hue, sat, val = colorsys.rgb_to_hsv(*img[:, row, col].tolist())
            out[:, row, col] = torch.tensor(colorsys.hsv_to_rgb((hue + h) % 1.0, sat, val))
    return out


def ref_jitter(img: torch.Tensor, params: JitterParams, i: int, hue_space: str = "yiq") -> torch.Tensor:
    """torchvision-style jitter of image i, one operation after another in its order."""
    if not params.applied[i]:
        return img
    for op in params.order[i].tolist():
        if op == 0:
            img = (img * float(params.brightness[i])).clamp(0, 1)
        elif op == 1:
            f = float(params.contrast[i])
            img = (f * img + (1 - f) * ref_gray(img).mean()).clamp(0, 1)
        elif op == 2:
            f = float(params.saturation[i])
            img = img if img.shape[0] == 1 else (f * img + (1 - f) * ref_gray(img)).clamp(0, 1)
        elif hue_space == "yiq":
            img = ref_hue(img, float(params.hue[i]))
        else:
            img = ref_hue_hsv(img, float(params.hue[i]))
    return img


def ref_crop(img: torch.Tensor, box: tuple[int, int, int, int], size: tuple[int, int]) -> torch.Tensor:
    """Cut out the box of one image and resize it bilinearly (no antialias)."""
    top, left, h, w = box
    patch = img[None, :, top : top + h, left : left + w]
    return F.interpolate(patch, size=size, mode="bilinear", align_corners=False)[0]


def ref_blur(img: torch.Tensor, sigma: float, kh: int, kw: int) -> torch.Tensor:
    """Blur one image by a 2-D Gaussian with reflect padding (conv2d)."""

    def taps(k: int) -> torch.Tensor:
        d = torch.arange(k, dtype=torch.float64) - k // 2
        g = torch.exp(-(d**2) / (2 * sigma**2))
        return g / g.sum()

    c = img.shape[0]
    kernel = (taps(kh)[:, None] * taps(kw)[None, :]).expand(c, 1, kh, kw)
    padded = F.pad(img[None], (kw // 2, kw // 2, kh // 2, kh // 2), mode="reflect")
    return F.conv2d(padded, kernel, groups=c)[0].clamp(0, 1)


def close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Equal up to float32 rounding."""
    torch.testing.assert_close(actual.to(torch.float64), expected.to(torch.float64), atol=2e-5, rtol=0)


# --- agreement with the references ------------------------------------------------------------


@given(x=image_batches(dtypes=FLOATS), data=st.data(), seed=seeds())
def test_crop_matches_cutting_out_and_resizing_each_image(
    x: torch.Tensor, data: st.DataObject, seed: int
) -> None:
    """The batched crop equals per-image ``interpolate`` of the cut-out box, also when flipped."""
    size = (data.draw(st.integers(1, 16)), data.draw(st.integers(1, 16)))
    aug = RandomResizedCrop(size, *data.draw(crop_ranges()))
    params = aug.sample_params(x.shape, torch.Generator().manual_seed(seed))
    flip = HorizontalFlip(0.5).sample_params(x.shape, torch.Generator().manual_seed(seed + 1)).apply
    y = aug.apply(x, params)
    y_flipped = aug.resample(x, params, flip=flip)
    for i in range(x.shape[0]):
        box = tuple(int(t[i]) for t in (params.top, params.left, params.height, params.width))
        expected = ref_crop(x[i].double(), box, size)
        close(y[i], expected)
        close(y_flipped[i], expected.flip(-1) if flip[i] else expected)


@pytest.mark.parametrize("hue_space", ["yiq", "hsv"])
@given(x=image_batches(dtypes=FLOATS), data=st.data(), seed=seeds())
def test_jitter_matches_per_image_operations_in_each_order(
    hue_space: str, x: torch.Tensor, data: st.DataObject, seed: int
) -> None:
    """Batched jitter equals applying brightness/contrast/saturation/hue image by image in the drawn order."""
    aug = ColorJitter(
        data.draw(strengths()), data.draw(strengths()), data.draw(strengths()), data.draw(strengths(0.5)),
        p=data.draw(probabilities()),
        hue_space=hue_space,
    )  # fmt: skip
    params = aug.sample_params(x.shape, torch.Generator().manual_seed(seed))
    y = aug.apply(x, params)
    for i in range(x.shape[0]):
        close(y[i], ref_jitter(x[i].double(), params, i, hue_space))


@pytest.mark.slow
@given(x=image_batches(dtypes=FLOATS, min_side=4), data=st.data(), seed=seeds())
def test_blur_matches_per_image_convolution(x: torch.Tensor, data: st.DataObject, seed: int) -> None:
    """The banded-matrix blur equals a reflect-padded 2-D convolution per image."""
    kh = data.draw(st.sampled_from([k for k in (1, 3, 5, 7) if k // 2 < x.shape[2]]))
    kw = data.draw(st.sampled_from([k for k in (1, 3, 5, 7) if k // 2 < x.shape[3]]))
    aug = GaussianBlur((kh, kw), (0.1, 2.0), p=data.draw(probabilities()))
    params = aug.sample_params(x.shape, torch.Generator().manual_seed(seed))
    y = aug.apply(x, params)
    for i in range(x.shape[0]):
        expected = ref_blur(x[i].double(), float(params.sigma[i]), kh, kw) if params.applied[i] else x[i]
        close(y[i], expected)


@pytest.mark.slow
@given(x=image_batches(dtypes=FLOATS, min_side=4, max_batch=3), seed=seeds(), k=st.sampled_from([3, 5, 7]))
def test_blur_matrix_path_matches_convolution_path(x: torch.Tensor, seed: int, k: int) -> None:
    """The dense-matrix blur (used when the kernel reaches past the image) equals the convolution blur."""
    from contrastive.augment.blur import _blur_conv, _blur_matmul

    k = min(k, 2 * (min(x.shape[2:]) - 1) + 1)  # radius below the side: both paths apply
    sigma = torch.rand(x.shape[0], generator=torch.Generator().manual_seed(seed)) * 1.9 + 0.1
    close(_blur_matmul(x, sigma, k, k), _blur_conv(x, sigma, k, k))


def test_blur_with_kernel_wider_than_the_image_stays_in_range() -> None:
    """Kernels longer than the side reflect repeatedly and keep the mean of a constant image."""
    x = torch.full((2, 3, 2, 3), 0.25)
    y = GaussianBlur(9, (1.0, 2.0), p=1.0)(x, generator=0)
    torch.testing.assert_close(y, x)


@given(
    x=image_batches(channels=(3,), dtypes=FLOATS),
    seed=seeds(),
    p=probabilities(),
    t=st.floats(0, 1, width=32),
)
def test_grayscale_flip_and_solarize_match_per_image_formulas(
    x: torch.Tensor, seed: int, p: float, t: float
) -> None:
    """Grayscale puts the luma on every channel, flip mirrors the width, solarize inverts pixels >= t."""
    g = torch.Generator().manual_seed(seed)
    gray, flip, solar = RandomGrayscale(p), HorizontalFlip(p), Solarize(t, p)
    pg, pf, ps = (
        gray.sample_params(x.shape, g),
        flip.sample_params(x.shape, g),
        solar.sample_params(x.shape, g),
    )
    yg, yf, ys = gray.apply(x, pg), flip.apply(x, pf), solar.apply(x, ps)
    for i in range(x.shape[0]):
        img = x[i].double()
        close(yg[i], ref_gray(img).expand(3, -1, -1) if pg.apply[i] else img)
        close(yf[i], img.flip(-1) if pf.apply[i] else img)
        close(ys[i], torch.where(img >= t, 1 - img, img) if ps.apply[i] else img)


@given(x=image_batches(dtypes=FLOATS, min_side=8), seed=seeds(), s=st.floats(0, 1))
def test_simclr_is_its_parts_applied_image_by_image(x: torch.Tensor, seed: int, s: float) -> None:
    """The SimCLR pipeline (crop+flip fused) equals the per-image references of its parts in order."""
    aug = SimCLRAugmentation(8, s=s, blur=True)
    crop_p, flip_p, jitter_p, gray_p, blur_p = aug.sample_params(x.shape, torch.Generator().manual_seed(seed))
    y = aug.apply(x, (crop_p, flip_p, jitter_p, gray_p, blur_p))
    for i in range(x.shape[0]):
        box = tuple(int(t[i]) for t in (crop_p.top, crop_p.left, crop_p.height, crop_p.width))
        img = ref_crop(x[i].double(), box, (8, 8))
        img = img.flip(-1) if flip_p.apply[i] else img
        img = ref_jitter(img, jitter_p, i)
        img = ref_gray(img).expand(img.shape[0], -1, -1) if gray_p.apply[i] else img
        img = ref_blur(img, float(blur_p.sigma[i]), 1, 1) if blur_p.applied[i] else img  # 8 px: 1 tap
        close(y[i], img)


def test_hue_shift_moves_red_towards_green_and_keeps_luma() -> None:
    """A third of a turn takes red to a green-dominated colour with the same luma (before clamping)."""
    red = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
    from contrastive.augment.color import hue_matrix

    m = hue_matrix(torch.tensor([1 / 3]), torch.float64)[0]
    rgb = m @ red.view(3).double()
    assert rgb[1] > rgb[0] and rgb[1] > rgb[2]
    assert float(torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64) @ rgb) == pytest.approx(0.299)


# --- parameters ---------------------------------------------------------------------------------


@given(
    shape=st.tuples(st.integers(1, 8), st.integers(1, 64), st.integers(1, 64)),
    ranges=crop_ranges(),
    seed=seeds(),
)
def test_crops_lie_inside_the_image(shape: tuple[int, int, int], ranges, seed: int) -> None:
    """Every box has positive size and lies within the image."""
    b, h, w = shape
    p = RandomResizedCrop(4, *ranges).sample_params((b, 3, h, w), torch.Generator().manual_seed(seed))
    assert bool((p.top >= 0).all() and (p.left >= 0).all())
    assert bool((p.height >= 1).all() and (p.width >= 1).all())
    assert bool((p.top + p.height <= h).all() and (p.left + p.width <= w).all())


def test_crop_area_aspect_and_position_follow_their_distributions() -> None:
    """Area fraction ~ U(scale), log aspect ~ U(log ratio), offsets uniform over the free room."""
    n, side = 20000, 1000
    scale, ratio = (0.1, 0.2), (0.5, 2.0)  # every first draw fits, so no rejection
    p = RandomResizedCrop(8, scale, ratio).sample_params((n, 3, side, side), torch.Generator().manual_seed(0))
    area = (p.height * p.width).double() / side**2
    log_aspect = torch.log(p.width.double() / p.height.double())
    assert float(area.mean()) == pytest.approx(0.15, abs=0.002)
    assert float(area.var()) == pytest.approx(0.1**2 / 12, rel=0.05)
    assert float(log_aspect.mean()) == pytest.approx(0.0, abs=0.01)
    assert float(log_aspect.var()) == pytest.approx(math.log(4) ** 2 / 12, rel=0.05)
    offset = p.top.double() / (side - p.height).double()
    assert float(offset.mean()) == pytest.approx(0.5, abs=0.01)
    assert float(offset.var()) == pytest.approx(1 / 12, rel=0.05)


def test_crop_falls_back_to_the_central_box_when_nothing_fits() -> None:
    """With an impossible aspect ratio the largest central box within ``ratio`` is used."""
    p = RandomResizedCrop(4, (0.9, 1.0), (4.0, 5.0)).sample_params(
        (16, 3, 40, 40), torch.Generator().manual_seed(0)
    )
    assert bool(
        (p.width == 40).all() and (p.height == 10).all() and (p.top == 15).all() and (p.left == 0).all()
    )


def test_jitter_factors_order_and_coin_follow_their_distributions() -> None:
    """Factors ~ U[1 - v, 1 + v], hue ~ U[-h, h], every order equally likely, applied with probability p."""
    n = 40000
    p = ColorJitter(0.8, 0.4, (0.5, 1.5), 0.2, p=0.8).sample_params(
        (n, 3, 1, 1), torch.Generator().manual_seed(0)
    )
    for factors, (low, high) in (
        (p.brightness, (0.2, 1.8)),
        (p.contrast, (0.6, 1.4)),
        (p.saturation, (0.5, 1.5)),
    ):
        assert float(factors.min()) >= low and float(factors.max()) <= high
        assert float(factors.mean()) == pytest.approx((low + high) / 2, abs=0.01)
        assert float(factors.var()) == pytest.approx((high - low) ** 2 / 12, rel=0.05)
    assert float(p.hue.mean()) == pytest.approx(0.0, abs=0.005)
    assert float(p.hue.var()) == pytest.approx(0.4**2 / 12, rel=0.05)
    assert float(p.applied.double().mean()) == pytest.approx(0.8, abs=0.01)
    assert bool((p.order.sort(dim=1).values == torch.arange(4)).all())  # permutations
    counts = torch.zeros(4, 4)
    for position in range(4):
        counts[position] = torch.bincount(p.order[:, position], minlength=4).double() / n
    torch.testing.assert_close(counts, torch.full((4, 4), 0.25), atol=0.01, rtol=0)


def test_disabled_jitter_operations_are_left_out_of_the_order() -> None:
    """Operations with an identity range are never scheduled."""
    p = ColorJitter(0.4, 0.0, 0.0, 0.1).sample_params((100, 3, 1, 1), torch.Generator().manual_seed(0))
    assert p.order.shape == (100, 2) and set(p.order.unique().tolist()) == {0, 3}


@pytest.mark.parametrize("prob", [0.0, 0.2, 0.5, 1.0])
def test_coins_and_sigma_follow_their_distributions(prob: float) -> None:
    """Flip, grayscale, solarize and blur coins come up with probability p; sigma ~ U(0.1, 2.0)."""
    n, g = 20000, torch.Generator().manual_seed(1)
    shape = (n, 3, 8, 8)
    rates = [
        HorizontalFlip(prob).sample_params(shape, g).apply,
        RandomGrayscale(prob).sample_params(shape, g).apply,
        Solarize(0.5, prob).sample_params(shape, g).apply,
        GaussianBlur(p=prob).sample_params(shape, g).applied,
    ]
    for coins in rates:
        assert float(coins.double().mean()) == pytest.approx(prob, abs=0.012)
    sigma = GaussianBlur(sigma=(0.1, 2.0)).sample_params(shape, g).sigma
    assert float(sigma.mean()) == pytest.approx(1.05, abs=0.01)
    assert float(sigma.var()) == pytest.approx(1.9**2 / 12, rel=0.05)


def test_hsv_hue_shift_matches_kornia() -> None:
    """``hue_space="hsv"`` shifts hue as kornia's ``adjust_hue`` (HSV, angle 2 pi h)."""
    kornia = pytest.importorskip("kornia")
    x = torch.rand(4, 3, 9, 9, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    aug = ColorJitter(hue=0.5, hue_space="hsv")
    params = aug.sample_params(x.shape, torch.Generator().manual_seed(1))
    y = aug.apply(x, params)
    for i in range(4):
        expected = kornia.enhance.adjust_hue(x[i : i + 1], 2 * math.pi * float(params.hue[i]))[0]
        torch.testing.assert_close(y[i], expected, atol=1e-6, rtol=0)


def test_grayscale_matches_kornia() -> None:
    """Our luma is kornia's ``rgb_to_grayscale`` (same BT.601 weights)."""
    kornia = pytest.importorskip("kornia")
    x = torch.rand(4, 3, 9, 9, generator=torch.Generator().manual_seed(0))
    y = RandomGrayscale(1.0)(x, generator=0)
    torch.testing.assert_close(y, kornia.color.rgb_to_grayscale(x).expand_as(x), atol=1e-6, rtol=0)
