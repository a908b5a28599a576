"""Terminal output: rich tables and progress bars, shared by every command."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

# Off a terminal (pipes, logs, CI) rich falls back to 80 columns and folds wide tables into
# unreadable cells; such output is read in files and editors, so give it room.
_WIDTH = None if Console().is_terminal else 160
console = Console(stderr=True, width=_WIDTH)
stdout = Console(width=_WIDTH)


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


def short(x: float) -> str:
    """3 significant figures with a K/M/B/T/P/E suffix: 846_912 → '847K', 6e12 → '6T'."""
    for unit, scale in (("E", 1e18), ("P", 1e15), ("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.3g}"


def print_plan(runs) -> None:
    table = Table(title=f"{sum(r.feasible for r in runs)} feasible of {len(runs)} planned runs")
    for col in ("run", "model", "sparsity", "tokens", "TPP", "FLOPs", "steps", "mem GB", "est."):
        table.add_column(col, overflow="fold", no_wrap=col in ("run", "model"))
    notes = []
    for r in runs:
        est = getattr(r, "est_seconds", None)
        if not r.feasible:
            notes.append(f"[red]{r.run_id}: infeasible — {r.reason}[/red]")
            table.add_row(f"[red]{r.run_id}[/red]", "[red]infeasible[/red]", *["-"] * 7)
            continue
        if getattr(r, "imported", False):  # trained elsewhere: evaluated only
            from rich.markup import escape

            log = f"train log {escape(r.train_log)}" if r.train_log else \
                "no train log (left out of the pretraining-loss figures)"
            notes.append(f"{r.run_id}: imported from {escape(r.source)} — d={r.d_model}, E={r.num_experts}, k={r.top_k}, "
                         f"{short(r.total_params)} total / {short(r.active_params)} active parameters (config.json); "
                         f"{log}")
        table.add_row(r.run_id, r.name, f"{r.sparsity:.3f}", short(r.tokens), f"{r.tpp:.3g}",
                      short(r.train_flops), "imported" if getattr(r, "imported", False) else f"{r.steps:,}",
                      f"{r.memory_gb:.1f}", _duration(est) if est else "-")
    stdout.print(table)
    for note in notes:
        stdout.print(note)


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
