"""The conformance kit: every installed plugin passes it, and it catches each broken invariant."""

from __future__ import annotations

import pytest

import contrastive
from contrastive.testing import ConformanceError, check_augmentation, check_loss, check_sampler
from tests import broken_plugins as bp


@pytest.mark.parametrize("name", contrastive.list_losses())
def test_every_installed_loss_conforms(name: str) -> None:
    check_loss(name)


@pytest.mark.parametrize("name", contrastive.list_samplers())
def test_every_installed_sampler_conforms(name: str) -> None:
    check_sampler(name)


@pytest.mark.parametrize("name", contrastive.list_augmentations())
def test_every_installed_augmentation_conforms(name: str) -> None:
    check_augmentation(name)


def test_the_reference_plugins_pass() -> None:
    check_loss(bp.GoodLoss)
    check_sampler(bp.GoodSampler)
    check_augmentation(bp.GoodAugmentation())


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
    for form in ("nt_xent", type(loss), loss):
        check_loss(form, max_examples=2)
    with pytest.raises(contrastive.UnknownPluginError):
        check_loss("no_such_loss")


def test_the_kit_never_changes_the_instance_it_is_given() -> None:
    loss = contrastive.get_loss("clip")
    before = {k: v.clone() for k, v in loss.state_dict().items()}
    check_loss(loss, max_examples=2)
    assert all(bool((loss.state_dict()[k] == v).all()) for k, v in before.items())


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
