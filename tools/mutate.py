"""Mutation check: break one feature in a temporary copy of the repo and see whether its tests notice.

Each mutation is a small textual patch of one source file (`old` must occur exactly once, else the mutation is
stale: an error, never a pass) and the pytest selection expected to catch it. For each mutation the script
copies the repo's files (tracked and untracked, not ignored) to a temporary folder, runs the selection
unmutated (once per distinct selection; it must pass, or a red run would prove nothing), applies the patch,
runs it again and reports:

  caught   tests of the selection failed under the mutation
  missed   it stayed green: the feature can vanish unnoticed
  skipped  a test it names is not in this checkout yet ("test not present")
  stale    the patch target is not in the source (or occurs more than once): update the mutation
  broken   the selection fails without the mutation, or cannot run with it (import or collection error)

Usage:
  python tools/mutate.py --list            # the mutations, whether their tests exist and their targets apply
  python tools/mutate.py                   # run every mutation whose tests are present
  python tools/mutate.py autocast-noop ... # run the named ones
Exit status: 0 when every mutation that ran was caught, 1 when one was missed, stale or broken.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutation:
    name: str
    file: str  # relative to the repo root
    old: str  # must occur exactly once in `file`
    new: str
    tests: tuple[str, ...]  # pytest node ids: "tests/x.py" or "tests/x.py::test_name"
    why: str


FEATURES = "tests/train/test_features_active.py"
INCREMENTAL = "tests/e2e/test_incremental.py"
STREAM = "tests/cache/test_stream.py"
CLI = "tests/test_stages_cli.py"
HEADS = "tests/heads/test_heads.py"
PREPARE = "tests/data/test_prepare_stream.py"
RANKS = f"{STREAM}::test_two_torchrun_ranks_split_the_shards_and_write_the_store_one_process_writes"
RANK_PROGRESS = f"{STREAM}::test_per_rank_progress_and_a_killed_two_rank_write_resumed_by_one_or_two"
MUTATIONS = [
    Mutation("autocast-noop", "pipeline/devices.py",
             "    return torch.autocast(device_type=device.type, dtype=dtype)",
             "    return contextlib.nullcontext()",
             (FEATURES,), "accel.autocast never lowers precision (bf16/fp16 silently run as fp32)"),
    Mutation("finetune-step-without-autocast", "pipeline/train/loop.py",
             "            with autocast(precision, device):\n                logits = scheme.forward(",
             "            with torch.autocast(device.type, enabled=False):\n                logits = scheme.forward(",
             (f"{FEATURES}::test_finetune_and_its_evaluation_run_the_encoder_in_the_asked_precision",),
             "the training step runs outside autocast"),
    Mutation("predict-without-autocast", "pipeline/train/loop.py",
             "        with autocast(precision, device):\n            return model(*inputs)",
             "        with torch.autocast(device.type, enabled=False):\n            return model(*inputs)",
             (f"{FEATURES}::test_finetune_and_its_evaluation_run_the_encoder_in_the_asked_precision",),
             "predict_scores (evaluation, the finetune stage's preds) runs outside autocast"),
    Mutation("embed-without-autocast", "pipeline/cache/embed.py",
             "        with autocast(precision, device):\n            return encoder(*inputs)",
             "        with torch.autocast(device.type, enabled=False):\n            return encoder(*inputs)",
             (f"{FEATURES}::test_embedding_runs_the_encoder_in_the_asked_precision",),
             "embed_frame runs outside autocast"),
    Mutation("bucket-ignored-in-finetune", "pipeline/train/loop.py",
             "cfg.bucket), rank, world)", "False), rank, world)",
             (f"{FEATURES}::test_bucketed_training_batches_carry_far_fewer_padded_tokens",),
             "finetune.bucket is ignored: training batches are never length-bucketed"),
    Mutation("bucket-ignored-in-embed", "pipeline/cache/embed.py",
             'cfg_embed.bucket, desc="embed")', 'False, desc="embed")',
             (f"{FEATURES}::test_bucketed_embedding_batches_carry_far_fewer_padded_tokens",),
             "embed.bucket is ignored: embedding batches keep the input order"),
    Mutation("train-batches-unsorted", "pipeline/data/batching.py",
             'order = np.concatenate([c[np.argsort(lengths[c], kind="stable")] for c in chunks])',
             "order = np.concatenate(chunks)",
             (f"{FEATURES}::test_bucketed_training_batches_carry_far_fewer_padded_tokens",),
             "train_batches(bucket=True) no longer sorts by length inside mega-batches"),
    Mutation("autofreeze-cache-skipped", "pipeline/models/autofreeze.py",
             "        if self.cache is None:\n            return forward(*batch)",
             "        if True:\n            return forward(*batch)",
             (f"{FEATURES}::test_autofreeze_steps_skip_the_frozen_prefix_once_it_is_cached",),
             "the AutoFreeze cache is built but steps still run the frozen prefix"),
    Mutation("autofreeze-cache-never-built", "pipeline/models/autofreeze.py",
             'if self.cfg.autofreeze_cache != "none" and self.inputs is not None:',
             "if False:",
             (f"{FEATURES}::test_autofreeze_steps_skip_the_frozen_prefix_once_it_is_cached",),
             "freezing never builds the activation cache"),
    Mutation("frozen-units-get-dropout", "pipeline/train/loop.py",
             "        model.train()\n        scheme.on_step(step)", "        scheme.on_step(step)\n        model.train()",
             ("tests/train/test_loop.py::test_freeze_runs_the_backbone_without_dropout",
              "tests/train/test_loop.py::test_freeze_bottom_trains_only_the_top_blocks_and_head"),
             "model.train() runs after the scheme's hook, so frozen units train with dropout again"),
    Mutation("freeze-bottom-trains", "pipeline/models/schemes.py",
             "                unit.requires_grad_(False)", "                unit.requires_grad_(True)",
             ("tests/train/test_loop.py::test_freeze_bottom_trains_only_the_top_blocks_and_head",),
             "finetune.freeze_bottom leaves its blocks trainable"),
    Mutation("cpu-adamw-foreach", "pipeline/train/optim.py",
             'if device.type in ("cuda", "cpu")', 'if device.type == "cuda"',
             ("tests/train/test_loop.py::test_adamw_is_fused_on_cpu",),
             "the CPU fine-tune falls back to foreach AdamW (11% slower)"),
    Mutation("readme-speedup-drift", "docs/finetuning.md", "3.77x", "3.8x",
             ("tests/repo/test_docs.py::test_readme_headline_numbers_are_in_the_benchmark_results",),
             "a docs page rounds a headline number away from what benchmarks/RESULTS.md measured"),
    # Caught by tests written elsewhere (main, other branches): skipped here until those tests are merged.
    Mutation("ensemble-weights-on-test-labels", "pipeline/ensemble/evaluate.py",
             '    y_fit, s_fit, ids_fit = aligned(cfg.members, df, task, "valid", optional="train")',
             '    y_fit, s_fit, ids_fit = aligned(cfg.members, df, task, "test", optional="train")',
             ("tests/e2e/test_leakage.py::test_test_labels_shape_nothing_valid_labels_do",),
             "the ensemble weights are fitted on the test rows' labels instead of valid/OOF"),
    Mutation("target-scale-from-all-rows", "pipeline/data/load.py",
             '        y = np.asarray(targets, dtype=np.float64)[np.asarray(splits) == "train"]',
             '        y = np.asarray(targets, dtype=np.float64)',
             ("tests/e2e/test_leakage.py::test_test_labels_shape_nothing_valid_labels_do",
              "tests/data/test_load.py::test_regression_and_formats"),
             "the regression target's [0, 1] scaling is fit on every row, test rows included"),
    Mutation("duplicates-split-apart", "pipeline/data/prepare.py",
             "        splits = split_rows(labels, cfg, task.kind, seed, groups, names)",
             "        splits = split_rows(labels, cfg, task.kind, seed, None, names)",
             ("tests/data/test_splits.py",),
             "copies of one input are split row by row, so a copy can sit in train and another in test"),
    Mutation("ensemble-never-falls-back", "pipeline/ensemble/evaluate.py",
             '        check["fallback"] = bool(cfg.fallback and check["gain"] < 0)',
             '        check["fallback"] = False',
             ("tests/ensemble/test_ensemble.py",),
             "a blend that is worse than its best member on valid is used anyway"),
    Mutation("ensemble-interval-unpaired", "pipeline/ensemble/blend.py",
             "counts_metric(primary, W @ cb, n)",
             "counts_metric(primary, W[::-1] @ cb, n)",
             ("tests/ensemble/test_ensemble.py",),
             "the ensemble's interval against its best member resamples the two on different rows (unpaired)"),
    Mutation("checkpoint-unpickled", "pipeline/train/loop.py",
             'torch.load(d / "state.pt", weights_only=True)',
             'torch.load(d / "state.pt", weights_only=False)',
             ("tests/train/test_checkpoint_security.py::test_a_checkpoint_with_a_code_running_pickle_is_refused",),
             "a pickled fine-tuning checkpoint is loaded with arbitrary code execution allowed"),
    Mutation("head-loaded-unverified", "pipeline/heads/store.py",
             "        if hashlib.sha256(blobs[name]).hexdigest() != sha:",
             "        if False:",
             ("tests/heads/test_head_store.py::test_a_changed_head_file_is_refused_by_its_sha256",),
             "a head file is loaded without checking it against its recorded sha256"),
    Mutation("head-unpickler-permissive", "pipeline/heads/store.py",
             "        if (module, name) in _FUNCTIONS:",
             "        if True:",
             ("tests/heads/test_head_store.py",),
             "the head unpickler builds any class or function a file names (code can run)"),
    Mutation("embed-depends-on-labels", "dvc.yaml",
             "pipeline/models/vision.py, artifacts/inputs,",
             "pipeline/models/vision.py, artifacts/inputs, artifacts/data,",
             (INCREMENTAL,), "the embed stages depend on labels and splits again: a new split re-embeds"),
    Mutation("embed-reuses-nothing", "pipeline/cache/embed.py",
             "    old = reusable(", "    old = None and reusable(",
             (INCREMENTAL,), "every embed rerun embeds every row (no incremental cache)"),
    Mutation("cache-key-ignores-weights", "pipeline/cache/embed.py",
             '    parts = {"backbone": fp if fp["files"] else {"name": cfg.name, **fp}, ', "    parts = {",
             (INCREMENTAL,), "another backbone's embed reuses the vectors the previous backbone made"),
    Mutation("embed-resume-ignores-progress", "pipeline/cache/stream.py",
             '    for f in sorted(Path(folder).glob("progress*.json")):',
             "    for f in []:",
             (STREAM,), "a killed embed restarts from shard 0 instead of its last finished shard"),
    Mutation("embed-partial-ignores-inputs", "pipeline/cache/stream.py",
             "    for x in input_hashes:", "    for x in []:",
             (f"{STREAM}::test_a_store_is_one_file_per_shard_and_a_killed_write_resumes_from_its_last_shard",),
             "a partial store for other inputs is resumed (old vectors land in the new store)"),
    Mutation("store-unsharded", "pipeline/cache/store.py",
             "                             shards=(shard, dim), zarr_format=3", "                             zarr_format=3",
             (f"{STREAM}::test_a_store_is_one_file_per_shard_and_a_killed_write_resumes_from_its_last_shard",),
             "the store is one file per chunk again (10M rows: thousands of files for DVC to hash)"),
    Mutation("embed-whole-pass", "pipeline/cache/embed.py",
             "inputs.n, e.dtype, e.shard_rows, e.chunk_rows, rank", "inputs.n, e.dtype, 1 << 40, 1 << 40, rank",
             (f"{STREAM}::test_a_killed_embed_resumes_from_its_last_shard_and_equals_an_uninterrupted_one",),
             "the embed stage computes the whole (N, D) matrix before writing anything"),
    Mutation("int8-key-ignores-batching", "pipeline/cache/embed.py",
             "        parts.update(batch_size=e.batch_size, bucket=e.bucket, shard_rows=e.shard_rows)", "        pass",
             ("tests/cache/test_runtimes.py::"
              "test_onnx_int8_vectors_depend_on_their_batch_so_its_cache_key_holds_the_batching",),
             "under ONNX Runtime int8 a changed batch size reuses vectors that batching would not give"),
    Mutation("head-pickles-onedal-model", "pipeline/heads/store.py",
             '    inner = getattr(model, "_onedal_estimator", None)\n',
             '    return model\n    inner = getattr(model, "_onedal_estimator", None)\n',
             ("tests/heads/test_head_store.py::test_a_sklearnex_svm_is_stored_with_one_copy_of_its_support_vectors",),
             "a stored sklearnex SVM keeps oneDAL's second copy of its support vectors (twice the bytes)"),
    Mutation("head-strips-multiclass-model", "pipeline/heads/store.py",
             ' or len(getattr(model, "classes_", ())) > 2:', ':',
             ("tests/heads/test_head_store.py::test_a_sklearnex_svm_is_stored_with_one_copy_of_its_support_vectors",),
             "a multi-class sklearnex SVC is stored without the oneDAL model it cannot be rebuilt from"),
    Mutation("embed-copies-no-shard-file", "pipeline/cache/embed.py",
             'if h.all() and writer.carry(', 'if False and writer.carry(',
             (f"{STREAM}::test_rows_appended_rewrite_only_their_shards_the_others_are_the_old_files",),
             "appended rows re-encode every reused shard instead of copying its file"),
    Mutation("shard-copy-ignores-row-order", "pipeline/cache/stream.py",
             " or not np.array_equal(old_rows, np.arange(lo, hi)):", ":",
             (f"{STREAM}::test_rows_appended_rewrite_only_their_shards_the_others_are_the_old_files",),
             "a shard whose rows moved is copied from the old store's same position (other rows' vectors)"),
    Mutation("stage-exit-without-freeze", "pipeline/cli.py", "    gc.freeze()  # before the shutdown\n", "\n",
             (f"{CLI}::test_a_stage_freezes_its_objects_before_its_work_and_before_the_interpreter_shuts_down",),
             "every stage's shutdown walks every object its imports made (1.3 s of an embed stage's exit)"),
    Mutation("stage-work-without-freeze", "pipeline/cli.py", "    gc.freeze()  # before the work\n", "\n",
             (f"{CLI}::test_a_stage_freezes_its_objects_before_its_work_and_before_the_interpreter_shuts_down",),
             "the full collections during a stage's work walk every import-time object again"),
    Mutation("partial-name-skips-a-hash", "pipeline/cache/stream.py",
             "memoryview(c.buffers()[2])[off[0]:off[-1]]", "memoryview(c.buffers()[2])[off[1]:off[-1]]",
             (f"{STREAM}::test_a_partial_is_named_alike_from_arrow_strings_and_from_python_ones",),
             "the partial's name leaves out each batch's first input hash (a partial for other inputs resumed)"),
    Mutation("reuse-takes-first-duplicate", "pipeline/cache/store.py", "            out[:m][same] = at[same]\n",
             "            pass\n",
             (f"{STREAM}::test_rows_appended_rewrite_only_their_shards_the_others_are_the_old_files",),
             "an unmoved row whose text repeats an earlier one takes that row's vector: its shard is re-encoded"),
    Mutation("hash-lookup-ignores-low-bits", "pipeline/cache/store.py",
             "            hit = self.lo[pos] == lo[todo]\n", "            hit = np.ones(len(pos), bool)\n",
             ("tests/cache/test_store.py::test_the_hash_lookup_finds_what_a_dict_of_first_rows_finds",),
             "two hashes that share their first 64 bits are taken for one (another text's vector reused)"),
    Mutation("hash-lookup-stops-at-a-run", "pipeline/cache/store.py",
             "            todo, pos = todo[~hit], pos[~hit] + 1\n", "            todo = todo[:0]\n",
             ("tests/cache/test_store.py::test_the_hash_lookup_finds_what_a_dict_of_first_rows_finds",),
             "a hash whose first 64 bits another hash shares is not found (its row embedded again)"),
    Mutation("tokenize-whole-shard", "pipeline/data/batching.py",
             "    for a in range(0, len(texts), TOKENIZE_ROWS):\n        part = Tokenized.from_lists(tokenizer(texts[a:a + TOKENIZE_ROWS],",
             "    for a in range(0, len(texts), max(len(texts), 1)):\n        part = Tokenized.from_lists(tokenizer(texts[a:],",
             ("tests/data/test_batching.py::test_texts_are_tokenized_a_few_thousand_at_a_time_into_flat_ids",),
             "a shard's 65,536 texts are tokenized in one call (about 280 MB of encodings at once)"),
    Mutation("index-rows-restart-per-group", "pipeline/cache/store.py", "            start += n\n", "\n",
             ("tests/cache/test_store.py::test_an_index_written_a_row_group_at_a_time_numbers_its_rows_through",),
             "an index written a row group at a time numbers each group's rows from 0 (reruns re-embed all)"),
    Mutation("input-rows-whole-groups", "pipeline/data/inputs.py",
             "parts.append(self._group(g, columns).slice(a, b - a))", "parts.append(self._group(g, columns))",
             ("tests/data/test_inputs.py::test_input_rows_read_any_row_range_from_the_row_groups_that_hold_it",),
             "a shard's texts come from whole row groups, not its own rows (rows embedded under other ids)"),
    Mutation("svm-never-approximates", "pipeline/heads/estimators.py",
             "cfg.kernel != \"linear\" and n_rows > cfg.max_kernel_rows", "cfg.kernel != \"linear\" and False",
             (f"{HEADS}::test_a_kernel_svm_above_max_kernel_rows_is_nystroem_plus_a_linear_svm",),
             "a kernel SVM on any number of rows is fit exactly (quadratic in rows)"),
    Mutation("features-read-whole", "pipeline/cache/store.py",
             'step, d = (getattr(arr, "shards", None) or arr.chunks)[0], arr.shape[1]', "step, d = arr.shape",
             ("tests/cache/test_store.py::test_features_are_read_a_shard_at_a_time_into_one_matrix",),
             "a head reads each store whole before copying it into the feature matrix (a second N x D copy)"),
    Mutation("prepare-reads-whole", "pipeline/data/load.py",
             "frames, image_root = table_batches(path, cfg.encoding, BATCH), path.parent",
             "frames, image_root = table_batches(path, cfg.encoding, 10**9), path.parent",
             (f"{PREPARE}::test_batches_of_seven_rows_prepare_what_one_batch_does",),
             "prepare reads a table file whole instead of a batch at a time"),
    Mutation("prepare-dup-ids-per-batch", "pipeline/data/prepare.py",
             'dup = ids.duplicated(keep="first").to_numpy()', "dup = np.zeros(len(ids), bool)",
             (f"{PREPARE}::test_bad_rows_in_later_batches_are_named_by_their_row_in_the_file",),
             "an id repeated in a later batch than its first row is not found"),
    Mutation("prepare-row-groups-unbuffered", "pipeline/data/prepare.py",
             "while self.buffered >= self.rows:", "while self.buffered:",
             (f"{PREPARE}::test_both_outputs_are_written_in_row_groups_of_batch_rows",),
             "prepare's outputs get a row group per source batch, of whatever size the checks left"),
    Mutation("atomic-dir-leaves-folders", "pipeline/io.py", "                p.rmdir()", "                pass",
             ("tests/test_stages_cli.py::test_bad_input_is_one_error_line_and_exit_2",),
             "a failed stage leaves the artifacts/ and .tmp folders it created behind"),
    Mutation("approx-svm-never-streams", "pipeline/heads/approx.py",
             "streamed = len(X) > cfg.stream_rows", "streamed = False",
             (f"{HEADS}::test_above_stream_rows_the_approximate_svm_fits_and_scores_a_chunk_of_features_at_a_time",),
             "an approximate SVM on any number of rows holds every row's Nystroem features for liblinear"),
    Mutation("scores-unchunked", "pipeline/heads/estimators.py",
             "        if len(X) > SCORE_ROWS:\n            return np.vstack", "        if False:\n            return np.vstack",
             (f"{HEADS}::test_above_stream_rows_the_approximate_svm_fits_and_scores_a_chunk_of_features_at_a_time",),
             "a head scores all rows at once (an approximate SVM's features: rows x 1000 float64)"),
    Mutation("norm-whole-matrix-temporaries", "pipeline/heads/estimators.py",
             "            out = X - self.mean\n            out /= self.std\n            return out",
             "            return (X - self.mean) / self.std",
             (f"{HEADS}::test_normalizing_the_train_rows_holds_one_copy_and_equals_the_whole_matrix_expressions",),
             "standardizing the train rows allocates a second (N, D) temporary (1.5 GB at 1M rows x 384)"),
    Mutation("approx-gamma-whole-matrix", "pipeline/heads/approx.py",
             "(variance(X) if cfg.gamma", "(X.var() if cfg.gamma",
             (f"{HEADS}::test_the_approximate_svms_gamma_reads_its_rows_a_block_at_a_time",),
             "the streamed fit's gamma allocates a temporary as large as its rows (the fit's peak)"),
    Mutation("heads-fits-sequential", "pipeline/heads/folds.py", "pairs, jobs)", "pairs, 1)",
             (f"{HEADS}::test_parallel_grid_and_folds_fit_on_threads_and_equal_the_sequential_fits",),
             "the (C, fold) fits of a k-fold head run one after another whatever n_jobs says"),
    Mutation("head-fits-never-reused", "pipeline/heads/fit.py",
             "if reuse.restore(key, dst, cache):", "if False:",
             ("tests/heads/test_fit.py::test_one_stage_fits_every_feature_set_and_reuses_only_what_did_not_change",),
             "the head stage refits every feature set on every rerun (one stage per head loses per-pair reruns)"),
    Mutation("head-fingerprint-ignores-features", "pipeline/heads/reuse.py",
             '"features": [[p, params.sources[p].from_, files(paths.embeddings(p), STORE_FILES)] for p in parts],',
             '"features": [],',
             ("tests/heads/test_fit.py::test_one_stage_fits_every_feature_set_and_reuses_only_what_did_not_change",),
             "a fit is reused after its feature store changed (a new fine-tune keeps the old head)"),
    Mutation("head-fingerprint-ignores-concat-order", "pipeline/heads/reuse.py",
             "STORE_FILES)] for p in parts],", "STORE_FILES)] for p in sorted(parts)],",
             ("tests/heads/test_fit.py::test_a_reordered_concat_and_a_new_seed_are_other_fits",),
             "a reordered concat (other columns) reuses the fit of the old order"),
    Mutation("head-fingerprint-ignores-code", "pipeline/heads/reuse.py", '"seed": params.seed, "code": code,',
             '"seed": params.seed,', ("tests/heads/test_fit.py::test_new_labels_or_new_code_refit_every_feature_set",),
             "a fit made by other pipeline code is reused after a code change"),
    Mutation("head-cache-unverified", "pipeline/heads/reuse.py",
             'ok = rec["key"] == key and files_sha256(entry, lambda rel: rel != INPUTS) == rec["files"]',
             'ok = rec["key"] == key',
             ("tests/heads/test_fit.py::test_a_changed_cached_file_is_refit_never_reused",),
             "a cached fit whose files changed or were cut short is copied into the artifact"),
    Mutation("embed-ranks-not-split", "pipeline/cache/stream.py",
             "    return pending[rank::world]", "    return pending",
             (RANKS,), "under torchrun every rank embeds every shard (N ranks do N times the work)"),
    Mutation("embed-rank-skips-its-shards", "pipeline/cache/embed.py",
             "    for s in mine:", "    for s in mine if rank == 0 else []:",
             (RANKS,), "under torchrun only rank 0 writes its shards: the store would have holes"),
    Mutation("embed-ranks-share-one-progress-file", "pipeline/cache/stream.py",
             'PROGRESS = "progress-{rank}.json"', 'PROGRESS = "progress.json"',
             (RANK_PROGRESS,),
             "ranks overwrite one progress file: a rank's finished shards are forgotten and embedded again"),
    Mutation("embed-store-with-holes-published", "pipeline/cache/stream.py",
             "        if missing:", "        if False:",
             (RANK_PROGRESS,),
             "rank 0 publishes a store whose unwritten shards read as zeros"),
    Mutation("prepare-without-lean-heap", "stages/prepare.py",
             "\nlean_heap()\n", "\n",
             ("tests/test_heap.py",),
             "prepare runs on glibc's dynamic mmap threshold and Arrow's mimalloc pool: freed batches pile up"),
    Mutation("lean-heap-pool-only", "pipeline/heap.py",
             "    return bool(libc is not None and libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1)",
             "    return False",
             ("tests/test_heap.py",), "the mmap threshold stays dynamic: large freed blocks come back as heap holes"),
    Mutation("images-module-imports-torch", "pipeline/data/images.py",
             "import numpy as np\n\nfrom pipeline import PipelineError",
             "import numpy as np\nimport torch  # noqa\n\nfrom pipeline import PipelineError",
             ("tests/models/test_vision.py::test_prepare_stage_on_images_runs_without_torch",),
             "prepare on images imports torch again: 2 s and 600 MB for checks that need none of it"),
    Mutation("evaluate-replaces-ensemble-first", "stages/evaluate.py",
             "        metrics = run_evaluate(params, out, ensemble=tmp)\n    return",
             "    metrics = run_evaluate(params, out)\n    return",
             ("tests/ensemble/test_ensemble.py::test_the_evaluate_stage_replaces_the_ensemble_only_when_its_evaluation_succeeds",),
             "the ensemble's new weights replace artifacts/ensemble before the evaluation that failed"),
]
BY_NAME = {m.name: m for m in MUTATIONS}


def test_present(node: str, root: Path = ROOT) -> bool:
    """A node id's file exists and, if it names a test, the file defines it."""
    path, _, name = node.partition("::")
    f = root / path
    if not f.is_file():
        return False
    return not name or re.search(rf"^\s*def {re.escape(name.split('[')[0])}\(", f.read_text(), re.M) is not None


