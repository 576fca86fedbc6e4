"""Id → implementation tables, filled by calling each plugin's ``register_*`` hook."""

from __future__ import annotations

import inspect
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..attributors.base import Attributor
from ..attributors.noise_tunnel import NoiseTunnel, check_smoothing
from ..core.errors import (
    DuplicateMethodError,
    InvalidParameterError,
    PluginError,
    UnknownMethodError,
    UnknownParameterError,
    XaiBenchError,
    warn,
)
from ..metrics.base import Metric
from ..profilers.base import GlobalProfiler
from .manager import generation, get_plugin_manager, plugin_info

_ID_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class Entry:
    """One registered method or profiler and the plugin that provided it."""

    id: str
    cls: type
    provider: str
    #: takes ``smooth=`` (the noise tunnel), which xai_bench adds to every local method
    smoothable: bool = False

    def parameters(self) -> dict[str, inspect.Parameter]:
        """Keyword parameters the class accepts (and ``smooth``, for local methods)."""
        sig = inspect.signature(self.cls.__init__)
        found = {
            name: p
            for name, p in sig.parameters.items()
            if name != "self" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
        }
        if self._adds_smooth():
            found["smooth"] = inspect.Parameter("smooth", inspect.Parameter.KEYWORD_ONLY, default=None)
        return found

    def _adds_smooth(self) -> bool:
        """Whether xai_bench provides ``smooth=`` (a method with a ``smooth`` of its own keeps it)."""
        return self.smoothable and "smooth" not in inspect.signature(self.cls.__init__).parameters

    def describe(self, flags: Sequence[str]) -> dict[str, Any]:
        """The listing of this entry: its provider, the class's ``flags``, its parameters and its summary
        (the docstring's first paragraph)."""
        doc = (self.cls.__doc__ or "").strip()
        return {
            "provider": self.provider,
            **{flag: getattr(self.cls, flag) for flag in flags},
            "parameters": {
                name: (None if p.default is p.empty else p.default) for name, p in self.parameters().items()
            },
            "summary": " ".join(line.strip() for line in doc.split("\n\n")[0].splitlines()),
        }

    def accepts_any_keyword(self) -> bool:
        sig = inspect.signature(self.cls.__init__)
        return any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())

    def create(self, params: Mapping[str, Any] | None = None, **context: Any) -> Any:
        """Instantiate with the user's ``params`` and xai_bench's ``context`` (a profiler's layers and groups).

        Rejects parameter names the class does not take, and user parameters that would
        override the context.
        """
        if params is not None and not isinstance(params, Mapping):
            raise InvalidParameterError(
                f"parameters of {self.id!r} must be a dict of keyword arguments, got {type(params).__name__}."
            )
        params = dict(params or {})
        smoothing = check_smoothing(self.id, params.pop("smooth", None)) if self._adds_smooth() else None
        for name in params:
            if name in context:
                raise InvalidParameterError(
                    f"{self.id!r}: {name!r} is not a parameter of the method; it comes from the call "
                    f"(e.g. profile(..., {name}=...))."
                )
        valid = {name: p for name, p in self.parameters().items() if name not in context and name != "smooth"}
        if not self.accepts_any_keyword():
            for name in params:
                if name not in valid:
                    raise UnknownParameterError(self.id, name, self.parameters())
        missing = [name for name, p in valid.items() if p.default is p.empty and name not in params]
        if missing:
            raise InvalidParameterError(
                f"{self.id!r} needs the parameter{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))}: "
                f"pass it as methods={{{self.id!r}: {{{missing[0]!r}: ...}}}} (on the command line, "
                f'--methods \'{{"{self.id}": {{"{missing[0]}": ...}}}}\').'
            )
        instance = self.cls(**params, **context)
        return instance if smoothing is None else NoiseTunnel(instance, smoothing)


