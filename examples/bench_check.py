"""Benchmark of `spacelang check`: cold start, warm checks, and scaling with file size.

    python examples/bench_check.py [--quick]

Prints:
  * the cold start of `python -m spacelang check spaces/dlsr.space` (a fresh
    process; median of 5) against that of bare `python -c pass`;
  * the warm, in-process time of `check_file("spaces/dlsr.space")` (median of 50),
    with the parse cache as it is in a long-lived process and with it emptied
    before every call;
  * parsing and checking generated, valid specs of about 10,000 and 20,000
    lines, each in a fresh process (median of 3), and the ratio of the two
    (linear scaling gives 2).

Targets: cold < 300 ms, warm < 20 ms, 10k lines < 2 s, 20k / 10k <= 2.2.
"""

from __future__ import annotations

import argparse
import json
import os
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
    # As after an install, modules load from cached bytecode: an environment that
    # sets PYTHONDONTWRITEBYTECODE would have every start compile spacelang from source.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}

    def run():
        subprocess.run(command, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)

    run()  # the first run may write bytecode and lark's grammar cache
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
    options.add_argument("--one", metavar="FILE", help=argparse.SUPPRESS)
    args = options.parse_args()
    if args.one:
        measure_one(args.one)
        return
    sys.path.insert(0, str(ROOT))

    repeat_cold = 3 if args.quick else 5
    repeat_warm = 10 if args.quick else 50
    repeat_big = 1 if args.quick else 3

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

    print(f"generated spaces (one statement per line), each checked in a fresh process, "
          f"median of {repeat_big}; wall / CPU seconds:")
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        for statements in (10_000, 20_000):
            file = Path(folder) / f"chain_{statements}.space"
            file.write_text(generated_space(statements))
            runs = [measure_in_subprocess(file) for _ in range(repeat_big)]
            run = sorted(runs, key=lambda r: r["parse_wall"] + r["check_wall"])[len(runs) // 2]
            total_wall = run["parse_wall"] + run["check_wall"]
            total_cpu = run["parse_cpu"] + run["check_cpu"]
            results[statements] = (total_wall, total_cpu)
            extra = (f"   target < {TARGET_10K_S:.0f} s: {mark(total_wall < TARGET_10K_S)}"
                     if statements == 10_000 else "")
            print(f"  {run['lines']:6d} lines  {total_wall:7.3f} / {total_cpu:7.3f}   (parse "
                  f"{run['parse_wall']:.3f} / {run['parse_cpu']:.3f}, check "
                  f"{run['check_wall']:.3f} / {run['check_cpu']:.3f}, {run['nodes']} nodes)"
                  f"{extra}")
    wall_ratio = results[20_000][0] / results[10_000][0]
    cpu_ratio = results[20_000][1] / results[10_000][1]
    print(f"  20k / 10k ratio  {wall_ratio:7.2f} / {cpu_ratio:7.2f}     target <= "
          f"{TARGET_RATIO}: {mark(wall_ratio <= TARGET_RATIO)}")
    print(f"(load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; "
          "the timings grow with the load)")


def measure_in_subprocess(file: Path) -> dict:
    output = subprocess.run([sys.executable, __file__, "--one", str(file)], cwd=ROOT,
                            check=True, capture_output=True, text=True).stdout
    return json.loads(output)


def measure_one(file: str) -> None:
    """Parse and check one file in this (fresh) process; print the times as JSON."""
    sys.path.insert(0, str(ROOT))
    from spacelang.checker import check
    from spacelang.program import load_program

    wall, cpu = time.perf_counter(), time.process_time()
    program = load_program(file)
    parse_wall, parse_cpu = time.perf_counter() - wall, time.process_time() - cpu
    wall, cpu = time.perf_counter(), time.process_time()
    (network,) = check(program).networks
    check_wall, check_cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(json.dumps({"lines": program.root.source.count("\n"), "parse_wall": parse_wall,
                      "parse_cpu": parse_cpu, "check_wall": check_wall, "check_cpu": check_cpu,
                      "nodes": len(network.graph.nodes)}))


if __name__ == "__main__":
    main()
