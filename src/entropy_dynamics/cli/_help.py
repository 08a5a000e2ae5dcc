"""``--help`` that shows a flag as a flag: ``--resume`` rather than ``--resume <bool>``.

Typer (0.2x) prints every option's type beside it, a flag's ``<bool>`` too, which reads as if
the flag took a value. The command and group classes here blank the type column of flags (boolean
switches such as ``--resume`` and ``--final-eval/--no-final-eval``, and ``--help`` itself) just
before help is rendered; options that take a value keep theirs (``--config <path>``).
"""

from __future__ import annotations

from typing import Any

from typer.core import TyperCommand, TyperGroup, TyperOption

__all__ = ["FlagsAsFlagsCommand", "FlagsAsFlagsGroup"]


def _blank_flag_types(command: TyperCommand | TyperGroup, ctx: Any) -> None:
    for param in command.get_params(ctx):
        if isinstance(param, TyperOption) and param.is_flag and param.metavar is None:
            param.metavar = ""  # Typer shows the metavar, when set, instead of the type


class FlagsAsFlagsCommand(TyperCommand):
    def format_help(self, ctx: Any, formatter: Any) -> None:
        _blank_flag_types(self, ctx)
        super().format_help(ctx, formatter)


class FlagsAsFlagsGroup(TyperGroup):
    def format_help(self, ctx: Any, formatter: Any) -> None:
        _blank_flag_types(self, ctx)
        super().format_help(ctx, formatter)
