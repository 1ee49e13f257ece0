"""The conformance kit: every installed plugin passes it, and it catches each broken invariant."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import tomllib
import torch

import contrastive
from contrastive.testing import (
    ConformanceError,
    ConformanceReport,
    ConformanceWarning,
    check_augmentation,
    check_loss,
    check_sampler,
)
from tests import broken_plugins as bp

ROOT = Path(__file__).resolve().parents[1]
TEMPERATURE_CHECKS = [f"finite value and gradients at temperature={t}" for t in (1e-3, 10.0)]


@pytest.mark.parametrize("name", contrastive.list_losses())
def test_every_installed_loss_conforms(name: str) -> None:
    check_loss(name)


@pytest.mark.parametrize("name", contrastive.list_samplers())
def test_every_installed_sampler_conforms(name: str) -> None:
    check_sampler(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", contrastive.list_augmentations())
def test_every_installed_augmentation_conforms(name: str) -> None:
    check_augmentation(name)


@pytest.mark.slow
def test_the_reference_plugins_pass() -> None:
    check_loss(bp.GoodLoss)
    check_sampler(bp.GoodSampler)
    check_augmentation(bp.GoodAugmentation())


@pytest.mark.slow
@pytest.mark.parametrize(
    ("broken", "invariant"), list(bp.BROKEN_LOSSES.items()), ids=lambda x: getattr(x, "__name__", "")
)
def test_kit_catches_each_broken_loss_invariant(broken: type, invariant: str) -> None:
    with pytest.raises(ConformanceError, match=f"breaks the invariant '{invariant}"):
        check_loss(broken, max_examples=5)


@pytest.mark.parametrize(
    ("broken", "invariant"), list(bp.BROKEN_SAMPLERS.items()), ids=lambda x: getattr(x, "__name__", "")
)
def test_kit_catches_each_broken_sampler_invariant(broken: type, invariant: str) -> None:
    with pytest.raises(ConformanceError, match=f"breaks the invariant '{invariant}"):
        check_sampler(broken, max_examples=5)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("broken", "invariant"), list(bp.BROKEN_AUGMENTATIONS.items()), ids=lambda x: getattr(x, "__name__", "")
)
def test_kit_catches_each_broken_augmentation_invariant(broken: type, invariant: str) -> None:
    with pytest.raises(ConformanceError, match=f"breaks the invariant '{invariant}'"):
        check_augmentation(broken(), max_examples=5)


def test_failure_names_plugin_and_shows_the_minimal_example() -> None:
    with pytest.raises(ConformanceError) as err:
        check_loss(bp.PositionDependentLoss())
    text = str(err.value)
    assert isinstance(err.value, AssertionError)
    assert "loss 'PositionDependentLoss'" in text
    assert "tensor(" in text  # hypothesis' shrunk falsifying example is in the message


def test_checks_accept_a_name_a_class_and_an_instance() -> None:
    loss = contrastive.get_loss("nt_xent")
    for form in ("nt_xent", type(loss)):
        report = check_loss(form, max_examples=2)
        assert isinstance(report, ConformanceReport) and not report.skipped
        assert set(TEMPERATURE_CHECKS) <= set(report.checked)
    with pytest.warns(ConformanceWarning, match="2 check"):
        report = check_loss(loss, max_examples=2)
    assert sorted(report.skipped) == sorted(TEMPERATURE_CHECKS)
    with pytest.raises(contrastive.UnknownPluginError):
        check_loss("no_such_loss")


def test_an_instance_that_cannot_be_rebuilt_says_which_checks_it_skipped() -> None:
    # the class fails the extreme-temperature check; its instance cannot be rebuilt with
    # another temperature, and must not pass quietly
    with pytest.raises(ConformanceError, match="temperature=0.001"):
        check_loss(bp.OverflowsAtLowTemperature, max_examples=5)
    with pytest.warns(ConformanceWarning, match=r"temperature=0\.001.*temperature=10\.0.*hparams") as caught:
        report = check_loss(bp.OverflowsAtLowTemperature(), max_examples=5)
    assert len(caught) == 1
    assert sorted(report.skipped) == sorted(TEMPERATURE_CHECKS)
    assert all("given as an instance" in why for why in report.skipped.values())
    assert not set(TEMPERATURE_CHECKS) & set(report.checked)


class _WithHparams(bp.OverflowsAtLowTemperature):
    """The broken loss, but its instances carry their constructor's arguments."""

    def __init__(self, temperature: float = 0.5) -> None:
        super().__init__(temperature)
        self.hparams = {"temperature": temperature}


