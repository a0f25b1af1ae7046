"""Image rows: the inputs an image backbone reads, and the checks prepare runs on image paths.

- `ImageInputs(paths, transform)`: what `encoder.prepare(paths)` gives; `batch(idx)` decodes and transforms
  the rows `idx` into one (B, C, H, W) tensor. Images are decoded per batch, never held all in memory.
- `refuse_outside(paths, root, source)`: no path may lead outside the data folder.
- `unreadable(paths)`: which images are missing or cannot be decoded (prepare reports their rows).
- `file_sha(paths)`: a content hash per image, so a changed image reruns what follows prepare.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from pipeline import PipelineError
from pipeline.io import file_sha256

if TYPE_CHECKING:
    import torch  # prepare checks and hashes images without torch (600 MB and 2 s at import)


class ImageInputs:
    """Image files + the model's eval transform. `lengths` are all equal: there is nothing to bucket."""

    def __init__(self, paths: Sequence[str], transform, in_chans: int = 3):
        self.paths, self.transform = [str(p) for p in paths], transform
        self.mode = "RGB" if in_chans == 3 else "L"

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def lengths(self) -> np.ndarray:
        return np.zeros(len(self.paths), dtype=np.int64)

    def batch(self, idx: Sequence[int], pad_to: int | None = None, pin: bool = False) -> tuple[torch.Tensor]:
        import torch
        from PIL import Image

        imgs = []
        for i in idx:
            with Image.open(self.paths[i]) as im:
                imgs.append(self.transform(im.convert(self.mode)))
        x = torch.stack(imgs)
        return (x.pin_memory() if pin else x,)


def refuse_outside(paths: Sequence[str], root: str | Path, source: str) -> None:
    """Raise PipelineError naming the files of `paths` that resolve outside `root` (`../`, absolute paths, or
    symlinks pointing elsewhere): a table of image paths must not make the pipeline read arbitrary files."""
    base = Path(root).resolve()
    bad = [p for p in paths if not Path(p).resolve().is_relative_to(base)]
    if bad:
        raise PipelineError(f"{source}: {len(bad)} image paths lead outside {root}: {[str(p) for p in bad[:3]]}")


def unreadable(paths: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """-> (missing mask, undecodable mask) over `paths`. Decoding fully (not only the header) finds truncations."""
    from PIL import Image

    missing = np.zeros(len(paths), dtype=bool)
    broken = np.zeros(len(paths), dtype=bool)
    for i, p in enumerate(paths):
        if not Path(p).is_file():
            missing[i] = True
            continue
        try:
            with Image.open(p) as im:
                im.load()
        except Exception:  # noqa: BLE001 - PIL raises many types for bad files
            broken[i] = True
    return missing, broken


def file_sha(paths: Sequence[str]) -> list[str]:
    """sha256 per image: stored in dataset.parquet so that a changed image reruns the stages after prepare."""
    return [file_sha256(p)[:16] for p in paths]
