"""Exceptions with messages that name the problem and the fix."""


class ClassSRError(Exception):
    """Base class of every error classsr raises on purpose."""


class PluginError(ClassSRError):
    """A plugin is unknown, broken, or clashes with another."""


class ConfigError(ClassSRError):
    """A configuration file or value is invalid."""


class InputError(ClassSRError, ValueError):
    """An image or tensor given to a model cannot be processed."""


class CheckpointError(ClassSRError):
    """A checkpoint does not match the model it is loaded into."""


class UntrustedCodeError(CheckpointError, InputError):
    """A file or name asks to import Python code (``module:qualname``) without the caller's
    consent (``trust_code=True`` / ``--trust-code``)."""


class CostWarning(UserWarning):
    """A model is built whose routing can cost more than it saves (see
    :func:`classsr_core.model.checks.check_routing_cost`). Silence it with
    ``warnings.filterwarnings("ignore", category=CostWarning)``."""


class ModelNameWarning(UserWarning):
    """A shipped model's name was given while a file of that name sits in the current
    folder: the shipped model is loaded, and the file is named ``./NAME``."""


class BudgetWarning(UserWarning):
    """A compute budget (``budget=``, ``--budget``) below what the cheapest routing of an
    image costs: the image spends that instead, and the warning says how much."""


class DeviceWarning(UserWarning):
    """An option the device runs slower, not faster (``amp="fp16"`` on a CPU)."""
