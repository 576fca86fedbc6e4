"""The plugin manager: hook specs, then built-ins, then the ``xai_bench`` entry points."""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import threading
from dataclasses import dataclass

import pluggy

from ..core import hookspecs
from ..core.errors import PluginError
from ..core.provenance import package_version

ENTRY_POINT_GROUP = "xai_bench"
LOAD_PLUGINS_ENV = "XAI_BENCH_LOAD_PLUGINS"

# Built-ins go through exactly the hooks a third-party plugin uses.
DEFAULT_PLUGINS: tuple[str, ...] = (
    "xai_bench.attributors.builtin",
    "xai_bench.profilers.builtin",
    "xai_bench.metrics.builtin",
)


@dataclass(frozen=True)
class PluginInfo:
    """Where a registered plugin came from."""

    name: str
    distribution: str | None
    version: str | None
    builtin: bool


_lock = threading.Lock()
_pm: pluggy.PluginManager | None = None
_infos: dict[str, PluginInfo] = {}
# Bumped on every reset, so tables built from an older manager know to rebuild.
_generation = 0


def _allowed_names() -> set[str] | None:
    """Names from ``XAI_BENCH_LOAD_PLUGINS``: ``None`` when unset (load all), empty set loads none.

    A name is an entry-point name, a distribution name, or ``distribution:entry-point``.
    """
    raw = os.environ.get(LOAD_PLUGINS_ENV)
    if raw is None:
        return None
    return {name.strip() for name in raw.split(",") if name.strip()}


def _entry_points() -> dict[str, list[tuple[str, str | None, importlib.metadata.EntryPoint]]]:
    """Allowed entry points of the group by name: (distribution, version, entry point) for each provider."""
    allowed = _allowed_names()
    found: dict[str, list[tuple[str, str | None, importlib.metadata.EntryPoint]]] = {}
    for dist in importlib.metadata.distributions():
        dist_name = dist.metadata["name"]
        for ep in dist.entry_points:
            if ep.group != ENTRY_POINT_GROUP:
                continue
            if allowed is not None and not {ep.name, dist_name, f"{dist_name}:{ep.name}"} & allowed:
                continue
            providers = found.setdefault(ep.name, [])
            # The same distribution can be seen twice (two paths on sys.path): one provider.
            if not any(d == dist_name and e.value == ep.value for d, _, e in providers):
                providers.append((dist_name, dist.version, ep))
    return found


def _load_entry_points(pm: pluggy.PluginManager, infos: dict[str, PluginInfo]) -> None:
    for name, providers in _entry_points().items():
        if len(providers) > 1:
            listed = " and ".join(f"{d} {v} ({e.value})" for d, v, e in providers)
            raise PluginError(
                f"Plugin name {name!r} is declared by {listed}; loading either would be a guess. Uninstall one, "
                f"or choose with {LOAD_PLUGINS_ENV}='<distribution>:{name}'."
            )
        dist_name, version, ep = providers[0]
        try:
            plugin = ep.load()
        except Exception as exc:
            raise PluginError(
                f"Plugin {ep.name!r} from distribution {dist_name!r} failed to load: {exc}. "
                f"Fix or uninstall it, or exclude it with {LOAD_PLUGINS_ENV}."
            ) from exc
        if pm.is_registered(plugin):
            continue
        pm.register(plugin, name=ep.name)
        infos[ep.name] = PluginInfo(ep.name, dist_name, version, builtin=False)


def get_plugin_manager() -> pluggy.PluginManager:
    """Return the process-wide plugin manager, building it on first use."""
    global _pm
    if _pm is not None:
        return _pm
    with _lock:
        if _pm is None:
            pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
            pm.add_hookspecs(hookspecs)
            infos: dict[str, PluginInfo] = {}
            version = package_version("xai-bench")
            for module_name in DEFAULT_PLUGINS:
                pm.register(importlib.import_module(module_name), name=module_name)
                infos[module_name] = PluginInfo(module_name, "xai-bench", version, builtin=True)
            _load_entry_points(pm, infos)
            _infos.clear()
            _infos.update(infos)
            _pm = pm
    return _pm


def plugin_info(name: str) -> PluginInfo:
    """Return where the plugin registered under ``name`` came from."""
    get_plugin_manager()
    return _infos.get(name, PluginInfo(name, None, None, builtin=False))


def list_plugins() -> list[PluginInfo]:
    """Return every registered plugin, built-ins first."""
    pm = get_plugin_manager()
    return [plugin_info(name) for name, _ in pm.list_name_plugin()]


def generation() -> tuple[int, tuple[tuple[str, int], ...]]:
    """What the registries were built from: the resets so far and the plugins registered now (one
    registered on the manager directly, after a first call, counts too); they rebuild when it changes."""
    pm = _pm
    plugins = tuple((name, id(plugin)) for name, plugin in pm.list_name_plugin()) if pm is not None else ()
    return _generation, plugins


def reset_plugin_manager() -> None:
    """Forget the plugin manager so the next use reloads plugins, and the registries with it (tests, notebooks)."""
    global _pm, _generation
    with _lock:
        _pm = None
        _infos.clear()
        _generation += 1
