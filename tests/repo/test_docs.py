"""The README and docs/ stay true: the stage diagram is what `dvc dag` draws for the committed dvc.yaml/params.yaml, and
its headline numbers (and the speedups params.yaml comments and docstrings quote) are the measured ones in
benchmarks/RESULTS.md."""
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
    sh(ROOT, sys.executable, "tools/docs_dag.py", "--check")  # raises with the message when stale or failing


def not_in_results(numbers) -> list[str]:
    results = (ROOT / "benchmarks" / "RESULTS.md").read_text()
    return sorted(n for n in numbers if not re.search(rf"(?<![\w.]){re.escape(n)}(?!\w)", results))


@pytest.mark.parametrize("kind", HEADLINES)
def test_readme_headline_numbers_are_in_the_benchmark_results(kind):
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        found = headline_numbers(page.read_text(), kind)
        if page.name == "README.md":
            assert found, f"no {kind} numbers found in README.md: the pattern is broken"
        missing = not_in_results(found)
        assert not missing, f"{page.relative_to(ROOT)} quotes {kind} numbers that benchmarks/RESULTS.md does " \
                            f"not have: {missing}"


def test_speedups_claimed_in_params_comments_and_docstrings_are_in_the_benchmark_results():
    files = [ROOT / "params.yaml", *sorted((ROOT / "pipeline").rglob("*.py"))]
    claims = {f.name: set(re.findall(rf"(?<![\w.+-])({HEADLINES['speedup']}) faster", f.read_text())) for f in files}
    assert claims["params.yaml"], "params.yaml's precision comment quotes no speedup: the pattern is broken"
    missing = {name: not_in_results(found) for name, found in claims.items() if not_in_results(found)}
    assert not missing, f"speedups that benchmarks/RESULTS.md does not have: {missing}"
