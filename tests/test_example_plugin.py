"""The example plugin in plugins/contrastive-example, discovered through its entry point."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import pytest
import torch

import contrastive
from contrastive import registry

EXAMPLE = Path(__file__).resolve().parents[1] / "plugins" / "contrastive-example"


def _declared_entry_points() -> dict[str, str]:
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    return dict(project["entry-points"]["contrastive"])


@pytest.fixture
def example_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The example plugin visible through importlib.metadata (installed, or a dist-info here)."""
    for var in ("CONTRASTIVE_PLUGINS", "CONTRASTIVE_STRICT_PLUGINS", "CONTRASTIVE_DISABLE_PLUGIN_AUTOLOAD"):
        monkeypatch.delenv(var, raising=False)
    try:
        dist = metadata.distribution("contrastive-example")
        how = f"installed {dist.version}"
    except metadata.PackageNotFoundError:
        # Same files pip would write: METADATA and the entry points the pyproject declares.
        info = tmp_path / "contrastive_example-0.1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text("Metadata-Version: 2.1\nName: contrastive-example\nVersion: 0.1.0\n")
        lines = [f"{k} = {v}" for k, v in _declared_entry_points().items()]
        (info / "entry_points.txt").write_text("[contrastive]\n" + "\n".join(lines) + "\n")
        monkeypatch.syspath_prepend(str(tmp_path))
        monkeypatch.syspath_prepend(str(EXAMPLE / "src"))
        how = "dist-info on sys.path"
    registry.reset()
    yield how
    registry.reset()
    for name in [m for m in sys.modules if m.startswith("contrastive_example")]:
        del sys.modules[name]


def test_installed_entry_point_matches_the_pyproject() -> None:
    try:
        eps = metadata.distribution("contrastive-example").entry_points
    except metadata.PackageNotFoundError:
        pytest.skip("contrastive-example is not installed in this environment")
    installed = {ep.name: ep.value for ep in eps if ep.group == "contrastive"}
    assert installed == _declared_entry_points()


def test_example_plugin_is_found_through_its_entry_point(example_installed: str) -> None:
    record = next(i for i in contrastive.plugins() if i.name == "example")
    assert record.ok, record.error
    assert not record.builtin and record.distribution == "contrastive-example"
    assert record.losses == ("align_uniform",)
    assert record.samplers == ("example_tempered",)
    assert record.augmentations == ("gaussian_noise",)
    assert "align_uniform" in contrastive.list_losses()


def test_example_loss_is_alignment_plus_uniformity(example_installed: str) -> None:
    loss = contrastive.get_loss("align_uniform", weight=0.0)
    z = torch.nn.functional.normalize(torch.randn(16, 8, dtype=torch.float64), dim=1)
    assert loss(z, z).item() == pytest.approx(0.0, abs=1e-12)  # identical views: no misalignment
    # antipodal views are 2 apart: alignment (alpha=2) is exactly 4
    assert loss(z, -z).item() == pytest.approx(4.0)
    uniform_only = contrastive.get_loss("align_uniform", weight=1.0)(z, z)
    assert uniform_only.item() < 0  # log of a mean of exp(-t d^2) with d > 0
    with pytest.raises(ValueError, match="views"):
        loss(z)


def test_example_augmentation_is_seeded_and_identity_at_zero(example_installed: str) -> None:
    x = torch.randn(4, 5)
    noise = contrastive.get_augmentation("gaussian_noise", sigma=0.5)
    assert torch.equal(noise(x, generator=7), noise(x, generator=7))
    assert not torch.equal(noise(x, generator=7), noise(x, generator=8))
    assert torch.equal(contrastive.get_augmentation("gaussian_noise", sigma=0.0)(x), x)
    first, second = noise.views(x, n=2, generator=3)
    assert not torch.equal(first, second)


def test_example_sampler_plugs_into_builtin_losses(example_installed: str) -> None:
    g = torch.Generator().manual_seed(0)
    z1, z2 = (
        torch.randn(12, 6, generator=g, dtype=torch.float64),
        torch.randn(12, 6, generator=g, dtype=torch.float64),
    )
    tempered = contrastive.get_loss("nt_xent", temperature=0.5, sampler="example_tempered")
    # without debiasing, the reweighting is Robinson et al.'s hard sampler at tau_plus = 0
    hard = contrastive.get_loss(
        "nt_xent", temperature=0.5, sampler=contrastive.get_sampler("hard", beta=0.5, tau_plus=0.0)
    )
    assert tempered(z1, z2).item() == pytest.approx(hard(z1, z2).item(), rel=1e-12)
    flat = contrastive.get_loss(
        "nt_xent", temperature=0.5, sampler=contrastive.get_sampler("example_tempered", beta=0.0)
    )
    assert flat(z1, z2).item() == pytest.approx(
        contrastive.get_loss("nt_xent", temperature=0.5)(z1, z2).item(), rel=1e-12
    )
    sims = z1 @ z2.T
    drawn = contrastive.get_sampler("example_tempered").draw(
        sims, torch.eye(12, dtype=torch.bool), k=5, generator=g
    )
    assert drawn.shape == (12, 5) and not (drawn == torch.arange(12)[:, None]).any()
