"""tools/mutate.py stays runnable: `--list` imports it and checks every mutation whose tests exist still
applies to the source (a stale patch target is an error). The mutations themselves are not run here (minutes):
`python tools/mutate.py` does that, and benchmarks/RESULTS.md records its table."""
import subprocess
import sys

from tests.conftest import ROOT


def test_mutate_list_runs_and_every_present_mutation_applies():
    r = subprocess.run([sys.executable, "tools/mutate.py", "--list"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import mutate
    finally:
        sys.path.remove(str(ROOT / "tools"))
    assert all(m.name in r.stdout for m in mutate.MUTATIONS) and "stale" not in r.stdout
    stale = mutate.Mutation("x", "pipeline/devices.py", "no such text", "", ("tests/repo/test_mutate.py",), "")
    absent = mutate.Mutation("y", "pipeline/devices.py", "no such text", "", ("tests/test_nothing_here.py",), "")
    assert mutate.status(stale).startswith("stale") and "test not present" in mutate.status(absent)
