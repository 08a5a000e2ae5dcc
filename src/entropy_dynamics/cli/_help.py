"""``--help`` that shows a flag as a flag (``--resume`` rather than ``--resume <bool>``) and that
lists what is registered when it is shown.

Typer (0.2x) prints every option's type beside it, a flag's ``<bool>`` too, which reads as if
the flag took a value. The command and group classes here blank the type column of flags (boolean
switches such as ``--resume`` and ``--final-eval/--no-final-eval``, and ``--help`` itself) just
before help is rendered; options that take a value keep theirs (``--config <path>``). They also
recompute the help of options declared with :func:`live_help` (``--method``: the methods of the
table, including those registered after the CLI was imported).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from typer.core import TyperCommand, TyperGroup, TyperOption

__all__ = ["FlagsAsFlagsCommand", "FlagsAsFlagsGroup", "live_help"]

_LIVE_HELP: dict[str, Callable[[], str]] = {}


def live_help(text: Callable[[], str]) -> str:
    """An option's help that is ``text()`` each time ``--help`` is shown, for help generated from
    a registry (pass the returned string as ``typer.Option(help=...)``)."""
    now = text()
    _LIVE_HELP[now] = text
    return now


def _refresh_live_help(command: TyperCommand | TyperGroup, ctx: Any) -> None:
    for param in command.get_params(ctx):
        text = _LIVE_HELP.get(getattr(param, "help", None) or "")
        if text is not None:
            param.help = text()
            _LIVE_HELP[param.help] = text


def _blank_flag_types(command: TyperCommand | TyperGroup, ctx: Any) -> None:
    for param in command.get_params(ctx):
        if isinstance(param, TyperOption) and param.is_flag and param.metavar is None:
            param.metavar = ""  # Typer shows the metavar, when set, instead of the type


class FlagsAsFlagsCommand(TyperCommand):
    def format_help(self, ctx: Any, formatter: Any) -> None:
        _blank_flag_types(self, ctx)
        _refresh_live_help(self, ctx)
        super().format_help(ctx, formatter)


class FlagsAsFlagsGroup(TyperGroup):
    def format_help(self, ctx: Any, formatter: Any) -> None:
        _blank_flag_types(self, ctx)
        _refresh_live_help(self, ctx)
        super().format_help(ctx, formatter)
