"""Registry behaviour: discovery, broken plugins, collisions, env vars, lookup errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import contrastive
from contrastive import registry
from tests.plugin_factory import PluginFactory, factory, info  # noqa: F401 - factory is a fixture


def test_entry_point_plugin_is_discovered_and_described(factory: PluginFactory) -> None:
    factory.loss_plugin("ctk-demo", "demo_loss", version="2.3.4")
    assert "demo_loss" in contrastive.list_losses()
    loss = contrastive.get_loss("demo_loss", scale=2.0)
    assert loss.scale == 2.0
    value = loss(torch.ones(3, 2), torch.ones(3, 2))
    assert value.item() == pytest.approx(4.0)
    record = info("ctk-demo")
    assert (record.version, record.distribution, record.builtin) == ("2.3.4", "ctk-demo", False)
    assert record.losses == ("demo_loss",) and record.samplers == () and record.ok


@pytest.mark.slow
def test_importing_contrastive_loads_no_plugin(factory: PluginFactory, tmp_path: Path) -> None:
    marker = tmp_path / "imported.txt"
    factory.make("ctk-marker", f"import pathlib; pathlib.Path({str(marker)!r}).write_text('loaded')\n")
    code = (
        "import sys, contrastive\n"
        "from contrastive import registry\n"
        "assert not registry.get_registry().loaded\n"
        "assert not any(m.startswith('ctk_test_') for m in sys.modules)\n"
        "print('lazy')\n"
    )
    env_path = str(tmp_path) + ":" + str(Path(__file__).resolve().parents[1])
    out = subprocess.run(
        [sys.executable, "-c", code], env={"PYTHONPATH": env_path, "PATH": ""},
        capture_output=True, text=True, check=True,
    )
    assert out.stdout.strip() == "lazy"
    assert not marker.exists()
    contrastive.list_losses()  # first use loads the plugin in this process
    assert marker.read_text() == "loaded"


def test_plugin_that_fails_to_import_is_reported_and_others_keep_working(
    factory: PluginFactory,
) -> None:
    factory.make("ctk-broken", "raise ImportError('needs a package that is not installed')\n")
    factory.loss_plugin("ctk-fine", "fine_loss")
    with pytest.warns(contrastive.PluginLoadWarning, match="ctk-broken.*not installed"):
        names = contrastive.list_losses()
    assert "fine_loss" in names
    broken = info("ctk-broken")
    assert not broken.ok and "ImportError" in (broken.error or "")
    assert info("ctk-fine").ok


def test_plugin_whose_hook_raises_registers_nothing(factory: PluginFactory) -> None:
    factory.make(
        "ctk-halfway",
        """
        from contrastive import hookimpl

        @hookimpl
        def register_losses(register):
            register("halfway_loss", dict)
            raise RuntimeError("boom after one registration")
        """,
    )
    with pytest.warns(contrastive.PluginLoadWarning, match="boom after one registration"):
        assert "halfway_loss" not in contrastive.list_losses()
    record = info("ctk-halfway")
    assert not record.ok and record.losses == ()
    with pytest.raises(contrastive.UnknownPluginError):
        contrastive.get_loss("halfway_loss")


def test_plugin_with_a_hook_that_does_not_exist_is_reported(factory: PluginFactory) -> None:
    factory.make(
        "ctk-typo",
        """
        from contrastive import hookimpl

        @hookimpl
        def register_loses(register):
            register("typo_loss", dict)
        """,
    )
    with pytest.warns(contrastive.PluginLoadWarning, match="register_loses"):
        contrastive.plugins()
    assert not info("ctk-typo").ok


def test_strict_mode_raises_on_a_broken_plugin_every_time(
    factory: PluginFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    factory.make("ctk-broken", "raise ValueError('bad plugin')\n")
    monkeypatch.setenv("CONTRASTIVE_STRICT_PLUGINS", "1")
    for _ in range(2):
        with pytest.raises(contrastive.PluginError, match="ctk-broken.*bad plugin"):
            contrastive.list_losses()
    assert not registry.get_registry().loaded


def test_name_collision_fails_the_later_plugin_and_names_both(factory: PluginFactory) -> None:
    factory.loss_plugin("ctk-aaa", "shared_loss")
    factory.loss_plugin("ctk-bbb", "shared_loss")
    with pytest.warns(contrastive.PluginLoadWarning) as caught:
        assert contrastive.list_losses(include="shared*") == ["shared_loss"]
    message = str(caught[0].message)
    assert "ctk-aaa" in message and "ctk-bbb" in message and "shared_loss" in message
    assert registry.get_registry().provider("loss", "shared_loss") == "ctk-aaa"
    assert info("ctk-aaa").ok and not info("ctk-bbb").ok
    assert "override=True" in (info("ctk-bbb").error or "")


def test_name_collision_raises_in_strict_mode(
    factory: PluginFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    factory.loss_plugin("ctk-aaa", "shared_loss")
    factory.loss_plugin("ctk-bbb", "shared_loss")
    monkeypatch.setenv("CONTRASTIVE_STRICT_PLUGINS", "1")
    with pytest.raises(contrastive.PluginCollisionError, match="ctk-bbb.*shared_loss.*ctk-aaa"):
        contrastive.get_loss("shared_loss")


def test_override_replaces_an_existing_name(factory: PluginFactory) -> None:
    factory.loss_plugin("ctk-aaa", "shared_loss")
    factory.loss_plugin("ctk-bbb", "shared_loss", override=True)
    assert registry.get_registry().provider("loss", "shared_loss") == "ctk-bbb"
    assert info("ctk-aaa").ok and info("ctk-bbb").ok


def test_disable_autoload_loads_builtins_only(
    factory: PluginFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    factory.loss_plugin("ctk-demo", "demo_loss")
    monkeypatch.setenv("CONTRASTIVE_DISABLE_PLUGIN_AUTOLOAD", "1")
    assert "demo_loss" not in contrastive.list_losses()
    infos = contrastive.plugins()
    assert all(i.builtin for i in infos)
    assert [i.name for i in infos] == list(registry.DEFAULT_PLUGINS)
    assert all(i.ok for i in infos)


def test_allow_list_loads_only_the_named_plugins(
    factory: PluginFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    factory.loss_plugin("ctk-one", "one_loss")
    factory.loss_plugin("ctk-two", "two_loss", entry_name="two")
    factory.loss_plugin("ctk-three", "three_loss")
    # entry-point name for ctk-two, distribution name (with _ for -) for ctk-one
    monkeypatch.setenv("CONTRASTIVE_PLUGINS", "ctk_one, two")
    losses = contrastive.list_losses(include=["one_*", "two_*", "three_*"])
    assert losses == ["one_loss", "two_loss"]
    assert {i.name for i in contrastive.plugins() if not i.builtin} == {"ctk-one", "two"}


def test_allow_list_warns_about_names_it_cannot_find(
    factory: PluginFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONTRASTIVE_PLUGINS", "ctk-nowhere")
    with pytest.warns(contrastive.PluginLoadWarning, match="ctk-nowhere"):
        contrastive.plugins()


def test_unknown_name_lists_what_exists_and_suggests_a_close_match(
    factory: PluginFactory,
) -> None:
    factory.loss_plugin("ctk-demo", "demo_loss")
    with pytest.raises(contrastive.UnknownPluginError) as err:
        contrastive.get_loss("demo_los")
    text = str(err.value)
    assert "unknown loss 'demo_los'" in text
    assert "did you mean 'demo_loss'?" in text
    assert "demo_loss" in text.split("Available losses:")[1]
    assert isinstance(err.value, ValueError) and isinstance(err.value, LookupError)


def test_unknown_name_without_close_match_has_no_suggestion(factory: PluginFactory) -> None:
    with pytest.raises(contrastive.UnknownPluginError) as err:
        contrastive.get_sampler("zzzzzz")
    assert "did you mean" not in str(err.value)


def test_selection_accepts_a_name_a_class_or_an_instance(factory: PluginFactory) -> None:
    factory.loss_plugin("ctk-demo", "demo_loss")
    by_name = contrastive.get_loss("demo_loss", scale=3.0)
    cls = type(by_name)
    assert contrastive.get_loss(by_name) is by_name
    assert contrastive.get_loss(cls, scale=5.0).scale == 5.0
    with pytest.raises(TypeError, match="options .*scale"):
        contrastive.get_loss(by_name, scale=1.0)
    with pytest.raises(TypeError):
        contrastive.get_augmentation(None)


def test_list_filters_with_include_and_exclude_patterns(factory: PluginFactory) -> None:
    factory.loss_plugin("ctk-a", "alpha_loss")
    factory.loss_plugin("ctk-b", "beta_loss")
    factory.loss_plugin("ctk-c", "alpha_two")
    assert contrastive.list_losses(include="alpha*") == ["alpha_loss", "alpha_two"]
    assert contrastive.list_losses(include="alpha*", exclude="*two") == ["alpha_loss"]
    everything = contrastive.list_losses()
    assert everything == sorted(everything)


def test_registering_a_non_callable_fails_the_plugin(factory: PluginFactory) -> None:
    factory.make(
        "ctk-nocall",
        """
        from contrastive import hookimpl

        @hookimpl
        def register_samplers(register):
            register("weird", 42)
        """,
    )
    with pytest.warns(contrastive.PluginLoadWarning, match="not a class or callable"):
        assert "weird" not in contrastive.list_samplers()


def test_cli_plugins_table_shows_status_and_registrations(
    factory: PluginFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    from contrastive.cli import main

    factory.loss_plugin("ctk-demo", "demo_loss", version="0.9.1")
    factory.make("ctk-broken", "raise ImportError('missing dependency xyz')\n")
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    header, rule, *rows = out.splitlines()
    assert header.split() == ["plugin", "version", "losses", "samplers", "augmentations", "status"]
    assert set(rule.replace(" ", "")) == {"-"}
    demo = next(r for r in rows if r.startswith("ctk-demo"))
    assert "0.9.1" in demo and "demo_loss" in demo and demo.endswith("ok")
    broken = next(r for r in rows if r.startswith("ctk-broken"))
    assert "failed: ImportError: missing dependency xyz" in broken
    assert main(["plugins", "--check"]) == 1


def test_cli_plugins_json_is_machine_readable(
    factory: PluginFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    from contrastive.cli import main

    factory.loss_plugin("ctk-demo", "demo_loss", version="0.9.1")
    assert main(["plugins", "--json", "--check"]) == 0
    records = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert records["ctk-demo"] == {
        "name": "ctk-demo", "version": "0.9.1", "distribution": "ctk-demo", "builtin": False,
        "losses": ["demo_loss"], "samplers": [], "augmentations": [], "status": "ok",
        "error": None,
    }
    assert all(r["status"] == "ok" for r in records.values())


def test_cli_without_a_command_prints_help_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    from contrastive.cli import main

    assert main([]) == 2
    assert "plugins" in capsys.readouterr().err


def test_builtins_load_cleanly_and_are_marked_builtin(factory: PluginFactory) -> None:
    infos = [i for i in contrastive.plugins() if i.builtin]
    assert [i.name for i in infos] == list(registry.DEFAULT_PLUGINS)
    for record in infos:
        assert record.ok, record.error
        assert record.distribution == "contrastive-kit"
        assert record.version == contrastive.__version__
