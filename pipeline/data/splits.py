"""Duplicate inputs and the train/valid/test split, on per-row arrays (the prepare stage streams its rows:
pipeline/data/prepare.py).

A duplicate is an exact copy of an input after normalization: the same text up to Unicode form (NFKC), case
and whitespace, or the same image bytes (`image_sha`). Copies that land in train and test leak labels into
the test score, so by default (`data.duplicates: group`) each group of copies goes to one split whole.

`dup_keys(frame)` -> a 16-byte digest of each row's duplicate key; `dedupe(keys, label_keys, cfg)` -> (rows
kept, group id per row, report); `split_rows(labels, cfg, kind, seed, groups)` -> each row's split,
stratified by class (single-label) or by target decile (regression), over groups.
"""
from __future__ import annotations

import hashlib
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
SPLIT_NAMES = np.array(["train", "valid", "test"], dtype=object)


class SplitError(PipelineError):
    """The rows cannot be split as asked; the message names the data key to change."""


def normalize_text(text: str) -> str:
    """The duplicate key of a text: NFKC, casefolded, whitespace collapsed."""
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def dup_keys(df: pd.DataFrame) -> np.ndarray:
    """(N,) 'S16': the blake2b digest of each row's duplicate key (its image_sha, or its normalized text).
    16 bytes a row instead of the key itself; two different keys share a digest with odds of about 2^-128
    a pair."""
    keys = df["image_sha"].astype(str) if "image_sha" in df.columns else df["text"].astype(str).map(normalize_text)
    return np.array([hashlib.blake2b(k.encode("utf-8"), digest_size=16).digest() for k in keys], dtype="S16")


def label_key(label: str, kind: str, sep: str) -> str:
    """A label comparable across copies: a multilabel set ignores the order of its parts."""
    return sep.join(sorted(label.split(sep))) if kind == "multilabel" else label


def dedupe(keys: np.ndarray, label_keys: np.ndarray, cfg: DataParams) -> tuple[np.ndarray | None, np.ndarray, dict]:
    """Apply `data.duplicates` to rows with duplicate keys `keys` (N,) and comparable labels `label_keys` (N,)
    (codes or targets). -> (rows kept (N,) bool, or None for all; group id of each kept row; report counts).

    group: every row kept, copies share a group id. drop: the first row of each group is kept, and no row
    of a group whose labels disagree (which label would be right?). keep: every row is its own group.
    """
    _, first, codes = np.unique(keys, return_index=True, return_inverse=True)  # codes 0..G-1: only equality counts
    codes = codes.ravel()
    sizes = np.bincount(codes)
    in_dup = sizes[codes] > 1
    lab = np.unique(label_keys, return_inverse=True)[1].ravel().astype(np.int64)
    pairs = np.unique(codes * np.int64(lab.max() + 1 if len(lab) else 1) + lab)  # distinct (group, label)
    n_labels = np.bincount(pairs // np.int64(lab.max() + 1 if len(lab) else 1), minlength=len(sizes))
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
        return None, np.arange(len(keys)), report
    if cfg.duplicates == "drop":
        keep = np.zeros(len(keys), bool)
        keep[first] = True  # the first row of each group
        keep &= ~conflict
        report["dropped"] = int((~keep).sum())
        return keep, np.arange(int(keep.sum())), report
    return None, codes, report


def split_rows(labels: np.ndarray, cfg: DataParams, kind: str, seed: int, groups: np.ndarray | None = None,
               names: list[str] | None = None) -> np.ndarray:
    """Each row's split ('train' | 'valid' | 'test', (N,) object), assigned to whole groups (`groups`: ids
    0..G-1, as dedupe numbers them; default: one group per row), stratified over the groups by the first
    row's class (binary, multiclass: `labels` are class codes of `names`; scikit-learn gets the names, so its
    errors name classes) or by the decile of the group's mean target (regression: `labels` are targets).
    Fractions are of groups, so of rows when copies are rare."""
    labels = np.asarray(labels)
    groups = np.arange(len(labels)) if groups is None else np.asarray(groups)
    first = np.zeros(len(groups), bool)
    first[np.unique(groups, return_index=True)[1]] = True
    rep_group = groups[first]  # one row per group, in order of first appearance
    n_rep, grouped = int(first.sum()), int(first.sum()) < len(labels)
    if kind == "regression":
        target = pd.Series(labels.astype(np.float64)).groupby(groups).mean().loc[rep_group]
        target = target.reset_index(drop=True)
        strat = pd.qcut(target, q=min(10, target.nunique()), labels=False, duplicates="drop").to_numpy()
    elif kind == "multilabel":
        strat = None  # no exact stratification for label sets; a seeded random split
    else:
        strat = labels[first] if names is None else np.array(names, dtype=object)[labels[first]]
        counts = pd.Series(strat).value_counts()
        small = counts[counts < cfg.min_class_rows]
        if len(small):
            raise SplitError(f"classes with fewer than data.min_class_rows={cfg.min_class_rows} "
                             f"{'groups of copies' if grouped else 'rows'} cannot be split: {small.to_dict()}")
    idx = np.arange(n_rep)
    hold = cfg.valid_frac + cfg.test_frac
    try:
        tr, rest = train_test_split(idx, test_size=hold, random_state=seed, stratify=strat)
        va, te = train_test_split(rest, test_size=cfg.test_frac / hold, random_state=seed,
                                  stratify=None if strat is None else strat[rest])
    except ValueError as e:
        if kind != "regression":
            raise SplitError(f"cannot split {n_rep} {'groups' if grouped else 'rows'} into "
                             f"train/valid/test (data.valid_frac, data.test_frac): {e}") from None
        # too few rows per target decile to stratify: a seeded random split
        try:
            tr, rest = train_test_split(idx, test_size=hold, random_state=seed)
            va, te = train_test_split(rest, test_size=cfg.test_frac / hold, random_state=seed)
        except ValueError as e:
            raise SplitError(f"cannot split {n_rep} rows into train/valid/test (data.valid_frac, "
                             f"data.test_frac): {e}") from None
    by_group = np.empty(groups.max() + 1 if len(groups) else 0, dtype=np.int8)  # group id -> split
    by_group[rep_group[tr]], by_group[rep_group[va]], by_group[rep_group[te]] = 0, 1, 2
    return SPLIT_NAMES[by_group[groups]]
