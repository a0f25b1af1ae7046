"""Where every stage reads and writes. Names in params.yaml become folder names (stable string keys)."""
from __future__ import annotations

from pathlib import Path

ART = Path("artifacts")
DATA = ART / "data"
INPUTS = ART / "inputs"  # what the encoders read: embed depends on it, not on DATA
EMBEDDINGS = ART / "embeddings"
HEADS = ART / "heads"
ENSEMBLE = ART / "ensemble"
EVALUATE = ART / "evaluate"
CHECKPOINTS = Path("checkpoints")  # persist: true in dvc.yaml, survives a killed run
HEAD_CACHE = Path(".cache") / "heads"  # fits by content (pipeline/heads/reuse.py); neither DVC's nor git's
# the check stage's outputs: the names of params.yaml, for the stages that read a whole artifacts/ folder
SOURCE_NAMES = ART / "names" / "sources.json"
MODEL_NAMES = ART / "names" / "models.json"


def pretrained(backbone: str) -> Path:
    return ART / "pretrained" / backbone


def finetune(backbone: str) -> Path:
    return ART / "finetune" / backbone


def embeddings(source: str) -> Path:
    return EMBEDDINGS / source


def head(features: str, head_name: str) -> Path:
    """The fit of head `head_name` on `features`: inside the head stage's folder artifacts/heads/<head>."""
    return HEADS / head_name / features


def preds(model: str) -> Path:
    """Model name (`mlp-<backbone>`, `<features>-<head>`, `ensemble`) -> its predictions file."""
    if model == "ensemble":
        return ENSEMBLE / "preds.parquet"
    if model.startswith("mlp-"):
        return finetune(model.removeprefix("mlp-")) / "preds.parquet"
    features, head_name = model.rsplit("-", 1)  # names hold no '-' (params.NAME)
    return head(features, head_name) / "preds.parquet"


def live(stage: str, name: str) -> Path:
    """DVCLive folder of a stage run (metrics.json summary + plots/), small and git-tracked like metrics."""
    return Path("dvclive") / f"{stage}-{name}"


def stale_folders(backbones, sources, heads) -> list[Path]:
    """Folders under artifacts/{pretrained,finetune,embeddings,heads} that no current stage writes (left by a
    removed backbone, source or head)."""
    expected = {ART / "pretrained": set(backbones), ART / "finetune": set(backbones),
                EMBEDDINGS: set(sources), HEADS: set(heads)}
    return sorted(d for parent, names in expected.items() if parent.is_dir()
                  for d in parent.iterdir() if d.is_dir() and d.name not in names)
