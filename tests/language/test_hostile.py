"""The hostile corpus (`hostile_cases.py`) through the CLI, in this process.

Rejected: exit 2, no traceback, the location and message the case names.
Accepted: check, flops and compile succeed; the first architecture derives to a
spec that checks.
"""

from __future__ import annotations

import io
import re
import sys
from pathlib import Path

import pytest

from spacelang.api import Limits, format_source, load, loads
from spacelang.cli import run_cli
from spacelang.diagnostics import SpecError
from spacelang.limits import DEFAULT_LIMITS
from spacelang.parser import parse
from tests.language.hostile_cases import CASES, Accept, Case
from tests.paths import SPACES

COMMON_FLAGS = ("--set", "--max-")
FLAGS_BY_COMMAND = {"check": (), "flops": ("--hr", "--network"),
                    "compile": ("--network", "--emit-py", "--input-size"), "fmt": ()}


def _write(case: Case, tmp: Path) -> Path:
    for name, data in case.files:
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp / name).write_bytes(data)
    if not case.text:
        return SPACES / "dlsr.space"
    spec = tmp / "t.space"
    spec.write_text(case.text, encoding="utf-8")
    return spec


def _args(case: Case, command: str, tmp: Path) -> list[str]:
    """The case's flags that `command` takes (`--hr` only for flops, ...)."""
    out, items = [], list(case.args)
    while items:
        flag, value = items.pop(0), items.pop(0)
        if flag.startswith(COMMON_FLAGS) or flag in FLAGS_BY_COMMAND[command]:
            out += [flag, value.replace("{tmp}", str(tmp))]
    return out


def _run(capsys, command: str, spec: Path, args: list[str]) -> tuple[int, str, str]:
    code = run_cli([command, str(spec), *args] + (["--check"] if command == "fmt" else []))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _overrides(case: Case) -> dict[str, str]:
    items = list(case.args)
    pairs = [(items[i], items[i + 1]) for i in range(0, len(items), 2)]
    return dict(value.split("=", 1) for flag, value in pairs if flag == "--set")


def _first_decisions(space) -> dict:
    network = space.network
    decisions: dict = {site.key: 0 for site in network.choice_sites}
    decisions.update({site.key: tuple(range(site.k)) for site in network.pick_sites})
    return decisions


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_case(case: Case, tmp_path: Path, capsys) -> None:
    spec = _write(case, tmp_path)
    if isinstance(case.expect, Accept):
        for command in ("check", "flops", "compile"):
            code, _, err = _run(capsys, command, spec, _args(case, command, tmp_path))
            assert code == 0, (command, err)
            assert "Traceback" not in err
            if case.expect.warning is not None:
                assert case.expect.warning in err, (command, err)
        space = load(spec, **_overrides(case))
        derived = space.derive(_first_decisions(space))
        assert loads(derived, path=str(spec)).is_fixed
        return
    expect = case.expect
    code, _, err = _run(capsys, expect.command, spec, _args(case, expect.command, tmp_path))
    assert code == 2, err
    assert "Traceback" not in err and "internal error" not in err
    assert expect.message in err, err
    assert len(err) < 5_000, "a diagnostic echoes too much"
    if expect.line is not None:
        location = rf"{re.escape(spec.name)}:{expect.line}:\d+: error:"
        assert re.search(location, err), err
    for _, data in case.files:
        assert b"SECRET" not in err.encode() or b"SECRET" not in data


def test_corpus_is_large_and_named() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) >= 150
    assert len(set(ids)) == len(ids)


