"""Shared entry-point plumbing for `stages/*.py`: logging, one-line errors, exit codes."""
from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
import time
from pathlib import Path
from typing import Callable

from pipeline import PipelineError

log = logging.getLogger("svmft")


def setup_logging() -> None:
    logging.basicConfig(level=os.environ.get("SVMFT_LOG", "INFO"), stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    # transformers/DVC chatter is not ours to show at INFO.
    for noisy in ("transformers", "httpx", "urllib3", "numcodecs", "zarr"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def run_stage(name: str, body: Callable[[argparse.Namespace], str], parser: argparse.ArgumentParser) -> None:
    """Parse args, run `body`, log one summary line with its wall time; PipelineError -> exit 2. The objects
    that exist before `body` and after it are frozen (gc.freeze: never walked by a garbage collection again),
    so `body` must close and flush everything it writes, never leaving that to a finalizer."""
    setup_logging()
    args = parser.parse_args()
    # The objects the imports made so far (torch's, the stage's modules') live until the process ends: frozen,
    # the garbage collections during the work do not walk them again (an embed stage's later imports of
    # transformers' model classes triggered three full ones of 0.13-0.25 s each).
    gc.freeze()  # before the work
    t0 = time.perf_counter()
    try:
        summary = body(args)
    except PipelineError as e:
        print(f"error: {name}: {e}", file=sys.stderr)
        sys.exit(2)
    log.info("%s done in %.1fs: %s", name, time.perf_counter() - t0, summary)
    # All that is left is the interpreter's shutdown, whose garbage collections walk every object the stage
    # made (about 490k after torch + transformers): 1.3 s of an embed stage's exit, 0.4 s of head's
    # (benchmarks/RESULTS.md, "Exit"). Frozen objects are not walked, nor ever collected: nothing unwritten
    # may be left to a collection (the docstring's contract; logging flushes in its atexit hook).
    gc.freeze()  # before the shutdown


def artifact_stage(name: str, ids: list[str], doc: str, out_for, run) -> None:
    """A stage that writes one artifact folder atomically.

    `ids` are positional arguments (e.g. ["backbone"]); `out_for(params, args) -> Path` names the folder;
    `run(params, args, tmp_folder) -> dict` fills it. Unknown ids are ParamsErrors naming the key.
    """
    from pipeline.io import atomic_dir
    from pipeline.params import load_params

    # The launcher's rank (torchrun, accelerate set RANK), as devices.dist_env reads it; not imported
    # from there: it imports torch, which the head and evaluate stages must not pay for.
    def is_main() -> bool:
        return int(os.environ.get("RANK", 0)) == 0

    p = argparse.ArgumentParser(description=doc)
    for i in ids:
        p.add_argument(i)
    p.add_argument("--params", default="params.yaml")

    def body(args) -> str:
        params = load_params(args.params)
        out = out_for(params, args)
        if not is_main():  # DDP: rank 0 alone writes the artifact
            import tempfile
            with tempfile.TemporaryDirectory() as tmp:
                summary = run(params, args, Path(tmp))
        else:
            with atomic_dir(out) as tmp:
                summary = run(params, args, tmp)
        return str({k: (round(v, 4) if isinstance(v, float) else v) for k, v in summary.items()
                    if not isinstance(v, (dict, list))})

    label = "@".join([name] + [a for a in sys.argv[1:len(ids) + 1]]) if ids else name
    run_stage(label, body, p)