class _Table:
    def __init__(self, kind: str, hook_name: str, base: type) -> None:
        self.kind = kind
        self.hook_name = hook_name
        self.base = base
        self._entries: dict[str, Entry] | None = None
        self._failed: dict[str, str] = {}  # plugin -> why its hook failed, in the current table
        self._generation: object = None
        self._lock = threading.Lock()

    def _build(self) -> dict[str, Entry]:
        pm = get_plugin_manager()
        base = self.base
        entries: dict[str, Entry] = {}
        failed: dict[str, str] = {}
        hook = getattr(pm.hook, self.hook_name)
        # Call each implementation on its own so every registration is tied to its plugin;
        # get_hookimpls() lists them in registration order: built-ins first, then third parties.
        for impl in hook.get_hookimpls():
            provider = impl.plugin_name
            added: list[str] = []

            def register(cls: type, *, _provider: str = provider, _added: list[str] = added) -> None:
                self._add(entries, cls, _provider, base)
                _added.append(cls.id)

            try:
                impl.function(register=register)
            except XaiBenchError:
                raise  # an invalid registration: refused by name above
            except Exception as exc:
                # One broken plugin must not take the others (and the built-ins) down with it.
                why = f"{type(exc).__name__}: {exc}"
                if plugin_info(provider).builtin:
                    raise PluginError(f"Built-in plugin {provider!r} failed in {self.hook_name}: {why}") from exc
                for method_id in added:
                    del entries[method_id]
                failed[provider] = why
                warn(
                    f"Plugin {provider!r} failed in {self.hook_name} ({why}); its {self.kind}s are not available, "
                    f"the others are. Fix or uninstall it, or exclude it with XAI_BENCH_LOAD_PLUGINS."
                )
        self._failed = failed
        return entries

    def _add(self, entries: dict[str, Entry], cls: Any, provider: str, base: type) -> None:
        if not (isinstance(cls, type) and issubclass(cls, base)):
            raise PluginError(
                f"Plugin {provider!r} registered {cls!r} as a {self.kind}; "
                f"expected a subclass of {base.__module__}.{base.__qualname__}."
            )
        method_id = getattr(cls, "id", None)
        if not isinstance(method_id, str) or not _ID_PATTERN.match(method_id):
            raise PluginError(
                f"Plugin {provider!r} registered {cls.__qualname__} with id {method_id!r}; "
                "ids are lower-case snake_case strings such as 'integrated_gradients'."
            )
        if method_id in entries:
            first = entries[method_id]
            raise DuplicateMethodError(
                f"{self.kind.capitalize()} id {method_id!r} is registered twice: by plugin "
                f"{first.provider!r} ({first.cls.__module__}.{first.cls.__qualname__}) and by plugin "
                f"{provider!r} ({cls.__module__}.{cls.__qualname__}). Uninstall one of them or "
                "limit loading with XAI_BENCH_LOAD_PLUGINS."
            )
        entries[method_id] = Entry(method_id, cls, provider, smoothable=base is Attributor)

    def entries(self) -> dict[str, Entry]:
        """Every registered id and its entry, built on first use and after a plugin reset."""
        if self._entries is None or self._generation != generation():
            with self._lock:
                if self._entries is None or self._generation != generation():
                    current = generation()
                    self._entries = self._build()
                    self._generation = current
        return self._entries

    def entry_of(self, instance: Any) -> Entry:
        """The entry whose class made ``instance`` (a smoothed method: its inner method's)."""
        inner = instance._method if isinstance(instance, NoiseTunnel) else instance
        for entry in self.entries().values():
            if type(inner) is entry.cls:
                return entry
        raise UnknownMethodError(
            f"{type(inner).__module__}.{type(inner).__qualname__}", (), kind=self.kind,
            note=f" Its class is not registered as a {self.kind}: register it with a plugin's hook first.",
        )  # fmt: skip

    def get(self, method_id: str) -> Entry:
        entries = self.entries()
        if not isinstance(method_id, str) or method_id not in entries:
            broken = "".join(
                f" Plugin {name!r} failed to register its {self.kind}s ({why})." for name, why in self._failed.items()
            )
            raise UnknownMethodError(str(method_id), entries, kind=self.kind, note=broken)
        return entries[method_id]


attributors = _Table("method", "register_attributors", Attributor)
profilers = _Table("profiler", "register_profilers", GlobalProfiler)
metrics = _Table("metric", "register_metrics", Metric)


SelectionArg = str | Sequence[str] | Mapping[str, Mapping[str, Any] | None]


def resolve(table: _Table, selection: SelectionArg, **context: Any) -> list[tuple[Entry, Any]]:
    """Turn an id, an instance, a list of ids and instances, or ``{id: params}`` into (entry, instance)
    pairs, checking every part.

    An instance (``IntegratedGradients(n_steps=32)``) is used as it is, if its class is registered.
    ``context`` goes to every constructor (e.g. a profiler's layers and groups): a table that needs
    one takes ids only.
    """
    what = f"{table.kind}s"
    if isinstance(selection, (str, table.base)):
        selection = [selection]
    if isinstance(selection, Mapping):
        pairs = list(selection.items())
    elif isinstance(selection, Sequence):
        pairs = [(item, None) for item in selection]
    else:
        raise InvalidParameterError(
            f"{what} must be an id, a list of ids or a dict {{id: params}}, got {type(selection).__name__}."
        )
    if not pairs:
        listing = "xai_bench.list_methods()" if table is attributors else "xai-bench plugins"
        raise InvalidParameterError(f"{what} is empty; name at least one (see {listing}).")
    seen: set[str] = set()
    resolved = []
    for item, params in pairs:
        if isinstance(item, table.base):
            if params:
                raise InvalidParameterError(
                    f"{type(item).__name__} is given as an instance and with parameters {dict(params)!r}: give the "
                    f"parameters when you make it ({type(item).__name__}(...)), or name it by its id in {{id: params}}."
                )
            if context:
                raise InvalidParameterError(
                    f"{table.kind}s are named by id here ({type(item).__name__} instance given): this call gives "
                    f"them {', '.join(sorted(context))} itself."
                )
            entry, instance = table.entry_of(item), item
        else:
            entry = table.get(item)
            instance = None
        if entry.id in seen:
            raise InvalidParameterError(f"{table.kind} {entry.id!r} is listed twice.")
        seen.add(entry.id)
        resolved.append((entry, instance if instance is not None else entry.create(params, **context)))
    return resolved
