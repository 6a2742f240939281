"""spacelang.sr.config: the SR run configs' defaults, renamed options and strategy names."""

from pathlib import Path

import pytest

from spacelang.runtime.config import ConfigError
from spacelang.sr.config import SearchConfig, TrainConfig, load_config


def write(tmp_path: Path, text: str, name: str = "run.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(cls: type, path: Path | None, overrides: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(cls, path, overrides)
    return str(info.value)


def test_defaults() -> None:
    cfg = load_config(TrainConfig, None)
    assert cfg == TrainConfig()
    assert (cfg.scale, cfg.patch_size, cfg.batch_size, cfg.iterations) == (2, 64, 16, 1000)
    assert cfg.lr == 5e-4 and cfg.betas == (0.9, 0.999) and cfg.schedule == "cosine"
    assert cfg.epoch_length is None and cfg.grad_clip is None and cfg.data is None
    search = load_config(SearchConfig, None)
    assert search.patch_size == 48 and search.strategy == "darts1"
    assert search.arch_warmup == 200 and search.lr_warmup == 0
    assert search.arch_betas == (0.5, 0.999) and search.hr_size == (1280, 720)
    assert search.grad_clip == 5.0 and search.overrides == {} and search.gdas_hard is True


def test_old_warmup_name_says_which_warmup(tmp_path: Path) -> None:
    path = write(tmp_path, "iterations: 50\nwarmup: 10\n")
    for cls in (TrainConfig, SearchConfig):
        message = error_of(cls, path)
        assert message.startswith(f"{path}:2: error: unknown option 'warmup' for {cls.__name__}")
        assert "'lr_warmup' (linear LR warm-up" in message and "'arch_warmup'" in message
    assert "did you mean 'lr_warmup'?" in error_of(TrainConfig, write(tmp_path, "warmup_iter: 5"))


def test_strategy_is_a_registered_name(tmp_path: Path) -> None:
    assert load_config(SearchConfig, None, {"strategy": "gdas"}).strategy == "gdas"
    message = error_of(SearchConfig, write(tmp_path, "strategy: gdass\n"))
    assert message.startswith(f"{tmp_path / 'run.yaml'}:1: error: 'strategy' must be one of")
    assert "'darts1', 'darts2', 'gdas'" in message and "did you mean 'gdas'?" in message
