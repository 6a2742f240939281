"""Tests for spacelang.runtime.config: typed YAML configs (shown on the SR task's configs)."""

from pathlib import Path

import attrs
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from spacelang.runtime.config import (
    ConfigError,
    config_changes,
    dump_config,
    load_config,
    parse_config,
    parse_overrides,
)
from spacelang.sr.config import SearchConfig, TrainConfig


def write(tmp_path: Path, text: str, name: str = "run.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(cls: type, path: Path | None, overrides: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(cls, path, overrides)
    return str(info.value)


@pytest.mark.parametrize("text", ["", "\n", "# only a comment\n", "---\n"])
def test_empty_file_gives_defaults(tmp_path: Path, text: str) -> None:
    assert load_config(TrainConfig, write(tmp_path, text)) == TrainConfig()


def test_values_are_converted_by_annotation(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "scale: 4\n"
        "patch_size: 96\n"
        "lr: 1e-4          # PyYAML reads this as a string\n"
        "iterations: 1e3   # an exact integer in float notation\n"
        "weight_decay: 0   # an int for a float field\n"
        "betas: [0.8, 0.99]\n"
        "schedule: step\n"
        "epoch_length: null\n"
        "grad_clip: 2\n"
        "data: /datasets/DIV2K\n",
    )
    cfg = load_config(TrainConfig, path)
    assert cfg.lr == 1e-4 and type(cfg.lr) is float
    assert cfg.iterations == 1000 and type(cfg.iterations) is int
    assert cfg.weight_decay == 0.0 and type(cfg.weight_decay) is float
    assert cfg.betas == (0.8, 0.99)
    assert cfg.schedule == "step" and cfg.epoch_length is None
    assert cfg.grad_clip == 2.0 and cfg.data == "/datasets/DIV2K"


def test_unknown_key_did_you_mean_with_line(tmp_path: Path) -> None:
    path = write(tmp_path, "scale: 2\n\n# the run length\niteratons: 500\n")
    message = error_of(TrainConfig, path)
    assert message == (
        f"{path}:4: error: unknown option 'iteratons' for TrainConfig; did you mean 'iterations'?"
    )


def test_unknown_key_basicsr_name_and_no_match(tmp_path: Path) -> None:
    assert "did you mean 'iterations'?" in error_of(TrainConfig, write(tmp_path, "total_iter: 5"))
    message = error_of(TrainConfig, write(tmp_path, "a: 1\nzzzzz: 3\n"))
    assert message.startswith(f"{tmp_path / 'run.yaml'}:1: error: unknown option 'a'")
    assert "valid options are: scale, patch_size" in message
    assert "did you mean 'weight_lr'?" in error_of(SearchConfig, write(tmp_path, "lr: 1e-3"))


def test_wrong_type_reports_value_line(tmp_path: Path) -> None:
    path = write(tmp_path, "scale: 2\nbatch_size:\n  sixteen\n")
    assert error_of(TrainConfig, path) == (
        f"{path}:3: error: 'batch_size': expected an integer, got 'sixteen'"
    )


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("iterations: 1000.5", "not a whole number"),
        ("iterations: 2.5e3x", "expected an integer, got '2.5e3x'"),
        ("iterations: true", "expected an integer, got boolean true"),
        ("lr: fast", "expected a number, got 'fast'"),
        ("lr: .nan", "expected a finite number"),
        ("lr: [1, 2]", "expected a number, got a list"),
        ("betas: [0.9]", "expected a list of 2 numbers"),
        ("betas: [0.9, x]", "item 1: expected a number"),
        ("data: 12", "expected a string, got 12"),
        ("epoch_length: many", "expected an integer, got 'many'"),
    ],
)
def test_type_errors(tmp_path: Path, line: str, expected: str) -> None:
    path = write(tmp_path, f"seed: 1\n{line}\n")
    message = error_of(TrainConfig, path)
    assert message.startswith(f"{path}:2: error: ")
    assert expected in message


def test_float_accepts_exponent_strings(tmp_path: Path) -> None:
    cfg = load_config(SearchConfig, write(tmp_path, "arch_lr: 3e-4\nweight_lr: '2E-3'\n"))
    assert cfg.arch_lr == 3e-4 and cfg.weight_lr == 2e-3


