"""Which head should the default encoder use? Dev scores of --pooling=mean vs pooled (vs cls), over seeds.

  .venv/bin/python bench/pooling.py                                   # SST-2 and AG News, mean vs pooled, 3 seeds
  .venv/bin/python bench/pooling.py --tasks=goemotions --poolings=mean,pooled,cls

all-MiniLM-L6-v2 was trained as a sentence embedder through mean pooling; its pooler ([CLS] → dense → tanh)
was never trained by that, so `--pooling=auto` has to be chosen by measurement. One run is not enough: with
1 epoch on a few thousand rows, dev accuracy moves from seed to seed. Each (task, pooling, seed) is
`python -m bert_tf.run_classifier` with its defaults (lr 5e-5, batch 32) but --num_train_epochs=1, on records
written once per task by `python -m bert_tf.create_tfrecords`:

- sst2: the first --max_train_examples rows of ../shared/data/sst2/train.tsv, 64 tokens, dev accuracy;
- ag_news: train_subset5k.tsv (5,000 rows), 128 tokens, accuracy on the 7,600-row official test set;
- goemotions: the first --max_train_examples rows of train, 64 tokens, multi-label, dev macro AUC (the
  threshold-free score of the earlier PyTorch measurement).

Prints every run, then each (task, pooling)'s mean and standard deviation over seeds; the LAST line is one JSON
object: `<task>_<pooling>_mean`, `<task>_<pooling>_std`, `<task>_<pooling>_runs` and `<task>_mean_minus_pooled`.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time

from absl import app, flags

from bert_tf.reports import read_results

from shared_data import SHARED, copy_first_rows, goemotions_label_names, goemotions_table, run_module, spread

TASKS = ("sst2", "ag_news", "goemotions")

flags.DEFINE_list("tasks", ["sst2", "ag_news"], f"Tasks among {', '.join(TASKS)}.")
flags.DEFINE_list("poolings", ["mean", "pooled"], "Poolings to compare (mean, pooled, cls).")
flags.DEFINE_list("seeds", ["1", "2", "3"], "Seeds: one fine-tuning run per seed, task and pooling.")
flags.DEFINE_integer("max_train_examples", 8000, "SST-2 and GoEmotions: train on the first N rows.")
flags.DEFINE_string("work_dir", None, "Where tables, records and runs go (default: a temp dir, deleted after).")
FLAGS = flags.FLAGS


def write_records(task: str, work: str) -> tuple[str, str]:
    """Writes the task's records; returns their dir and the eval_results.txt key to compare."""
    records = os.path.join(work, f"{task}_records")
    if task == "sst2":
        train = os.path.join(work, "sst2_train.tsv")
        copy_first_rows(os.path.join(SHARED, "sst2", "train.tsv"), train, FLAGS.max_train_examples)
        tables = [f"--train_file={train}", f"--dev_file={SHARED}/sst2/dev.tsv", "--text_column=sentence",
                  "--label_column=label", "--max_seq_length=64"]
        metric = "eval_accuracy"
    elif task == "ag_news":
        tables = [f"--train_file={SHARED}/ag_news/train_subset5k.tsv", f"--dev_file={SHARED}/ag_news/test.tsv",
                  "--text_column=text", "--label_column=label", "--max_seq_length=128"]
        metric = "eval_accuracy"
    else:
        names = goemotions_label_names()
        train = os.path.join(work, "goemotions_train_head.tsv")
        copy_first_rows(goemotions_table(work, "train", names), train, FLAGS.max_train_examples)
        tables = [f"--train_file={train}", f"--dev_file={goemotions_table(work, 'dev', names)}",
                  "--text_column=text", "--label_column=labels", "--task_type=multilabel", "--max_seq_length=64"]
        metric = "eval_macro_auc"
    run_module("create_tfrecords", *tables, f"--output_dir={records}", quiet=True)
    return records, metric


def compare(work: str) -> dict:
    figures = {}
    for task in FLAGS.tasks:
        records, metric = write_records(task, work)
        for pooling in FLAGS.poolings:
            scores = []
            for seed in FLAGS.seeds:
                output = os.path.join(work, f"{task}_{pooling}_{seed}")
                started = time.perf_counter()
                run_module("run_classifier", f"--data_dir={records}", f"--output_dir={output}", "--do_train",
                           "--do_eval", "--num_train_epochs=1", f"--pooling={pooling}", f"--seed={seed}", quiet=True)
                scores.append(read_results(os.path.join(output, "eval_results.txt"))[metric])
                print(f"{task} pooling={pooling} seed={seed}: {metric} {scores[-1]:.4f} "
                      f"({time.perf_counter() - started:.0f} s)", flush=True)
            figures[f"{task}_{pooling}_mean"] = round(statistics.mean(scores), 4)
            figures[f"{task}_{pooling}_std"] = spread(scores)
            figures[f"{task}_{pooling}_runs"] = [round(score, 4) for score in scores]
            print(f"{task} pooling={pooling}: {metric} {figures[f'{task}_{pooling}_mean']:.4f} "
                  f"± {figures[f'{task}_{pooling}_std']:.4f} over {len(scores)} seeds", flush=True)
        if {"mean", "pooled"} <= set(FLAGS.poolings):
            figures[f"{task}_mean_minus_pooled"] = round(figures[f"{task}_mean_mean"] - figures[f"{task}_pooled_mean"], 4)
    return figures


def main(argv: list[str]) -> None:
    del argv
    unknown = sorted(set(FLAGS.tasks) - set(TASKS)) + sorted(set(FLAGS.poolings) - {"mean", "pooled", "cls"})
    if unknown:
        sys.exit(f"unknown task or pooling: {', '.join(unknown)}")
    if FLAGS.work_dir:
        os.makedirs(FLAGS.work_dir, exist_ok=True)
        figures = compare(FLAGS.work_dir)
    else:
        with tempfile.TemporaryDirectory(prefix="bert_tf_pooling_") as work:
            figures = compare(work)
    print(json.dumps(figures))


if __name__ == "__main__":
    app.run(main)
