"""Run folder safety: the lock, the data fingerprint, and one-line errors for bad folders, seeds and files."""

from __future__ import annotations

import os
import pickle
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from contrastive.cli import main as cli_main
from contrastive.train import TrainConfig, TrainError, run
from contrastive.train.checkpoint import CHECKPOINT_FORMAT
from contrastive.train.rundir import LOCK_NAME

TINY = ["train", "--data", "spiked", "--epochs", "1", "--batch-size", "200", "--quiet"]


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("contrastive train: error: "), err
    return err


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_the_folder_is_locked_while_a_run_uses_it_and_released_after(tmp_path: Path) -> None:
    out = tmp_path / "run"
    seen: list[str] = []
    run(
        TrainConfig(data="spiked", epochs=1, batch_size=200, out=str(out)),
        callbacks=[("on_epoch_end", lambda t: seen.append((out / LOCK_NAME).read_text().strip()))],
    )
    assert seen == [f"{socket.gethostname()}:{os.getpid()}"]
    assert not (out / LOCK_NAME).exists()


def test_a_second_run_or_resume_on_a_locked_folder_fails_at_once(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / LOCK_NAME).write_text(f"{socket.gethostname()}:{holder.pid}\n")
        assert cli_main([*TINY, "--out", str(out)]) == 2
        assert f"is in use by process {holder.pid}" in _one_line_error(capsys)
        assert cli_main(["train", "--resume", "--out", str(out)]) == 2
        assert f"is in use by process {holder.pid}" in _one_line_error(capsys)
    finally:
        holder.kill()
        holder.wait()
    assert (out / LOCK_NAME).exists()  # a lock that is not ours is never removed by the refused run


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK_NAME).write_text(f"{socket.gethostname()}:{_dead_pid()}\n")
    assert cli_main([*TINY, "--out", str(out)]) == 0
    assert not (out / LOCK_NAME).exists() and (out / "summary.json").is_file()


def _npz(path: Path, shift: float = 0.0) -> Path:
    rng = np.random.default_rng(0)
    np.savez(path, X=(rng.standard_normal((80, 6)) + shift).astype(np.float32), y=np.arange(80) % 2)
    return path


def test_resume_on_changed_data_names_both_fingerprints_unless_allowed(tmp_path: Path, capsys) -> None:
    data, out = _npz(tmp_path / "d.npz"), tmp_path / "run"
    args = ["train", "--data", f"npz:{data}", "--batch-size", "32", "--quiet", "--out", str(out)]
    assert cli_main([*args, "--epochs", "1"]) == 0
    capsys.readouterr()
    before = (out / "config.toml").read_text()
    old = next(line.split('"')[1] for line in before.splitlines() if line.startswith("data_fingerprint"))
    assert old.startswith("sha256:")
    _npz(data, shift=1.0)
    assert cli_main(["train", "--resume", "--out", str(out), "--epochs", "2"]) == 2
    err = _one_line_error(capsys)
    assert old in err and "--allow-data-change" in err
    new = err.split("fingerprint is now ")[1].split(",")[0]
    assert new.startswith("sha256:") and new != old
    assert (out / "config.toml").read_text() == before
    assert (
        cli_main(["train", "--resume", "--out", str(out), "--epochs", "2", "--allow-data-change", "--quiet"])
        == 0
    )
    assert f'data_fingerprint = "{new}"' in (out / "config.toml").read_text()


def test_resume_on_unchanged_data_passes_the_fingerprint_check(tmp_path: Path) -> None:
    data, out = _npz(tmp_path / "d.npz"), tmp_path / "run"
    run(TrainConfig(data=f"npz:{data}", epochs=1, batch_size=32, out=str(out)))
    assert run(TrainConfig(epochs=2, out=str(out)), resume=True)["epochs"] == 2


def test_out_that_is_a_file_or_cannot_be_created_is_one_line(tmp_path: Path, capsys) -> None:
    file = tmp_path / "file"
    file.write_text("x")
    assert cli_main([*TINY, "--out", str(file)]) == 2
    assert "is a file, not a folder" in _one_line_error(capsys)
    assert cli_main([*TINY, "--out", str(file / "sub")]) == 2
    assert "cannot be created" in _one_line_error(capsys)


@pytest.mark.parametrize("seed", [2**63, 2**64, -1])
def test_a_seed_outside_63_bits_is_one_line(seed: int, tmp_path: Path, capsys) -> None:
    assert cli_main([*TINY, "--seed", str(seed), "--out", str(tmp_path / "r")]) == 2
    assert "--seed must be an integer in [0, 2**63 - 1]" in _one_line_error(capsys)


def test_the_largest_seed_runs(tmp_path: Path) -> None:
    assert run(TrainConfig(data="spiked", epochs=1, batch_size=400, seed=2**63 - 1, out=str(tmp_path / "r")))


def _poison(trainer) -> None:  # noqa: ANN001
    if trainer.epoch == 1:
        with torch.no_grad():
            next(trainer.raw_model.parameters()).fill_(float("nan"))


def test_a_divergent_run_stops_keeps_the_last_good_checkpoint_and_says_what_to_change(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with pytest.raises(
        TrainError, match=r"diverged: the loss became nan at step \d+ \(epoch 2\).*lower --lr"
    ):
        run(
            TrainConfig(data="spiked", epochs=3, batch_size=400, out=str(out)),
            callbacks=[("on_epoch_end", _poison)],
        )
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 1
    assert all(bool(torch.isfinite(v).all()) for v in state["model"].values() if v.is_floating_point())
    assert not (out / LOCK_NAME).exists()


def test_a_checkpoint_of_the_right_format_but_wrong_contents_is_one_line(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    run(TrainConfig(data="spiked", epochs=1, batch_size=400, out=str(out)))
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    state["model"] = {k: v[..., :1] if v.dim() else v for k, v in state["model"].items()}
    torch.save(state, out / "checkpoint.pt")
    assert cli_main(["train", "--resume", "--out", str(out), "--epochs", "2"]) == 2
    assert "has the checkpoint format but does not fit" in _one_line_error(capsys)


def test_stale_temporary_checkpoints_are_removed(tmp_path: Path) -> None:
    out = tmp_path / "run"
    run(TrainConfig(data="spiked", epochs=1, batch_size=400, out=str(out)))
    (out / ".checkpoint.pt.tmp-999999").write_bytes(b"half a checkpoint")
    run(TrainConfig(epochs=2, out=str(out)), resume=True)
    assert not list(out.glob(".*.tmp-*"))


class _Hostile:
    def __reduce__(self):  # noqa: ANN204
        return (os.system, ("echo pwned",))


@pytest.mark.parametrize(("protocol", "reason"), [(2, "GLOBAL posix.system"), (pickle.HIGHEST_PROTOCOL, "")])
def test_a_hostile_pickle_is_refused_in_one_line_without_advice_to_trust_it(
    tmp_path: Path, capsys, protocol: int, reason: str
) -> None:
    out = tmp_path / "run"
    out.mkdir()
    with open(out / "checkpoint.pt", "wb") as fh:
        torch.save({"format": CHECKPOINT_FORMAT, "payload": _Hostile()}, fh, pickle_protocol=protocol)
    assert cli_main(["train", "--resume", "--out", str(out)]) == 2
    err = _one_line_error(capsys)
    assert "the weights-only load refused it" in err and "nothing in it was run" in err and reason in err
    assert "weights_only" not in err and "trusted source" not in err
