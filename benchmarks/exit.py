"""What a stage's interpreter shutdown costs, with and without pipeline/cli.py's `gc.freeze()` calls.

    python benchmarks/exit.py [--repeats 3] [--stages "embed minilm_pt" "head svm" evaluate check]

In a scratch copy of this checkout (pipeline/, stages/, params.yaml and artifacts/, which `dvc status` must
show up to date), each stage's command runs in a fresh interpreter through a wrapper that notes the time
`run_stage` returns (the stage's outputs written and renamed into place); the process's end is timed from the
outside, so exit = end - return. `freeze`: the stages as they are (`run_stage` freezes the objects the imports
made before the work, and every object before shutdown); `baseline`: the same, with `gc.freeze` replaced by a
no-op in that process.
The two take turns, `--repeats` times each; reported: the median exit and the median wall of each, per stage.
A head stage's fits are removed from the copy's .cache/heads before each run, so that it fits again.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
# runs one stage module as `python -m` would, then prints when run_stage returned (the wall clock, in seconds)
WRAPPER = """
import gc, runpy, sys, time
import pipeline.cli as cli
if sys.argv[1] == "baseline":
    gc.freeze = lambda: None
stage = cli.run_stage
def timed(*a, **k):
    stage(*a, **k)
    print(f"RETURNED {time.time():.6f}", file=sys.stderr, flush=True)
cli.run_stage = timed
sys.argv = sys.argv[2:]
runpy.run_module(sys.argv[0], run_name="__main__")
"""


def once(copy: Path, mode: str, stage: list[str]) -> tuple[float, float]:
    """-> (exit s, wall s) of `python -m stages.<stage[0]> <args>` in `copy` under `mode`."""
    shutil.rmtree(copy / ".cache" / "heads", ignore_errors=True)
    t0 = time.time()
    r = subprocess.run([sys.executable, "-c", WRAPPER, mode, f"stages.{stage[0]}", *stage[1:]], cwd=copy,
                       env={**ENV, "PYTHONPATH": str(copy)}, capture_output=True, text=True)
    end = time.time()
    mark = [line for line in r.stderr.splitlines() if line.startswith("RETURNED ")]
    if r.returncode or not mark:
        raise SystemExit(f"{' '.join(stage)} ({mode}) failed:\n{r.stderr[-3000:]}")
    return end - float(mark[-1].split()[1]), end - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--stages", nargs="+", default=["embed minilm_pt", "head svm", "evaluate", "check"])
    args = ap.parse_args()
    if args.repeats < 1:
        ap.error("--repeats must be at least 1")
    status = subprocess.run(["dvc", "status"], cwd=ROOT, env=ENV, capture_output=True, text=True).stdout
    if "up to date" not in status:
        raise SystemExit(f"dvc status is not clean here:\n{status}")
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp)
        for name in ("pipeline", "stages", "artifacts"):
            shutil.copytree(ROOT / name, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy(ROOT / "params.yaml", copy / "params.yaml")
        print("| stage | exit s, baseline | exit s, freeze | wall s, baseline | wall s, freeze | saved s |")
        print("|---|---|---|---|---|---|")
        for spec in args.stages:
            stage = spec.split()
            runs = {"baseline": [], "freeze": []}
            for _ in range(args.repeats):
                for mode in runs:
                    runs[mode].append(once(copy, mode, stage))
            ex = {m: statistics.median(e for e, _ in r) for m, r in runs.items()}
            wall = {m: statistics.median(w for _, w in r) for m, r in runs.items()}
            print(f"| {spec} | {ex['baseline']:.2f} | {ex['freeze']:.2f} | {wall['baseline']:.2f} | "
                  f"{wall['freeze']:.2f} | {ex['baseline'] - ex['freeze']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
