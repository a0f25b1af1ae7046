"""The README stays true: its stage diagram is what `dvc dag` draws for the committed dvc.yaml/params.yaml, and
its headline numbers are the measured ones in benchmarks/RESULTS.md."""
import re
import sys

import pytest

from tests.conftest import ROOT, sh

# speedup factors ("6.56x", "7-13x"), metrics to 4-5 decimals ("0.8455", "0.99999"), accuracy differences
# ("1.0 to 1.7 points", "-0.10 points")
HEADLINES = {
    "speedup": r"\d+(?:\.\d+)?(?:-\d+(?:\.\d+)?)?x(?!\w)",
    "metric": r"0\.\d{4,5}(?!\d)",
    "points": r"[-+]?\d+(?:\.\d+)?(?: to \d+(?:\.\d+)?)? points",
}


def headline_numbers(text: str, kind: str) -> set[str]:
    return set(re.findall(rf"(?<![\w.+-]){HEADLINES[kind]}", text))


def test_readme_diagram_is_current():
    sh(ROOT, sys.executable, "tools/readme_dag.py", "--check")  # raises with the message when stale or failing


@pytest.mark.parametrize("kind", HEADLINES)
def test_readme_headline_numbers_are_in_the_benchmark_results(kind):
    readme = (ROOT / "README.md").read_text()
    results = (ROOT / "benchmarks" / "RESULTS.md").read_text()
    found = headline_numbers(readme, kind)
    assert found, f"no {kind} numbers found in README.md: the pattern is broken"
    missing = sorted(n for n in found if not re.search(rf"(?<![\w.]){re.escape(n)}(?!\w)", results))
    assert not missing, f"README.md quotes {kind} numbers that benchmarks/RESULTS.md does not have: {missing}"