def test_an_instance_with_hparams_is_rebuilt_and_fully_checked() -> None:
    with pytest.raises(ConformanceError, match="temperature=0.001"):
        check_loss(_WithHparams(temperature=0.7), max_examples=5)
    good = bp.GoodLoss(0.7)
    good.hparams = {"temperature": 0.7}  # type: ignore[assignment]
    report = check_loss(good, max_examples=2)
    assert not report.skipped and set(TEMPERATURE_CHECKS) <= set(report.checked)


class _FixedTemperature(bp.GoodLoss):
    def __init__(self) -> None:
        super().__init__(0.5)


def test_a_constructor_without_temperature_skips_those_checks_quietly() -> None:
    # no ConformanceWarning (pytest turns warnings into errors): nothing is hidden, the
    # loss has no temperature to vary; the report still says what did not run and why
    for form in (_FixedTemperature, _FixedTemperature()):
        report = check_loss(form, max_examples=2)
        assert sorted(report.skipped) == sorted(TEMPERATURE_CHECKS)
        assert all("takes no 'temperature'" in why for why in report.skipped.values())


class _BrokenWithThreeViews(bp.GoodLoss):
    """Accepts any number of views but returns one loss per anchor for more than two."""

    def forward(self, *views: torch.Tensor) -> torch.Tensor:
        if len(views) == 2:
            return super().forward(*views)
        return torch.cat([self.per_anchor(views[0], v) for v in views[1:]])


def test_three_views_must_work_or_be_refused_clearly() -> None:
    report = check_loss(bp.GoodLoss, max_examples=2)  # forward(z1, z2): a TypeError for three
    assert "three views give a finite scalar or a clear error" in report.checked
    with pytest.raises(ConformanceError, match="'three views give a finite scalar or a clear error'"):
        check_loss(_BrokenWithThreeViews, max_examples=2)


def test_sampler_report_names_the_reduction_it_could_not_check() -> None:
    report = check_sampler(bp.GoodSampler, max_examples=2)
    has_reduction = getattr(bp.GoodSampler(), "uniform_options", None) is not None
    assert any("uniform" in name for name in (report.checked if has_reduction else report.skipped))


