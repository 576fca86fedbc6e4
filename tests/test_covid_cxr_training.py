"""The study's five CNNs train with the paper's recipe, resume from their checkpoints, and choose on validation."""

from __future__ import annotations

import pytest
import torch
from covid_cxr.models import ARCHITECTURES, MIN_SIZE, build
from covid_cxr.train import TrainConfig, predict, train


def _data(size: int, n: int = 8, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size, size, generator=gen)
    y = (torch.rand(n, 3, generator=gen) > 0.5).float()
    return (x[:6], y[:6]), (x[6:], y[6:])


@pytest.mark.slow
@pytest.mark.parametrize("name", ARCHITECTURES)
def test_each_architecture_trains_and_predicts_multilabel_probabilities(name, tmp_path):
    size = MIN_SIZE[name]  # the smallest each takes: DenseNet161 at 64 px took minutes on a busy machine
    train_xy, val_xy = _data(size)
    trained = train(name, train_xy, val_xy, TrainConfig(epochs=1, batch_size=4), tmp_path / "c.pt", progress=False)
    probabilities = predict(trained.model, val_xy[0])
    assert probabilities.shape == (2, 3) and ((probabilities >= 0) & (probabilities <= 1)).all()
    assert not trained.model.training and trained.best_epoch == 0


def test_inception_keeps_its_auxiliary_head_only_where_it_can_run():
    assert build("inception_v3", image_size=299).AuxLogits is not None
    assert build("inception_v3", image_size=128).AuxLogits is None


def test_training_resumes_from_the_checkpoint_and_a_finished_run_does_not_train_again(tmp_path):
    train_xy, val_xy = _data(32, n=10)
    checkpoint = tmp_path / "resnet18.pt"
    first = train("resnet18", train_xy, val_xy, TrainConfig(epochs=3, batch_size=4), checkpoint, progress=False)
    state = torch.load(checkpoint, weights_only=True)
    state["epoch"] = 1  # as if stopped after the first epoch: the rest is trained again from there
    state["history"] = state["history"][:1]
    torch.save(state, checkpoint)
    resumed = train("resnet18", train_xy, val_xy, TrainConfig(epochs=3, batch_size=4), checkpoint, progress=False)
    assert [h["epoch"] for h in resumed.history] == [0, 1, 2] and resumed.history[0] == first.history[0]
    before = checkpoint.stat().st_mtime_ns
    again = train("resnet18", train_xy, val_xy, TrainConfig(epochs=3, batch_size=4), checkpoint, progress=False)
    assert checkpoint.stat().st_mtime_ns == before  # nothing trained, nothing written
    assert again.best_epoch == min(range(3), key=lambda e: again.history[e]["val_loss"])  # chosen on validation
    # A checkpoint of other settings is not resumed: it trains from the start.
    other = train("resnet18", train_xy, val_xy, TrainConfig(epochs=2, batch_size=4, seed=1), checkpoint, progress=False)
    assert len(other.history) == 2 and other.history[0] != first.history[0]
