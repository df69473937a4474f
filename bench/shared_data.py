"""What the bench scripts share about ../shared/data and bert_tf's result files."""

from __future__ import annotations

import os
import statistics

SHARED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data")


def read_results(path: str) -> dict[str, float]:
    with open(path) as f:
        return {key: float(value) for key, value in (line.split(" = ") for line in f.read().splitlines())}


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


def spread(values: list[float]) -> float:
    """Standard deviation over seeds, rounded as the figures are; 0.0 for a single run."""
    return round(statistics.stdev(values), 4) if len(values) > 1 else 0.0
