"""Is within-task pretraining worth it? Fine-tuning after masked-LM pretraining on the task's own train texts vs
fine-tuning alone, same seeds, same records, one command.

  .venv/bin/python bench/pretraining.py                       # IMDB sample and AG News 5k, 3 seeds (hours on 2 cores)
  .venv/bin/python bench/pretraining.py --tasks=ag_news --seeds=1 --pretrain_steps=300

For each task, on --encoder (default: the embedded all-MiniLM-L6-v2; an encoder with its masked-LM head, such as
hf://google-bert/bert-base-uncased, is where the literature measured a gain) at --max_seq_length (128):

1. `create_tfrecords` writes the train and labelled test records once (both sides fine-tune on the same records:
   the export keeps the encoder's vocab);
2. `create_pretraining_data` writes masked-LM records from the train texts only (the test texts stay unseen;
   `--dupe_factor`, 1% of the documents held out), and `run_pretraining` trains --pretrain_steps steps on them
   (batch 32, --pretrain_learning_rate, the first --freeze_encoder_steps training the head alone) into an export;
3. per seed, `run_classifier --do_train --do_predict` fine-tunes --epochs epochs at --learning_rate with
   `--pooling=mean` (the default encoder's head; an export would get `pooled` under `auto`) from --encoder
   (baseline) and from the export (pretrained), and reads `test_accuracy` from test_eval_results.txt.

Tasks: imdb, a class-balanced sample of --imdb_train_docs train and --imdb_test_docs test reviews (seed 42, as
bench/recipes.py draws it), truncated to their first word-pieces; ag_news, train_subset5k.tsv (5,000 rows) scored
on the official 7,600-row test set (--ag_news_train_rows / --ag_news_test_rows take the first rows, for a quick
check). Prints each run, then each task's means over seeds, the gain (pretrained − baseline, accuracy points) and
the wall time of each phase; the LAST line is one JSON object: the settings (`seeds`, `pretrain_steps`, …),
`<task>_baseline_*`, `<task>_pretrained_*`, `<task>_gain`, `<task>_masked_lm_loss_initial/final`,
`<task>_wall_s_<phase>` (fine-tuning: mean per seed).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile

from absl import app, flags

from bert_tf.reports import read_results

from shared_data import SHARED, copy_first_rows, imdb_sample, run_module, spread

TASKS = ("imdb", "ag_news")

flags.DEFINE_list("tasks", list(TASKS), f"Tasks among {', '.join(TASKS)}.")
flags.DEFINE_list("seeds", ["1", "2", "3"], "Seeds: one fine-tuning run per seed, task and side.")
flags.DEFINE_string("encoder", "default", "The encoder both sides start from (any --encoder of the commands).")
flags.DEFINE_integer("pretrain_steps", 1000, "run_pretraining --num_train_steps (batch 32).")
flags.DEFINE_float("pretrain_learning_rate", 1e-4, "run_pretraining --learning_rate.")
flags.DEFINE_integer("freeze_encoder_steps", 0, "run_pretraining --freeze_encoder_steps (the head's warm-up).")
flags.DEFINE_integer("dupe_factor", 5, "create_pretraining_data --dupe_factor (maskings of each train chunk).")
flags.DEFINE_float("epochs", 1.0, "Fine-tuning epochs (run_classifier --num_train_epochs).")
flags.DEFINE_float("learning_rate", 1e-4, "Fine-tuning learning rate.")
flags.DEFINE_integer("max_seq_length", 128, "Tokens per record, for pretraining and fine-tuning.")
flags.DEFINE_integer("imdb_train_docs", 2000, "IMDB: train reviews in the sample (half of each class).")
flags.DEFINE_integer("imdb_test_docs", 2000, "IMDB: test reviews in the sample (half of each class).")
flags.DEFINE_integer("ag_news_train_rows", None, "AG News: the first N rows of train_subset5k.tsv (default all 5,000).")
flags.DEFINE_integer("ag_news_test_rows", None, "AG News: the first N rows of the test set (default all 7,600).")
flags.DEFINE_string("work_dir", None, "Where tables, records and runs go (default: a temp dir, deleted after).")
FLAGS = flags.FLAGS


def tables(task: str, work: str) -> tuple[str, str]:
    """The task's (train, test) tables, each with a header and `text` and `label` columns."""
    if task == "imdb":
        return imdb_sample(work, "train", FLAGS.imdb_train_docs), imdb_sample(work, "test", FLAGS.imdb_test_docs)
    train, test = os.path.join(work, "ag_news_train.tsv"), os.path.join(work, "ag_news_test.tsv")
    copy_first_rows(os.path.join(SHARED, "ag_news", "train_subset5k.tsv"), train, FLAGS.ag_news_train_rows)
    copy_first_rows(os.path.join(SHARED, "ag_news", "test.tsv"), test, FLAGS.ag_news_test_rows)
    return train, test


