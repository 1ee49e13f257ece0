"""Registry reliability: no plugin can kill the host, half-load the registry or pass off a wrong object."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

import contrastive
from contrastive import registry
from contrastive.cli import main
from tests.plugin_factory import PluginFactory, factory, info  # noqa: F401 - factory is a fixture

HOOK_EXITS = """
from contrastive import hookimpl

@hookimpl
def register_losses(register):
    raise SystemExit("bye from a hook")
"""

CUSTOM_BASE_EXCEPTION = """
class Stop(BaseException):
    pass

raise Stop("not an Exception")
"""


@pytest.mark.parametrize(
    ("source", "shown"),
    [
        ("import sys\nsys.exit(3)\n", "SystemExit: the plugin called sys.exit(3)"),
        ("import sys\nsys.exit()\n", "SystemExit: the plugin called sys.exit(None)"),
        (HOOK_EXITS, "SystemExit: the plugin called sys.exit('bye from a hook')"),
        (CUSTOM_BASE_EXCEPTION, "Stop: not an Exception"),
    ],
    ids=["sys.exit(3) at import", "sys.exit() at import", "SystemExit in a hook", "BaseException"],
)
def test_plugin_raising_a_base_exception_is_reported_and_others_keep_working(
    factory: PluginFactory, source: str, shown: str
) -> None:
    factory.make("ctk-exit", source)
    factory.loss_plugin("ctk-fine", "fine_loss")
    with pytest.warns(contrastive.PluginLoadWarning, match="ctk-exit"):
        names = contrastive.list_losses()
    assert "fine_loss" in names and "nt_xent" in names
    record = info("ctk-exit")
    assert not record.ok and record.losses == ()
    assert record.error == shown
    assert contrastive.get_loss("fine_loss")(torch.ones(2, 3), torch.ones(2, 3)).item() == pytest.approx(2.0)


def test_plugin_calling_sys_exit_is_an_error_in_strict_mode(
    factory: PluginFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    factory.make("ctk-exit", "import sys\nsys.exit(3)\n")
    monkeypatch.setenv("CONTRASTIVE_STRICT_PLUGINS", "1")
    with pytest.raises(contrastive.PluginError, match="ctk-exit.*sys.exit"):
        contrastive.get_loss("nt_xent")


def test_contrastive_plugins_lists_a_plugin_that_calls_sys_exit(
    factory: PluginFactory, tmp_path: Path
) -> None:
    factory.make("ctk-exit", "import sys\nsys.exit(3)\n")
    env = {"PYTHONPATH": f"{tmp_path}:{Path(__file__).resolve().parents[1]}", "PATH": ""}
    run = [sys.executable, "-m", "contrastive", "plugins"]
    table = subprocess.run(run, env=env, capture_output=True, text=True, timeout=120)
    assert table.returncode == 0, table.stderr
    row = next(r for r in table.stdout.splitlines() if r.startswith("ctk-exit"))
    assert row.endswith("failed: SystemExit: the plugin called sys.exit(3)")
    assert "contrastive.losses.nt_xent" in table.stdout
    checked = subprocess.run(
        [*run, "--json", "--check"], env=env, capture_output=True, text=True, timeout=120
    )
    assert checked.returncode == 1, checked.stderr
    assert {r["name"]: r["status"] for r in json.loads(checked.stdout)}["ctk-exit"] == "failed"


INTERRUPTED_ONCE = """
import pathlib
import torch
from contrastive import hookimpl

MARKER = pathlib.Path({marker!r})

def _interrupt_once():
    if not MARKER.exists():
        MARKER.write_text("interrupted")
        raise KeyboardInterrupt

{at_import}

class LateLoss(torch.nn.Module):
    def forward(self, *views, labels=None):
        return sum(v.sum() for v in views)

@hookimpl
def register_losses(register):
    register("late_loss", LateLoss)
    {in_hook}
