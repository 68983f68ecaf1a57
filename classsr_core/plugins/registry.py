"""The plugin manager: built-ins and third-party plugins load through one entry-point group.

The built-in plugins are declared in this project's pyproject under
``[project.entry-points.classsr]`` exactly as a third-party package declares its own, so the
plugin API is exercised by the project's own code. ``CLASSSR_DISABLE_PLUGINS=a,b`` blocks
plugins by entry-point name.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy

from classsr_core.errors import PluginError, UntrustedCodeError
from classsr_core.plugins import hookspecs

KINDS = ("backbones", "branch_generators", "tasks", "classifiers", "routers", "executors")
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
        # (kind, name) -> every plugin that registered it, when more than one did. A clash
        # fails only the lookups of that name, so `classsr plugins` can still show it.
        self.clashes: dict[tuple[str, str], list[str]] = {}

    # -- loading -----------------------------------------------------------------------
    def load_entry_points(self, disabled: set[str] | None = None) -> None:
        disabled = set(disabled or ())
        eps = list(metadata.entry_points(group=ENTRY_POINT_GROUP))
        # Built-ins first, so a third-party name clash names the newcomer second.
        eps.sort(key=lambda ep: (_dist_name(ep) != THIS_DIST, ep.name))
        for ep in eps:
            dist = _dist_name(ep)
            version = ep.dist.version if ep.dist is not None else None
            name = ep.name
            if name in self.plugins:
                if self.plugins[name].dist == dist:
                    continue  # the same distribution seen twice on sys.path
                # Another distribution's entry point with a taken name: load it under a
                # qualified name rather than drop it unseen.
                name = f"{ep.name}@{dist}"
                warnings.warn(
                    f"classsr plugin entry point {ep.name!r} of {dist} has the name of one "
                    f"from {self.plugins[ep.name].dist}; loaded as {name!r} "
                    f"(block it with CLASSSR_DISABLE_PLUGINS={name}). Rename the entry point "
                    "in its pyproject to silence this.",
                    RuntimeWarning,
                    stacklevel=2,
                )
            if name in disabled:
                continue
            try:
                module = importlib.import_module(ep.value.split(":")[0])
            except Exception as exc:  # a broken plugin must not take the others down
                err = f"{type(exc).__name__}: {exc}"
                self.plugins[name] = PluginInfo(name, dist, version, error=err)
                warnings.warn(
                    f"classsr plugin {name!r} (from {dist}) failed to import and was "
                    f"skipped: {err}. Fix or uninstall it, or block it with "
                    f"CLASSSR_DISABLE_PLUGINS={name}.",
                    RuntimeWarning,
                    stacklevel=2,
                )
                continue
            self.add_plugin(module, name, dist=dist, version=version)

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
            self.plugins[plugin].registered[kind].append(name)
            old = self.entries[kind].get(name)
            if old is None:
                self.entries[kind][name] = Entry(kind, name, factory, plugin, dict(meta))
            else:
                self.clashes.setdefault((kind, name), [old.plugin]).append(plugin)

        return register

    # -- lookup ------------------------------------------------------------------------
    def get(self, kind: str, name: str) -> Entry:
        if kind not in KINDS:
            raise PluginError(f"unknown plugin kind {kind!r}; kinds are {', '.join(KINDS)}")
        clash = self.clashes.get((kind, name))
        if clash:
            names = " and ".join(repr(p) for p in clash)
            blocks = " or ".join(f"CLASSSR_DISABLE_PLUGINS={p}" for p in clash)
            raise PluginError(
                f"plugins {names} all register the {kind[:-1]} {name!r}, so it is ambiguous. "
                f"Block all but one ({blocks}) or uninstall one; `classsr plugins` lists them."
            )
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
        """The JSON shape of ``classsr plugins --json``: per plugin, the names it registered
        by kind and, under ``"declared"``, what it declared for each of them: the metadata
        JSON can hold (``width_arg``, ``scales``, ``paper_widths``, ``description``, ...),
        callables and classes left out."""

        def jsonable(meta: dict) -> dict:
            out = {}
            for key, value in meta.items():
                # round-trip, so tuples read as the lists the JSON holds
                with contextlib.suppress(TypeError, ValueError):
                    out[key] = json.loads(json.dumps(value, allow_nan=False))
            return out

        out = []
        for info in self.plugins.values():
            row = {"name": info.name, "dist": info.dist, "version": info.version}
            row.update({k: list(v) for k, v in info.registered.items()})
            row["declared"] = {}
            for kind, names in info.registered.items():
                for name in names:
                    entry = self.entries[kind].get(name)
                    # a clash keeps the first plugin's entry: the others' metadata is unknown
                    own = entry is not None and entry.plugin == info.name
                    row["declared"].setdefault(kind, {})[name] = (
                        jsonable(entry.metadata) if own else {}
                    )
            if info.error:
                row["error"] = info.error
            clashes = [
                {"kind": kind, "name": name, "plugins": list(plugins)}
                for (kind, name), plugins in self.clashes.items()
                if info.name in plugins
            ]
            if clashes:
                row["clashes"] = clashes
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


TRUST_HINT = (
    "register it as a plugin (docs/plugins.md) so the file can name it, or, only for a "
    "file you trust, pass trust_code=True (CLI: --trust-code): importing a module runs its "
    "code (docs/safety.md)"
)


def is_code_reference(name: str) -> bool:
    """``module:qualname`` that no registered family (``basicsr:``, ``timm:``) claims."""
    if not isinstance(name, str) or ":" not in name:
        return False
    module, _, qual = name.partition(":")
    if not module or not qual:
        return False
    families = get_registry().entries
    return not any(
        prefix.endswith(":") and name.startswith(prefix)
        for entries in families.values()
        for prefix in entries
    )


def import_code(ref: str, what: str, trust_code: bool = False) -> Any:
    """Import ``module:qualname`` named by a file or a string, only with the caller's consent.

    Safetensors files and YAML configs are data: opening them must run nothing. A name that
    is not a registered component would import a module (running its top-level code) and
    call what it finds, so it is refused unless ``trust_code`` is set.
    """
    if not trust_code:
        raise UntrustedCodeError(
            f"the {what} {ref!r} is not a registered component but Python code to import "
            f"(module:qualname); refused. To use it, {TRUST_HINT}."
        )
    module, _, qual = ref.partition(":")
    try:
        obj = importlib.import_module(module)
        for part in qual.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise PluginError(
            f"the {what} {ref} cannot be imported ({exc}); make it importable or register "
            "it as a plugin"
        ) from None
    return obj
