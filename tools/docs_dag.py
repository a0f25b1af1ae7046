"""Write `dvc dag --mermaid` into docs/pipeline.md between <!-- dag:start --> and <!-- dag:end --> (`make dag`),
or with --check exit 1 when the page's diagram is not what `dvc dag` draws now."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "pipeline.md"
BLOCK = re.compile(r"<!-- dag:start -->\n.*?<!-- dag:end -->", re.S)


def current() -> str:
    dag = subprocess.run(["dvc", "dag", "--mermaid"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return f"<!-- dag:start -->\n```mermaid\n{dag.strip()}\n```\n<!-- dag:end -->"


def main() -> int:
    readme = PAGE.read_text()
    want = current()
    if "--check" in sys.argv:
        found = BLOCK.search(readme)
        if not found or found.group(0) != want:
            print("docs/pipeline.md: the stage diagram is stale; run `make dag`", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(BLOCK.sub(lambda _: want, readme))
    return 0


if __name__ == "__main__":
    sys.exit(main())
