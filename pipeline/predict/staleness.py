"""Does an artifact still match params.yaml? Every artifact folder records the params that made it
(`<folder>/params.yaml`, pipeline/io.py `write_params`); predict compares them with the current params before
it serves anything, so that a changed param without `dvc repro` is refused instead of silently mixing
artifacts made with different settings.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from pipeline import PipelineError, paths
from pipeline.io import params_record
from pipeline.params import Params


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def stale_keys(folder: str | Path, **sections: Any) -> list[str]:
    """Dotted keys whose value in `<folder>/params.yaml` differs from `sections` (as write_params records them);
    ["(no params.yaml)"] when the folder or its record is missing."""
    f = Path(folder) / "params.yaml"
    if not f.is_file():
        return ["(not built: no params.yaml)"]
    old, new = _flat(yaml.safe_load(f.read_text()) or {}), _flat(params_record(**sections))
    return sorted(k for k in old.keys() | new.keys() if old.get(k, "<missing>") != new.get(k, "<missing>"))


def expected_records(params: Params, members: list[str], member_parts) -> dict[Path, dict]:
    """Artifact folder -> the sections it must have recorded, for everything predict reads to score `members`.
    `member_parts(name)` -> (features, head) for a `<features>-<head>` member."""
    def finetuned(bb: str) -> dict:
        return dict(seed=params.seed, backbone=params.backbones[bb], finetune=params.finetune)

    want: dict[Path, dict] = {paths.DATA: dict(seed=params.seed, data=params.data),
                              paths.ENSEMBLE: dict(ensemble=params.ensemble, primary=params.primary_metric)}
    for m in members:
        if m.startswith("mlp-"):
            bb = m.removeprefix("mlp-")
            want[paths.finetune(bb)] = finetuned(bb)
            continue
        features, head = member_parts(m)
        parts = params.concat.get(features, [features])
        want[paths.head(features, head)] = dict(head=params.heads[head],
                                                features=[str(paths.embeddings(p)) for p in parts])
        for p in parts:
            src = params.sources[p]
            cfg = params.backbones[src.backbone]
            want[paths.embeddings(p)] = dict(source=src, backbone=cfg, embed=params.embed)
            if src.from_ == "finetune":
                want[paths.finetune(src.backbone)] = finetuned(src.backbone)
            else:
                want[paths.pretrained(src.backbone)] = dict(backbone=cfg)
    return want


def check_fresh(params: Params, members: list[str], member_parts) -> None:
    """Raise one PipelineError listing every artifact folder whose recorded params differ from `params`."""
    bad = []
    for folder, sections in expected_records(params, members, member_parts).items():
        keys = stale_keys(folder, **sections)
        if keys:
            bad.append(f"{folder} ({', '.join(keys[:4])}{', ...' if len(keys) > 4 else ''})")
    if bad:
        raise PipelineError(f"artifacts made with other params than params.yaml: {'; '.join(bad)}; "
                            "run `dvc repro` first")
