"""The ``entropy-dynamics`` command line."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    help="Study and control entropy in reinforcement fine-tuning of LLMs (arXiv 2602.03392).",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()


@app.callback()
def _root() -> None:
    """Study and control entropy in reinforcement fine-tuning of LLMs (arXiv 2602.03392)."""


@app.command("verify-theory")
def verify_theory(
    vocab_size: int = typer.Option(1000, min=2, help="Vocabulary size V of the random logits."),
    positions: int = typer.Option(64, min=1, help="Number of random positions."),
    seed: int = typer.Option(0, help="Random seed."),
) -> None:
    """Check Theorems 3.2 and 3.3 numerically: first-order error must shrink as O(ε²)."""
    from entropy_dynamics.verification import convergence_table

    rows = convergence_table(vocab_size=vocab_size, positions=positions, seed=seed)
    table = Table(title=f"First-order entropy-change error, V={vocab_size}, {positions} positions")
    for column in ("prediction", "step", "max |ΔH|", "max error", "log-log slope"):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(
            row.name, f"{row.step:.0e}", f"{row.max_change:.3e}", f"{row.max_error:.3e}",
            "" if row.slope is None else f"{row.slope:.3f}",
        )
    console.print(table)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
