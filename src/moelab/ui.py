"""Terminal output: rich tables and progress bars, shared by every command."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

console = Console(stderr=True)
stdout = Console()


def print_kv(info: dict, title: str = "") -> None:
    table = Table(title=title, show_header=False)
    for key, value in info.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v:,}" if isinstance(v, int) else f"{k}={v}" for k, v in value.items())
        elif isinstance(value, int):
            value = f"{value:,}"
        elif isinstance(value, float):
            value = f"{value:.4g}"
        table.add_row(key, str(value))
    stdout.print(table)


def print_plan(runs) -> None:
    table = Table(title=f"{sum(r.feasible for r in runs)} feasible of {len(runs)} planned runs")
    for col in ("run_id", "name", "sparsity", "tokens", "TPP", "FLOPs", "steps", "mem GB", "est. time", "note"):
        table.add_column(col, overflow="fold")
    for r in runs:
        est = getattr(r, "est_seconds", None)
        table.add_row(
            r.run_id, r.name or "-", f"{r.sparsity:.3f}", f"{r.tokens:.3g}", f"{r.tpp:.3g}",
            f"{r.train_flops:.2e}", f"{r.steps:,}", f"{r.memory_gb:.1f}",
            _duration(est) if est else "-",
            "" if r.feasible else f"[red]infeasible: {r.reason}[/red]",
        )
    stdout.print(table)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


@contextmanager
def progress_bar(enabled: bool = True, unit: str = "steps") -> Iterator[Progress | None]:
    """A rich progress bar on stderr (None when disabled)."""
    if not enabled:
        yield None
        return
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn()]
    with Progress(*columns, console=console, transient=False) as bar:
        yield bar
