"""Id → implementation tables, filled by calling each plugin's ``register_*`` hook."""

from __future__ import annotations

import inspect
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import DuplicateMethodError, PluginError, UnknownMethodError, UnknownParameterError

_ID_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class Entry:
    """One registered method or profiler and the plugin that provided it."""

    id: str
    cls: type
    provider: str

    def parameters(self) -> dict[str, inspect.Parameter]:
        """Keyword parameters the class accepts."""
        sig = inspect.signature(self.cls.__init__)
        return {
            name: p
            for name, p in sig.parameters.items()
            if name != "self" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
        }

    def accepts_any_keyword(self) -> bool:
        sig = inspect.signature(self.cls.__init__)
        return any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())

    def create(self, params: Mapping[str, Any] | None = None) -> Any:
        """Instantiate with ``params``, rejecting names the class does not take."""
        params = dict(params or {})
        if not self.accepts_any_keyword():
            valid = self.parameters()
            for name in params:
                if name not in valid:
                    raise UnknownParameterError(self.id, name, valid)
        return self.cls(**params)


class _Table:
    def __init__(self, kind: str, hook_name: str, base_path: str) -> None:
        self.kind = kind
        self.hook_name = hook_name
        self.base_path = base_path
        self._entries: dict[str, Entry] | None = None
        self._lock = threading.Lock()

    def _base(self) -> type:
        module_name, _, attr = self.base_path.rpartition(".")
        import importlib

        return getattr(importlib.import_module(module_name), attr)

    def _build(self) -> dict[str, Entry]:
        from .plugins import get_plugin_manager

        pm = get_plugin_manager()
        base = self._base()
        entries: dict[str, Entry] = {}
        hook = getattr(pm.hook, self.hook_name)
        # Call each implementation on its own so every registration is tied to its plugin;
        # get_hookimpls() lists them in registration order: built-ins first, then third parties.
        for impl in hook.get_hookimpls():
            provider = impl.plugin_name

            def register(cls: type, *, _provider: str = provider) -> None:
                self._add(entries, cls, _provider, base)

            impl.function(register=register)
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
        entries[method_id] = Entry(method_id, cls, provider)

    def entries(self) -> dict[str, Entry]:
        if self._entries is None:
            with self._lock:
                if self._entries is None:
                    self._entries = self._build()
        return self._entries

    def get(self, method_id: str) -> Entry:
        entries = self.entries()
        if not isinstance(method_id, str) or method_id not in entries:
            raise UnknownMethodError(str(method_id), entries, kind=self.kind)
        return entries[method_id]

    def clear(self) -> None:
        with self._lock:
            self._entries = None


attributors = _Table("method", "register_attributors", "xai_bench.attributors.base.Attributor")
profilers = _Table("profiler", "register_profilers", "xai_bench.profilers.base.GlobalProfiler")


def clear_caches() -> None:
    attributors.clear()
    profilers.clear()
