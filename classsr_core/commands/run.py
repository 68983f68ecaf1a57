"""``classsr run``: the task-generic form of ``classsr upscale``."""

from classsr_core.commands.upscale import add_run_parser as add_parser
from classsr_core.commands.upscale import process as run

__all__ = ["add_parser", "run"]
