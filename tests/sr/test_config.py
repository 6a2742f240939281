"""spacelang.sr.config: the SR run configs' defaults, renamed options and strategy names."""

from pathlib import Path

import pytest
from spacelang.backends.cost import cost_report

import spacelang
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


# --------------------------------------------------------------------------- budgets


def test_budgets_are_written_with_si_suffixes(tmp_path: Path) -> None:
    cfg = load_config(SearchConfig, write(tmp_path, "budget_macs: 20G\n"))
    assert cfg.budget_macs == 20 * 10**9 and cfg.budget == cfg.budget_macs
    cfg = load_config(SearchConfig, write(tmp_path, "complexity: params\nbudget_params: 1.5M\n"))
    assert cfg.budget == 1_500_000
    cfg = load_config(SearchConfig, None, {"budget_macs": "68e9"})
    assert cfg.budget == 68 * 10**9
    cfg = load_config(SearchConfig, write(tmp_path, "budgets: [8G, 12G, 300e8]\n"))
    assert cfg.budgets == (8 * 10**9, 12 * 10**9, 30 * 10**9) and cfg.budget is None
    assert cfg.for_budget(8 * 10**9).budget == 8 * 10**9
    assert cfg.for_budget(8 * 10**9).budgets == ()


@pytest.mark.parametrize(("text", "line", "words"), [
    ("iterations: 50\nbudget_macs: 20X\n", 2, "'budget_macs': expected a count such as 20G"),
    ("budgets: [1G, 2.5]\n", 1, "'budgets': item 1: expected a whole count"),
    ("budget_params: 300K\n", 1, "'budget_params' is set but 'complexity' is 'macs'"),
    ("complexity: none\nbudget_macs: 3G\n", 1, "a budget is set but 'complexity' is 'none'"),
    ("budgets: [1G]\nbudget_macs: 3G\n", 1, "either 'budgets'"),
])
def test_bad_budgets_are_located(tmp_path: Path, text: str, line: int, words: str) -> None:
    path = write(tmp_path, text)
    message = error_of(SearchConfig, path)
    assert message.startswith(f"{path}:{line}: error:") and words in message, message


def test_complexity_weight_is_unset_by_default() -> None:
    assert SearchConfig().complexity_weight is None and SearchConfig().budget is None


# --------------------------------------------------------------------------- procedure


@pytest.mark.parametrize(("text", "words"), [
    ("weight_schedule: multistep\n", "needs 'milestones'"),
    ("milestones: [30, 10]\n", "increasing"),
    ("arch_split: ranges\narch_images: [3, 4]\n", "needs 'weight_images' and 'arch_images'"),
    ("weight_images: [0, 3]\narch_images: [3, 4]\n", "only with 'arch_split: ranges'"),
    ("arch_split: ranges\nweight_images: [3, 3]\narch_images: [3, 4]\n", "start < end"),
    ("arch_split: ranges\nweight_images: [0, 3]\narch_images: [3, 4]\narch_data: x\n",
     "not both"),
    ("arch_objective: trainval\n", "did you mean 'train+val'"),
    ("arch_step_order: later\n", "one of 'before', 'after'"),
    ("hfen: dslr\n", "did you mean 'dlsr'"),
])
def test_procedure_options_are_checked(tmp_path: Path, text: str, words: str) -> None:
    message = error_of(SearchConfig, write(tmp_path, text))
    assert words in message, message


def test_reference_config_says_what_the_paper_did() -> None:
    path = Path(__file__).resolve().parents[2] / "spacelang/configs/dlsr_reference.yaml"
    cfg = load_config(SearchConfig, path)
    assert (cfg.arch_objective, cfg.arch_step_order, cfg.strategy) == ("train+val", "after",
                                                                       "darts1")
    assert (cfg.loss, cfg.hfen) == ("l1_hfen", "dlsr")
    assert cfg.hfen_weight == pytest.approx(0.2 / 255)
    assert (cfg.weight_images, cfg.arch_images) == ((0, 3000), (3000, 3450))
    assert cfg.weight_schedule == "multistep" and len(cfg.milestones) == 3
    assert (cfg.batch_size, cfg.patch_size, cfg.complexity) == (64, 64, "none")
    # every setting carries a comment saying where it comes from
    text = path.read_text()
    assert text.count("#") >= 15


def test_the_small_config_budget_lies_inside_its_space() -> None:
    root = Path(__file__).resolve().parents[2]
    cfg = load_config(SearchConfig, root / "spacelang/configs/search_small.yaml")
    space = spacelang.load(root / "spaces/dlsr.space",
                           **{k: str(v) for k, v in cfg.overrides.items()})
    report = cost_report(space.network, cfg.hr_size)
    assert report.extreme("macs", min) < cfg.budget_macs < report.extreme("macs", max)
