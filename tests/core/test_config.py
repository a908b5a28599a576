"""Config validation: one line naming the field, did-you-mean for unknown keys."""

import pytest

from moelab.config import ModelConfig, RunConfig, StudyConfig, load_run_config, load_study_config, validate
from moelab.errors import UserError


def err(data, cls=RunConfig):
    with pytest.raises(UserError) as info:
        validate(cls, data, "run.yaml")
    msg = str(info.value)
    assert "\n" not in msg
    return msg


def test_k_greater_than_e():
    assert "top_k=4 exceeds num_experts=2" in err({"model": {"num_experts": 2, "top_k": 4}})


def test_heads_must_divide():
    assert "not divisible by n_heads" in err({"model": {"d_model": 100, "n_heads": 3}})


def test_unknown_key_did_you_mean():
    msg = err({"model": {"num_expert": 4}})
    assert "unknown key 'model.num_expert'" in msg and "did you mean 'num_experts'" in msg


def test_wrong_type_names_field():
    assert "train.lr" in err({"train": {"lr": "fast"}})


def test_negative_budget():
    assert "budget must be positive" in err({"budgets": [-1.0]}, StudyConfig)


def test_yaml_roundtrip(tmp_path):
    import yaml

    cfg = RunConfig(model=ModelConfig(num_experts=4, top_k=2))
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    assert load_run_config(path) == cfg


def test_truncated_yaml(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  d_model: [64\n")
    with pytest.raises(UserError, match="invalid YAML"):
        load_run_config(path)


def test_missing_file_and_unknown_preset(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        load_run_config(tmp_path / "nope.yaml")
    with pytest.raises(UserError, match="unknown study preset"):
        load_study_config("no-such-preset")
