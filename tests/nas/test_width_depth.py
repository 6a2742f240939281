"""Width and depth search: a width choice (`C = choice [...]`) as a masked supernet whose
expected cost mixes exact per-width tables, and an early exit whose expected cost counts
only the cells that reach the output. Derived specs hold the chosen width and no dead
cells, and their `flops` equal the expected cost of that one-hot choice."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from spacelang.backends.cost import cost_report

import spacelang
from spacelang.decisions import indicator, normalize
from spacelang.nas.search import load_search_checkpoint
from spacelang.sr.images import write_image
from spacelang.strategies import architectures

pytestmark = pytest.mark.usefixtures("torch_one_thread")

# dlsr.space's cell, with two light ops, three cells and a searched trunk width
WIDTH = """\
import "ops.space"

choice light = [conv_1x1, conv_3x3]

cell rfdb(x: C) shares light {
    d1 = act(conv(x, C // 2, k=1))
    r1 = act(light(x) + x)
    r2 = act(conv(r1, C // 2, k=3))
    fused = conv(concat(d1, r2), C, k=1)
    return esa(fused)
}

network narrow(C = choice [6, 8, 12], scale = 2, cells = 3, rgb_range = 255) {
    fea = conv(input, C, k=3)
    b[1] = rfdb(fea)
    b[2] = rfdb(b[1])
    for i in 3..cells {
        b[i] = rfdb(act(conv(concat(pick 2 of b[1..i - 1]), C, k=1)))
    }
    fused = act(conv(concat(b[1..cells]), C, k=1))
    up = conv(conv(fused, C, k=3) + fea, 3 * scale * scale, k=3)
    return pixel_shuffle(up, scale)
}
"""

SEARCH_CONFIG = """\
iterations: 8
arch_warmup: 0
batch_size: 2
patch_size: 48
checkpoint_every: 8
val_every: 8
epoch_length: 4
arch_lr: 0.05
complexity: macs
complexity_weight: 20
"""


@pytest.fixture
def images(tmp_path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:64, 0:64] / 64.0
    for i in range(4):
        phase = rng.uniform(0, 2 * np.pi, 3)
        channels = [np.sin(2 * np.pi * (xx + yy * (c + 1) / 3) + phase[c]) for c in range(3)]
        image = (np.stack(channels, axis=-1) * 100 + 128).clip(0, 255).astype(np.uint8)
        write_image(folder / f"img{i}.png", image)
    return folder


def _search(cli, tmp_path: Path, spec: Path, images: Path, *extra: str):
    config = tmp_path / "search.yaml"
    config.write_text(SEARCH_CONFIG, encoding="utf-8")
    run = tmp_path / "run"
    code, out, err = cli("search", str(spec), "--config", str(config), "--data", str(images),
                         "--run-dir", str(run), "--no-progress", *extra)
    assert code == 0, err
    found = re.search(r"parameters ([\d,]+); Multi-Adds ([\d,]+)", out)
    assert found, out
    reported = {"params": int(found[1].replace(",", "")),
                "macs": int(found[2].replace(",", ""))}
    return run, reported


def _flops(cli, path: Path) -> dict:
    code, out, err = cli("flops", str(path), "--json")
    assert code == 0, err
    return json.loads(out)


def _decisions(space, run: Path, reported: dict) -> dict:
    """The search's decisions; the cost it reported for the derived network is the
    expected cost (the penalty's report) of that one-hot choice."""
    decisions = load_search_checkpoint(space, run).decisions()
    report = cost_report(space.network)
    probabilities = indicator(space.network, decisions)
    assert reported == {field: report.expected(probabilities, field)
                        for field in ("params", "macs")}
    return decisions


# --------------------------------------------------------------------------- width


def test_width_search_derives_a_narrower_width_whose_flops_equal_the_reported_cost(
        cli, tmp_path, images):
    spec = tmp_path / "narrow.space"
    spec.write_text(WIDTH, encoding="utf-8")
    run, expected = _search(cli, tmp_path, spec, images)
    space = spacelang.load(spec)
    decisions = _decisions(space, run, expected)
    width = space.network.width_site
    assert width.values[decisions["C"]] < max(width.values)
    derived = run / "derived.space"
    text = derived.read_text(encoding="utf-8")
    assert f"network narrow(C = {width.values[decisions['C']]}," in text
    assert "choice" not in text.split("network narrow")[1]
    flops = _flops(cli, derived)
    assert (flops["params"], flops["macs"]) == (expected["params"], expected["macs"])
    assert spacelang.load(derived).warnings == ()


def test_search_of_the_shipped_width_space_ends_below_the_widest(cli, tmp_path, images):
    spec = Path(spacelang.__file__).parent.parent / "spaces/dlsr_width.space"
    run, expected = _search(cli, tmp_path, spec, images, "--set", "cells=3")
    space = spacelang.load(spec, cells=3)
    decisions = _decisions(space, run, expected)
    assert space.network.width_site.values[decisions["C"]] < 48
    flops = _flops(cli, run / "derived.space")
    assert (flops["params"], flops["macs"]) == (expected["params"], expected["macs"])


def test_dlsr_tiny_is_a_point_of_the_width_space():
    space = spacelang.load(Path(spacelang.__file__).parent.parent / "spaces/dlsr_width.space")
    published = {"C": "18", "rfdb.r1": "conv_1x1", "rfdb.r2": "sep_conv_7x7",
                 "rfdb.r3": "sep_conv_5x5", "x.4": ("b[2]", "b[3]"), "x.5": ("b[2]", "b[4]"),
                 "x.6": ("b[4]", "b[5]")}
    tiny = spacelang.load(Path(spacelang.__file__).parent.parent / "spaces/dlsr_derived.space",
                          C=18)
    derived = space.derived(published)
    assert derived.network.params["C"] == 18
    assert derived.cost().base == tiny.cost().base
    assert space.cost().architecture(normalize(space.network, published)) == tiny.cost().base


TRUNK = """\
network w(C = choice [4, 6], scale = 2) {
    s = relu(conv(input, C, k=3))
    t = conv(s, C, k=3) + s
    return pixel_shuffle(conv(t, 12, k=3), 2)
}
"""

# a cell's inner width, searched by passing the network's width parameter to the cell
INNER = """\
cell bottleneck(x: c, inner) {
    return conv(relu(conv(x, inner, k=3)), c, k=1) + x
}

network w(C = choice [4, 6], scale = 2) {
    s = conv(input, 8, k=3)
    return pixel_shuffle(conv(bottleneck(s, C), 12, k=3), 2)
}
"""


@pytest.mark.parametrize("text", [TRUNK, INNER], ids=["trunk", "inner"])
def test_width_supernet_at_a_one_hot_width_is_the_narrow_network(text):
    """Masked channels: at α one-hot on C = 4 the supernet computes the C = 4 network whose
    weights are the leading slices of the widest's."""
    space = spacelang.loads(text)
    torch.manual_seed(0)
    net = space.supernet()
    with torch.no_grad():
        net.alphas["C"].copy_(torch.tensor([50.0, -50.0]))
    narrow = space.fixed({"C": 0})
    wide = dict(net.body.state_dict())
    with torch.no_grad():
        for key, value in narrow.state_dict().items():
            value.copy_(wide[key][tuple(slice(0, n) for n in value.shape)])
    x = torch.rand(1, 3, 8, 8)
    assert torch.allclose(net(x), narrow(x), atol=1e-5)
    net.alphas["C"].data.copy_(torch.tensor([-50.0, 50.0]))
    assert not torch.allclose(net(x), narrow(x), atol=1e-3)


def test_expected_cost_is_differentiable_in_the_width_alpha():
    space = spacelang.loads(WIDTH)
    net = space.supernet()
    report = space.cost()
    expected = report.expected(net.probabilities())
    expected.backward()
    grad = net.alphas["C"].grad
    assert grad[0] < 0 < grad[2]  # more weight on a wider value costs more
    costs = [report.variants[i].extreme("macs", max) for i in range(3)]
    assert costs == sorted(costs) and report.extreme("macs", max) == costs[-1]
    assert report.extreme("macs") == report.variants[0].extreme("macs")


@pytest.mark.parametrize("text, message", [
    ("network n(C = choice [4, 6], D = choice [2, 3], scale = 2) {\n"
     "    return pixel_shuffle(conv(conv(input, C + D, k=3), 12, k=3), 2)\n}\n",
     "at most one width"),
    ("network n(C = choice [4, 4], scale = 2) {\n"
     "    return pixel_shuffle(conv(conv(input, C, k=3), 12, k=3), 2)\n}\n",
     "lists 4 twice"),
    ("cell c(x: C, n = choice [1, 2]) {\n    return x\n}\n"
     "network n(C = 4, scale = 2) {\n"
     "    return pixel_shuffle(conv(c(conv(input, C, k=3)), 12, k=3), 2)\n}\n",
     "only a network's parameter"),
    ("network n(C = choice [4, 6], scale = 2) {\n    b[0] = conv(input, 4, k=3)\n"
     "    for i in 1..C {\n        b[i] = relu(b[i - 1])\n    }\n"
     "    return pixel_shuffle(conv(b[C], 12, k=3), 2)\n}\n",
     "channel counts only"),
    ("network n(C = choice [4, 6], scale = 2) {\n"
     "    return pixel_shuffle(conv(conv(input, 10 - C, k=3), 12, k=3), 2)\n}\n",
     "must not shrink"),
])
def test_bad_width_choices_are_located_errors(cli, tmp_path, text, message):
    spec = tmp_path / "t.space"
    spec.write_text(text, encoding="utf-8")
    code, _, err = cli("check", str(spec))
    assert code == 2
    assert message in err and "t.space:" in err and "Traceback" not in err


def test_width_choice_formats_and_can_be_fixed_from_the_command_line(cli, tmp_path):
    spec = tmp_path / "narrow.space"
    spec.write_text(WIDTH, encoding="utf-8")
    assert spacelang.format_source(WIDTH).count("C = choice [6, 8, 12]") == 1
    assert spacelang.format_source(spacelang.format_source(WIDTH)) == \
        spacelang.format_source(WIDTH)
    fixed = spacelang.load(spec, C=8)
    assert fixed.network.width_site is None and fixed.network.params["C"] == 8


# --------------------------------------------------------------------------- depth

DEPTH = """\
import "ops.space"

choice light = [conv_1x1, conv_3x3]

cell block(x: C) shares light {
    return act(light(x) + x)
}

network early(C = 8, scale = 2, cells = 5, rgb_range = 255) {
    fea = conv(input, C, k=3)
    b[1] = block(fea)
    for i in 2..cells {
        b[i] = block(b[i - 1])
    }
    up = conv(sum(pick 1 of b[1..cells]) + fea, 3 * scale * scale, k=3)
    return pixel_shuffle(up, scale)
}
"""


def test_early_exit_cost_counts_only_live_cells():
    space = spacelang.loads(DEPTH)
    report = space.cost()
    costs = [report.architecture({"block": 0, "up": (i,)}) for i in range(5)]
    macs = [c.macs for c in costs]
    assert macs == sorted(macs) and len(set(macs)) == 5
    assert report.extreme("macs") == macs[0]
    assert report.extreme("macs", max) == report.architecture({"block": 1, "up": (4,)}).macs
    # under uniform β each cell counts with its chance of reaching the exit
    uniform = report.uniform("macs")
    assert report.extreme("macs") < uniform < report.extreme("macs", max)


def test_expected_depth_cost_gradient_prefers_an_earlier_exit():
    space = spacelang.loads(DEPTH)
    net = space.supernet()
    space.cost().expected(net.probabilities()).backward()
    grad = net.betas["up"].grad
    assert all(grad[i] < grad[i + 1] for i in range(4))


@pytest.mark.parametrize("path, overrides", [
    ("spaces/dlsr_depth.space", {"C": 8, "cells": 4}),
    ("spaces/dlsr_width.space", {"cells": 4}),
    ("spaces/dlsr.space", {"C": 8}),
])
def test_expected_cost_of_a_one_hot_choice_is_its_exact_cost(path, overrides):
    space = spacelang.load(Path(spacelang.__file__).parent.parent / path, **overrides)
    report = space.cost()

    @settings(max_examples=25, deadline=None)
    @given(architectures(space))
    def check(decisions):
        exact = report.architecture(decisions)
        for field in ("params", "macs"):
            expected = report.expected(indicator(space.network, decisions), field)
            assert expected == pytest.approx(getattr(exact, field), rel=1e-12)
            assert report.extreme(field) <= getattr(exact, field) <= report.extreme(field, max)

    check()


def test_derived_early_exit_has_no_dead_cells():
    space = spacelang.loads(DEPTH)
    for exit in range(5):
        decisions = {"block": 1, "up": (exit,)}
        text = space.derive(decisions)
        cells = re.findall(r"^\s+b\[(\d+)\] =", text, flags=re.M)
        assert [int(c) for c in cells] == list(range(1, exit + 2))
        derived = spacelang.loads(text)
        assert derived.warnings == ()
        assert derived.cost().base == space.cost().architecture(decisions)


def test_depth_search_derives_no_dead_cells_and_its_flops_equal_the_reported_cost(
        cli, tmp_path, images):
    spec = tmp_path / "early.space"
    spec.write_text(DEPTH, encoding="utf-8")
    run, expected = _search(cli, tmp_path, spec, images)
    space = spacelang.load(spec)
    decisions = _decisions(space, run, expected)
    derived = run / "derived.space"
    text = derived.read_text(encoding="utf-8")
    exit = decisions["up"][0]
    assert exit < 4  # the penalty pulls the exit forward: there are cells to drop
    assert re.findall(r"^\s+b\[(\d+)\] =", text, flags=re.M) == \
        [str(i) for i in range(1, exit + 2)]
    code, _, err = cli("check", str(derived))
    assert code == 0 and "warning" not in err
    flops = _flops(cli, derived)
    assert (flops["params"], flops["macs"]) == (expected["params"], expected["macs"])


@pytest.mark.parametrize("text", [
    ("network w(C = choice [4, 6], scale = 2) {\n"
     "    return pixel_shuffle(conv(conv(input, C, k=3), 12, k=3), 2)\n}\n"),
    ("network d(C = 4, scale = 2) {\n    b[1] = conv(input, C, k=3)\n"
     "    b[2] = conv(b[1], C, k=3)\n"
     "    return pixel_shuffle(conv(sum(pick 1 of b[1..2]), 12, k=3), 2)\n}\n"),
])
def test_the_penalty_acts_on_a_space_with_only_a_width_or_an_exit(text):
    from spacelang.nas.penalty import ComplexityPenalty

    space = spacelang.loads(text)
    net = space.supernet()
    ComplexityPenalty(space.cost(), "macs", 1.0)(net).backward()
    grads = [p.grad for p in net.arch_parameters()]
    assert len(grads) == 1 and grads[0][0] < 0 < grads[0][1]
