"""The before/after figure (GRPO, greedy vs vote) with seeds: one point per configuration and
measurement at its seeds' mean, not one zig-zag line per seed."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pytest

from moelab.analysis import figures
from moelab.analysis.data import TOTAL, column
from moelab.analysis.figures import Style, prepost_figure


def _pairs(seeds: int) -> list[tuple[dict, dict]]:
    pairs = []
    for e, total, base in ((1, 150_000, 0.6), (16, 890_000, 0.2)):
        for s in range(seeds):
            row = {"budget": 8e6, "d_model": 64, "num_experts": e, "top_k": 1, "lr": 3e-3, "init_std": 0.02,
                   "seed": s, "active_size": 150_000, "total_params": total, "status": "done",
                   "before": base + 0.1 * s, "after": base + 0.1 * s + 0.05}
            pairs.append((row, row))
    return pairs


@pytest.fixture
def drawn(monkeypatch):
    """The lines of the last figure prepost_figure drew (captured before it is closed)."""
    seen = []
    save = figures._save

    def keep(fig, out_dir, key):
        seen[:] = [[(list(map(float, ln.get_xdata())), list(map(float, ln.get_ydata())), ln.get_linestyle())
                    for ln in ax.get_lines()] for ax in fig.axes]
        return save(fig, out_dir, key)

    monkeypatch.setattr(figures, "_save", keep)
    return seen


def test_seeded_configurations_are_drawn_as_seed_means(tmp_path, drawn):
    pairs = _pairs(3)
    before, after = column("before", "acc", higher_is_better=True), column("after", "acc", higher_is_better=True)
    fig = prepost_figure(pairs, before, after, tmp_path, "pp", title="t", style=Style([p[0] for p in pairs]),
                         x=TOTAL)
    assert fig.png.is_file() and "mean ± sd over 3 seeds" in fig.caption
    lines = drawn[0]
    solid = [ln for ln in lines if ln[2] == "-" and len(ln[0]) == 2]
    dashed = [ln for ln in lines if ln[2] == "--" and len(ln[0]) == 2]
    # one pre line and one post line through the two configurations' means (seeds 0.1 apart: mean +0.1)
    assert len(solid) == 1 and len(dashed) == 1
    assert solid[0][1] == pytest.approx([0.7, 0.3]) and dashed[0][1] == pytest.approx([0.75, 0.35])
    plt.close("all")


def test_one_seed_keeps_one_point_per_model(tmp_path, drawn):
    pairs = _pairs(1)
    before, after = column("before", "acc", higher_is_better=True), column("after", "acc", higher_is_better=True)
    fig = prepost_figure(pairs, before, after, tmp_path, "pp", title="t", style=Style([p[0] for p in pairs]),
                         x=TOTAL)
    assert "seeds" not in fig.caption
    solid = [ln for ln in drawn[0] if ln[2] == "-" and len(ln[0]) == 2]
    assert len(solid) == 1 and solid[0][1] == pytest.approx([0.6, 0.2])


def test_grpo_reward_with_seeds_is_one_mean_line_per_configuration(tmp_path, drawn):
    from moelab.analysis.figures import reward_figure

    curves = []
    for row, _ in _pairs(3):  # 2 configurations × 3 seeds; seed s's reward is base + 0.1 s at every step
        curves.append((row, [(step, row["before"], 0.0) for step in (1, 2, 3)]))
    fig = reward_figure(curves, tmp_path, "rw", title="t", style=Style([r for r, _ in curves]))
    assert "mean over the seeds" in fig.caption
    # the two configurations' mean lines (0.6, 0.7, 0.8 → 0.7; 0.2, 0.3, 0.4 → 0.3) besides 6 faint seed lines
    assert sorted(round(ln[1][0], 6) for ln in drawn[0] if len(ln[0]) == 3) == sorted([0.6, 0.7, 0.8, 0.2, 0.3, 0.4]
                                                                                     + [0.7, 0.3])
    rows = (tmp_path / "data" / "rw.csv").read_text().splitlines()
    assert len(rows) == 1 + 6 * 3  # every run's every step kept in the CSV
