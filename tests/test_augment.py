"""Batched image augmentations: shapes, dtypes, ranges, seeding, identities, errors, plugin hooks."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from contrastive.augment.base import RandomAugmentation
from contrastive.augment.blur import GaussianBlur, simclr_kernel_size
from contrastive.augment.color import RandomGrayscale, Solarize
from contrastive.augment.crop import RandomResizedCrop
from contrastive.augment.flip import HorizontalFlip
from contrastive.augment.jitter import ColorJitter
from contrastive.augment.pipelines import Compose, SimCLRAugmentation
from tests.strategies_augment import crop_ranges, image_batches, probabilities, seeds, strengths

# every augmentation with settings that exercise all of its code (drawn at random)
MAKERS: dict[str, Callable[[st.DrawFn], RandomAugmentation]] = {
    "random_resized_crop": lambda d: RandomResizedCrop(d(st.integers(1, 12)), *d(crop_ranges())),
    "horizontal_flip": lambda d: HorizontalFlip(d(probabilities())),
    "color_jitter": lambda d: ColorJitter(
        d(strengths()), d(strengths()), d(strengths()), d(strengths(0.5)), p=d(probabilities())
    ),
    "random_grayscale": lambda d: RandomGrayscale(d(probabilities())),
    "gaussian_blur": lambda d: GaussianBlur(
        d(st.sampled_from([None, 1, 3, 5, 7])), (0.1, 2.0), d(probabilities())
    ),
    "solarize": lambda d: Solarize(d(st.floats(0, 1)), d(probabilities())),
    "simclr": lambda d: SimCLRAugmentation(
        d(st.integers(1, 12)), d(st.floats(0, 1.5)), blur=d(st.booleans())
    ),
}


def expected_shape(aug: RandomAugmentation, x: torch.Tensor) -> tuple[int, ...]:
    """Output shape: the crop size for crops, else the input's."""
    return aug.output_shape(x.shape)


@pytest.mark.parametrize("name", sorted(MAKERS))
@given(data=st.data(), x=image_batches())
def test_output_keeps_dtype_range_and_shape(name: str, data: st.DataObject, x: torch.Tensor) -> None:
    """Every augmentation returns the input dtype, values in range, and the input (or crop) shape."""
    aug = MAKERS[name](data.draw)
    y = aug(x, generator=data.draw(seeds()))
    assert y.dtype == x.dtype
    assert tuple(y.shape) == expected_shape(aug, x)
    assert y.shape[:2] == x.shape[:2]
    if x.dtype == torch.uint8:
        assert int(y.min()) >= 0 and int(y.max()) <= 255
    else:
        assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
        assert not torch.isnan(y).any()


@pytest.mark.parametrize("name", sorted(MAKERS))
@given(data=st.data(), x=image_batches(max_side=12), seed=seeds())
def test_same_seed_gives_same_batch_and_input_is_untouched(
    name: str, data: st.DataObject, x: torch.Tensor, seed: int
) -> None:
    """Equal seeds (ints or generators) give equal outputs; the input is never modified."""
    aug = MAKERS[name](data.draw)
    before = x.clone()
    a = aug(x, generator=seed)
    b = aug(x, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(a, b)
    assert torch.equal(x, before)


# fixed, non-trivial settings for the tests outside hypothesis
FIXED: dict[str, Callable[[], RandomAugmentation]] = {
    "random_resized_crop": lambda: RandomResizedCrop(8, (0.2, 1.0), (0.75, 1.33)),
    "horizontal_flip": lambda: HorizontalFlip(0.5),
    "color_jitter": lambda: ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8),
    "random_grayscale": lambda: RandomGrayscale(0.5),
    "gaussian_blur": lambda: GaussianBlur(3, (0.1, 2.0), 0.5),
    "solarize": lambda: Solarize(0.5, 0.5),
    "simclr": lambda: SimCLRAugmentation(8, 1.0, blur=True),
}