def _run_without(module: str, code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter in which importing ``module`` fails."""
    prelude = f"import sys; sys.modules[{module!r}] = None\n"
    return subprocess.run(
        [sys.executable, "-c", prelude + code], capture_output=True, text=True, cwd=ROOT, timeout=120
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "code",
    [
        "from contrastive.testing import check_loss",
        "import contrastive.testing as kit; kit.check_sampler",
        "from contrastive.testing import strategies",
        "import contrastive.testing.strategies",
    ],
)
def test_without_hypothesis_the_kit_says_what_to_install(code: str) -> None:
    result = _run_without("hypothesis", code)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: contrastive.testing (the conformance kit) needs 'hypothesis'"), last
    assert 'pip install "contrastive-kit[kit]"' in last


@pytest.mark.slow
def test_without_hypothesis_the_library_and_the_pytest_plugin_still_import() -> None:
    result = _run_without(
        "hypothesis", "import contrastive, contrastive.testing, contrastive.testing.pytest_plugin"
    )
    assert result.returncode == 0, result.stderr


def _extras() -> dict[str, list[str]]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]


def _names(requirements: list[str]) -> set[str]:
    return {r.split(";")[0].split(">")[0].split("=")[0].split("[")[0].strip().lower() for r in requirements}


def test_the_kit_extra_is_light_and_the_test_extra_includes_it() -> None:
    extras: dict[str, Any] = _extras()
    assert _names(extras["kit"]) == {"pytest", "hypothesis"}
    assert _names(extras["kit"]) < _names(extras["test"])
    assert "triton" in _names(extras["test"])  # the heavy cross-checks stay in the project's own extra


def test_the_kit_never_changes_the_instance_it_is_given() -> None:
    loss = contrastive.get_loss("clip")
    before = {k: v.clone() for k, v in loss.state_dict().items()}
    check_loss(loss, max_examples=2)
    assert all(bool((loss.state_dict()[k] == v).all()) for k, v in before.items())


@pytest.mark.slow
def test_pytest_option_checks_every_installed_plugin(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_nothing="def test_nothing():\n    pass\n")
    result = pytester.runpytest_subprocess(
        "--contrastive-conformance",
        "-v",
        "-k",
        "nothing or horizontal_flip or linear_spectral or hard",
    )
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(
        [
            "*contrastive-conformance?loss:linear_spectral? PASSED*",
            "*contrastive-conformance?sampler:hard? PASSED*",
            "*contrastive-conformance?augmentation:horizontal_flip? PASSED*",
        ]
    )


@pytest.mark.slow
def test_pytest_fixture_gives_plugin_authors_the_checks(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_mine="""
        import pytest

        def test_mine(contrastive_conformance):
            contrastive_conformance.check_sampler("uniform", max_examples=2)
            with pytest.raises(contrastive_conformance.ConformanceError):
                contrastive_conformance.check_loss(lambda z1, z2: z1.sum())
        """
    )
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(passed=1)


def test_a_class_without_its_own_init_is_checked_without_options() -> None:
    class NoInit(bp.GoodLoss.__mro__[1]):  # torch.nn.Module: its __init__ takes only *args, **kwargs
        def forward(self, z1, z2):  # type: ignore[no-untyped-def]
            return bp.GoodLoss(0.5)(z1, z2)

    check_loss(NoInit, max_examples=2)


ZERO_ROW = "a zero row in half precision is finite and close to float32"
SCALE = "invariant to the input scale when normalize=True"


def test_a_zero_row_in_half_precision_must_give_a_finite_value_and_gradients() -> None:
    with pytest.raises(ConformanceError, match=f"'{ZERO_ROW}'.*not finite"):
        check_loss(bp.HalfPrecisionZeroRowNaN, max_examples=5)
    assert ZERO_ROW in check_loss(bp.GoodLoss, max_examples=3).checked


class _DoesNotNormalize(bp.ClaimsToNormalizeLoss):
    normalize = False


def test_a_loss_that_declares_normalize_must_be_scale_invariant_and_one_that_does_not_is_skipped() -> None:
    with pytest.raises(ConformanceError, match=f"'{SCALE}'"):
        check_loss(bp.ClaimsToNormalizeLoss, max_examples=5)
    report = check_loss(_DoesNotNormalize, max_examples=3)  # the same loss, honest about it: no warning
    assert report.skipped[SCALE].startswith("normalize=False")
    report = check_loss(bp.GoodLoss, max_examples=3)
    assert SCALE in report.checked and not report.skipped


class _ScaleDependentDirection(bp.GoodLoss):
    """Normalises, but its value also depends on the norm through a term that vanishes at unit scale."""

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        return super().forward(z1, z2) + 1e-3 * torch.log1p(z1.double().norm()).to(z1.dtype)


def test_the_scale_check_compares_values_not_only_finiteness() -> None:
    with pytest.raises(ConformanceError, match=f"'{SCALE}'.*differs"):
        check_loss(_ScaleDependentDirection, max_examples=5)


@pytest.mark.parametrize("name", ["nt_xent", "supcon", "infonce", "clip", "spectral", "linear_spectral"])
def test_builtin_losses_are_scale_checked_exactly_when_they_normalize(name: str) -> None:
    report = check_loss(name, max_examples=2)
    assert ZERO_ROW in report.checked
    if name in ("spectral", "linear_spectral"):  # quadratic / linear in z: not scale invariant by definition
        assert "no 'normalize' attribute" in report.skipped[SCALE]
    else:
        assert SCALE in report.checked
        if name != "clip":  # an instance without hparams: its temperature checks are skipped, loudly
            with pytest.warns(ConformanceWarning, match="temperature"):
                report = check_loss(contrastive.get_loss(name, normalize=False), max_examples=1)
            assert report.skipped[SCALE].startswith("normalize=False")
