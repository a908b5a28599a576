"""The planner: iso-FLOP arithmetic, infeasible points kept with a reason, paper names."""

import pytest

from moelab import accounting
from moelab.config import StudyConfig, load_study_config, validate
from moelab.study.plan import plan


def small_study(**over):
    data = {"name": "t", "budgets": [1e12], "grid": {"d_model": [64], "num_experts": [1, 4, 8], "top_k": [1, 2]},
            "head_dim": 16, "base": {"data": {"seq_len": 32}, "train": {"batch_size": 4}}}
    data.update(over)
    return validate(StudyConfig, data, "study.yaml")


def test_iso_flop_tokens():
    runs = plan(small_study())
    ok = [r for r in runs if r.feasible]
    assert len(ok) == 5  # (E=1, k=2) is infeasible
    for r in ok:
        assert r.tokens == int(1e12 // (6 * r.active_params))
        assert r.steps == r.tokens // (4 * 32)
        assert r.config.train.steps == r.steps
        assert r.config.model.num_experts == r.num_experts and r.config.model.n_heads == 4
        assert r.name == accounting.model_name(r.config.model)
    # same k => same active parameters (up to the router's d·E) => ~same tokens; more experts => lower TPP
    e4, e8 = (next(r for r in ok if r.num_experts == e and r.top_k == 1) for e in (4, 8))
    assert e8.active_params - e4.active_params == 4 * 64 * 4  # four layers, four extra router rows each
    assert e4.tokens == pytest.approx(e8.tokens, rel=0.01) and e8.tpp < e4.tpp


def test_infeasible_points_are_kept_with_reason():
    runs = plan(small_study(budgets=[1e12, 10.0]))
    bad = {r.run_id: r.reason for r in runs if not r.feasible}
    assert any("exceeds num_experts" in v for v in bad.values())
    assert any("below one step" in v for v in bad.values())
    assert len(runs) == 2 * 3 * 2


def test_memory_limit_marks_infeasible():
    runs = plan(small_study(max_memory_gb=1e-6))
    assert all(not r.feasible for r in runs)
    assert any("memory estimate" in r.reason for r in runs)


def test_axes_multiply_the_grid():
    study = small_study(grid={"d_model": [64], "num_experts": [4], "top_k": [1], "lr": [1e-3, 3e-3],
                              "init_std": [0.01, 0.02], "seed": [0, 1]})
    runs = plan(study)
    assert len(runs) == 8 and len({r.run_id for r in runs}) == 8
    assert {r.config.train.lr for r in runs} == {1e-3, 3e-3}
    assert {r.config.model.init_std for r in runs} == {0.01, 0.02}


def test_paper_preset_carries_paper_names():
    runs = plan(load_study_config("paper"))
    names = {r.name for r in runs}
    assert {"d512-E8-k2-320M-A170M", "d1024-E16-k2-1.9B-A470M", "d2048-E64-k2-26.4B-A1.5B"} <= names
    assert all(r.tokens == 125_000_000_000 for r in runs if r.feasible)


def test_study_needs_one_budget_kind():
    from moelab.errors import UserError

    with pytest.raises(UserError, match="exactly one of"):
        small_study(tokens=[1e9])


def test_per_k_expert_width_keeps_active_parameters():
    runs = [r for r in plan(small_study(expert_width_rule="per_k", grid={"d_model": [64], "num_experts": [8],
                                                                         "top_k": [1, 2, 4]})) if r.feasible]
    assert [r.config.model.ffn_hidden for r in runs] == [128, 64, 32]
    assert len({r.active_params for r in runs}) == 1 and len({r.tokens for r in runs}) == 1


@pytest.mark.parametrize("preset", ["smoke", "demo", "paper", "paper-cpu", "paper-cpu-extras", "paper-cpu-implicit",
                                    "paper-cpu-init"])
def test_every_bundled_study_preset_plans(preset):
    from importlib.resources import files

    assert (files("moelab") / "presets" / f"{preset}.yaml").is_file()
    study = load_study_config(preset)
    runs = plan(study)
    assert sum(r.feasible for r in runs) >= 1
    if preset == "paper-cpu":  # k at fixed active parameters: every k of a d_model has equal active params
        for d in (48, 64):
            dense = next(r for r in runs if r.feasible and r.config.model.d_model == d and r.config.model.num_experts == 1)
            for r in (r for r in runs if r.feasible and r.config.model.d_model == d):
                assert abs(r.active_params / dense.active_params - 1) < 0.1, r.run_id
    if preset.startswith("paper-cpu"):  # seeds are replicates: every configuration has at least 5 (issue 25)
        seeds: dict = {}
        for r in (r for r in runs if r.feasible):
            seeds.setdefault((r.d_model, r.num_experts, r.top_k, r.lr, r.init_std), set()).add(r.seed)
        assert min(len(s) for s in seeds.values()) >= 5, preset
        assert {r.config.train.precision for r in runs if r.feasible} == {"fp32"}  # the same on every CPU
    if preset == "paper-cpu-implicit":
        assert runs[0].config.data.world.implicit_reasoning and "implicit" in study.base.eval.tasks
    if preset == "paper-cpu-extras":
        assert study.posttrain and study.ttc and {r.config.train.lr for r in runs} == {1e-3, 3e-3, 1e-2}
    if preset == "paper-cpu-init":
        assert {r.config.model.init_std for r in runs} == {0.01, 0.02, 0.04}


@pytest.mark.parametrize("preset", ["demo", "paper-cpu", "paper-cpu-extras", "paper-cpu-init"])
def test_cpu_presets_are_in_the_papers_regime(preset):
    """Every model at ≥ 1 token per parameter, dense to highly sparse, on the calibrated default world."""
    from moelab.config import WorldConfig

    runs = [r for r in plan(load_study_config(preset)) if r.feasible]
    assert all(r.tpp >= 1 for r in runs), [(r.run_id, r.tpp) for r in runs if r.tpp < 1]
    assert min(r.sparsity for r in runs) == 0 and max(r.sparsity for r in runs) >= 0.9
    world = runs[0].config.data.world
    calibrated = WorldConfig()
    assert world.reasoning_tasks == calibrated.reasoning_tasks and world.addition_digits == calibrated.addition_digits
    assert world.qa_repeats == calibrated.qa_repeats and world.knowledge_attributes == calibrated.knowledge_attributes


def test_plan_rows_carry_the_active_count_the_name_uses():
    """``active_params`` is exact (router included); the name's ``A…`` is the router-free count, which the
    row carries too (``moelab advise`` names its recommendation with it) and which does not depend on E."""
    from moelab.accounting import human_count
    from moelab.config import load_study_config
    from moelab.study.plan import plan

    rows = [r.row() for r in plan(load_study_config("paper")) if r.feasible]
    for row in rows:
        assert row["active_params"] - row["active_params_without_router"] == 16 * row["d_model"] * row["num_experts"]
        assert row["name"].endswith(f"-A{human_count(row['active_params_without_router'])}")
    by_shape: dict = {}
    for row in rows:
        by_shape.setdefault((row["d_model"], row["top_k"]), set()).add(row["active_params_without_router"])
    assert all(len(counts) == 1 for counts in by_shape.values())


def test_a_real_tokenizer_sets_the_planned_vocabulary_padded_as_megatron_pads(tmp_path):
    from moelab.data.tokenizer import save_tokenizer, train_tokenizer

    texts = [f"word{i} and other{i * 7} words, {i} times" for i in range(400)]
    tok = train_tokenizer(texts, 300)
    save_tokenizer(tok, tmp_path / "tok")
    assert 256 < len(tok) <= 300
    study = validate(StudyConfig, {
        "name": "tok", "tokens": [1e6], "head_dim": 16, "grid": {"d_model": [32], "num_experts": [4], "top_k": [2]},
        "base": {"model": {"vocab_size": 256, "n_layers": 1}, "data": {"tokenizer": str(tmp_path / "tok"), "seq_len": 32}},
    }, "study")
    (run,) = plan(study)
    assert run.config.model.vocab_size == 384  # the tokenizer's size, rounded up to a multiple of 128
    assert run.total_params == accounting.param_counts(run.config.model).total
    # A tokenizer that fits the configured vocabulary keeps it; a placeholder path keeps the config's.
    fits = validate(StudyConfig, {**study.model_dump(mode="json"), "base": {
        **study.base.model_dump(mode="json"), "model": {**study.base.model.model_dump(mode="json"), "vocab_size": 512}}}, "s")
    assert plan(fits)[0].config.model.vocab_size == 512
    assert plan(load_study_config("paper"))[0].config.model.vocab_size == 99584