"""


@pytest.mark.parametrize("where", ["at import", "in a hook"])
def test_keyboard_interrupt_while_loading_leaves_the_registry_unloaded(
    factory: PluginFactory, tmp_path: Path, where: str
) -> None:
    source = INTERRUPTED_ONCE.format(
        marker=str(tmp_path / "interrupted.txt"),
        at_import="_interrupt_once()" if where == "at import" else "",
        in_hook="_interrupt_once()" if where == "in a hook" else "",
    )
    factory.loss_plugin("ctk-before", "before_loss")  # loaded fully before the interrupt
    factory.make("ctk-interrupted", source)
    with pytest.raises(KeyboardInterrupt):
        contrastive.list_losses()
    current = registry.get_registry()
    assert not current.loaded
    assert current.manager.list_name_plugin() == []
    # the next use loads everything, as if the interrupted attempt never happened
    infos = contrastive.plugins()
    assert [i.name for i in infos if i.builtin] == list(registry.DEFAULT_PLUGINS)
    assert all(i.ok for i in infos), [i.error for i in infos if not i.ok]
    assert {"before_loss", "late_loss", "nt_xent"} <= set(contrastive.list_losses())
    assert [i.name for i in infos].count("ctk-before") == 1


def test_cli_plugins_in_strict_mode_reports_the_failure_and_exits_nonzero(
    factory: PluginFactory, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    factory.make("ctk-broken", "raise ValueError('bad plugin')\n")
    factory.loss_plugin("ctk-fine", "fine_loss")
    monkeypatch.setenv("CONTRASTIVE_STRICT_PLUGINS", "1")
    assert main(["plugins"]) == 1
    out, err = capsys.readouterr()
    broken = next(r for r in out.splitlines() if r.startswith("ctk-broken"))
    assert broken.endswith("failed: ValueError: bad plugin")
    assert next(r for r in out.splitlines() if r.startswith("ctk-fine")).endswith("ok")
    assert err == "error: 1 plugin(s) failed to load: ctk-broken (CONTRASTIVE_STRICT_PLUGINS is set)\n"
    assert main(["plugins", "--json"]) == 1
    records = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert records["ctk-broken"]["status"] == "failed"
    assert records["ctk-broken"]["error"] == "ValueError: bad plugin"
    assert records["ctk-fine"]["status"] == "ok"
    # the report does not weaken strict mode for the library itself
    with pytest.raises(contrastive.PluginError, match="ctk-broken"):
        contrastive.list_losses()


def test_cli_plugins_in_strict_mode_without_failures_succeeds(
    factory: PluginFactory, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    factory.loss_plugin("ctk-fine", "fine_loss")
    monkeypatch.setenv("CONTRASTIVE_STRICT_PLUGINS", "1")
    assert main(["plugins", "--json"]) == 0
    out, err = capsys.readouterr()
    assert all(r["status"] == "ok" for r in json.loads(out)) and err == ""
    assert "fine_loss" in contrastive.list_losses()


WRONG_FACTORY = """
import torch
from contrastive import hookimpl

@hookimpl
def register_{hook}(register):
    register({name!r}, lambda **options: {value})