def status(m: Mutation, root: Path = ROOT) -> str:
    """'ready', 'skipped: test not present: ...' or 'stale: ...' (checked in that order)."""
    missing = [t for t in m.tests if not test_present(t, root)]
    if missing:
        return f"skipped: test not present: {', '.join(missing)}"
    n = (root / m.file).read_text().count(m.old) if (root / m.file).is_file() else 0
    if n != 1:
        return f"stale: target found {n} times in {m.file} (must be exactly once)"
    return "ready"


def copy_repo(dst: Path) -> None:
    """The working tree's tracked and untracked, not ignored files (code, tests, params, data, ...)."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                         check=True, capture_output=True).stdout.decode()
    for rel in filter(None, out.split("\0")):
        src = ROOT / rel
        if src.is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)


def pytest(repo: Path, tests: tuple[str, ...], extra: list[str]) -> tuple[int, str]:
    """-> (pytest's exit code, its summary line)."""
    env = {**os.environ, "PYTHONPATH": str(repo), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *extra, *tests],
                       cwd=repo, env=env, capture_output=True, text=True)
    tail = [line for line in (r.stdout + r.stderr).splitlines() if line.strip()][-1:] or [""]
    return r.returncode, tail[0].strip("= ")


def run(m: Mutation, extra: list[str], baselines: dict) -> tuple[str, str]:
    """-> (verdict, detail). `baselines` remembers the unmutated run of each test selection."""
    st = status(m)
    if st != "ready":
        return st.split(":")[0], st.partition(": ")[2]
    with tempfile.TemporaryDirectory(prefix=f"mutate-{m.name}-") as tmp:
        repo = Path(tmp)
        copy_repo(repo)
        if m.tests not in baselines:
            baselines[m.tests] = pytest(repo, m.tests, extra)
        rc, tail = baselines[m.tests]
        if rc:
            return "broken", f"fails without the mutation: {tail}"
        f = repo / m.file
        f.write_text(f.read_text().replace(m.old, m.new))
        rc, tail = pytest(repo, m.tests, extra)
        # only failing tests count: a mutation that stops the suite from importing or collecting proves nothing
        return {0: "missed", 1: "caught"}.get(rc, "broken"), tail


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="*", help="mutations to run (default: all)")
    ap.add_argument("--list", action="store_true", help="list the mutations and their status; run nothing")
    ap.add_argument("--pytest-args", default="", help="extra pytest arguments, one string")
    a = ap.parse_args(argv)
    unknown = [n for n in a.names if n not in BY_NAME]
    if unknown:
        ap.error(f"unknown mutation(s) {unknown}; --list shows them")
    chosen = [BY_NAME[n] for n in a.names] or MUTATIONS
    if a.list:
        bad = 0
        for m in chosen:
            st = status(m)
            bad += st.startswith("stale")
            print(f"{m.name:34} {m.file:24} {st}\n{'':34} {m.why}; tests: {' '.join(m.tests)}")
        return 1 if bad else 0
    print("| mutation | file | tests | result | pytest | seconds |\n|---|---|---|---|---|---|")
    failed, baselines = 0, {}
    for m in chosen:
        t0 = time.perf_counter()
        verdict, detail = run(m, a.pytest_args.split(), baselines)
        failed += verdict in ("missed", "stale", "broken")
        tests = ", ".join(t.replace("tests/", "").split("::")[-1] for t in m.tests)
        shown = verdict if verdict == "caught" else f"**{verdict}**"
        print(f"| {m.name} | {m.file} | {tests} | {shown} | {detail} | {time.perf_counter() - t0:.0f} |", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
