"""`spacelang train`, `eval` and `search`, run in-process on a tiny spec and tiny data:
a short training run leaves a usable run folder, and user mistakes end with exit
status 2 and a message, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from spacelang.api import load
from spacelang.cli import run_cli
from spacelang.runtime.checkpoint import load_checkpoint
from spacelang.runtime.loop import Loop
from tests.photos import write_photos

# A network without a `scale` parameter: the factor is fixed at 2.
NO_SCALE = """\
network twice(C = 8) {
    s = conv(input, C, k=3)
    up = conv(s, 12, k=3)
    return pixel_shuffle(up, 2)
}
"""

TRAIN_CONFIG = """\
iterations: 6
batch_size: 2
patch_size: 16
checkpoint_every: 3
val_every: 6
epoch_length: 4
"""


pytestmark = pytest.mark.usefixtures("torch_one_thread", "in_tmp")


@pytest.fixture
def images(tmp_path) -> Path:
    """A folder of four 32×32 RGB photographs (smooth, so that SR is learnable)."""
    return write_photos(tmp_path / "images", 4, 32, prefix="img")


@pytest.fixture
def weights(tmp_path, spec) -> Path:
    """A state dict for `tiny` saved by name."""
    torch.manual_seed(0)
    path = tmp_path / "tiny.pt"
    torch.save(load(spec).fixed().state_dict(), path)
    return path


@pytest.fixture
def config(tmp_path) -> Path:
    path = tmp_path / "train.yaml"
    path.write_text(TRAIN_CONFIG, encoding="utf-8")
    return path


def user_error(result: tuple[int, str, str], *fragments: str) -> str:
    """Check a CLI result is a user error (exit 2, message on stderr); returns stderr."""
    code, out, err = result
    assert code == 2, (code, out, err)
    assert "Traceback" not in err and "Traceback" not in out
    assert "internal error" not in err
    # Commands may announce what they start before failing; the error is a line of its own.
    lines = err.splitlines()
    assert any(line.startswith("error") or ": error:" in line for line in lines), err
    for fragment in fragments:
        assert fragment in err, err
    return err


# --------------------------------------------------------------------------- eval


def test_eval_by_name_on_a_folder_of_images(cli, spec, weights, images):
    code, out, err = cli("eval", str(spec), "--weights", str(weights), "--data", str(images),
                         "--scale", "2", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert [row["name"] for row in result["images"]] == [f"img{i}" for i in range(4)]
    assert result["channel"] == "y" and result["scale"] == 2
    assert np.isfinite(result["psnr"]) and -1 <= result["ssim"] <= 1


def test_eval_prints_a_table(cli, spec, weights, images):
    code, out, err = cli("eval", str(spec), "--weights", str(weights), "--data", str(images),
                         "--scale", "2")
    assert code == 0, err
    assert "PSNR" in out and "SSIM" in out and "mean" in out and "img3" in out


def test_eval_with_a_missing_weights_file(cli, spec, images, tmp_path):
    missing = tmp_path / "nowhere.pt"
    user_error(cli("eval", str(spec), "--weights", str(missing), "--data", str(images),
                   "--scale", "2"), "checkpoint not found", str(missing))


def test_eval_with_weights_of_another_width(cli, spec, images, tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "wide.pt"
    torch.save(load(spec, C=16).fixed().state_dict(), path)
    user_error(cli("eval", str(spec), "--weights", str(path), "--data", str(images),
                   "--scale", "2"), "'s.weight'", "(16, 3, 3, 3)", "(8, 3, 3, 3)")


def test_eval_with_a_text_file_as_weights(cli, spec, images, tmp_path):
    path = tmp_path / "notes.pt"
    path.write_text("not weights", encoding="utf-8")
    user_error(cli("eval", str(spec), "--weights", str(path), "--data", str(images),
                   "--scale", "2"), "is not a PyTorch checkpoint")


def test_eval_with_a_bad_weights_map(cli, spec, weights, images, tmp_path):
    map_path = tmp_path / "map.yaml"
    map_path.write_text("rename:\n  '^(s$': x\n", encoding="utf-8")
    user_error(cli("eval", str(spec), "--weights", str(weights), "--weights-map", str(map_path),
                   "--data", str(images), "--scale", "2"), str(map_path), "bad pattern")


def test_eval_with_a_corrupt_image_in_the_data(cli, spec, weights, images):
    (images / "img9.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    user_error(cli("eval", str(spec), "--weights", str(weights), "--data", str(images),
                   "--scale", "2"), "img9.png")


def test_eval_with_a_truncated_image_in_a_benchmark_folder(cli, spec, weights, images,
                                                            tmp_path):
    hr = tmp_path / "bench" / "HR"
    hr.mkdir(parents=True)
    data = (images / "img0.png").read_bytes()
    (hr / "good.png").write_bytes(data)
    (hr / "cut.png").write_bytes(data[: len(data) // 2])
    user_error(cli("eval", str(spec), "--weights", str(weights), "--data", str(tmp_path / "bench"),
                   "--scale", "2"), "cut.png")


def test_eval_with_a_missing_data_folder(cli, spec, weights, tmp_path):
    user_error(cli("eval", str(spec), "--weights", str(weights), "--data",
                   str(tmp_path / "nodata"), "--scale", "2"), "does not exist")


def test_eval_with_the_wrong_scale_for_a_spec_without_a_scale_parameter(cli, tmp_path, images):
    spec = tmp_path / "twice.space"
    spec.write_text(NO_SCALE, encoding="utf-8")
    torch.save(load(spec).fixed().state_dict(), tmp_path / "twice.pt")
    user_error(cli("eval", str(spec), "--weights", str(tmp_path / "twice.pt"), "--data",
                   str(images), "--scale", "3"), "--scale 3", "×2")
    code, _, err = cli("eval", str(spec), "--weights", str(tmp_path / "twice.pt"), "--data",
                       str(images), "--scale", "2", "--json")
    assert code == 0, err


def test_eval_scale_sets_the_scale_parameter(cli, spec, images, tmp_path):
    """--scale 3 builds the ×3 network; ×2 weights then do not fit its upsampler."""
    torch.save(load(spec, scale=3).fixed().state_dict(), tmp_path / "x3.pt")
    code, out, err = cli("eval", str(spec), "--weights", str(tmp_path / "x3.pt"), "--data",
                         str(images), "--scale", "3", "--json")
    assert code == 0, err
    assert json.loads(out)["scale"] == 3
    user_error(cli("eval", str(spec), "--weights", str(tmp_path / "x3.pt"), "--data",
                   str(images), "--scale", "2"), "up.weight", "(27, 8, 3, 3)", "(12, 8, 3, 3)")
    user_error(cli("eval", str(spec), "--weights", str(tmp_path / "x3.pt"), "--data",
                   str(images), "--scale", "2", "--set", "scale=3"), "--scale 2", "×3")


@pytest.mark.parametrize(
    ("flag", "expected"),
    [
        ("C", "--set expects NAME=VALUE, got 'C'"),
        ("=3", "--set expects NAME=VALUE"),
        ("C=", "--set expects NAME=VALUE"),
        ("Q=3", "`Q`"),
        ("C=wide", "--set C=wide"),
    ],
)
def test_eval_with_a_bad_set(cli, spec, weights, images, flag, expected):
    user_error(cli("eval", str(spec), "--weights", str(weights), "--data", str(images),
                   "--scale", "2", "--set", flag), expected)


def test_eval_without_required_flags(cli, spec):
    user_error(cli("eval", str(spec), "--scale", "2"), "--weights")


# --------------------------------------------------------------------------- train, then eval


def test_train_a_tiny_spec_then_eval_its_weights(cli, spec, images, config, tmp_path):
    run = tmp_path / "run"
    code, out, err = cli("train", str(spec), "--config", str(config), "--data", str(images),
                         "--run-dir", str(run), "--no-progress")
    assert code == 0, err
    assert "Traceback" not in err
    assert "trained 6 iterations" in out
    for name in ("config.yaml", "metrics.jsonl", "last.pt", "best.pt"):
        assert (run / name).is_file(), name
    assert "iterations: 6" in (run / "config.yaml").read_text(encoding="utf-8")
    records = [json.loads(line) for line in
               (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    assert records and max(r.get("iteration", 0) for r in records) == 6

    last = load_checkpoint(run / "last.pt")
    assert last["iteration"] == 6
    best = load_checkpoint(run / "best.pt")
    # best.pt keeps the weights under "model", next to metadata; eval must find them there.
    assert set(best["model"]) == {"s.weight", "s.bias", "up.weight", "up.bias"}
    assert any(not isinstance(v, torch.Tensor) for v in best.values())

    for weights_file in ("best.pt", "last.pt"):
        code, out, err = cli("eval", str(spec), "--weights", str(run / weights_file), "--data",
                             str(images), "--scale", "2", "--json")
        assert code == 0, err
        result = json.loads(out)
        assert len(result["images"]) == 4 and np.isfinite(result["psnr"])

    # The weights really are the trained ones, not a fresh initialisation.
    from spacelang.sr.weights import load_weights

    model = load(spec).fixed()
    load_weights(model, run / "best.pt")
    for key, tensor in model.state_dict().items():
        assert torch.equal(tensor, best["model"][key]), key

    # A second fresh run into the same folder is refused; resuming a finished run is fine.
    user_error(cli("train", str(spec), "--config", str(config), "--data", str(images),
                   "--run-dir", str(run), "--no-progress"), "already holds a training run")
    code, out, err = cli("train", str(spec), "--config", str(config), "--data", str(images),
                         "--run-dir", str(run), "--resume", "--no-progress")
    assert code == 0, err


def test_train_resume_needs_a_run_dir(cli, spec, images, config, tmp_path):
    user_error(cli("train", str(spec), "--config", str(config), "--data", str(images),
                   "--resume"), "--resume needs --run-dir")
    assert not (tmp_path / "runs").exists()
    # The flag is checked before any data is opened.
    user_error(cli("train", str(spec), "--config", str(config), "--data",
                   str(tmp_path / "no_such_data"), "--resume"), "--resume needs --run-dir")


def test_train_resume_of_a_run_that_never_started(cli, spec, images, config, tmp_path):
    user_error(cli("train", str(spec), "--config", str(config), "--data", str(images),
                   "--run-dir", str(tmp_path / "empty"), "--resume"), "cannot resume")


def test_train_config_with_an_unknown_key(cli, spec, images, tmp_path):
    config = tmp_path / "typo.yaml"
    config.write_text("iterations: 6\nbatchsize: 2\n", encoding="utf-8")
    err = user_error(cli("train", str(spec), "--config", str(config), "--data", str(images),
                         "--run-dir", str(tmp_path / "run")),
                     "unknown option 'batchsize'", "did you mean 'batch_size'?")
    assert err.startswith(f"{config}:2: error")
    assert not (tmp_path / "run").exists()


def test_train_config_with_a_familiar_name_from_elsewhere(cli, spec, images, tmp_path):
    config = tmp_path / "basicsr.yaml"
    config.write_text("total_iter: 6\n", encoding="utf-8")
    user_error(cli("train", str(spec), "--config", str(config), "--data", str(images)),
               "did you mean 'iterations'?")


def test_train_with_a_missing_config(cli, spec, images, tmp_path):
    user_error(cli("train", str(spec), "--config", str(tmp_path / "none.yaml"), "--data",
                   str(images)), "config file not found")


# --------------------------------------------------------------------------- search


def test_search_on_a_fixed_spec(cli, spec, images, tmp_path):
    user_error(cli("search", str(spec), "--data", str(images), "--run-dir",
                   str(tmp_path / "search"), "--no-progress"),
               "nothing to search", "spacelang train")


def test_search_resume_needs_a_run_dir(cli, spec, images):
    user_error(cli("search", str(spec), "--data", str(images), "--resume"),
               "--resume needs --run-dir")
    user_error(cli("search", str(spec), "--data", "no_such_data", "--resume"),
               "--resume needs --run-dir")


def test_derive_from_something_that_is_not_a_search_run(cli, tmp_path, weights):
    user_error(cli("derive", str(weights)), "not a spacelang search checkpoint")
    user_error(cli("derive", str(tmp_path / "nothing")), "not found")


def test_train_refuses_a_network_that_is_not_rgb(tmp_path, capsys):
    spec = tmp_path / "gray.space"
    spec.write_text("network gray(input: 1, C = 8, scale = 2) {\n"
                    "    s = conv(input, C, k=3)\n"
                    "    return pixel_shuffle(conv(s, scale * scale, k=3), scale)\n"
                    "}\n")
    assert run_cli(["train", str(spec), "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "maps 1 to 1 channels" in err and "Traceback" not in err


# --------------------------------------------------------------------------- one loop, one format

SEARCHABLE = """\
import "ops.space"

