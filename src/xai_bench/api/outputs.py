"""Which of the model's outputs the maps explain: its logits, or their sigmoid or softmax.

A model trained on logits is often explained through a probability head (``nn.Sequential(model,
nn.Sigmoid())``). ``output=`` does that without changing the user's model and records it: the
head is its own module, so every method, DeepLIFT's rescale and softmax rules included, sees it
as part of the model, and the stored ``score`` is that output's value for the target.
"""

from __future__ import annotations

from torch import nn

from ..core.errors import InvalidParameterError, InvalidTargetError

#: the outputs a map can explain, as ``explain(output=...)`` and the store's ``output`` attribute name them
OUTPUTS = ("logit", "sigmoid", "softmax")

_DESCRIPTIONS = {
    "logit": "model logit for the target",
    "sigmoid": "sigmoid of the model's logit for the target (the explained output)",
    "softmax": "softmax over the model's logits, for the target (the explained output)",
}


def check_output(output: object, task: str) -> str:
    """``output`` if it names one of :data:`OUTPUTS` and suits ``task``, else raise."""
    if not isinstance(output, str) or output not in OUTPUTS:
        raise InvalidParameterError(
            f"output must be one of {', '.join(map(repr, OUTPUTS))} (what the maps explain), got {output!r}."
        )
    if output == "softmax" and task == "multilabel":
        raise InvalidTargetError(
            "output='softmax' makes the labels of a multilabel model compete for one unit of probability; "
            "explain output='sigmoid' (each label's own probability) or the logits."
        )
    return output


def score_description(output: str) -> str:
    """What a store's ``score`` holds when its maps explain ``output``."""
    return _DESCRIPTIONS[output]


def stored_output(attrs: dict) -> str:
    """The output a store's maps explain: stores written before ``output=`` existed explain logits."""
    return str(attrs.get("output", "logit"))


class ScoreHead(nn.Module):
    """``model`` followed by the probability ``output`` names; the user's model is held, never changed."""

    def __init__(self, model: nn.Module, output: str) -> None:
        super().__init__()
        self.model = model
        self.output = output
        self.head = nn.Sigmoid() if output == "sigmoid" else nn.Softmax(dim=1)
        # Its own flags only: ``.eval()`` would reach the user's model, whose modes the caller keeps.
        self.training = self.head.training = False

    def forward(self, x):  # one named input: torch.fx cannot trace through *args
        return self.head(self.model(x))


def scored(model: nn.Module, output: str) -> nn.Module:
    """The module whose outputs the maps explain: ``model`` itself for logits, else ``model`` with its head.

    A :class:`ScoreHead` for the same output is used as it is (``run`` makes one per call, so that
    the caches keyed on the module serve all its blocks).
    """
    if output == "logit" or (isinstance(model, ScoreHead) and model.output == output):
        return model
    return ScoreHead(model, output)


def user_model(model: nn.Module) -> nn.Module:
    """The user's model inside a :class:`ScoreHead`, or ``model`` itself."""
    return model.model if isinstance(model, ScoreHead) else model