@pytest.mark.parametrize("name", sorted(FIXED))
def test_global_rng_is_used_without_generator(name: str) -> None:
    """Without a generator the draws come from torch's global RNG (so ``manual_seed`` fixes them)."""
    aug = FIXED[name]()
    x = torch.rand(4, 3, 10, 10, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(7)
    a = aug(x)
    torch.manual_seed(7)
    assert torch.equal(a, aug(x))


def test_views_are_independent_draws() -> None:
    """``views`` returns n differently augmented views, reproducibly for a seed."""
    x = torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    aug = SimCLRAugmentation(12)
    v1, v2, v3 = aug.views(x, n=3, generator=5)
    assert v1.shape == (8, 3, 12, 12)
    assert not torch.equal(v1, v2) and not torch.equal(v2, v3)
    w1, w2, w3 = aug.views(x, n=3, generator=5)
    assert torch.equal(v1, w1) and torch.equal(v3, w3)


IDENTITIES: dict[str, Callable[[int, int], RandomAugmentation]] = {
    "crop_whole_image": lambda h, w: RandomResizedCrop((h, w), scale=(1.0, 1.0), ratio=(w / h, w / h)),
    "flip_p0": lambda h, w: HorizontalFlip(0.0),
    "jitter_zero_strength": lambda h, w: ColorJitter(0.0, 0.0, 0.0, 0.0, p=1.0),
    "jitter_unit_ranges": lambda h, w: ColorJitter((1, 1), (1, 1), (1, 1), (0, 0), p=1.0),
    "jitter_p0": lambda h, w: ColorJitter(0.8, 0.8, 0.8, 0.2, p=0.0),
    "grayscale_p0": lambda h, w: RandomGrayscale(0.0),
    "blur_p0": lambda h, w: GaussianBlur(p=0.0),
    "blur_one_tap": lambda h, w: GaussianBlur(1, p=1.0),
    "solarize_p0": lambda h, w: Solarize(0.5, 0.0),
    "compose_of_identities": lambda h, w: Compose(
        [HorizontalFlip(0.0), ColorJitter(p=1.0), GaussianBlur(p=0.0)]
    ),
}


@pytest.mark.parametrize("name", sorted(IDENTITIES))
@given(x=image_batches(), seed=seeds())
def test_identity_parameters_return_the_input_exactly(name: str, x: torch.Tensor, seed: int) -> None:
    """Parameters at their identity values give the input back bit for bit (float and uint8)."""
    aug = IDENTITIES[name](x.shape[2], x.shape[3])
    assert torch.equal(aug(x, generator=seed), x)


@pytest.mark.parametrize("hue_space", ["yiq", "hsv"])
@given(x=image_batches(channels=(3,)), seed=seeds())
def test_jitter_with_identity_factors_drawn_is_exact_even_when_applied(
    hue_space: str, x: torch.Tensor, seed: int
) -> None:
    """A sample whose drawn factors are (1, 1, 1, 0) comes back unchanged although jitter runs on it."""
    aug = ColorJitter(0.5, 0.5, 0.5, 0.1, p=1.0, hue_space=hue_space)
    params = aug.sample_params(x.shape, torch.Generator().manual_seed(seed))
    one = torch.ones_like(params.brightness)
    params = type(params)(one, one, one, torch.zeros_like(one), params.order, params.applied)
    assert torch.equal(aug.apply(x, params), x)


@given(x=image_batches(channels=(3,)), seed=seeds(), p=probabilities())
def test_grayscale_output_has_equal_channels_where_applied(x: torch.Tensor, seed: int, p: float) -> None:
    """Grayscaled images have three equal channels; the others are untouched."""
    aug = RandomGrayscale(p)
    params = aug.sample_params(x.shape, torch.Generator().manual_seed(seed))
    y = aug.apply(x, params)
    gray = params.apply
    assert torch.equal(y[gray, 0], y[gray, 1]) and torch.equal(y[gray, 1], y[gray, 2])
    assert torch.equal(y[~gray], x[~gray])


@given(x=image_batches(channels=(1,)), seed=seeds())
def test_colour_ops_on_one_channel_leave_saturation_and_hue_out(x: torch.Tensor, seed: int) -> None:
    """On one-channel images grayscale, saturation and hue do nothing."""
    assert torch.equal(RandomGrayscale(1.0)(x, generator=seed), x)
    assert torch.equal(ColorJitter(saturation=0.9, hue=0.4)(x, generator=seed), x)


def test_uint8_input_is_converted_and_returned_as_uint8() -> None:
    """uint8 batches are augmented as float in [0, 1] and returned rounded to uint8."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (4, 3, 9, 9), generator=g, dtype=torch.uint8)
    aug = ColorJitter(brightness=0.5)
    params = aug.sample_params(x.shape, torch.Generator().manual_seed(1))
    expected = (aug.apply(x.float() / 255, params) * 255).round().to(torch.uint8)
    assert torch.equal(aug.apply(x, params), expected)


def test_half_precision_is_computed_in_float32_and_returned_in_half() -> None:
    """float16/bfloat16 batches come back in their dtype."""
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    for dtype in (torch.float16, torch.bfloat16):
        y = SimCLRAugmentation(8, blur=True)(x.to(dtype), generator=0)
        assert y.dtype == dtype and y.shape == (2, 3, 8, 8)


def test_empty_batch_is_returned_empty() -> None:
    """A batch of zero images gives zero images of the output shape."""
    x = torch.rand(0, 3, 10, 10)
    assert SimCLRAugmentation(6, blur=True)(x, generator=0).shape == (0, 3, 6, 6)


def test_simclr_defaults_follow_the_paper() -> None:
    """SimCLR's recipe: parameters from Chen et al. (2020), blur only from 64 px unless asked."""
    aug = SimCLRAugmentation(224, s=0.5)
    crop, flip, jitter, gray, blur = aug.augmentations
    assert (
        crop.size == (224, 224) and crop.scale == (0.08, 1.0) and crop.ratio == pytest.approx((3 / 4, 4 / 3))
    )
    assert flip.p == 0.5 and gray.p == 0.2 and blur.p == 0.5 and blur.sigma == (0.1, 2.0)
    assert jitter.p == 0.8
    assert [v for r in jitter.ranges for v in r] == pytest.approx([0.6, 1.4, 0.6, 1.4, 0.6, 1.4, -0.1, 0.1])
    assert blur.kernel_sizes(224, 224) == (23, 23) and simclr_kernel_size(32) == 3
    assert len(SimCLRAugmentation(32).augmentations) == 4
    assert len(SimCLRAugmentation(32, blur=True).augmentations) == 5


BAD_ARGUMENTS: list[tuple[Callable[[], object], str]] = [
    (lambda: RandomResizedCrop(-3), "size"),
    (lambda: RandomResizedCrop((4, 0)), "size"),
    (lambda: RandomResizedCrop(8, scale=(0.5, 0.1)), "scale"),
    (lambda: RandomResizedCrop(8, scale=(0.0, 1.0)), "scale"),
    (lambda: RandomResizedCrop(8, ratio=(-1.0, 1.0)), "ratio"),
    (lambda: HorizontalFlip(1.5), "p"),
    (lambda: HorizontalFlip(-0.1), "p"),
    (lambda: ColorJitter(brightness=-0.1), "brightness"),
    (lambda: ColorJitter(contrast=(1.2, 0.8)), "contrast"),
    (lambda: ColorJitter(saturation="x"), "saturation"),
    (lambda: ColorJitter(hue=0.6), "hue"),
    (lambda: ColorJitter(hue=(-0.7, 0.1)), "hue"),
    (lambda: ColorJitter(p=2.0), "p"),
    (lambda: ColorJitter(hue_space="lab"), "hue_space"),
    (lambda: RandomGrayscale(p=-1.0), "p"),
    (lambda: GaussianBlur(4), "kernel_size"),
    (lambda: GaussianBlur(-3), "kernel_size"),
    (lambda: GaussianBlur(sigma=(0.0, 1.0)), "sigma"),
    (lambda: GaussianBlur(p=1.1), "p"),
    (lambda: Solarize(threshold=1.5), "threshold"),
    (lambda: Solarize(p=1.5), "p"),
    (lambda: SimCLRAugmentation(size=-224), "size"),
    (lambda: SimCLRAugmentation(32, s=-1.0), "s"),
    (lambda: Compose([torch.nn.Identity()]), "augmentations"),
]


@pytest.mark.parametrize(("make", "argument"), BAD_ARGUMENTS)
def test_bad_arguments_raise_value_error_naming_them(make: Callable[[], object], argument: str) -> None:
    """Invalid settings raise ValueError whose message starts with the argument's name."""
    with pytest.raises(ValueError, match=f"^{argument}"):
        make()


@pytest.mark.parametrize(
    ("aug", "x"),
    [
        (HorizontalFlip(), torch.rand(3, 8, 8)),
        (SimCLRAugmentation(8), torch.rand(1, 1, 3, 8, 8)),
        (ColorJitter(0.4), torch.rand(2, 2, 8, 8)),
        (RandomGrayscale(), torch.rand(2, 4, 8, 8)),
        (SimCLRAugmentation(8), torch.rand(2, 2, 8, 8)),
        (GaussianBlur(), torch.zeros(2, 3, 8, 8, dtype=torch.int32)),
        (Solarize(), [[0.5]]),
    ],
)
def test_bad_input_raises_value_error_naming_x(aug: RandomAugmentation, x: torch.Tensor) -> None:
    """Wrong rank, wrong channels for colour operations, wrong dtype or type: ValueError naming ``x``."""
    with pytest.raises(ValueError, match="^x must"):
        aug(x)


def test_views_rejects_bad_n() -> None:
    """``views`` needs a positive int."""
    with pytest.raises(ValueError, match="^n must"):
        HorizontalFlip().views(torch.rand(1, 1, 2, 2), n=0)


def test_modules_register_their_augmentations() -> None:
    """Each plugin module's hook registers its classes under the documented names."""
    import contrastive.augment.blur as blur
    import contrastive.augment.color as color
    import contrastive.augment.crop as crop
    import contrastive.augment.flip as flip
    import contrastive.augment.jitter as jitter
    import contrastive.augment.pipelines as pipelines

    seen: dict[str, object] = {}
    for module in (crop, flip, jitter, color, blur, pipelines):
        module.register_augmentations(lambda name, factory, override=False: seen.__setitem__(name, factory))
    assert seen == {
        "random_resized_crop": RandomResizedCrop,
        "horizontal_flip": HorizontalFlip,
        "color_jitter": ColorJitter,
        "random_grayscale": RandomGrayscale,
        "solarize": Solarize,
        "gaussian_blur": GaussianBlur,
        "simclr": SimCLRAugmentation,
    }


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", sorted(FIXED))
def test_cuda_matches_cpu_for_the_same_parameters(name: str) -> None:
    """On CUDA, the same parameters give the CPU result (to float tolerance), seeded draws stay on the GPU."""
    aug = FIXED[name]()
    x = torch.rand(6, 3, 20, 20, generator=torch.Generator().manual_seed(0))
    g = torch.Generator(device="cuda").manual_seed(3)
    params = aug.sample_params(x.shape, g, "cuda")
    y_gpu = aug.apply(x.cuda(), params)
    y_again = aug(x.cuda(), generator=torch.Generator(device="cuda").manual_seed(3))
    assert torch.equal(y_gpu, y_again)
    torch.testing.assert_close(aug.apply(x, _to_cpu(params)), y_gpu.cpu(), atol=1e-4, rtol=0)


def _to_cpu(params: object) -> object:
    """A copy of (nested) parameter dataclasses with every tensor on the CPU."""
    if isinstance(params, tuple):
        return tuple(_to_cpu(p) for p in params)
    return type(params)(**{f.name: getattr(params, f.name).cpu() for f in dataclasses.fields(params)})


@pytest.mark.slow
@given(x=image_batches(min_side=4), seed=seeds())
def test_simclr_fused_crop_and_flip_equals_composing_its_parts(x: torch.Tensor, seed: int) -> None:
    """SimCLR (crop and flip in one resampling) gives what composing its augmentations one by one gives."""
    aug = SimCLRAugmentation(6, blur=True)
    parts = Compose(list(aug.augmentations))
    torch.testing.assert_close(aug(x, generator=seed), parts(x, generator=seed), atol=1e-6, rtol=0)


@given(x=image_batches(channels=(3,), dtypes=(torch.float32, torch.float64)), seed=seeds())
def test_compose_applies_each_augmentation_with_its_parameters(x: torch.Tensor, seed: int) -> None:
    """A composition is its augmentations applied in order, each with its slice of the parameters."""
    flip, jitter, solar = HorizontalFlip(0.5), ColorJitter(0.4, 0.4, 0.4, 0.1), Solarize(0.6, 0.5)
    aug = Compose([flip, jitter, solar])
    params = aug.sample_params(x.shape, torch.Generator().manual_seed(seed))
    expected = solar.apply(jitter.apply(flip.apply(x, params[0]), params[1]), params[2])
    assert torch.equal(aug.apply(x, params), expected)
