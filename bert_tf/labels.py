"""The label space of a task: its type (multiclass, multilabel, regression), label names, and label ids."""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from bert_tf.errors import InputError
from bert_tf.tables import TextTable

TASK_TYPES = ("multiclass", "multilabel", "regression")
_TRUE = {"1", "1.0", "true", "yes"}
_FALSE = {"0", "0.0", "false", "no"}


@dataclasses.dataclass(frozen=True)
class LabelSpace:
    """What the head predicts. `names` are the classes (multiclass/multilabel) or the target (regression)."""

    task_type: str
    names: tuple[str, ...]

    @property
    def num_labels(self) -> int:
        return 1 if self.task_type == "regression" else len(self.names)


def _sorted_names(values: set[str]) -> tuple[str, ...]:
    # Numeric labels sort as numbers ("2" before "10"); anything else sorts as text.
    try:
        return tuple(sorted(values, key=float))
    except ValueError:
        return tuple(sorted(values))


def _split_list(cell: str) -> list[str]:
    return [part.strip() for part in cell.split(",") if part.strip()]


def infer_label_space(train: TextTable, task_type: str = "auto") -> LabelSpace:
    """Derives the label space from the train split (sorted, so it is the same on every run and machine).

    Several label columns of 0/1, or label cells holding comma lists ("joy,surprise"), mean multi-label.
    """
    if train.labels is None:
        raise InputError("the train file has no labels", file=train.source)
    if task_type == "auto":
        if len(train.labels) > 1 or any("," in cell for cell in train.labels[0]):
            task_type = "multilabel"
        else:
            task_type = "multiclass"
    if task_type not in TASK_TYPES:
        raise InputError(f"unknown task type '{task_type}'", flag="task_type", hint=f"use auto or one of {', '.join(TASK_TYPES)}")
    if task_type == "regression":
        if len(train.labels) != 1:
            raise InputError("regression takes one label column", flag="label_column")
        return LabelSpace("regression", (train.label_columns[0],))
    if task_type == "multilabel" and len(train.labels) > 1:
        return LabelSpace("multilabel", tuple(train.label_columns))
    if len(train.labels) > 1:
        raise InputError("several label columns make a multi-label task", flag="task_type", hint="use --task_type=multilabel or auto")
    cells = train.labels[0]
    if task_type == "multilabel":
        names = {name for cell in cells for name in _split_list(cell)}
    else:
        names = set(cells)
    if len(names) < 2 and task_type == "multiclass":
        raise InputError(f"the train file has a single label value {sorted(names)}", file=train.source, column=train.label_columns[0], hint="a classifier needs at least two classes")
    return LabelSpace(task_type, _sorted_names(names))


def encode_labels(table: TextTable, space: LabelSpace) -> np.ndarray:
    """Label cells → ids: int64 [n] (multiclass), int64 multi-hot [n, num_labels] (multilabel), float32 [n]."""
    n = len(table)
    if table.labels is None:  # an unlabelled test split: placeholder labels, never scored
        if space.task_type == "multilabel":
            return np.zeros([n, space.num_labels], np.int64)
        return np.zeros([n], np.float32 if space.task_type == "regression" else np.int64)
    if space.task_type == "regression":
        return _encode_floats(table)
    if space.task_type == "multilabel" and len(table.labels) > 1:
        return _encode_indicator_columns(table)
    index = {name: i for i, name in enumerate(space.names)}
    column = table.label_columns[0]
    if space.task_type == "multilabel":
        ids = np.zeros([n, space.num_labels], np.int64)
        for i, (cell, row) in enumerate(zip(table.labels[0], table.rows)):
            for name in _split_list(cell):
                ids[i, _lookup(index, name, table, row, column)] = 1
        return ids
    return np.array(
        [_lookup(index, cell, table, row, column) for cell, row in zip(table.labels[0], table.rows)], np.int64
    )


def _lookup(index: dict[str, int], name: str, table: TextTable, row: int, column: str) -> int:
    if name not in index:
        raise InputError(
            f"label '{name}' is not among the train labels ({', '.join(list(index)[:10])}{'…' if len(index) > 10 else ''})",
            file=table.source, row=row, column=column, hint="fix the label or add examples of it to the train file",
        )
    return index[name]


def _encode_floats(table: TextTable) -> np.ndarray:
    values = []
    for cell, row in zip(table.labels[0], table.rows):
        try:
            value = float(cell)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise InputError(f"label '{cell}' is not a number", file=table.source, row=row, column=table.label_columns[0], hint="regression needs numeric labels")
        values.append(value)
    return np.array(values, np.float32)


def _encode_indicator_columns(table: TextTable) -> np.ndarray:
    ids = np.zeros([len(table), len(table.labels)], np.int64)
    for j, (column, cells) in enumerate(zip(table.label_columns, table.labels)):
        for i, (cell, row) in enumerate(zip(cells, table.rows)):
            lowered = cell.lower()
            if lowered in _TRUE:
                ids[i, j] = 1
            elif lowered not in _FALSE:
                raise InputError(f"label '{cell}' is not 0/1", file=table.source, row=row, column=column, hint="multi-label columns hold 0 or 1")
    return ids
