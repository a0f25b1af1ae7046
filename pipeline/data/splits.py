"""Duplicate inputs and the train/valid/test split.

A duplicate is an exact copy of an input after normalization: the same text up to Unicode form (NFKC), case
and whitespace, or the same image bytes (`image_sha`). Copies that land in train and test leak labels into
the test score, so by default (`data.duplicates: group`) each group of copies goes to one split whole.

`dedupe(df, cfg)` -> (frame, group id per row, report); `split(df, cfg, kind, seed, groups)` -> the frame with
a `split` column, stratified by class (single-label) or by target decile (regression), over groups.
"""
from __future__ import annotations

import logging
import re
import unicodedata

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from pipeline import PipelineError
from pipeline.params import DataParams

log = logging.getLogger(__name__)
_SPACE = re.compile(r"\s+")


class SplitError(PipelineError):
    """The rows cannot be split as asked; the message names the data key to change."""


def normalize_text(text: str) -> str:
    """The duplicate key of a text: NFKC, casefolded, whitespace collapsed."""
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def group_keys(df: pd.DataFrame) -> pd.Series:
    """One key per row; rows with equal keys are copies of one input."""
    if "image_sha" in df.columns:
        return df["image_sha"].astype(str)
    return df["text"].astype(str).map(normalize_text)


def _label_key(labels: pd.Series, kind: str, sep: str) -> pd.Series:
    """Labels comparable across copies: a multilabel set ignores the order of its parts."""
    if kind == "multilabel":
        return labels.astype(str).map(lambda s: sep.join(sorted(s.split(sep))))
    return labels.astype(str)


def dedupe(df: pd.DataFrame, cfg: DataParams) -> tuple[pd.DataFrame, np.ndarray, dict]:
    """Apply `data.duplicates`. -> (frame, group id per row (N,) int, report counts).

    group: every row kept, copies share a group id. drop: the first row of each group is kept, and no row
    of a group whose labels disagree (which label would be right?). keep: every row is its own group.
    """
    keys = group_keys(df)
    codes = pd.factorize(keys)[0]
    sizes = np.bincount(codes)
    in_dup = sizes[codes] > 1
    labels = _label_key(df["label"], cfg.task, cfg.label_sep)
    n_labels = pd.Series(labels.to_numpy()).groupby(codes).nunique().to_numpy()
    conflict = n_labels[codes] > 1
    report = {"policy": cfg.duplicates, "rows_with_copies": int(in_dup.sum()),
              "groups_with_copies": int((sizes > 1).sum()), "extra_copies": int((sizes - 1).sum()),
              "groups_with_conflicting_labels": int((n_labels > 1).sum()),
              "rows_with_conflicting_labels": int(conflict.sum()), "dropped": 0}
    if report["rows_with_copies"]:
        log.info("duplicates (%s): %d rows in %d groups, %d groups with conflicting labels", cfg.duplicates,
                 report["rows_with_copies"], report["groups_with_copies"], report["groups_with_conflicting_labels"])
    if cfg.duplicates == "keep":
        if report["rows_with_copies"]:
            log.warning("data.duplicates: keep: %d copies may land in different splits (test leakage)",
                        report["extra_copies"])
        return df, np.arange(len(df)), report
    if cfg.duplicates == "drop":
        keep = ~pd.Series(codes).duplicated().to_numpy() & ~conflict
        report["dropped"] = int((~keep).sum())
        return df[keep].reset_index(drop=True), np.arange(int(keep.sum())), report
    return df, codes, report


def split(df: pd.DataFrame, cfg: DataParams, kind: str, seed: int, groups: np.ndarray | None = None) -> pd.DataFrame:
    """Assign train/valid/test to whole groups (default: one group per row), stratified over the groups by
    the first row's class (binary, multiclass) or by the decile of the group's mean target (regression).
    Fractions are of groups, so of rows when copies are rare."""
    groups = np.arange(len(df)) if groups is None else np.asarray(groups)
    first = ~pd.Series(groups).duplicated().to_numpy()
    rep = df[first].reset_index(drop=True)  # one row per group, in order of first appearance
    rep_group = groups[first]
    if kind == "regression":
        target = pd.Series(pd.to_numeric(df["label"]).to_numpy()).groupby(groups).mean().loc[rep_group]
        target = target.reset_index(drop=True)
        strat = pd.qcut(target, q=min(10, target.nunique()), labels=False, duplicates="drop")
    elif kind == "multilabel":
        strat = None  # no exact stratification for label sets; a seeded random split
    else:
        strat = rep["label"]
        counts = strat.value_counts()
        small = counts[counts < cfg.min_class_rows]
        if len(small):
            raise SplitError(f"classes with fewer than data.min_class_rows={cfg.min_class_rows} "
                             f"{'groups of copies' if len(rep) < len(df) else 'rows'} cannot be split: "
                             f"{small.to_dict()}")
    idx = np.arange(len(rep))
    hold = cfg.valid_frac + cfg.test_frac
    try:
        tr, rest = train_test_split(idx, test_size=hold, random_state=seed, stratify=strat)
        va, te = train_test_split(rest, test_size=cfg.test_frac / hold, random_state=seed,
                                  stratify=None if strat is None else strat.iloc[rest])
    except ValueError as e:
        if kind != "regression":
            raise SplitError(f"cannot split {len(rep)} {'groups' if len(rep) < len(df) else 'rows'} into "
                             f"train/valid/test (data.valid_frac, data.test_frac): {e}") from None
        # too few rows per target decile to stratify: a seeded random split
        try:
            tr, rest = train_test_split(idx, test_size=hold, random_state=seed)
            va, te = train_test_split(rest, test_size=cfg.test_frac / hold, random_state=seed)
        except ValueError as e:
            raise SplitError(f"cannot split {len(rep)} rows into train/valid/test (data.valid_frac, "
                             f"data.test_frac): {e}") from None
    by_group = np.empty(len(rep), dtype=object)
    by_group[tr], by_group[va], by_group[te] = "train", "valid", "test"
    out = df.copy()
    out["split"] = pd.Series(by_group, index=rep_group).loc[groups].to_numpy()
    return out
