"""The study's five CNNs train with the paper's recipe, resume from their checkpoints, and choose on validation."""

from __future__ import annotations

import itertools
import math

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


def test_without_validation_images_the_last_epoch_is_kept(tmp_path):
    # The authors' split files have an empty validation part: choosing on it must not keep the first epoch.
    train_xy, _ = _data(32, n=8)
    empty = (train_xy[0][:0], train_xy[1][:0])
    trained = train("resnet18", train_xy, empty, TrainConfig(epochs=2, batch_size=4), tmp_path / "c.pt", progress=False)
    assert trained.best_epoch == 1 and all(math.isnan(h["val_loss"]) for h in trained.history)
    last = torch.load(tmp_path / "c.pt", weights_only=True)["model"]
    assert all(torch.equal(v, last[k]) for k, v in trained.model.state_dict().items())


def test_the_cosine_schedule_warms_up_over_one_epoch_and_decays_to_zero_by_the_last_step():
    from covid_cxr.train import learning_rate_schedule

    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam([parameter], lr=1e-3)
    schedule = learning_rate_schedule(optimizer, TrainConfig(epochs=4, lr=1e-3, schedule="cosine"), 5)
    rates = []
    for _ in range(20):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert rates[:5] == pytest.approx([1e-3 * k / 6 for k in range(1, 6)])  # linear warm-up, never 0
    assert max(rates) == pytest.approx(1e-3) and rates[5] == pytest.approx(1e-3)
    assert all(a >= b for a, b in itertools.pairwise(rates[5:]))  # then only down
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)  # zero after the last step
    constant = learning_rate_schedule(torch.optim.Adam([parameter], lr=1e-3), TrainConfig(epochs=4), 5)
    assert constant.get_last_lr() == [1e-3]  # the paper's fixed rate is the default
    with pytest.raises(ValueError, match="unknown schedule 'step'; choose one of constant, cosine"):
        learning_rate_schedule(optimizer, TrainConfig(schedule="step"), 5)


def test_a_resumed_cosine_run_equals_an_uninterrupted_one_and_the_same_seed_repeats_it(tmp_path, monkeypatch):
    train_xy, val_xy = _data(32, n=10)
    config = TrainConfig(epochs=3, batch_size=4, schedule="cosine")
    whole = train("resnet18", train_xy, val_xy, config, tmp_path / "whole.pt", progress=False)
    again = train("resnet18", train_xy, val_xy, config, tmp_path / "again.pt", progress=False)
    assert again.history == whole.history  # the same seed, the same numbers
    import covid_cxr.train as training

    saved = training._save

    def save_then_stop(path, state):  # the process dies right after the first epoch's checkpoint
        saved(path, state)
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "_save", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        train("resnet18", train_xy, val_xy, config, tmp_path / "stopped.pt", progress=False)
    monkeypatch.setattr(training, "_save", saved)
    resumed = train("resnet18", train_xy, val_xy, config, tmp_path / "stopped.pt", progress=False)
    assert resumed.history == whole.history  # the rate schedule resumed where it stopped


def test_timings_keep_wall_and_cpu_seconds_and_read_the_older_wall_only_file(tmp_path):
    import json

    from covid_cxr.study import Timings

    path = tmp_path / "timings.json"
    path.write_text(json.dumps({"data": 2.0}))  # the format before CPU time was kept
    timings = Timings(path)
    timings.measure("train", lambda: sum(i * i for i in range(200_000)))
    saved = json.loads(path.read_text())
    assert saved["wall"]["data"] == 2.0 and saved["wall"]["train"] > 0 and saved["cpu"]["train"] > 0
    lines = Timings(path).lines()
    assert lines[0] == "- data: 2 s" and "CPU s)" in lines[1] and lines[-1].startswith("- total: ")