def test_derive_output_directory_is_refused_before_any_work(tmp_path: Path, capsys) -> None:
    """`derive -o DIR` where DIR is a directory: a clear message, no temporary name."""
    code = run_cli(["derive", str(tmp_path / "no-run"), "-o", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert f"cannot write {tmp_path}: it is a directory" in err
    assert ".tmp" not in err


def test_fmt_writes_nothing_into_a_directory(tmp_path: Path, capsys) -> None:
    """`fmt DIR`: the directory is named; nothing is written."""
    code = run_cli(["fmt", str(tmp_path)])
    assert code == 2
    assert str(tmp_path) in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_limits_through_the_api() -> None:
    """`limits=Limits(...)` does what `--max-...` does; an unknown limit name is refused."""
    text = ("network n(C = 8) {\n    x = conv(input, C)\n"
            "    return pixel_shuffle(conv(x, 12), 2)\n}\n")
    assert loads(text, path="t.space", limits=Limits(channels=12)).network.out_channels == 3
    with pytest.raises(SpecError, match=r"t\.space:2:21: error: 8 channels; at most 4"):
        loads(text, path="t.space", limits=Limits(channels=4))
    with pytest.raises(KeyError):
        DEFAULT_LIMITS.with_overrides({"chanels": 4})


def test_fmt_drops_a_utf8_bom(tmp_path: Path, capsys) -> None:
    spec = tmp_path / "t.space"
    spec.write_text("\ufeffnetwork n(C = 8) {\n    x = conv(input, C)\n"
                    "    return pixel_shuffle(conv(x, 12), 2)\n}\n", encoding="utf-8")
    assert run_cli(["fmt", str(spec)]) == 0
    assert spec.read_text(encoding="utf-8").startswith("network n(C = 8) {")
    assert run_cli(["fmt", "--check", str(spec)]) == 0


def test_utf8_bom_accepted_by_parse_itself() -> None:
    """`parse` (not only the file loaders) drops the mark: first token at column 1."""
    module = parse("\ufeffnetwork n(C = 8) {\n    return input\n}\n", "t.space")
    (network,) = module.items
    assert (network.span.line, network.span.column) == (1, 1)
    assert not module.source.startswith("\ufeff")


def test_utf8_bom_accepted_by_fmt_on_stdin(monkeypatch, capsys) -> None:
    text = ("network n(C = 8) {\n    x = conv(input, C)\n"
            "    return pixel_shuffle(conv(x, 12), 2)\n}\n")
    monkeypatch.setattr(sys, "stdin", io.StringIO("\ufeff" + text))
    assert run_cli(["fmt", "-"]) == 0
    assert capsys.readouterr().out == text


def test_dead_values_are_not_counted() -> None:
    """A value that does not reach the output costs nothing (and is not built)."""
    live = ("network n(C = 8) {\n    x = conv(input, C)\n"
            "    return pixel_shuffle(conv(x, 12), 2)\n}\n")
    dead = live.replace("    x = conv(input, C)\n",
                        "    x = conv(input, C)\n    unused = conv(x, 64, k=7)\n")
    assert loads(dead, path="t.space").cost().base == loads(live, path="t.space").cost().base
    assert len(loads(dead, path="t.space").network.graph.nodes) == 4


def test_dead_cell_b2_after_set_cells_1_is_not_counted() -> None:
    """dlsr with cells=1: `b[2]` is dead, so the network costs one cell, not two."""
    one = load(SPACES / "dlsr.space", C=8, cells=1)
    two = load(SPACES / "dlsr.space", C=8, cells=2)
    assert [c.path for c in one.network.cells] == ["b.1"]
    assert one.cost().extreme("params") < two.cost().extreme("params")
    assert any("`b.2`" in w.message for w in one.warnings)


@pytest.mark.parametrize("text", [
    "network n(C = 16,  # width\n          scale = 2) {\n    x = conv(input, C)\n"
    "    return pixel_shuffle(conv(x, 12, k=3), 2)\n}\n",
    "choice c = [conv_1x1,  # the small one\n            conv_3x3]\n",
    "choice c = [\n    conv_1x1,  # one\n    # before three\n    conv_3x3  # three\n]  # end\n",
    "network n(C = 8) {\n    x = conv(input,  # the image\n             C)\n"
    "    return pixel_shuffle(conv(x, 12,  # out\n 3), 2)\n}\n",
], ids=["comment-in-parameter-list", "comment-on-choice-candidate",
        "comments-around-choice-candidates", "comments-in-call-arguments"])
def test_fmt_is_idempotent_on_comments(text: str) -> None:
    once = format_source(text, "t.space")
    assert format_source(once, "t.space") == once
    comments = [line.split("#", 1)[1] for line in text.splitlines() if "#" in line]
    assert [line.split("#", 1)[1] for line in once.splitlines() if "#" in line] == comments


def test_fmt_keeps_a_candidate_comment_next_to_its_candidate() -> None:
    once = format_source("choice c = [conv_1x1,  # the small one\n            conv_3x3]\n")
    assert "    conv_1x1,  # the small one\n" in once
