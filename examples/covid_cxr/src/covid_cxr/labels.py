"""The label hierarchy, read from ``labels.json``: findings, their ancestors, and the model's outputs."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path


class UnknownFindingError(ValueError):
    """A finding that is neither a label of the hierarchy nor one of its aliases."""


@dataclass(frozen=True)
class Hierarchy:
    """Labels with their parents; a finding implies every ancestor (COVID-19 -> viral -> pneumonia)."""

    parents: dict[str, str | None]
    aliases: dict[str, str]
    outputs: tuple[str, ...]

    @classmethod
    def load(cls, path: str | None = None) -> Hierarchy:
        """The study's hierarchy (the packaged ``labels.json``), or another file of the same shape."""
        source = Path(path) if path else resources.files(__package__).joinpath("labels.json")
        text = source.read_text(encoding="utf-8")
        data = json.loads(text)
        parents = {name: entry["parent"] for name, entry in data["labels"].items()}
        for name, parent in parents.items():
            if parent is not None and parent not in parents:
                raise ValueError(f"label {name!r} has parent {parent!r}, which is no label of the hierarchy.")
        outputs = tuple(data["outputs"])
        unknown = [o for o in outputs if o not in parents]
        if unknown:
            raise ValueError(f"outputs {unknown} are no labels of the hierarchy.")
        return cls(parents, dict(data.get("aliases", {})), outputs)

    def canonical(self, finding: str) -> str:
        """The label a finding names: itself, its alias, or the last part of a path such as
        ``Pneumonia/Viral/COVID-19`` (the collection's newer spelling)."""
        name = finding.strip()
        if "/" in name:
            name = name.rstrip("/").rsplit("/", 1)[-1].strip()
        name = self.aliases.get(name, name)
        if name not in self.parents:
            raise UnknownFindingError(f"unknown finding {finding!r}; add it (or an alias) to labels.json.")
        return name

    def ancestors(self, label: str) -> list[str]:
        found = []
        parent = self.parents[label]
        while parent is not None:
            found.append(parent)
            parent = self.parents[parent]
        return found

    def closure(self, findings: Iterable[str]) -> frozenset[str]:
        """The findings' labels with all their ancestors."""
        labels: set[str] = set()
        for finding in findings:
            label = self.canonical(finding)
            labels.update([label, *self.ancestors(label)])
        return frozenset(labels)

    def targets(self, labels: Iterable[str], outputs: Sequence[str] | None = None) -> list[int]:
        """0/1 per output label (the model's multilabel targets)."""
        have = set(labels)
        return [int(name in have) for name in (outputs or self.outputs)]
