import pytest

from seqify.config import BenchConfig, deep_merge, for_dataset, load_config_file, resolve_config, validate_model
from seqify.errors import ConfigError


def test_defaults_run_and_layers_merge_in_order():
    cfg = resolve_config({"train": {"steps": 5, "lr": 1e-3}}, {"train": {"steps": 7}}, {"eval": {"n_test": 3}})
    assert cfg.train.steps == 7 and cfg.train.lr == 1e-3 and cfg.eval.n_test == 3
    assert BenchConfig().train.batch_size == 64


def test_invalid_value_names_the_field():
    with pytest.raises(ConfigError, match=r"train\.steps: .*got 'many'"):
        resolve_config(cli_overrides={"train": {"steps": "many"}})
    with pytest.raises(ConfigError, match=r"train\.lr"):
        resolve_config(cli_overrides={"train": {"lr": -1}})
    with pytest.raises(ConfigError, match=r"trian"):
        resolve_config(cli_overrides={"trian": {"steps": 1}})


def test_component_settings_are_validated_with_prefix():
    from seqify_orderers.orderers import RAROptions

    with pytest.raises(ConfigError, match=r"orderer\.anneal_start"):
        validate_model(RAROptions, {"anneal_start": 2}, "orderer")


def test_config_files_toml_yaml_json(tmp_path):
    (tmp_path / "a.toml").write_text("[train]\nsteps = 11\n")
    (tmp_path / "a.yaml").write_text("train:\n  steps: 12\n")
    (tmp_path / "a.json").write_text('{"train": {"steps": 13}}')
    for name, steps in (("a.toml", 11), ("a.yaml", 12), ("a.json", 13)):
        assert resolve_config(file_data=load_config_file(tmp_path / name)).train.steps == steps
    (tmp_path / "bad.toml").write_text("[train\n")
    with pytest.raises(ConfigError, match="could not be parsed"):
        load_config_file(tmp_path / "bad.toml")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config_file(tmp_path / "missing.toml")
    (tmp_path / "a.ini").write_text("x")
    with pytest.raises(ConfigError, match="use .toml"):
        load_config_file(tmp_path / "a.ini")


def test_deep_merge_does_not_mutate():
    base = {"a": {"b": 1}}
    out = deep_merge(base, {"a": {"c": 2}})
    assert out == {"a": {"b": 1, "c": 2}} and base == {"a": {"b": 1}}


def test_budget_tables_merge_dataset_then_tokenizer_then_generator():
    preset = {
        "train": {"steps": 10, "lr": 1.0},
        "per_dataset": {"qm9": {"train": {"steps": 20}}},
        "per_tokenizer": {"vq": {"train": {"lr": 2.0}}},
        "per_generator": {"masked": {"generator": {"axis_heads": True}, "train": {"lr": 3.0}}},
    }
    assert for_dataset(preset, "qm9", "vq", "masked") == {
        "train": {"steps": 20, "lr": 3.0}, "generator": {"axis_heads": True}}
    assert for_dataset(preset, "zinc", "vq", "causal") == {"train": {"steps": 10, "lr": 2.0}}
    assert for_dataset(preset, "zinc") == {"train": {"steps": 10, "lr": 1.0}}


def test_sudoku_quick_budget_gives_axis_heads_to_the_masked_generator_only(tmp_path):
    from seqify.bench import BenchRequest, resolve_cell

    masked = resolve_cell(BenchRequest(modality="sudoku", orderer="margin", generator="masked", out=tmp_path))
    causal = resolve_cell(BenchRequest(modality="sudoku", orderer="raster", generator="causal", out=tmp_path))
    assert masked.generator_config.axis_heads and not causal.generator_config.axis_heads
