"""Training with the paper's recipe, resumable: BCE-with-logits, Adam (lr 1e-3, weight decay 1e-4), seeds,
mixed precision on CUDA, the checkpoint chosen on validation (never on test)."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from .models import Normalized, build, training_loss


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0
    pretrained: bool = False
    device: str = "cpu"
    #: "constant": the paper's fixed rate; "cosine": one epoch of linear warm-up, then cosine decay to zero
    #: by the last step, for runs too short for batch norm's running statistics to follow a fixed rate.
    schedule: str = "constant"


@dataclass
class Trained:
    model: nn.Module  # the checkpoint chosen on validation, in eval mode
    best_epoch: int
    history: list[dict[str, float]] = field(default_factory=list)


def data_checksum(*tensors: torch.Tensor) -> str:
    """Shapes and a CRC-32 of the values: a checkpoint is only resumed on the data it was trained on."""
    crc = 0
    for t in tensors:
        crc = zlib.crc32(t.detach().contiguous().cpu().numpy().tobytes(), crc)
    return f"{[tuple(t.shape) for t in tensors]}:{crc:08x}"


def make_model(name: str, num_labels: int, config: TrainConfig, image_size: int | None = None) -> nn.Module:
    torch.manual_seed(config.seed)
    model = build(name, num_labels, pretrained=config.pretrained, image_size=image_size)
    return Normalized(model) if config.pretrained else model


def train(
    name: str,
    train_xy: tuple[torch.Tensor, torch.Tensor],
    val_xy: tuple[torch.Tensor, torch.Tensor],
    config: TrainConfig,
    checkpoint: str | os.PathLike[str],
    *,
    progress: bool = True,
) -> Trained:
    """Train ``name`` on ``train_xy`` (images in [0, 1], 0/1 targets), keep the epoch with the lowest
    validation loss (the last epoch where ``val_xy`` holds no image), and save everything to ``checkpoint``
    after every epoch: a run stopped at any point resumes there, and a finished one loads without training
    again."""
    x, y = train_xy
    path = Path(checkpoint)
    identity = {"name": name, "config": dataclasses.asdict(config), "data": data_checksum(x, y, *val_xy)}
    model = make_model(name, y.shape[1], config, image_size=x.shape[-1]).to(config.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = sum(1 for first in range(0, len(x), config.batch_size) if len(x) - first >= 2 or len(x) == 1)
    # The schedule first: it sets the optimiser's rate when built, and the resumed optimiser state then
    # brings back the rate of the step where training stopped.
    scheduler = learning_rate_schedule(optimizer, config, steps_per_epoch)
    state = _load(path, identity)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if state.get("scheduler") is not None:
            scheduler.load_state_dict(state["scheduler"])
        if state.get("rng") is not None:  # dropout draws on where they stopped
            torch.set_rng_state(state["rng"])
    else:
        state = {**identity, "epoch": 0, "best_loss": math.inf, "best_epoch": -1, "best": None, "history": []}
    scaler = torch.amp.GradScaler("cuda", enabled=config.device.startswith("cuda"))
    bar = tqdm(total=config.epochs, initial=state["epoch"], desc=f"train {name}", unit="epoch", disable=not progress)
    while state["epoch"] < config.epochs:
        epoch = state["epoch"]
        model.train()
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(config.seed * 1000 + epoch))
        total = 0.0
        for first in range(0, len(x), config.batch_size):
            rows = order[first : first + config.batch_size]
            if len(rows) < 2 and len(x) > 1:
                continue  # batch norm cannot train on a batch of one
            images, targets = x[rows].to(config.device), y[rows].to(config.device).float()
            with torch.autocast("cuda", enabled=config.device.startswith("cuda")):
                loss = training_loss(model, images, targets)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            total += float(loss.detach()) * len(rows)
        val_loss = validation_loss(model, *val_xy, config)
        state["history"].append({"epoch": epoch, "train_loss": total / len(x), "val_loss": val_loss})
        # Without validation images (the authors' split files have none) the last epoch is kept: choosing on
        # a loss of nothing would keep the first.
        if val_loss < state["best_loss"] or math.isnan(val_loss):
            state.update(best_loss=val_loss, best_epoch=epoch, best=copy.deepcopy(model.state_dict()))
        state.update(
            epoch=epoch + 1,
            model=model.state_dict(),
            optimizer=optimizer.state_dict(),
            scheduler=scheduler.state_dict(),
            rng=torch.get_rng_state(),
        )
        _save(path, state)
        bar.update(1)
        bar.set_postfix(val_loss=f"{val_loss:.3f}")
    bar.close()
    if state["best"] is not None:
        model.load_state_dict(state["best"])
    return Trained(model.eval(), state["best_epoch"], state["history"])


SCHEDULES = ("constant", "cosine")


def learning_rate_schedule(optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int):
    """The rate's factor per optimiser step: constant, or a linear warm-up over the first epoch followed by a
    cosine decay that reaches zero at the last step."""
    if config.schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {config.schedule!r}; choose one of {', '.join(SCHEDULES)}.")
    total = max(1, config.epochs * steps_per_epoch)
    warmup = min(steps_per_epoch, total - 1) if config.epochs > 1 else 0

    def factor(step: int) -> float:
        if config.schedule == "constant":
            return 1.0
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@torch.no_grad()
def validation_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, config: TrainConfig) -> float:
    """The mean BCE-with-logits per image and output; NaN without images."""
    if not len(x):
        return math.nan
    model.eval()
    criterion = nn.BCEWithLogitsLoss(reduction="sum")
    total = 0.0
    for first in range(0, len(x), config.batch_size):
        images = x[first : first + config.batch_size].to(config.device)
        total += float(criterion(model(images), y[first : first + config.batch_size].to(config.device).float()))
    return total / (len(x) * y.shape[1])


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, *, batch_size: int = 32, device: str = "cpu") -> torch.Tensor:
    """Sigmoid probabilities (N, L) of a trained model."""
    model.eval()
    out = [torch.sigmoid(model(x[i : i + batch_size].to(device))).cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(out) if out else torch.zeros((0, 0))


def _load(path: Path, identity: dict) -> dict | None:
    if not path.exists():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    same = all(json.dumps(state.get(k), sort_keys=True) == json.dumps(v, sort_keys=True) for k, v in identity.items())
    return state if same else None


def _save(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    torch.save(state, partial)
    os.replace(partial, path)  # a crash leaves the previous epoch's checkpoint, never half of one