def test_invalid_literal_lists_choices(tmp_path: Path) -> None:
    path = write(tmp_path, "schedule: cosin\n")
    assert error_of(TrainConfig, path) == (
        f"{path}:1: error: 'schedule': expected one of 'step', 'cosine'; got 'cosin' "
        "(did you mean 'cosine'?)"
    )
    message = error_of(SearchConfig, write(tmp_path, "strategy: enas\n"))
    assert "must be one of 'darts1', 'darts2', 'gdas'; got 'enas'" in message


@pytest.mark.parametrize(
    ("text", "line", "expected"),
    [
        ("iterations: 0", 1, "'iterations' must be > 0, got 0"),
        ("batch_size: -4", 1, "'batch_size' must be > 0"),
        ("patch_size: 0", 1, "'patch_size' must be > 0"),
        ("lr: 0", 1, "'lr' must be > 0"),
        ("seed: 1\nworkers: -1", 2, "'workers' must be >= 0"),
        ("betas: [0.9, 1.0]", 1, "'betas' must hold values in [0, 1)"),
        ("scale: 3\npatch_size: 64", 2, "'patch_size' (64) must be a multiple of 'scale' (3)"),
        (
            "lr_warmup: 10\niterations: 10",
            1,
            "'lr_warmup' (10) must be less than 'iterations' (10)",
        ),
        ("grad_clip: 0", 1, "'grad_clip' must be > 0"),
    ],
)
def test_value_checks(tmp_path: Path, text: str, line: int, expected: str) -> None:
    path = write(tmp_path, text + "\n")
    message = error_of(TrainConfig, path)
    assert message.startswith(f"{path}:{line}: error: {expected}")


def test_search_cross_checks(tmp_path: Path) -> None:
    path = write(tmp_path, "gdas_tau_max: 1\ngdas_tau_min: 2\n")
    assert error_of(SearchConfig, path).startswith(f"{path}:2: error: 'gdas_tau_min' (2.0)")
    assert error_of(SearchConfig, None, {"iterations": "100"}) == (
        "--config-set iterations=100: error: 'arch_warmup' (200) must be less than "
        "'iterations' (100)"
    )


def test_optional_int_and_mapping_field(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "budget_macs: 2e9\nbudget_params: null\nhr_size: [640, 360]\noverrides:\n  C: 16\n  N: 4\n",
    )
    cfg = load_config(SearchConfig, path)
    assert cfg.budget_macs == 2_000_000_000 and cfg.budget_params is None
    assert cfg.hr_size == (640, 360) and cfg.overrides == {"C": 16, "N": 4}
    bad = write(tmp_path, "overrides:\n  C: 16\n  N: four\n")
    assert error_of(SearchConfig, bad) == (
        f"{bad}:3: error: 'overrides': entry 'N': expected an integer, got 'four'"
    )


@pytest.mark.parametrize(
    ("text", "line", "expected"),
    [
        ("- 1\n- 2\n", 1, "expected a mapping of option names to values, got a list"),
        ("just text\n", 1, "expected a mapping of option names to values, got a single value"),
        ("scale: 2\nlr: [1\n", 3, "invalid YAML"),
        ("lr: 1\nscale: 2\nlr: 2\n", 3, "duplicate key 'lr' (first set on line 1)"),
        ("1: 2\n", 1, "option names must be strings"),
    ],
)
def test_malformed_files(tmp_path: Path, text: str, line: int, expected: str) -> None:
    path = write(tmp_path, text)
    message = error_of(TrainConfig, path)
    assert message.startswith(f"{path}:{line}: error: ")
    assert expected in message


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    assert error_of(TrainConfig, path) == f"{path}: error: config file not found"


