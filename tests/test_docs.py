"""The README stays true: its stage diagram is what `dvc dag` draws for the committed dvc.yaml/params.yaml."""
import sys

from tests.conftest import ROOT, sh


def test_readme_diagram_is_current():
    sh(ROOT, sys.executable, "tools/readme_dag.py", "--check")  # raises with the message when stale or failing
