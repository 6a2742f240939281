"""Benchmark of `spacelang check`: cold start, warm checks, and scaling with file size.

    python examples/bench_check.py [--quick]

Prints:
  * the cold start of `python -m spacelang check spaces/dlsr.space` (a fresh
    process; median of 5) against that of bare `python -c pass`;
  * the warm, in-process time of `check_file("spaces/dlsr.space")` (median of 50),
    with the parse cache as it is in a long-lived process and with it emptied
    before every call;
  * `check_file` on generated, valid specs of about 10,000 and 20,000 lines, and
    the ratio of the two (linear scaling gives 2).

Targets: cold < 300 ms, warm < 20 ms, 10k lines < 2 s, 20k / 10k <= 2.2.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DLSR = "spaces/dlsr.space"

TARGET_COLD_S = 0.300
TARGET_WARM_S = 0.020
TARGET_10K_S = 2.0
TARGET_RATIO = 2.2


def median_time(function, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def cold(command: list[str], repeat: int) -> float:
    def run():
        subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)

    run()  # the first run may compile bytecode and write lark's grammar cache
    return median_time(run, repeat)


def generated_space(statements: int) -> str:
    """A valid network of `statements` sequential convolutions, one per line."""
    lines = [
        'import "ops.space"',
        "",
        "network chain(C = 16, scale = 2) {",
        "    v[0] = conv(input, C, k=3)",
    ]
    lines += [f"    v[{i}] = act(conv(v[{i - 1}], C, k=3))" for i in range(1, statements)]
    lines += [
        f"    up = conv(v[{statements - 1}] + v[0], 3 * scale * scale, k=3)",
        "    return pixel_shuffle(up, scale)",
        "}",
    ]
    return "\n".join(lines) + "\n"


def mark(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def main() -> None:
    options = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    options.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = options.parse_args()
    sys.path.insert(0, str(ROOT))

    repeat_cold = 3 if args.quick else 5
    repeat_warm = 10 if args.quick else 50

    baseline = cold([sys.executable, "-c", "pass"], repeat_cold)
    check = cold([sys.executable, "-m", "spacelang", "check", DLSR], repeat_cold)
    print(f"cold start, median of {repeat_cold}:")
    print(f"  python -c pass                          {baseline * 1000:8.1f} ms")
    print(f"  python -m spacelang check {DLSR}  {check * 1000:8.1f} ms   "
          f"({check / baseline:.1f}× the bare interpreter; spacelang's own share "
          f"{(check - baseline) * 1000:.0f} ms)   target < {TARGET_COLD_S * 1000:.0f} ms: "
          f"{mark(check < TARGET_COLD_S)}")

    from spacelang import parser
    from spacelang.api import check_file
    from spacelang.program import load_program

    path = str(ROOT / DLSR)
    check_file(path)
    warm = median_time(lambda: check_file(path), repeat_warm)

    def uncached():
        parser._parse.cache_clear()
        check_file(path)

    warm_uncached = median_time(uncached, repeat_warm)
    print(f"warm check_file({DLSR!r}), median of {repeat_warm}:")
    print(f"  parse cache warm (a long-lived process)  {warm * 1000:8.2f} ms   "
          f"target < {TARGET_WARM_S * 1000:.0f} ms: {mark(warm < TARGET_WARM_S)}")
    print(f"  parse cache emptied before each call     {warm_uncached * 1000:8.2f} ms   "
          f"target < {TARGET_WARM_S * 1000:.0f} ms: {mark(warm_uncached < TARGET_WARM_S)}")

    print("generated spaces (one statement per line), check_file from text, cache emptied:")
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        for statements in (10_000, 20_000):
            text = generated_space(statements)
            file = Path(folder) / f"chain_{statements}.space"
            file.write_text(text)
            parser._parse.cache_clear()
            start = time.perf_counter()
            program, result = check_file(file)
            elapsed = time.perf_counter() - start
            (network,) = result.networks
            assert len(network.graph.nodes) > 2 * statements
            results[statements] = elapsed
            parser._parse.cache_clear()
            start = time.perf_counter()
            load_program(file)
            parsing = time.perf_counter() - start
            lines = text.count("\n")
            extra = (f"   target < {TARGET_10K_S:.0f} s: {mark(elapsed < TARGET_10K_S)}"
                     if statements == 10_000 else "")
            print(f"  {lines:6d} lines  {elapsed:8.3f} s  (parsing {parsing:.3f} s, "
                  f"checking {elapsed - parsing:.3f} s){extra}")
    ratio = results[20_000] / results[10_000]
    print(f"  20k / 10k ratio    {ratio:8.2f}     target <= {TARGET_RATIO}: "
          f"{mark(ratio <= TARGET_RATIO)}")


if __name__ == "__main__":
    main()
