"""Does --class_weight=balanced help on an imbalanced set? Dev macro-F1 of none vs balanced, over seeds.

  .venv/bin/python bench/class_weights.py                      # SST-2 at 10:1, 2,200 train rows, seeds 1,2,3

The train table is SST-2's first --negatives negative and first --negatives / --ratio positive rows (file order),
so positives are the rare class; dev is SST-2's dev set (872 rows, about balanced), where a classifier that
leans to the majority loses macro-F1. Each (setting, seed) is `python -m bert_tf.run_classifier` with its
defaults (lr 5e-5, batch 32, 64 tokens) and --num_train_epochs=1, on records written once.

Prints every run, then each setting's mean and standard deviation; the LAST line is one JSON object:
`<setting>_macro_f1_mean`, `_std`, `_runs`, the same for accuracy, and `balanced_minus_none_macro_f1`.
"""

from __future__ import annotations

import csv
import json
import os
import statistics
import tempfile

from absl import app, flags

from bert_tf.reports import read_results

from shared_data import SHARED, run_module, spread

flags.DEFINE_list("seeds", ["1", "2", "3"], "Seeds: one fine-tuning run per seed and setting.")
flags.DEFINE_list("settings", ["none", "balanced"], "--class_weight values to compare.")
flags.DEFINE_integer("negatives", 2000, "Negative train rows.")
flags.DEFINE_integer("ratio", 10, "Negatives per positive in the train table.")
flags.DEFINE_string("work_dir", None, "Where tables, records and runs go (default: a temp dir, deleted after).")
FLAGS = flags.FLAGS


def imbalanced_table(path: str) -> dict[str, int]:
    """The first rows of each class, up to the counts; returns the counts written."""
    wanted = {"0": FLAGS.negatives, "1": FLAGS.negatives // FLAGS.ratio}
    written = {"0": 0, "1": 0}
    with open(os.path.join(SHARED, "sst2", "train.tsv"), encoding="utf-8") as source, \
            open(path, "w", encoding="utf-8", newline="") as target:
        reader = csv.reader(source, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader)
        target.write("\t".join(header) + "\n")
        label = header.index("label")
        for row in reader:
            if written[row[label]] < wanted[row[label]]:
                target.write("\t".join(row) + "\n")
                written[row[label]] += 1
    return written


def main(argv):
    del argv
    with tempfile.TemporaryDirectory(prefix="bench_class_weights-", dir=FLAGS.work_dir) as work:
        train = os.path.join(work, "train.tsv")
        counts = imbalanced_table(train)
        records = os.path.join(work, "records")
        run_module("create_tfrecords", f"--train_file={train}", f"--dev_file={SHARED}/sst2/dev.tsv",
                   "--text_column=sentence", "--label_column=label", "--max_seq_length=64",
                   f"--output_dir={records}", quiet=True)
        runs = {setting: [] for setting in FLAGS.settings}
        for seed in FLAGS.seeds:
            for setting in FLAGS.settings:
                out = os.path.join(work, f"{setting}_{seed}")
                wall = run_module("run_classifier", f"--data_dir={records}", f"--output_dir={out}", "--do_train",
                                  "--do_eval", "--num_train_epochs=1", f"--seed={seed}", f"--class_weight={setting}",
                                  quiet=True)
                result = read_results(os.path.join(out, "eval_results.txt"))
                runs[setting].append(result)
                print(f"{setting:>9} seed {seed}: macro-F1 {result['eval_macro_f1']:.4f} "
                      f"accuracy {result['eval_accuracy']:.4f} ({wall:.0f} s)", flush=True)
    figures = {"train_negatives": counts["0"], "train_positives": counts["1"], "seeds": [int(s) for s in FLAGS.seeds]}
    for setting, results in runs.items():
        for metric in ("macro_f1", "accuracy"):
            values = [r[f"eval_{metric}"] for r in results]
            figures[f"{setting}_{metric}_mean"] = round(statistics.mean(values), 4)
            figures[f"{setting}_{metric}_std"] = spread(values)
            figures[f"{setting}_{metric}_runs"] = [round(v, 4) for v in values]
        print(f"{setting:>9}: macro-F1 {figures[f'{setting}_macro_f1_mean']:.4f} ± {figures[f'{setting}_macro_f1_std']:.4f}")
    if {"none", "balanced"} <= set(runs):
        figures["balanced_minus_none_macro_f1"] = round(
            figures["balanced_macro_f1_mean"] - figures["none_macro_f1_mean"], 4)
    print(json.dumps(figures))


if __name__ == "__main__":
    app.run(main)
