"""The seed paper's names for all 65 models it trained, from moelab's accounting and its CLI.

The list is the release scripts of the paper's repository, rioyokotalab/optimal-sparsity:
``optimal-sparsity-math-{name}.sh`` in ``scripts/pre-training/`` (29) and in
``pre-training/scripts/optimal-sparsity-math/`` (36). Two rules are checked by it: the router
counts in the total but not in the active count of the name (d1024-E128-k4-13.2B-A670M, not A680M),
and a total below 100 of its unit keeps one decimal even when it is 0 (26.0B, not 26B).
"""

import json
import re

import pytest

from moelab import accounting
from moelab.cli import main
from moelab.config import ModelConfig, load_study_config
from moelab.study.plan import plan

SCRIPTS_PRE_TRAINING = (  # scripts/pre-training/
    "d1024-E128-k16-13.2B-A1.9B", "d1024-E128-k2-13.2B-A470M", "d1024-E16-k16-1.9B-A1.9B",
    "d1024-E16-k2-1.9B-A470M", "d1024-E16-k8-1.9B-A1.1B", "d1024-E256-k16-26.0B-A1.9B",
    "d1024-E256-k8-26.0B-A1.1B", "d1024-E32-k2-3.5B-A470M", "d1024-E32-k4-3.5B-A670M",
    "d1024-E64-k4-6.7B-A670M", "d1024-E64-k8-6.7B-A1.1B", "d1024-E8-k4-1.1B-A670M", "d1024-E8-k8-1.1B-A1.1B",
    "d2048-E128-k16-52.2B-A7.1B", "d2048-E16-k2-7.1B-A1.5B", "d2048-E16-k8-7.1B-A3.9B",
    "d2048-E32-k2-13.6B-A1.5B", "d2048-E32-k4-13.6B-A2.3B", "d2048-E64-k2-26.4B-A1.5B", "d2048-E8-k4-3.9B-A2.3B",
    "d2048-E8-k8-3.9B-A3.9B", "d512-E16-k16-520M-A520M", "d512-E16-k2-520M-A170M", "d512-E16-k8-520M-A320M",
    "d512-E256-k4-6.6B-A220M", "d512-E256-k8-6.6B-A320M", "d512-E64-k4-1.7B-A220M", "d512-E8-k2-320M-A170M",
    "d512-E8-k8-320M-A320M",
)
PRE_TRAINING_SCRIPTS_MATH = (  # pre-training/scripts/optimal-sparsity-math/
    "d1024-E128-k4-13.2B-A670M", "d1024-E128-k8-13.2B-A1.1B", "d1024-E16-k4-1.9B-A670M",
    "d1024-E256-k2-26.0B-A470M", "d1024-E256-k4-26.0B-A670M", "d1024-E32-k16-3.5B-A1.9B",
    "d1024-E32-k8-3.5B-A1.1B", "d1024-E64-k16-6.7B-A1.9B", "d1024-E64-k2-6.7B-A470M", "d1024-E8-k2-1.1B-A470M",
    "d2048-E128-k2-52.2B-A1.5B", "d2048-E128-k4-52.2B-A2.3B", "d2048-E128-k8-52.2B-A3.9B",
    "d2048-E16-k16-7.1B-A7.1B", "d2048-E16-k4-7.1B-A2.3B", "d2048-E32-k16-13.6B-A7.1B",
    "d2048-E32-k8-13.6B-A3.9B", "d2048-E64-k16-26.4B-A7.1B", "d2048-E64-k4-26.4B-A2.3B",
    "d2048-E64-k8-26.4B-A3.9B", "d2048-E8-k2-3.9B-A1.5B", "d512-E128-k16-3.3B-A520M", "d512-E128-k2-3.3B-A170M",
    "d512-E128-k4-3.3B-A220M", "d512-E128-k8-3.3B-A320M", "d512-E16-k4-520M-A220M", "d512-E256-k16-6.6B-A520M",
    "d512-E256-k2-6.6B-A170M", "d512-E32-k16-920M-A520M", "d512-E32-k2-920M-A170M", "d512-E32-k4-920M-A220M",
    "d512-E32-k8-920M-A320M", "d512-E64-k16-1.7B-A520M", "d512-E64-k2-1.7B-A170M", "d512-E64-k8-1.7B-A320M",
    "d512-E8-k4-320M-A220M",
)
PUBLISHED = SCRIPTS_PRE_TRAINING + PRE_TRAINING_SCRIPTS_MATH


def dek(name: str) -> tuple[int, int, int]:
    d, e, k = re.match(r"d(\d+)-E(\d+)-k(\d+)-", name).groups()
    return int(d), int(e), int(k)


def test_the_list_is_the_papers_65_models():
    assert len(PUBLISHED) == len(set(PUBLISHED)) == 65
    assert len({dek(n) for n in PUBLISHED}) == 65
    assert {d for d, _, _ in map(dek, PUBLISHED)} == {512, 1024, 2048}
    assert {e for _, e, _ in map(dek, PUBLISHED)} == {8, 16, 32, 64, 128, 256}
    assert {k for _, _, k in map(dek, PUBLISHED)} == {2, 4, 8, 16}


@pytest.mark.parametrize("name", PUBLISHED)
def test_accounting_names_every_published_model(name):
    d, e, k = dek(name)
    cfg = ModelConfig(d_model=d, num_experts=e, top_k=k, n_heads=accounting.paper_heads(d), **accounting.PAPER_ARCH)
    assert accounting.model_name(cfg) == name


def test_params_cli_prints_every_published_name(capsys):
    for name in PUBLISHED:
        d, e, k = dek(name)
        assert main(["params", "--preset", "paper", "--d-model", str(d), "--experts", str(e), "--top-k", str(k),
                     "--json"]) == 0
        info = json.loads(capsys.readouterr().out)
        assert info["name"] == name
        # the exact active count keeps the router (16 layers × d × E); the name's count leaves it out
        assert info["active_params"] - info["active_params_without_router"] == 16 * d * e
        assert info["breakdown"]["router"] == 16 * d * e


def test_router_rule_and_trailing_zero_are_what_the_names_need():
    cfg = ModelConfig(d_model=1024, num_experts=128, top_k=4, n_heads=8, **accounting.PAPER_ARCH)
    c = accounting.param_counts(cfg)
    assert accounting.human_count(c.active) == "680M"  # with the router: not the published name
    assert accounting.human_count(c.active_without_router) == "670M"
    big = ModelConfig(d_model=1024, num_experts=256, top_k=2, n_heads=8, **accounting.PAPER_ARCH)
    assert 26.0e9 <= accounting.total_params(big) < 26.05e9
    assert accounting.model_name(big) == "d1024-E256-k2-26.0B-A470M"


def test_paper_plan_carries_every_published_name():
    runs = [r for r in plan(load_study_config("paper")) if r.feasible]
    assert len(runs) == 69
    assert set(PUBLISHED) <= {r.name for r in runs}