choice mix = [conv_1x1, conv_3x3]

network tiny(C = 4, scale = 2) {
    s = conv(input, C, k=3)
    m = mix(s)
    return pixel_shuffle(conv(m, 3 * scale * scale, k=3), scale)
}
"""

SEARCH_CONFIG = """\
iterations: 6
arch_warmup: 2
batch_size: 2
patch_size: 16
checkpoint_every: 3
val_every: 6
epoch_length: 4
complexity: none
"""

#: What the runtime loop writes into every run's last.pt, whichever command runs it.
LOOP_KEYS = {"kind", "version", "iteration", "config", "rng", "loss_window", "elapsed", "model"}


@pytest.fixture(params=["train", "search"])
def run_of(request, tmp_path, spec):
    """(command, spec, config text) of a short run of either command."""
    if request.param == "train":
        return "train", spec, TRAIN_CONFIG
    path = tmp_path / "searchable.space"
    path.write_text(SEARCHABLE, encoding="utf-8")
    return "search", path, SEARCH_CONFIG


def test_train_and_search_share_the_loop_checkpoint_and_resume(cli, run_of, images, tmp_path,
                                                               monkeypatch):
    command, spec_path, text = run_of
    config = tmp_path / "run.yaml"
    config.write_text(text, encoding="utf-8")
    run = tmp_path / "run"
    args = (command, str(spec_path), "--config", str(config), "--data", str(images),
            "--run-dir", str(run), "--no-progress")
    looped = []
    original_run = Loop.run

    def run_and_record(self, *a, **k):
        looped.append(self.kind)
        return original_run(self, *a, **k)

    monkeypatch.setattr(Loop, "run", run_and_record)
    code, _, err = cli(*args)
    assert code == 0, err
    assert looped == [f"spacelang.{command}"]  # both commands run the one runtime loop
    last = load_checkpoint(run / "last.pt")
    assert set(last) >= LOOP_KEYS
    assert (last["kind"], last["version"], last["iteration"]) == (f"spacelang.{command}", 2, 6)

    # extending a finished run is a resume the config check allows
    config.write_text(text.replace("iterations: 6", "iterations: 9"), encoding="utf-8")
    code, _, err = cli(*args, "--resume")
    assert code == 0, err
    assert load_checkpoint(run / "last.pt")["iteration"] == 9
    records = [json.loads(line) for line in
               (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    assert max(r["iteration"] for r in records) == 9


def test_resume_with_a_changed_config_is_refused_naming_the_keys(cli, run_of, images,
                                                                 tmp_path):
    command, spec_path, text = run_of
    config = tmp_path / "run.yaml"
    config.write_text(text, encoding="utf-8")
    run = tmp_path / "run"
    args = (command, str(spec_path), "--config", str(config), "--data", str(images),
            "--run-dir", str(run), "--no-progress")
    assert cli(*args)[0] == 0
    before = (run / "last.pt").read_bytes()
    config.write_text(text.replace("batch_size: 2", "batch_size: 4") + "seed: 7\n",
                      encoding="utf-8")
    err = user_error(cli(*args, "--resume"), "cannot resume",
                     "the config changed in batch_size, seed", "batch_size 2 -> 4")
    assert "iterations" in err  # listed among the settings that may change
    assert (run / "last.pt").read_bytes() == before  # nothing lost


def test_resume_of_another_commands_run_is_refused(cli, spec, images, config, tmp_path):
    run = tmp_path / "run"
    assert cli("train", str(spec), "--config", str(config), "--data", str(images),
               "--run-dir", str(run), "--no-progress")[0] == 0
    searchable = tmp_path / "searchable.space"
    searchable.write_text(SEARCHABLE, encoding="utf-8")
    search_config = tmp_path / "search.yaml"
    search_config.write_text(SEARCH_CONFIG, encoding="utf-8")
    user_error(cli("search", str(searchable), "--config", str(search_config), "--data",
                   str(images), "--run-dir", str(run), "--resume", "--no-progress"),
               "is a 'spacelang.train' checkpoint, not 'spacelang.search'")


# --------------------------------------------------------------------------- budgets

PARETO_SPEC = """\
import "ops.space"

