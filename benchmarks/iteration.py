"""Iteration speed: what changing an SVM's C costs through `dvc repro`, against the whole pipeline.

    python benchmarks/iteration.py [--compare REV] [--skip-full] [--repeats N] [--skip-imports]

In a scratch git + DVC copy of this project (pipeline/, stages/, data/, dvc.yaml, params.yaml):
1. `dvc repro`: every stage, wall time (the baseline the C change is measured against);
2. `heads.svm.C` 1.0 -> 2.0, `dvc repro`: wall time and the stages it ran;
3. each rerun stage's command run again on its own: its process wall time (a head stage's output removed
   and .cache/heads first, so that it fits again instead of copying the rerun's fits). The rerun's wall minus their
   sum is what DVC itself costs (reading dvc.yaml and the lock, hashing deps, caching outputs);
4. for each stage module, the import time in a fresh interpreter and whether torch got imported, for this
   tree and, with --compare REV, for that git revision (e.g. the commit before the stages went lean).
Step 1 always runs (the C change needs its outputs); --skip-full leaves its time out of the ratio.
--from-checkout replaces step 1 by copying this checkout's artifacts/, dvc.lock and DVC cache (not its run cache) into the copy
(`dvc status` must be clean here): `dvc repro` there then runs nothing, and the C change is measured in
seconds instead of after a full run; the ratio then uses --full-seconds (a full run measured before).
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# stages.ensemble: a stage of its own before the tenth session's merge into evaluate (for --compare)
STAGES = ["stages.prepare", "stages.pretrained", "stages.finetune", "stages.embed", "stages.head",
          "stages.ensemble", "stages.evaluate"]
RUNNING = re.compile(r"Running stage '([^']+)':\n> (.+)")  # dvc repro's log: (stage, command) it ran
ENV = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "HF_HUB_OFFLINE": "1",
       "TRANSFORMERS_OFFLINE": "1", "DVC_NO_ANALYTICS": "1"}


def sh(cwd: Path, *cmd: str) -> tuple[float, str]:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    return time.perf_counter() - t0, r.stdout + r.stderr


def scratch(src: Path, dst: Path) -> Path:
    for name in ("pipeline", "stages", "data"):
        shutil.copytree(src / name, dst / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", "params.yaml", ".gitignore"):
        shutil.copy(src / name, dst / name)
    for cmd in (["git", "init", "-q"], ["git", "config", "user.email", "b@b"], ["git", "config", "user.name", "b"],
                ["dvc", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "init"]):
        sh(dst, *cmd)
    return dst


def import_times(tree: Path, repeats: int = 3) -> dict[str, tuple[float, bool]]:
    """stage module -> (best-of-n import seconds in a fresh interpreter, torch imported), for the stage
    modules the tree has."""
    out = {}
    for mod in STAGES:
        if not (tree / (mod.replace(".", "/") + ".py")).exists():
            continue
        code = f"import time, sys; t = time.perf_counter(); import {mod}; print(time.perf_counter() - t, 'torch' in sys.modules)"
        runs = []
        for _ in range(repeats):
            r = subprocess.run([sys.executable, "-c", code], cwd=tree, env={**ENV, "PYTHONPATH": str(tree)},
                               capture_output=True, text=True, check=True)
            secs, torch = r.stdout.split()
            runs.append((float(secs), torch == "True"))
        out[mod] = min(runs)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--compare", help="a git revision whose stage import times are shown beside this tree's")
    ap.add_argument("--skip-full", action="store_true")
    ap.add_argument("--from-checkout", action="store_true", help="start from this checkout's outputs (see above)")
    ap.add_argument("--full-seconds", type=float, help="with --from-checkout: the full run's time, for the ratio")
    ap.add_argument("--repeats", type=int, default=1, help="C changes timed (C = 2, 3, ...); the ratio uses their median")
    ap.add_argument("--skip-imports", action="store_true", help="leave out step 4")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        repo = scratch(ROOT, Path(tmp) / "repo")
        if args.from_checkout:
            _, status = sh(ROOT, "dvc", "status")
            if "up to date" not in status:
                raise SystemExit(f"--from-checkout: dvc status is not clean here:\n{status}")
            shutil.copytree(ROOT / "artifacts", repo / "artifacts", symlinks=True)
            # not the run cache (cache/runs): a C tried in this checkout before would be restored from it, not rerun
            cache = ROOT / ".dvc" / "cache"
            shutil.copytree(cache, repo / ".dvc" / "cache", ignore=lambda d, names: ["runs"] if Path(d) == cache else [])
            shutil.copy(ROOT / "dvc.lock", repo / "dvc.lock")
            secs, out = sh(repo, "dvc", "repro")
            if "Running stage" in out:
                raise SystemExit(f"--from-checkout: the copy was not up to date:\n{out[-3000:]}")
            full = args.full_seconds
            print(f"outputs copied from this checkout; dvc repro there ran nothing in {secs:.1f} s")
        else:
            full, _ = sh(repo, "dvc", "repro")
            print(f"full dvc repro: {full:.1f} s")
        p = yaml.safe_load((repo / "params.yaml").read_text())
        p["heads"]["svm"]["C"] = 2.0
        (repo / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
        rerun, log = sh(repo, "dvc", "repro")
        stages = RUNNING.findall(log)
        print(f"heads.svm.C change: dvc repro {rerun:.1f} s, {len(stages)} stages: {[s for s, _ in stages]}")
        alone = 0.0
        for name, cmd in stages:
            if name.startswith("head@"):  # else it would copy the fits the rerun just made (.cache/heads)
                shutil.rmtree(repo / "artifacts" / "heads" / name.split("@", 1)[1])
                shutil.rmtree(repo / ".cache" / "heads", ignore_errors=True)
            secs, out = sh(repo, *cmd.split())
            done = re.search(r"done in ([0-9.]+)s", out)
            print(f"  {name:28s} process {secs:5.2f} s, of which the stage's own work {float(done[1]):5.2f} s")
            alone += secs
        print(f"  DVC's own share of the rerun: {rerun - alone:.1f} s ({rerun:.1f} - {alone:.1f} of stage processes)")
        reruns = [rerun]
        for k in range(1, args.repeats):  # more C values, none tried before: each reruns the same stages
            p["heads"]["svm"]["C"] = 2.0 + k
            (repo / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
            secs, log = sh(repo, "dvc", "repro")
            if [s for s, _ in RUNNING.findall(log)] != [s for s, _ in stages]:
                raise SystemExit(f"C={2.0 + k}: another set of stages ran:\n{log[-3000:]}")
            reruns.append(secs)
            work = [float(w) for w in re.findall(r"done in ([0-9.]+)s", log)]
            print(f"  C={2.0 + k}: dvc repro {secs:.1f} s, the stages' own work " + " + ".join(map(str, work)) + " s")
        rerun = statistics.median(reruns)
        if args.repeats > 1:
            print(f"C changes 2.0..{1.0 + args.repeats}: " + ", ".join(f"{t:.1f}" for t in reruns)
                  + f" s; median {rerun:.1f} s, min {min(reruns):.1f} s")
        if full and not args.skip_full:
            print(f"ratio C rerun (median) / full repro: {rerun / full:.1%} (full {full:.1f} s)")
        if args.skip_imports:
            return
        trees = {"this tree": ROOT}
        if args.compare:
            old = Path(tmp) / "old"
            subprocess.run(["git", "worktree", "add", "-q", "--detach", str(old), args.compare], cwd=ROOT, check=True)
            trees[args.compare] = old
        try:
            times = {name: import_times(tree) for name, tree in trees.items()}
        finally:
            if args.compare:
                subprocess.run(["git", "worktree", "remove", "--force", str(Path(tmp) / "old")], cwd=ROOT)
        print("\n| stage module | " + " | ".join(f"import s ({n})" for n in times) + " |")
        print("|---|" + "---|" * len(times))
        for mod in STAGES:
            cells = [f"{t[mod][0]:.2f}{' (torch)' if t[mod][1] else ''}" if mod in t else "-" for t in times.values()]
            print(f"| {mod} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
