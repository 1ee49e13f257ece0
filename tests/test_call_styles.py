"""Calls written for pytorch-metric-learning or open_clip get an error that says what to write here."""

from __future__ import annotations

import math
import re

import pytest
import torch

import contrastive as cl
from contrastive._call_styles import labels_among_views, logit_scale_as_labels
from contrastive.functional import clip as clip_loss

Z = torch.nn.functional.normalize(torch.randn(8, 5, generator=torch.Generator().manual_seed(0)), dim=1)
T = torch.nn.functional.normalize(torch.randn(8, 5, generator=torch.Generator().manual_seed(1)), dim=1)
Y = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.uint8])
def test_integer_labels_among_the_views_are_recognised(dtype: torch.dtype) -> None:
    message = labels_among_views([Z, Y.to(dtype)])
    assert message is not None
    assert "views[1] is a 1-D integer tensor of shape (8,)" in message
    assert "labels=labels" in message


@pytest.mark.parametrize(
    "views",
    [
        [Z, T],  # two real views
        [Z, Z[:, 0]],  # a 1-D float tensor: a malformed view, not labels
        [Z, torch.ones(8, dtype=torch.bool)],  # a mask, not labels
        [Z, Y.reshape(4, 2)],  # 2-D integers: not the labels shape
        [Z, [0, 1]],  # not a tensor at all
    ],
)
def test_other_malformed_views_are_left_to_the_ordinary_checks(views: list[object]) -> None:
    assert labels_among_views(views) is None


@pytest.mark.parametrize("scale", [torch.tensor(1 / 0.07), torch.tensor([14.0]), torch.tensor(3.0).exp()])
def test_a_float_scalar_as_labels_is_recognised_as_open_clips_logit_scale(scale: torch.Tensor) -> None:
    message = logit_scale_as_labels(scale)
    assert message is not None and "open_clip" in message
    value = float(scale.reshape(()))
    quoted = re.search(r"logit_scale=math\.log\(([^)]+)\) = ([-\d.e]+)", message)
    assert quoted is not None, message
    assert float(quoted[1]) == pytest.approx(value, rel=1e-5)
    assert float(quoted[2]) == pytest.approx(math.log(value), rel=1e-5)


@pytest.mark.parametrize("labels", [None, Y, torch.zeros(8), torch.tensor([1, 2]).float(), torch.tensor(3)])
def test_labels_that_are_not_one_float_are_left_to_the_ordinary_checks(labels: object) -> None:
    assert logit_scale_as_labels(labels) is None


@pytest.mark.parametrize("name", ["supcon", "nt_xent"])
def test_pml_style_call_reaches_the_loss_and_gets_the_helpful_error(name: str) -> None:
    loss = cl.get_loss(name)
    with pytest.raises(ValueError, match=r"views\[1\] is a 1-D integer tensor.*labels=labels"):
        loss(Z, Y)


def test_the_pml_fix_the_message_gives_runs() -> None:
    value = cl.get_loss("supcon")(Z, labels=Y)
    assert value.dim() == 0 and torch.isfinite(value)


def test_open_clip_style_call_of_the_module_gets_the_helpful_error() -> None:
    loss = cl.ClipLoss()
    with pytest.raises(ValueError, match=r"open_clip.*ClipLoss\(logit_scale=math\.log"):
        loss(Z, T, torch.tensor(1 / 0.07))


def test_open_clip_style_call_of_the_function_gets_the_helpful_error() -> None:
    # open_clip's positional order: the scale lands where labels are
    with pytest.raises(ValueError, match=r"open_clip.*logit_scale=model\.logit_scale"):
        clip_loss(Z, T, torch.tensor(1 / 0.07))


def test_the_function_fix_the_message_gives_equals_the_module() -> None:
    theta = torch.tensor(math.log(20.0))
    message = logit_scale_as_labels(theta.exp(), function=True)
    assert message is not None and "logit_scale=math.log(20)" in message
    torch.testing.assert_close(
        clip_loss(Z, T, logit_scale=theta), cl.ClipLoss(logit_scale=math.log(20.0))(Z, T)
    )


def test_the_open_clip_fix_the_message_gives_matches_open_clip() -> None:
    open_clip_loss = pytest.importorskip("open_clip.loss")
    scale = torch.tensor(20.0)
    message = logit_scale_as_labels(scale)
    assert message is not None
    log_scale = float(re.search(r"logit_scale=math\.log\([^)]+\) = ([-\d.e]+)", message)[1])  # type: ignore[index]
    ours = cl.ClipLoss(logit_scale=log_scale)(Z, T)
    theirs = open_clip_loss.ClipLoss()(Z, T, scale)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
