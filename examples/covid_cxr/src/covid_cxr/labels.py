"""The label hierarchy, read from ``labels.json``: findings, their ancestors, and the model's outputs."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
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
    #: Named choices of outputs (``labels.json``'s ``output_sets``), for :meth:`with_outputs`.
    output_sets: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: A user's own labels, each naming one or more labels of the hierarchy (:meth:`with_labels`).
    user: dict[str, tuple[str, ...]] = field(default_factory=dict)

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
        hierarchy = cls(parents, dict(data.get("aliases", {})), ())
        sets = {name: hierarchy._outputs(labels, f"output set {name!r}")
                for name, labels in data.get("output_sets", {}).items()}  # fmt: skip
        return replace(hierarchy, outputs=hierarchy._outputs(data["outputs"], "outputs"), output_sets=sets)

    def with_outputs(self, outputs: str | Sequence[str]) -> Hierarchy:
        """This hierarchy with other model outputs: the name of an output set, or labels of the hierarchy."""
        if isinstance(outputs, str):
            if outputs not in self.output_sets:
                raise ValueError(
                    f"no output set {outputs!r}; the sets are {', '.join(self.output_sets)}, or name labels "
                    f"of the hierarchy separated by commas."
                )
            return replace(self, outputs=self.output_sets[outputs])
        return replace(self, outputs=self._outputs(outputs, "outputs"))

    def _outputs(self, labels: Sequence[str], what: str) -> tuple[str, ...]:
        labels = tuple(labels)
        unknown = [o for o in labels if o not in self.parents]
        if unknown:
            raise ValueError(
                f"{what}: {unknown} are no labels of the hierarchy; the labels are {', '.join(self.parents)}."
            )
        if not labels or len(set(labels)) != len(labels):
            raise ValueError(f"{what}: expected distinct labels, at least one, got {list(labels)}.")
        return labels

    def canonical(self, finding: str) -> str:
        """The label a finding names: itself, its alias, or the last part of a path such as
        ``Pneumonia/Viral/COVID-19`` (the collection's newer spelling)."""
        name = finding.strip()
        if "/" in name:
            name = name.rstrip("/").rsplit("/", 1)[-1].strip()
        name = self.aliases.get(name, name)
        if name not in self.parents:
            raise UnknownFindingError(
                f"unknown finding {finding!r}; add it (or an alias) to labels.json, or map it onto a label with a "
                f"label map (covid-cxr --labels FILE); the labels are {self.names()}."
            )
        return name

    def names(self) -> str:
        """The labels and aliases, as one line for messages."""
        return f"{', '.join(self.parents)} (aliases: {', '.join(self.aliases)})"

    def labels_of(self, finding: str) -> tuple[str, ...]:
        """The labels of the hierarchy a finding names: the user's mapping of it, or :meth:`canonical`."""
        mapped = self.user.get(finding.strip())
        return mapped if mapped is not None else (self.canonical(finding),)

    def unknown(self, findings: Iterable[str]) -> list[str]:
        """The findings that name no label, in order."""
        found = []
        for finding in findings:
            try:
                self.labels_of(finding)
            except UnknownFindingError:
                found.append(finding.strip())
        return found

    def with_labels(self, mapping: Mapping[str, str | Sequence[str]], source: str = "the label map") -> Hierarchy:
        """This hierarchy that also reads a user's labels: ``{"their label": "study label" or [labels, ...]}``,
        each study label by its name or an alias. A target that names no label is a ``ValueError``."""
        if not isinstance(mapping, Mapping):
            raise ValueError(f"{source}: expected a JSON object of your label -> the study's label, got "
                             f"{type(mapping).__name__}.")  # fmt: skip
        user = {}
        for theirs, ours in mapping.items():
            targets = [ours] if isinstance(ours, str) else ours
            if not isinstance(targets, list) or not targets or not all(isinstance(t, str) for t in targets):
                raise ValueError(f"{source}: {theirs!r} must map to a label's name or a list of them, got {ours!r}.")
            unknown = self.unknown(targets)
            if unknown:
                raise ValueError(f"{source}: {theirs!r} maps to {unknown[0]!r}, which is no label; the labels are "
                                 f"{self.names()}.")  # fmt: skip
            user[str(theirs).strip()] = tuple(label for t in targets for label in self.labels_of(t))
        return replace(self, user={**self.user, **user})

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
            for label in self.labels_of(finding):
                labels.update([label, *self.ancestors(label)])
        return frozenset(labels)

    def targets(self, labels: Iterable[str], outputs: Sequence[str] | None = None) -> list[int]:
        """0/1 per output label (the model's multilabel targets)."""
        have = set(labels)
        return [int(name in have) for name in (outputs or self.outputs)]
