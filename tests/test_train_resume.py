"""The trainer resumes killed runs exactly and rejects bad input with one line and exit status 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from contrastive.cli import main as cli_main
from contrastive.train import TrainConfig, run

pytestmark = pytest.mark.slow  # every test trains (and interrupts) real runs

EPOCHS = 3
#: a run interrupted from a separate process: SIGKILL right after epoch 1 is checkpointed
KILLED_RUN = """
import os, signal, sys
from contrastive.train import TrainConfig, run
config = TrainConfig(data="spiked", epochs={epochs}, batch_size=200, out=sys.argv[1])
run(config, callbacks=[("on_epoch_end", lambda t: t.epoch == 1 and os.kill(os.getpid(), signal.SIGKILL))])
"""


def _result(out: Path) -> tuple[dict, list[str]]:
    summary = json.loads((out / "summary.json").read_text())
    for key in ("wall_time_s", "cpu_time_s", "out"):
        summary.pop(key)
    return summary, (out / "metrics.jsonl").read_text().splitlines()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, list[str]]:
    out = tmp_path_factory.mktemp("full") / "run"
    run(TrainConfig(data="spiked", epochs=EPOCHS, batch_size=200, out=str(out)))
    return _result(out)


class _Interrupt(Exception):
    pass


def _interrupt_after_epoch_2(trainer: object) -> None:
    if trainer.epoch == 2:  # type: ignore[attr-defined]
        raise _Interrupt


def test_resume_after_an_exception_reaches_the_uninterrupted_metrics(tmp_path: Path, uninterrupted) -> None:
    out = tmp_path / "run"
    config = TrainConfig(data="spiked", epochs=EPOCHS, batch_size=200, out=str(out))
    with pytest.raises(_Interrupt):
        run(config, callbacks=[("on_epoch_end", _interrupt_after_epoch_2)])
    assert not (out / "summary.json").exists()
    assert cli_main(["train", "--resume", "--out", str(out), "--quiet"]) == 0
    assert _result(out) == uninterrupted


def test_resume_after_sigkill_reaches_the_uninterrupted_metrics(tmp_path: Path, uninterrupted) -> None:
    out = tmp_path / "run"
    killed = subprocess.run([sys.executable, "-c", KILLED_RUN.format(epochs=EPOCHS), str(out)], check=False)
    assert killed.returncode == -9
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1
    assert cli_main(["train", "--resume", "--out", str(out), "--quiet"]) == 0
    assert _result(out) == uninterrupted


def test_resume_refuses_to_change_training_settings(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    run(TrainConfig(data="spiked", epochs=1, batch_size=200, out=str(out)))
    assert cli_main(["train", "--resume", "--out", str(out), "--lr", "0.1"]) == 2
    assert "cannot change lr" in capsys.readouterr().err
    assert cli_main(["train", "--resume", "--out", str(out), "--epochs", "2", "--quiet"]) == 0
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2


def test_a_new_run_will_not_overwrite_a_finished_one(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    run(TrainConfig(data="spiked", epochs=1, batch_size=200, out=str(out)))
    assert cli_main(["train", "--data", "spiked", "--out", str(out)]) == 2
    assert "already holds a run" in capsys.readouterr().err


def _bad_npz(tmp_path: Path) -> Path:
    path = tmp_path / "bad.npz"
    path.write_bytes(b"this is not a zip archive")
    return path


def _npz_without_x(tmp_path: Path) -> Path:
    path = tmp_path / "nox.npz"
    np.savez(path, Y=np.zeros(3))
    return path


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--loss", "nope"], "unknown loss 'nope'.*Available losses: .*nt_xent"),
        (["--sampler", "nope"], "unknown sampler 'nope'.*Available samplers: .*hard"),
        (["--augment", "nope"], "unknown augmentation 'nope'.*Available augmentations: .*simclr"),
        (["--data", "npz:{tmp}/missing.npz"], "does not exist"),
        (["--data", "npz:{bad}"], "not a readable .npz"),
        (["--data", "npz:{nox}"], "it needs X"),
        (["--data", "nothing"], "--data must be one of digits, spiked, npz:PATH, folder:PATH"),
        (["--batch-size", "5000"], "--batch-size 5000 is larger than the 1600 training samples"),
        (["--epochs", "0"], "--epochs must be a positive integer, got 0"),
        (["--epochs", "-3"], "--epochs must be a positive integer, got -3"),
        (["--loss", "spectral", "--temperature", "0.5"], "takes no temperature"),
        (["--sampler", "hard", "--sampler-opt", "beta=-1"], "cannot create sampler 'hard'"),
        (["--augment", "simclr"], "cannot augment inputs of shape"),
        (["--config", "{tmp}/none.toml"], "config file .* does not exist"),
        (["--resume"], "--resume needs --out"),
        (["--resume", "--out", "{tmp}/empty"], "there is no checkpoint"),
    ],
)
def test_bad_input_is_one_line_exit_status_2_and_writes_nothing(
    tmp_path: Path, capsys, flags, message
) -> None:
    import re

    flags = [f.format(tmp=tmp_path, bad=_bad_npz(tmp_path), nox=_npz_without_x(tmp_path)) for f in flags]
    out = ["--out", str(tmp_path / "out")] if "--out" not in flags and flags != ["--resume"] else []
    code = cli_main(["train", "--data", "spiked", "--epochs", "1", "--quiet", *out, *flags])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("contrastive train: error: ")
    assert re.search(message, err), err
    assert not (tmp_path / "out").exists()


def test_resume_rejects_a_corrupt_checkpoint(tmp_path: Path, capsys) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoint.pt").write_bytes(b"garbage")
    assert cli_main(["train", "--resume", "--out", str(tmp_path / "run")]) == 2
    assert "is not a readable checkpoint" in capsys.readouterr().err


def test_argparse_errors_exit_with_status_2() -> None:
    with pytest.raises(SystemExit) as info:
        cli_main(["train", "--epochs", "many"])
    assert info.value.code == 2


def test_contrastive_train_runs_as_a_console_command(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONWARNINGS": "error::UserWarning"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "contrastive",
            "train",
            "--data",
            "spiked",
            "--epochs",
            "1",
            "--batch-size",
            "400",
            "--out",
            str(tmp_path / "run"),
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert (
        "linear probe" in result.stdout and "epoch 1/1" in result.stderr
    )  # not a terminal: one line per epoch
