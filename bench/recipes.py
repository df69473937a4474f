"""Recorded fine-tuning recipes on the shared datasets, run the way a user runs bert_tf, with their scores.

  .venv/bin/python bench/recipes.py --recipe=mrpc          # sentence pairs: dev F1 and accuracy
  .venv/bin/python bench/recipes.py --recipe=cola          # dev Matthews correlation
  .venv/bin/python bench/recipes.py --recipe=goemotions    # 28-label multi-label: test micro/macro F1
  .venv/bin/python bench/recipes.py --recipe=imdb          # long reviews: sliding windows vs truncation
  .venv/bin/python bench/recipes.py --recipe=all

Each recipe is `python -m bert_tf.create_tfrecords …` then `python -m bert_tf.run_classifier …`, subprocesses
with the flags printed before they run, on the default encoder (all-MiniLM-L6-v2) and ../shared/data. Every
recipe prints its figures; the LAST line is one JSON object with all of them (keys `<recipe>_<split>_<metric>`,
and for IMDB `imdb_sliding_over_truncate`).

- mrpc: GLUE layout (--task_name=mrpc), pairs at 128 tokens, 3 epochs, lr 1e-4; dev F1 and accuracy.
- cola: GLUE layout, 64 tokens, 3 epochs, lr 1e-4; dev MCC.
- goemotions: the official train/dev/test, label ids turned into names (labels.txt) in a header'd TSV under
  --work_dir; 64 tokens, --epochs (default 1), lr 1e-4, thresholds tuned on dev (--tune_thresholds), scored on
  test (test_eval_results.txt: micro/macro F1 at the tuned thresholds; eval_results.txt has dev at 0.5 and tuned).
- imdb: a class-balanced sample of --imdb_train_docs train and --imdb_test_docs test reviews (seed 42; the full
  25k/25k is too slow on a CPU), both at max_seq_length 128: once truncated (the review's first 126 word-pieces),
  once as sliding windows 96 tokens apart (--doc_stride=96), windows' logits averaged per review. Same training
  epochs (1), learning rate (1e-4) and seed; test accuracy per review. On a CPU with no GPU the recipes are long
  (GoEmotions and IMDB the longest): the wall time of each is printed.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import random
import sys
import tempfile
import time

from absl import app, flags

from bert_tf.reports import read_results

from shared_data import SHARED, goemotions_label_names, goemotions_table, run_module

RECIPES = ("mrpc", "cola", "goemotions", "imdb")

flags.DEFINE_enum("recipe", "all", ["all", *RECIPES], "Which recipe to run.")
flags.DEFINE_string("work_dir", None, "Where records and runs go (default: a temp dir, deleted after).")
flags.DEFINE_float("epochs", None, "Override the recipe's number of training epochs.")
flags.DEFINE_integer("imdb_train_docs", 2000, "IMDB: train reviews in the sample (half of each class).")
flags.DEFINE_integer("imdb_test_docs", 2000, "IMDB: test reviews in the sample (half of each class).")
FLAGS = flags.FLAGS

LEARNING_RATE = "1e-4"  # all-MiniLM-L6-v2 is small: 1e-4 beat 5e-5 on SST-2 (README, Results)


def run(module: str, *args: str) -> float:
    """run_module, quiet, after printing the command; in our own directory, where a relative --work_dir is."""
    print("$", sys.executable, "-m", f"bert_tf.{module}", *args, flush=True)
    return run_module(module, *args, quiet=True, cwd=None)


def fine_tune(work: str, name: str, create_flags: list[str], classifier_flags: list[str], epochs: float) -> tuple[str, float]:
    records, output = os.path.join(work, f"{name}_records"), os.path.join(work, f"{name}_run")
    wall = run("create_tfrecords", *create_flags, f"--output_dir={records}")
    wall += run("run_classifier", f"--data_dir={records}", f"--output_dir={output}", "--do_train",
                f"--num_train_epochs={FLAGS.epochs or epochs}", f"--learning_rate={LEARNING_RATE}",
                "--overwrite_output_dir", *classifier_flags)
    return output, wall


def mrpc(work: str) -> dict:
    output, wall = fine_tune(work, "mrpc", ["--task_name=mrpc", f"--data_dir={SHARED}/mrpc", "--max_seq_length=128"],
                             ["--do_eval"], epochs=3)
    dev = read_results(os.path.join(output, "eval_results.txt"))
    return {"mrpc_dev_f1": dev["eval_f1"], "mrpc_dev_accuracy": dev["eval_accuracy"], "mrpc_wall_s": wall}


def cola(work: str) -> dict:
    output, wall = fine_tune(work, "cola", ["--task_name=cola", f"--data_dir={SHARED}/cola", "--max_seq_length=64"],
                             ["--do_eval"], epochs=3)
    dev = read_results(os.path.join(output, "eval_results.txt"))
    return {"cola_dev_mcc": dev["eval_mcc"], "cola_dev_accuracy": dev["eval_accuracy"], "cola_wall_s": wall}


def goemotions(work: str) -> dict:
    names = goemotions_label_names()
    train, dev, test = (goemotions_table(work, split, names) for split in ("train", "dev", "test"))
    output, wall = fine_tune(
        work, "goemotions",
        [f"--train_file={train}", f"--dev_file={dev}", f"--test_file={test}", "--text_column=text",
         "--label_column=labels", "--task_type=multilabel", "--max_seq_length=64"],
        ["--do_eval", "--do_predict", "--tune_thresholds"], epochs=1)
    dev_results = read_results(os.path.join(output, "eval_results.txt"))
    test_results = read_results(os.path.join(output, "test_eval_results.txt"))
    return {
        "goemotions_test_micro_f1": test_results["test_micro_f1"],
        "goemotions_test_macro_f1": test_results["test_macro_f1"],
        "goemotions_test_macro_auc": test_results["test_macro_auc"],
        "goemotions_dev_micro_f1_at_0.5": dev_results["eval_micro_f1"],
        "goemotions_dev_macro_f1_at_0.5": dev_results["eval_macro_f1"],
        "goemotions_wall_s": wall,
    }


def imdb_sample(work: str, split: str, count: int) -> str:
    with gzip.open(os.path.join(SHARED, "imdb", f"{split}.tsv.gz"), "rt", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    random.Random(42).shuffle(rows)
    chosen = [r for r in rows if r["label"] == "0"][: count // 2] + [r for r in rows if r["label"] == "1"][: count - count // 2]
    path = os.path.join(work, f"imdb_{split}.tsv")
    with open(path, "w", encoding="utf-8") as f:
        f.write("text\tlabel\n")
        f.writelines(f"{row['text']}\t{row['label']}\n" for row in chosen)
    return path


def imdb(work: str) -> dict:
    train, test = imdb_sample(work, "train", FLAGS.imdb_train_docs), imdb_sample(work, "test", FLAGS.imdb_test_docs)
    tables = [f"--train_file={train}", f"--test_file={test}", "--text_column=text", "--label_column=label",
              "--max_seq_length=128"]
    figures = {}
    for mode, extra in (("truncate", []), ("sliding_window", ["--long_document=sliding_window", "--doc_stride=96"])):
        output, wall = fine_tune(work, f"imdb_{mode}", tables + extra, ["--do_predict"], epochs=1)
        with open(os.path.join(work, f"imdb_{mode}_records", "metadata.json")) as f:
            metadata = json.load(f)
        figures[f"imdb_test_accuracy_{mode}"] = read_results(os.path.join(output, "test_eval_results.txt"))["test_accuracy"]
        figures[f"imdb_train_records_{mode}"] = metadata["train_data_size"]
        figures[f"imdb_wall_s_{mode}"] = wall
    figures["imdb_sliding_over_truncate"] = figures["imdb_test_accuracy_sliding_window"] / figures["imdb_test_accuracy_truncate"]
    return figures


def main(argv):
    del argv
    work = FLAGS.work_dir or tempfile.mkdtemp(prefix="bert_tf_recipes-")
    os.makedirs(work, exist_ok=True)
    figures = {}
    for name in RECIPES if FLAGS.recipe == "all" else (FLAGS.recipe,):
        started = time.time()
        result = globals()[name](work)
        print(f"--- {name} ({time.time() - started:.0f} s)")
        for key, value in result.items():
            print(f"  {key} = {value:.4f}" if isinstance(value, float) else f"  {key} = {value}")
        figures.update({key: round(value, 4) if isinstance(value, float) else value for key, value in result.items()})
    if not FLAGS.work_dir:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(figures))


if __name__ == "__main__":
    app.run(main)
