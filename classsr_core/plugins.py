"""The plugin manager: built-ins and third-party plugins load through one entry-point group.

The built-in plugins are declared in this project's pyproject under
``[project.entry-points.classsr]`` exactly as a third-party package declares its own, so the
plugin API is exercised by the project's own code. ``CLASSSR_DISABLE_PLUGINS=a,b`` blocks
plugins by entry-point name.
"""

from __future__ import annotations

import importlib
import os
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy

from classsr_core import hookspecs
from classsr_core.errors import PluginError

KINDS = ("backbones", "branch_generators", "tasks", "classifiers")
ENTRY_POINT_GROUP = "classsr"
THIS_DIST = "classsr"


@dataclass(frozen=True)
class Entry:
    """One registered thing: its name, factory, the plugin that gave it, and metadata."""

    kind: str
    name: str
    factory: Callable[..., Any]
    plugin: str
    metadata: dict = field(default_factory=dict)


@dataclass
class PluginInfo:
    name: str
    dist: str | None
    version: str | None
    registered: dict[str, list[str]] = field(default_factory=lambda: {k: [] for k in KINDS})
    error: str | None = None


class Registry:
    """Everything the plugins registered, by kind and name."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.plugins: dict[str, PluginInfo] = {}
        self.entries: dict[str, dict[str, Entry]] = {k: {} for k in KINDS}

    # -- loading -----------------------------------------------------------------------
    def load_entry_points(self, disabled: set[str] | None = None) -> None:
        disabled = set(disabled or ())
        eps = list(metadata.entry_points(group=ENTRY_POINT_GROUP))
        # Built-ins first, so a third-party name clash names the newcomer second.
        eps.sort(key=lambda ep: (_dist_name(ep) != THIS_DIST, ep.name))
        for ep in eps:
            if ep.name in disabled or ep.name in self.plugins:
                continue
            dist = _dist_name(ep)
            version = ep.dist.version if ep.dist is not None else None
            try:
                module = importlib.import_module(ep.value.split(":")[0])
            except Exception as exc:  # a broken plugin must not take the others down
                err = f"{type(exc).__name__}: {exc}"
                self.plugins[ep.name] = PluginInfo(ep.name, dist, version, error=err)
                warnings.warn(
                    f"classsr plugin {ep.name!r} (from {dist}) failed to import and was "
                    f"skipped: {err}. Fix or uninstall it, or block it with "
                    f"CLASSSR_DISABLE_PLUGINS={ep.name}.",
                    RuntimeWarning,
                    stacklevel=2,
                )
                continue
            self.add_plugin(module, ep.name, dist=dist, version=version)

    def add_plugin(
        self, module: Any, name: str, dist: str | None = None, version: str | None = None
    ):
        """Register a module or object holding ``@hookimpl`` functions (tests use this too)."""
        self.pm.register(module, name=name)
        info = PluginInfo(name, dist, version)
        self.plugins[name] = info
        for kind in KINDS:
            caller = getattr(self.pm.hook, f"classsr_register_{kind}")
            for impl in caller.get_hookimpls():
                if impl.plugin_name == name:
                    impl.function(register=self._register_fn(kind, name))

    def _register_fn(self, kind: str, plugin: str):
        def register(name: str, factory: Callable[..., Any], **meta: Any) -> None:
            if not isinstance(name, str) or not name:
                raise PluginError(f"plugin {plugin!r} registered a {kind[:-1]} with no name")
            old = self.entries[kind].get(name)
            if old is not None:
                raise PluginError(
                    f"two plugins register the {kind[:-1]} {name!r}: {old.plugin!r} and "
                    f"{plugin!r}. Block one with CLASSSR_DISABLE_PLUGINS={plugin} or rename it."
                )
            self.entries[kind][name] = Entry(kind, name, factory, plugin, dict(meta))
            self.plugins[plugin].registered[kind].append(name)

        return register

    # -- lookup ------------------------------------------------------------------------
    def get(self, kind: str, name: str) -> Entry:
        if kind not in KINDS:
            raise PluginError(f"unknown plugin kind {kind!r}; kinds are {', '.join(KINDS)}")
        entries = self.entries[kind]
        if name in entries:
            return entries[name]
        for prefix, entry in entries.items():  # prefix families such as "basicsr:EDSR"
            if prefix.endswith(":") and name.startswith(prefix):
                return entry
        known = ", ".join(sorted(entries)) or "none"
        broken = [p.name for p in self.plugins.values() if p.error]
        hint = f" Plugins that failed to import: {', '.join(broken)}." if broken else ""
        raise PluginError(
            f"unknown {kind[:-1]} {name!r}. Registered: {known}.{hint} "
            "Install the plugin that provides it, or check `classsr plugins`."
        )

    def names(self, kind: str) -> list[str]:
        return sorted(self.entries[kind])

    def describe(self) -> list[dict]:
        """The JSON shape of ``classsr plugins --json``."""
        out = []
        for info in self.plugins.values():
            row = {"name": info.name, "dist": info.dist, "version": info.version}
            row.update({k: list(v) for k, v in info.registered.items()})
            if info.error:
                row["error"] = info.error
            out.append(row)
        return out


def _dist_name(ep: metadata.EntryPoint) -> str | None:
    return ep.dist.metadata["Name"] if ep.dist is not None else None


def disabled_from_env() -> set[str]:
    raw = os.environ.get("CLASSSR_DISABLE_PLUGINS", "")
    return {p.strip() for p in raw.split(",") if p.strip()}


_registry: Registry | None = None
_lock = threading.Lock()


def get_registry() -> Registry:
    """The process-wide registry, loaded on first use."""
    global _registry
    with _lock:
        if _registry is None:
            reg = Registry()
            reg.load_entry_points(disabled_from_env())
            _registry = reg
        return _registry


def reset_registry() -> None:
    """Forget the loaded plugins (after installing or blocking one, and in tests)."""
    global _registry
    with _lock:
        _registry = None


def lookup(kind: str, name: str) -> Entry:
    return get_registry().get(kind, name)


def resolve(kind: str, name: str) -> tuple[Callable[..., Any], dict]:
    """``(factory, metadata)`` for a name, following prefix families.

    An entry registered under a name ending in ``:`` (``basicsr:``, ``timm:``) is a family:
    its metadata holds ``resolve(full_name) -> (factory, metadata)``.
    """
    entry = lookup(kind, name)
    if entry.name.endswith(":"):
        factory, meta = entry.metadata["resolve"](name)
        return factory, {**entry.metadata, **meta}
    return entry.factory, dict(entry.metadata)
