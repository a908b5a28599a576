"""HTML building blocks of the report: escaping, tables, figures, the page shell.

The page needs no network and no script: inline CSS, images as files beside it (``moelab
report``) or embedded as base64 (the demo's single-file report).
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

from moelab.analysis.figures import Figure

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 0 auto; max-width: 1280px;
       padding: 1em 2em 4em; color: #222; }
h1 { font-size: 1.6em; margin-bottom: .2em; } h2 { border-bottom: 1px solid #ccc; margin-top: 2em; }
h3 { margin-top: 1.4em; } .meta { color: #666; }
table { border-collapse: collapse; font-size: 12px; margin: .6em 0; }
th, td { border: 1px solid #ddd; padding: 2px 6px; text-align: right; vertical-align: top; }
th { background: #f3f3f3; position: sticky; top: 0; } td.l, th.l { text-align: left; }
.scroll { overflow-x: auto; max-height: 640px; overflow-y: auto; }
.st-done { background: #e6f4e6; } .st-failed { background: #fbe3e3; } .st-diverged { background: #fdeedd; }
.st-missing, .st-pending, .st-running { background: #eef0fb; } .st-infeasible { background: #eee; color: #777; }
.ans-yes { background: #e6f4e6; } .ans-no { background: #fbe3e3; } .ans-inconclusive { background: #fdf5d8; }
.ans-na { color: #888; }
.figs { display: flex; flex-wrap: wrap; gap: 14px; }
figure { margin: 0; border: 1px solid #e3e3e3; padding: 6px; background: #fff; box-sizing: border-box;
         flex: 0 1 calc(50% - 7px); min-width: 0; }
figure img { display: block; width: 100%; height: auto; }
figure.wide { flex-basis: 100%; } figure.wide img { width: auto; max-width: 100%; }
td.nw { white-space: nowrap; }
figcaption { font-size: 12px; color: #444; max-width: 620px; }
.note { color: #8a6d00; font-size: 12px; margin: .3em 0; }
code { background: #f4f4f4; padding: 0 3px; }
"""


def esc(x) -> str:
    return html.escape("" if x is None else str(x))


def table(header: list[str], body: list[list], *, left: int = 1, nowrap: int = 0,
          row_classes: list[str] | None = None, cell_classes: dict | None = None) -> str:
    """A table whose first ``left`` columns are left-aligned (the first ``nowrap`` never wrap);
    cells are escaped text."""
    cell_classes = cell_classes or {}
    th = "".join(f'<th class="{"l" if i < left else ""}">{esc(h)}</th>' for i, h in enumerate(header))
    trs = []
    for j, row in enumerate(body):
        tds = []
        for i, v in enumerate(row):
            cls = " ".join(c for c in ("l" if i < left else "", "nw" if i < nowrap else "",
                                       cell_classes.get((j, i), "")) if c)
            tds.append(f'<td class="{cls}">{esc(v)}</td>')
        rc = f' class="{row_classes[j]}"' if row_classes else ""
        trs.append(f"<tr{rc}>{''.join(tds)}</tr>")
    return f'<div class="scroll"><table><thead><tr>{th}</tr></thead><tbody>{"".join(trs)}</tbody></table></div>'


def img_src(png: Path, *, embed: bool, base: Path | None) -> str:
    if embed:
        return "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode("ascii")
    return png.relative_to(base).as_posix() if base is not None else png.name


def figure(fig: Figure, *, embed: bool, base: Path | None) -> str:
    if fig.png is None:
        return f'<p class="note">{esc(fig.title)} — {esc(fig.note)}</p>'
    csv_link = ""
    if fig.csv is not None and not embed:
        csv_link = f' <a href="{esc(img_src(fig.csv, embed=False, base=base))}">data (CSV)</a>'
    cap = f"{esc(fig.caption)}{csv_link}" if fig.caption or csv_link else ""
    wide = ' class="wide"' if fig.wide else ""
    return (f'<figure id="{esc(fig.key)}"{wide}><img src="{img_src(fig.png, embed=embed, base=base)}" '
            f'alt="{esc(fig.title)}"><figcaption>{cap}</figcaption></figure>')


def figures(figs: list[Figure], *, embed: bool, base: Path | None) -> str:
    shown = [figure(f, embed=embed, base=base) for f in figs if f.png is not None]
    notes = [figure(f, embed=embed, base=base) for f in figs if f.png is None]
    return (f'<div class="figs">{"".join(shown)}</div>' if shown else "") + "".join(notes)


def page(title: str, meta: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{CSS}</style></head>\n<body>\n<h1>{esc(title)}</h1>"
            f'<p class="meta">{meta}</p>\n{body}\n</body></html>\n')