def pretrain(task: str, train: str, work: str, figures: dict) -> str:
    """Masked-LM records from the train texts, then run_pretraining; returns the export."""
    records, run = os.path.join(work, f"{task}_pretraining_records"), os.path.join(work, f"{task}_pretraining_run")
    figures[f"{task}_wall_s_pretraining_data"] = round(run_module(
        "create_pretraining_data", f"--input_file={train}", "--text_column=text", f"--encoder={FLAGS.encoder}",
        f"--max_seq_length={FLAGS.max_seq_length}", f"--dupe_factor={FLAGS.dupe_factor}", f"--output_dir={records}",
        quiet=True), 1)
    figures[f"{task}_wall_s_pretraining"] = round(run_module(
        "run_pretraining", f"--data_dir={records}", f"--output_dir={run}", f"--encoder={FLAGS.encoder}",
        f"--num_train_steps={FLAGS.pretrain_steps}", f"--learning_rate={FLAGS.pretrain_learning_rate}",
        f"--freeze_encoder_steps={FLAGS.freeze_encoder_steps}", "--overwrite_output_dir", quiet=True), 1)
    results = read_results(os.path.join(run, "eval_results.txt"))
    figures[f"{task}_masked_lm_loss_initial"] = round(results["initial_masked_lm_loss"], 4)
    figures[f"{task}_masked_lm_loss_final"] = round(results["masked_lm_loss"], 4)
    figures[f"{task}_masked_lm_accuracy_final"] = round(results["masked_lm_accuracy"], 4)
    frozen = f" (the first {FLAGS.freeze_encoder_steps} head only)" if FLAGS.freeze_encoder_steps else ""
    print(f"{task} pretraining: {FLAGS.pretrain_steps} steps{frozen} at "
          f"lr {FLAGS.pretrain_learning_rate:g}, masked_lm_loss {results['initial_masked_lm_loss']:.3f} "
          f"→ {results['masked_lm_loss']:.3f}, accuracy {results['masked_lm_accuracy']:.3f} "
          f"({figures[f'{task}_wall_s_pretraining']:.0f} s)", flush=True)
    return os.path.join(run, "export")


def fine_tune(task: str, side: str, encoder: str, records: str, work: str) -> tuple[list[float], list[float]]:
    """One run_classifier per seed from `encoder`; returns (test accuracies, wall seconds)."""
    scores, walls = [], []
    for seed in FLAGS.seeds:
        output = os.path.join(work, f"{task}_{side}_{seed}")
        walls.append(run_module(
            "run_classifier", f"--data_dir={records}", f"--output_dir={output}", f"--encoder={encoder}",
            "--pooling=mean", "--do_train", "--do_predict", f"--num_train_epochs={FLAGS.epochs}",
            f"--learning_rate={FLAGS.learning_rate}", f"--seed={seed}", "--overwrite_output_dir", quiet=True))
        scores.append(read_results(os.path.join(output, "test_eval_results.txt"))["test_accuracy"])
        print(f"{task} {side} seed={seed}: test_accuracy {scores[-1]:.4f} ({walls[-1]:.0f} s)", flush=True)
    return scores, walls


def compare(work: str) -> dict:
    figures = {"encoder": FLAGS.encoder, "seeds": [int(seed) for seed in FLAGS.seeds],
               "pretrain_steps": FLAGS.pretrain_steps, "pretrain_learning_rate": FLAGS.pretrain_learning_rate,
               "freeze_encoder_steps": FLAGS.freeze_encoder_steps, "epochs": FLAGS.epochs,
               "learning_rate": FLAGS.learning_rate, "max_seq_length": FLAGS.max_seq_length}
    for task in FLAGS.tasks:
        train, test = tables(task, work)
        records = os.path.join(work, f"{task}_records")
        figures[f"{task}_wall_s_records"] = round(run_module(
            "create_tfrecords", f"--train_file={train}", f"--test_file={test}", "--text_column=text",
            "--label_column=label", f"--encoder={FLAGS.encoder}", f"--max_seq_length={FLAGS.max_seq_length}",
            f"--output_dir={records}", quiet=True), 1)
        export = pretrain(task, train, work, figures)
        for side, encoder in (("baseline", FLAGS.encoder), ("pretrained", export)):
            scores, walls = fine_tune(task, side, encoder, records, work)
            figures[f"{task}_{side}_mean"] = round(statistics.mean(scores), 4)
            figures[f"{task}_{side}_std"] = spread(scores)
            figures[f"{task}_{side}_runs"] = [round(score, 4) for score in scores]
            figures[f"{task}_wall_s_finetune_{side}"] = round(statistics.mean(walls), 1)
        figures[f"{task}_gain"] = round(figures[f"{task}_pretrained_mean"] - figures[f"{task}_baseline_mean"], 4)
        print(f"{task}: test accuracy baseline {figures[f'{task}_baseline_mean']:.4f} ± "
              f"{figures[f'{task}_baseline_std']:.4f}, pretrained {figures[f'{task}_pretrained_mean']:.4f} ± "
              f"{figures[f'{task}_pretrained_std']:.4f} over {len(FLAGS.seeds)} seeds: gain "
              f"{100 * figures[f'{task}_gain']:+.2f} points; wall: pretraining data "
              f"{figures[f'{task}_wall_s_pretraining_data']:.0f} s, pretraining {figures[f'{task}_wall_s_pretraining']:.0f} s, "
              f"fine-tuning {figures[f'{task}_wall_s_finetune_baseline']:.0f} / "
              f"{figures[f'{task}_wall_s_finetune_pretrained']:.0f} s per seed", flush=True)
    return figures


def main(argv: list[str]) -> None:
    del argv
    unknown = sorted(set(FLAGS.tasks) - set(TASKS))
    if unknown:
        sys.exit(f"unknown task: {', '.join(unknown)}")
    if FLAGS.work_dir:
        os.makedirs(FLAGS.work_dir, exist_ok=True)
        figures = compare(os.path.abspath(FLAGS.work_dir))
    else:
        with tempfile.TemporaryDirectory(prefix="bert_tf_pretraining_") as work:
            figures = compare(work)
    print(json.dumps(figures))


if __name__ == "__main__":
    app.run(main)
