"""Checked means runnable, as a property over generated specs.

The generator writes networks from a small set of statement templates with
argument values drawn from ranges that include the hostile ones (zero,
negative, huge, non-integer). If `check` accepts a spec, `flops` and
`compile` succeed on it and `derive` (for decisions Hypothesis draws) gives a
spec that checks and builds; if `check` rejects it, the CLI exits 2 with a
`FILE:LINE:COL` location.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spacelang.api import loads
from spacelang.cli import run_cli
from spacelang.diagnostics import SpecError
from spacelang.strategies import architectures

SETTINGS = settings(max_examples=100, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

NUMBERS = st.sampled_from(["0", "1", "2", "3", "5", "-1", "-3", "2.5", "100001", "C", "C // 2",
                           "C * 2", "1e999"])
SMALL = st.sampled_from(["1", "2", "3", "5", "0", "-2", "4"])
CHANNELS = st.sampled_from(["C", "C", "C", "8", "C // 2", "C * 2", "0", "-4"])

PRELUDE = """\
op light_a(x: C) {
    return conv(x, C, k=1)
}
op light_b(x: C) {
    return relu(conv(x, C, k=3, groups=2))
}
choice light = [light_a, light_b]
cell blk(x: C) shares light {
    return light(x) + x
}
cell own(x: C) {
    return light(x)
}
"""


@st.composite
def statements(draw, count: int) -> list[str]:
    """Statements `v1 = ...`, ..., each reading earlier values `v0` (the stem) onward."""
    lines = []
    for i in range(1, count + 1):
        a = f"v{draw(st.integers(0, i - 1))}"
        b = f"v{draw(st.integers(0, i - 1))}"
        kind = draw(st.sampled_from(["conv", "window", "act", "add", "mul", "concat", "pick",
                                     "pick_sum", "cell", "split", "attention", "dwconv"]))
        if kind == "conv":
            options = draw(st.lists(st.sampled_from(["k", "dilation", "groups", "padding"]),
                                    max_size=2, unique=True))
            args = "".join(f", {o}={draw(SMALL if o != 'padding' else NUMBERS)}"
                           for o in options)
            line = f"conv({a}, {draw(CHANNELS)}{args})"
            line = f"conv({line}, C, k=1)"
        elif kind == "window":
            op = draw(st.sampled_from(["maxpool", "conv"]))
            k, stride, padding = draw(SMALL), draw(SMALL), draw(SMALL)
            inner = (f"maxpool({a}, {k}, stride={stride}, padding={padding})" if op == "maxpool"
                     else f"conv({a}, C, k={k}, stride={stride}, padding={padding})")
            line = f"resize({inner}, {a})"
        elif kind == "act":
            act = draw(st.sampled_from(["relu", "sigmoid", "prelu", "identity", "lrelu"]))
            line = f"lrelu({a}, {draw(NUMBERS)})" if act == "lrelu" else f"{act}({a})"
        elif kind == "add":
            line = f"{a} + {b}"
        elif kind == "mul":
            line = f"{a} * {draw(st.sampled_from([b, f'avgpool({b})', f'sigmoid(mean({b}))']))}"
        elif kind == "concat":
            line = f"conv(concat({a}, {b}), C, k=1)"
        elif kind in ("pick", "pick_sum"):
            candidates = sorted({a, b, f"v{draw(st.integers(0, i - 1))}"})
            k = draw(st.integers(0, len(candidates) + 1))
            pick = f"pick {k} of [{', '.join(candidates)}]"
            line = (f"conv(concat({pick}), C, k={draw(SMALL)})" if kind == "pick"
                    else f"sum({pick})")
        elif kind == "cell":
            line = f"{draw(st.sampled_from(['blk', 'own']))}({a})"
        elif kind == "split":
            lines.append(f"s{i}, t{i} = split({a}, {draw(CHANNELS)}, C // 2)")
            line = f"conv(concat(s{i}, t{i}), C, k=1)"
        elif kind == "dwconv":
            line = f"dwconv({a}, k={draw(SMALL)}, dilation={draw(SMALL)})"
        else:
            line = f"{a} * sigmoid(conv(avgpool({a}), C, k=1))"
        lines.append(f"v{i} = {line}")
    return lines


@st.composite
def specs(draw) -> str:
    count = draw(st.integers(1, 6))
    body = draw(statements(count))
    read = set(re.findall(r"\bv\d+\b", "\n".join(b.split(" = ", 1)[1] for b in body)))
    unread = {f"v{j}" for j in range(count + 1)} - read  # the output reads every value
    used = " + ".join(sorted(unread | {f"v{count}"}))
    scale = draw(st.sampled_from(["2", "2", "3", "1"]))
    out = draw(st.sampled_from(["3 * scale * scale", "3 * scale * scale", "5", "12"]))
    lines = [f"network gen(C = {draw(st.sampled_from(['8', '4', '6']))}, scale = {scale}) {{",
             "    v0 = conv(input, C)", *(f"    {s}" for s in body),
             f"    return pixel_shuffle(conv({used}, {out}, k=3), scale)", "}"]
    return PRELUDE + "\n".join(lines) + "\n"


_FOLDER = Path(tempfile.mkdtemp(prefix="spacelang-runnable-"))


@SETTINGS
@given(specs(), st.data())
def test_checked_specs_count_compile_and_derive(text, data):
    path = _FOLDER / "gen.space"
    path.write_text(text, encoding="utf-8")
    try:
        space = loads(text, path=str(path))
    except SpecError as exc:
        rendered = exc.render()
        assert re.match(r"\S*gen\.space:\d+:\d+: error: ", rendered), rendered
        assert run_cli(["check", str(path)]) == 2
        return
    assert run_cli(["flops", str(path)]) == 0
    assert run_cli(["compile", str(path), "--input-size", "48x48"]) == 0
    decisions = data.draw(architectures(space))
    derived = space.derive(decisions)
    fixed = loads(derived, path=str(path))
    assert fixed.is_fixed
    assert fixed.cost().base.params > 0
    space.fixed(decisions)
