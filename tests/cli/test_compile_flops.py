"""`spacelang compile` and `spacelang flops`, run in-process."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest
import torch


@pytest.fixture(autouse=True)
def at_repo_root(repo_root, monkeypatch):
    """Run from the repository root, so paths read as a user would type them."""
    monkeypatch.chdir(repo_root)


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def test_compile_supernet_summary(cli):
    code, out, err = cli("compile", "spaces/dlsr.space", "--set", "C=16")
    assert code == 0, err
    assert "supernet" in out
    assert "1×3×32×32 → 1×3×64×64" in out
    for site in ("rfdb.r1", "rfdb.r2", "rfdb.r3", "x.4", "x.5", "x.6"):
        assert site in out
    assert "sep_conv_3x3" in out and "shared" in out
    assert "2 of 5" in out and "concat" in out
    assert "131,220 architectures" in out
    assert "27 α" in out and "12 β" in out
    assert "min 29,916, max 251,100" in out
    assert "alphas" in out and "body" in out


def test_compile_fixed_summary_and_depth(cli):
    code, out, err = cli("compile", "spaces/imdn.space", "--set", "C=16", "--depth", "1")
    assert code == 0, err
    assert "fixed network" in out
    assert "45,450" in out
    assert "fea" in out and "Conv2d" in out
    assert "c1" not in out  # b.1.c1 is three levels down
    code, deeper, err = cli("compile", "spaces/imdn.space", "--set", "C=16", "--depth", "3")
    assert code == 0, err
    assert "c1" in deeper


def test_compile_emit_py_needs_a_fixed_spec(cli, tmp_path):
    target = tmp_path / "out.py"
    code, out, err = cli("compile", "spaces/dlsr.space", "--set", "C=16", "--emit-py",
                         str(target))
    assert code == 2
    assert out == ""  # refused before anything is built
    assert "--emit-py" in err and "fixed" in err and "dlsr" in err
    assert "Traceback" not in err
    assert not target.exists()


def test_compile_emit_py_into_a_missing_folder(cli, tmp_path):
    target = tmp_path / "missing" / "out.py"
    code, out, err = cli("compile", "spaces/imdn.space", "--set", "C=16", "--emit-py",
                         str(target))
    assert code == 2
    assert "folder does not exist" in err and "Traceback" not in err
    assert out == ""


def test_compile_emit_py_writes_a_standalone_module(cli, tmp_path, monkeypatch):
    import spacelang

    target = tmp_path / "imdn_small.py"
    target.write_text("stale\n", encoding="utf-8")
    code, out, err = cli("compile", "spaces/imdn.space", "--set", "C=16", "--set", "cells=2",
                         "--emit-py", str(target))
    assert code == 0, err
    assert "wrote" in out
    assert [p.name for p in tmp_path.iterdir()] == ["imdn_small.py"]  # no temporary left
    spec = importlib.util.spec_from_file_location("imdn_small", target)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "imdn_small", module)
    spec.loader.exec_module(module)
    fixed = spacelang.load("spaces/imdn.space", C=16, cells=2).fixed()
    net = module.build()
    assert list(net.state_dict()) == list(fixed.state_dict())
    net.load_state_dict(fixed.state_dict())
    x = torch.rand(1, 3, 12, 10)
    with torch.no_grad():
        assert torch.equal(net(x), fixed(x))


def test_compile_reports_a_shape_mismatch_as_a_bug():
    import argparse

    from attrs import evolve

    import spacelang
    from spacelang.cli.compile_summary import CompileError, compile_and_summarise

    space = spacelang.load("spaces/imdn.space", C=16, cells=1)
    wrong = evolve(space, network=evolve(space.network, scale=3))  # not what the graph does
    args = argparse.Namespace(depth=1, input_size="16x12", emit_py=None)
    with pytest.raises(CompileError, match=r"checker inferred \(1, 3, 36, 48\)"):
        compile_and_summarise(wrong, args)


@pytest.mark.parametrize("size", ["8x8", "32", "0x32", "axb"])
def test_compile_bad_input_size(cli, size):
    code, out, err = cli("compile", "spaces/dlsr.space", "--set", "C=16",
                         "--input-size", size)
    assert code == 2
    assert "error" in err and "Traceback" not in err
    assert out == ""


def test_flops_json_imdn(cli):
    code, out, err = cli("flops", "spaces/imdn.space", "--set", "C=64", "--set", "scale=2",
                         "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["params"] == 694_404
    assert data["macs"] == 158_854_352_256
    assert data["conv_macs"] == 158_765_878_272
    assert data["hr"] == [1280, 720] and data["lr"] == [640, 360]


def test_flops_text_dlsr_derived(cli):
    code, out, err = cli("flops", "spaces/dlsr_derived.space")
    assert code == 0, err
    assert "322,620" in out
    assert "67.31 G" in out


def test_flops_search_space_json(cli):
    code, out, err = cli("flops", "spaces/dlsr.space", "--set", "C=16", "--hr", "64x48",
                         "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["params"]["min"] == 29_916 and data["params"]["max"] == 251_100
    assert data["params"]["min"] <= data["params"]["uniform"] <= data["params"]["max"]
    assert set(data["sites"]) == {"rfdb.r1", "rfdb.r2", "rfdb.r3"}


@pytest.mark.parametrize("hr", ["1280", "1280x", "wide", "0x720", "-4x4", "1x2x3"])
def test_flops_bad_hr(cli, hr):
    code, out, err = cli("flops", "spaces/imdn.space", f"--hr={hr}")
    assert code == 2
    assert "error" in err and "Traceback" not in err
    assert out == ""