choice light = [conv_1x1, conv_3x3, conv_5x5]

network pareto(C = 4, scale = 2, rgb_range = 1) {
    f = conv(input, C, k=3)
    y = light(f) + f
    return pixel_shuffle(conv(y, 3 * scale * scale, k=3), scale)
}
"""

PARETO_CONFIG = """\
iterations: 8
arch_warmup: 4
patch_size: 16
batch_size: 2
epoch_length: 4
arch_lr: 0.05
hr_size: [64, 64]
log_every: 2
checkpoint_every: 4
val_every: 8
"""


@pytest.fixture
def pareto_setup(tmp_path):
    spec = tmp_path / "pareto.space"
    spec.write_text(PARETO_SPEC, encoding="utf-8")
    cfg = tmp_path / "search.yaml"
    cfg.write_text(PARETO_CONFIG, encoding="utf-8")
    return spec, cfg


def test_a_pareto_family_in_one_command(cli, pareto_setup, images, tmp_path):
    spec, cfg = pareto_setup
    run = tmp_path / "family"
    code, out, err = cli("search", str(spec), "--config", str(cfg), "--data", str(images),
                         "--run-dir", str(run), "--budget", "2M", "--budget", "5M",
                         "--no-progress")
    assert code == 0, err
    rows = json.loads((run / "pareto.json").read_text())
    assert [r["budget"] for r in rows] == [2_000_000, 5_000_000]
    for row in rows:
        derived = load(run / row["derived"])
        assert derived.is_fixed
        cost = derived.cost((64, 64)).base
        assert (row["params"], row["macs"]) == (cost.params, cost.macs)
        assert row["macs"] <= row["budget"]  # derive: budget, met from below
    assert (run / "budget-2M" / "derived.space").exists()
    assert (run / "budget-5M" / "derived.pt").exists()
    csv_lines = (run / "pareto.csv").read_text().splitlines()
    assert csv_lines[0] == "budget,params,macs,val_psnr,derived" and len(csv_lines) == 3
    # the warm-up ran once; both budgets continue from its checkpoint
    warm = [json.loads(line) for line in (run / "warmup" / "metrics.jsonl").read_text()
            .splitlines()]
    assert warm[-1]["iteration"] == 4
    for member in ("budget-2M", "budget-5M"):
        records = [json.loads(line) for line in (run / member / "metrics.jsonl").read_text()
                   .splitlines()]
        assert records[:len(warm)] == warm and records[-1]["iteration"] == 8
    assert "budget 2M" in out and "budget 5M" in out


def test_a_pareto_member_equals_a_single_search_with_its_budget(cli, pareto_setup, images,
                                                                tmp_path):
    spec, cfg = pareto_setup
    assert cli("search", str(spec), "--config", str(cfg), "--data", str(images), "--run-dir",
               str(tmp_path / "family"), "--budget", "2M", "--budget", "5M",
               "--no-progress")[0] == 0
    assert cli("search", str(spec), "--config", str(cfg), "--data", str(images), "--run-dir",
               str(tmp_path / "single"), "--budget", "5M", "--no-progress")[0] == 0
    family = load_checkpoint(tmp_path / "family" / "budget-5M" / "last.pt")["model"]
    single = load_checkpoint(tmp_path / "single" / "last.pt")["model"]
    for key, value in single.items():
        torch.testing.assert_close(family[key], value, rtol=0, atol=0)


@pytest.mark.parametrize(("flags", "fragments"), [
    (["--budget", "12X"], ["--budget", "such as 20G"]),
    (["--budget", "1G", "--budget-params", "3K"], ["not both"]),
    (["--budget-params", "0"], ["> 0"]),
])
def test_bad_budget_flags(cli, pareto_setup, images, tmp_path, flags, fragments):
    spec, cfg = pareto_setup
    user_error(cli("search", str(spec), "--config", str(cfg), "--data", str(images),
                   "--run-dir", str(tmp_path / "r"), *flags), *fragments)


def test_search_with_patches_too_small_for_esa_is_a_user_error(cli, images, tmp_path,
                                                               spaces_dir):
    cfg = tmp_path / "small.yaml"
    cfg.write_text(PARETO_CONFIG.replace("patch_size: 16", "patch_size: 20"), encoding="utf-8")
    err = user_error(cli("search", str(spaces_dir / "dlsr.space"), "--set", "C=4",
                         "--config", str(cfg), "--data", str(images), "--run-dir",
                         str(tmp_path / "r"), "--no-progress"),
                     "'patch_size' 20 is too small", "at least 30")
    assert not (tmp_path / "r" / "last.pt").exists()
    cfg.write_text(PARETO_CONFIG.replace("patch_size: 16", "patch_size: 30")
                   .replace("iterations: 8", "iterations: 2").replace("arch_warmup: 4",
                                                                      "arch_warmup: 1"),
                   encoding="utf-8")
    code, _, err = cli("search", str(spaces_dir / "dlsr.space"), "--set", "C=4", "--set",
                         "cells=3", "--config", str(cfg), "--data", str(images), "--run-dir",
                         str(tmp_path / "ok"), "--no-progress")
    assert code == 0, err


def test_train_with_a_patch_too_small_for_the_network_is_a_user_error(tmp_path, config,
                                                                       images, capsys):
    """ESA pools: a 16 px HR patch (8 px LR) empties a value; `train` says so before any
    work instead of failing inside torch (exit 2, the smallest patch that works)."""
    spec = tmp_path / "pooled.space"
    spec.write_text('import "ops.space"\n\nnetwork pooled(C = 8) {\n'
                    "    s = conv(input, C, k=3)\n    e = esa(s)\n"
                    "    return pixel_shuffle(conv(e, 12, k=3), 2)\n}\n", encoding="utf-8")
    code = run_cli(["train", str(spec), "--config", str(config), "--data", str(images),
                    "--run-dir", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert "'patch_size' 16 is too small for network `pooled`" in err
    assert "use a patch_size of at least" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()