"""


@pytest.mark.parametrize(
    ("kind", "value", "returned", "wanted"),
    [
        ("loss", "42", "42 (a builtins.int)", "torch.nn.Module"),
        ("loss", "lambda z1, z2: (z1 - z2).sum()", "(a builtins.function)", "torch.nn.Module"),
        ("sampler", "torch.nn.Identity()", "(a torch.nn.modules.linear.Identity)", "contrastive.Sampler"),
        ("augmentation", "'flip'", "'flip' (a builtins.str)", "callable"),
    ],
)
def test_factory_returning_the_wrong_kind_of_object_names_the_plugin(
    factory: PluginFactory, kind: str, value: str, returned: str, wanted: str
) -> None:
    hook = {"loss": "losses", "sampler": "samplers", "augmentation": "augmentations"}[kind]
    factory.make("ctk-wrong", WRONG_FACTORY.format(hook=hook, name=f"wrong_{kind}", value=value))
    get = {"loss": contrastive.get_loss, "sampler": contrastive.get_sampler,
           "augmentation": contrastive.get_augmentation}[kind]
    with pytest.raises(TypeError) as err:
        get(f"wrong_{kind}")
    text = str(err.value)
    assert f"plugin 'ctk-wrong' registered {kind} 'wrong_{kind}'" in text
    assert returned in text and f"not {'a ' if wanted != 'callable' else ''}{wanted}" in text


def test_a_class_that_builds_the_wrong_kind_of_object_is_rejected(factory: PluginFactory) -> None:
    with pytest.raises(TypeError, match=r"loss class builtins\.dict returned \{\} .*torch\.nn\.Module"):
        contrastive.get_loss(dict)
    with pytest.raises(TypeError, match=r"sampler class .*Identity.*contrastive\.Sampler"):
        contrastive.get_sampler(torch.nn.Identity)


def test_getters_return_the_promised_kinds(factory: PluginFactory) -> None:
    assert isinstance(contrastive.get_loss("nt_xent"), torch.nn.Module)
    assert isinstance(contrastive.get_sampler("hard", beta=1.0), contrastive.Sampler)
    flip = contrastive.get_augmentation("simclr", size=8)
    assert flip(torch.rand(2, 3, 8, 8), generator=0).shape == (2, 3, 8, 8)
    instance = contrastive.UniformSampler()
    assert contrastive.get_sampler(instance) is instance  # an instance is returned as it is


def test_getters_are_typed_for_the_api_docs() -> None:
    import typing

    # Sampler is imported for type checkers only (contrastive.samplers imports the registry)
    names = {**vars(registry), "Sampler": contrastive.Sampler}
    getters = ("get_loss", "get_sampler", "get_augmentation")
    hints = {name: typing.get_type_hints(getattr(registry, name), names) for name in getters}
    assert hints["get_loss"]["return"] is torch.nn.Module
    assert hints["get_sampler"]["return"] is contrastive.Sampler
    assert hints["get_sampler"]["sampler"] == str | type[contrastive.Sampler] | contrastive.Sampler
    augmentation = hints["get_augmentation"]["return"]
    assert typing.get_origin(augmentation) is not None and typing.get_args(augmentation)[-1] is torch.Tensor


@pytest.mark.parametrize("value", ["", "  ", " , ,"])
def test_empty_allow_list_warns_and_says_how_to_load_none_or_all(
    factory: PluginFactory, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    factory.loss_plugin("ctk-demo", "demo_loss")
    monkeypatch.setenv("CONTRASTIVE_PLUGINS", value)
    expected = "CONTRASTIVE_PLUGINS is set but names no plugin"
    with pytest.warns(contrastive.PluginLoadWarning, match=expected) as w:
        names = contrastive.list_losses()
    assert "demo_loss" not in names and "nt_xent" in names
    text = str(w[0].message)
    assert "CONTRASTIVE_DISABLE_PLUGIN_AUTOLOAD=1" in text and "unset CONTRASTIVE_PLUGINS" in text


def test_empty_allow_list_with_autoload_disabled_is_silent(
    factory: PluginFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONTRASTIVE_PLUGINS", "")
    monkeypatch.setenv("CONTRASTIVE_DISABLE_PLUGIN_AUTOLOAD", "1")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert "nt_xent" in contrastive.list_losses()


def test_cli_plugins_shows_the_empty_allow_list_warning(
    factory: PluginFactory, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    factory.make("ctk-broken", "raise ImportError('missing dependency xyz')\n")
    monkeypatch.setenv("CONTRASTIVE_PLUGINS", "")
    assert main(["plugins", "--json"]) == 0
    out, err = capsys.readouterr()
    assert "ctk-broken" not in {r["name"] for r in json.loads(out)}
    assert err.startswith("warning: CONTRASTIVE_PLUGINS is set but names no plugin")
    assert err.count("\n") == 1


def test_cli_plugins_in_strict_mode_shows_a_configuration_warning_once(
    factory: PluginFactory, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = factory.make("ctk-unused", "raise ImportError('a broken default plugin')\n")
    registry.reset([*registry.DEFAULT_PLUGINS, broken])  # strict loading fails, so the report loads again
    monkeypatch.setenv("CONTRASTIVE_PLUGINS", "")
    monkeypatch.setenv("CONTRASTIVE_STRICT_PLUGINS", "1")
    assert main(["plugins"]) == 1
    out, err = capsys.readouterr()
    assert next(r for r in out.splitlines() if r.startswith(broken)).endswith(
        "failed: ImportError: a broken default plugin"
    )
    warning, error = err.splitlines()
    assert warning.startswith("warning: CONTRASTIVE_PLUGINS is set but names no plugin")
    assert error == f"error: 1 plugin(s) failed to load: {broken} (CONTRASTIVE_STRICT_PLUGINS is set)"
