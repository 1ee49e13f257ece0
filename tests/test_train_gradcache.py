"""``--chunk-size``: the trainer's step through GradCache has the loss and gradients of the unchunked step."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from contrastive.train import TrainConfig, Trainer, build_model, run
from contrastive.train.components import build_augmentation, build_loss


def _first_step(chunk_size: int, loss: str = "nt_xent") -> tuple[float, dict[str, torch.Tensor]]:
    config = TrainConfig(data="spiked", epochs=1, batch_size=60, chunk_size=chunk_size, loss=loss)
    torch.manual_seed(0)
    x, y = torch.randn(120, 10), torch.arange(120) % 3
    model = build_model("linear", (10,), 6, 16, 8)
    trainer = Trainer(
        config,
        model,
        x,
        build_loss(config),
        build_augmentation(config, (10,)),
        y if loss == "supcon" else None,
    )
    seen: list[tuple[float, dict[str, torch.Tensor]]] = []

    def grab(t: Trainer) -> None:
        if t.step == 1:
            seen.append((t.batch_loss, {n: p.grad.clone() for n, p in t.raw_model.named_parameters()}))

    trainer.add_callback("on_batch_end", grab)
    trainer.run()
    return seen[0]


@pytest.mark.parametrize("loss", ["nt_xent", "supcon"])
def test_a_chunked_first_step_equals_the_unchunked_one(loss: str) -> None:
    whole_loss, whole_grads = _first_step(0, loss)
    chunked_loss, chunked_grads = _first_step(16, loss)  # 60 = 16 + 16 + 16 + 12
    assert chunked_loss == pytest.approx(whole_loss, rel=1e-6)
    assert whole_grads.keys() == chunked_grads.keys()
    for name, grad in whole_grads.items():
        torch.testing.assert_close(chunked_grads[name], grad, rtol=1e-5, atol=1e-6, msg=name)


def test_chunk_size_runs_end_to_end_and_is_recorded(tmp_path: Path) -> None:
    summary = run(
        TrainConfig(data="spiked", epochs=1, batch_size=200, chunk_size=64, out=str(tmp_path / "r"))
    )
    assert summary["steps"] == 8
    assert "chunk_size = 64" in (tmp_path / "r" / "config.toml").read_text()