def test_overrides_use_the_same_rules(tmp_path: Path) -> None:
    path = write(tmp_path, "lr: 1e-3\niterations: 50\n")
    cfg = load_config(
        TrainConfig,
        path,
        {"lr": "2e-4", "iterations": "1e2", "betas": "0.5, 0.9", "grad_clip": "null"},
    )
    assert (cfg.lr, cfg.iterations, cfg.betas, cfg.grad_clip) == (2e-4, 100, (0.5, 0.9), None)
    assert load_config(TrainConfig, None, {"betas": "[0.1, 0.2]"}).betas == (0.1, 0.2)
    assert load_config(TrainConfig, None, {"data": "none"}).data is None

    search = load_config(
        SearchConfig,
        None,
        {"overrides.C": "24", "overrides.N": "3", "gdas_hard": "no", "hr_size": "[64, 32]"},
    )
    assert search.overrides == {"C": 24, "N": 3} and search.gdas_hard is False
    assert search.hr_size == (64, 32)
    assert load_config(SearchConfig, None, {"overrides": "{C: 8}"}).overrides == {"C": 8}


def test_override_errors() -> None:
    assert error_of(TrainConfig, None, {"lr": "abc"}) == (
        "--config-set lr=abc: error: 'lr': expected a number, got 'abc'"
    )
    assert error_of(TrainConfig, None, {"iteratons": "5"}) == (
        "--config-set iteratons=5: error: unknown option 'iteratons' for TrainConfig; "
        "did you mean 'iterations'?"
    )
    assert "has no sub-options" in error_of(TrainConfig, None, {"lr.x": "1"})
    # a cross-field error is attributed to the option the user set
    assert error_of(TrainConfig, None, {"scale": "3"}) == (
        "--config-set scale=3: error: 'patch_size' (64) must be a multiple of 'scale' (3)"
    )


def test_parse_overrides() -> None:
    assert parse_overrides(["lr=1e-4", " scale = 3 ", "data=a=b"]) == {
        "lr": "1e-4",
        "scale": "3",
        "data": "a=b",
    }
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_overrides(["lr"])


def test_direct_construction_is_validated() -> None:
    with pytest.raises(ConfigError, match="'lr' must be > 0"):
        TrainConfig(lr=-1.0)
    with pytest.raises(ConfigError, match="'iterations' must be an integer"):
        TrainConfig(iterations="5")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="must be one of"):
        SearchConfig(strategy="random")  # type: ignore[arg-type]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        TrainConfig().lr = 1.0  # type: ignore[misc]


def test_dump_round_trips(tmp_path: Path) -> None:
    train_cfg = TrainConfig(
        scale=3,
        patch_size=48,
        lr=1.5e-4,
        betas=(0.8, 0.95),
        schedule="step",
        data="x y/z",
        epoch_length=800,
        grad_clip=0.5,
        seed=17,
    )
    search_cfg = SearchConfig(
        strategy="gdas",
        budget_macs=123456789,
        overrides={"C": 16, "N": 2},
        hr_size=(320, 180),
        data="123",
        gdas_hard=False,
        grad_clip=None,
    )
    for cfg in (train_cfg, search_cfg, TrainConfig(), SearchConfig()):
        text = dump_config(cfg)
        assert parse_config(type(cfg), text) == cfg
        path = write(tmp_path, text, "resolved.yaml")
        assert load_config(type(cfg), path) == cfg


@settings(max_examples=40, deadline=None)
@given(
    lr=st.floats(min_value=1e-12, max_value=1e3, allow_nan=False),
    iterations=st.integers(min_value=1, max_value=10**12),
    data=st.one_of(st.none(), st.text(max_size=20)),
)
@example(lr=1.0, iterations=1, data="\x85")  # NEL: PyYAML's unicode output mangles it
def test_dump_round_trip_property(lr: float, iterations: int, data: str | None) -> None:
    cfg = TrainConfig(lr=lr, iterations=iterations, data=data)
    assert parse_config(TrainConfig, dump_config(cfg)) == cfg


def test_config_changes_names_each_differing_field_except_the_allowed() -> None:
    old = TrainConfig(iterations=10, lr=1e-3)
    new = TrainConfig(iterations=20, lr=2e-3, seed=5)
    assert config_changes(old, new) == [
        "iterations 10 -> 20", "lr 0.001 -> 0.002", "seed 0 -> 5"]
    assert config_changes(old, new, allowed={"iterations"}) == ["lr 0.001 -> 0.002", "seed 0 -> 5"]
    assert config_changes(new, new) == []
