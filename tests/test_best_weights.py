"""The best model out: final eval, predict and export from best/'s weights; early stopping, also when resumed."""

from __future__ import annotations

import os
import re
import shutil

import numpy as np
import pytest
from conftest import (
    assert_one_error_line,
    run_classifier,
    sentiment_rows,
    serve_in_fresh_process,
    stop_at,
)

from bert_tf.reports import read_results

STEPS_PER_EPOCH = 64 // 8  # the conftest records: 64 training examples, batches of 8


def evaluations(stderr: str) -> list[tuple[int, float]]:
    """(step, dev accuracy) of each evaluation during training, from run_classifier's own log lines."""
    return [(int(step), float(value)) for step, value in re.findall(r"Step (\d+): eval_accuracy = ([\d.]+)", stderr)]


def first_best(scores: list[tuple[int, float]]) -> tuple[int, float]:
    """The first evaluation with the highest accuracy (a later tie is no improvement)."""
    return max(scores, key=lambda point: (point[1], -point[0]))


@pytest.fixture(scope="module")
def ten_epochs(tiny_records, tiny_encoder, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("best") / "run")
    done = run_classifier(tiny_records, tiny_encoder, out, "--num_train_epochs=10", "--do_train", "--do_eval",
                          "--do_predict", "--do_export")
    return out, evaluations(done.stderr)


def test_final_results_come_from_the_best_evaluation(ten_epochs, tiny_records, tiny_encoder, tmp_path):
    out, scores = ten_epochs
    assert [step for step, _ in scores] == list(range(STEPS_PER_EPOCH, 81, STEPS_PER_EPOCH))
    best_step, best_accuracy = first_best(scores)
    assert best_step < 80, scores  # the dev metric peaks before the last epoch: the case this test is about

    results = read_results(os.path.join(out, "eval_results.txt"))
    assert results["global_step"] == best_step
    assert results["eval_accuracy"] == pytest.approx(best_accuracy, abs=1e-4)
    assert results == read_results(os.path.join(out, "best", "eval_results.txt"))
    assert read_results(os.path.join(out, "test_eval_results.txt"))["global_step"] == best_step

    # test_results.tsv and the export come from the same (best) weights, and say their step.
    texts = [text for text, _ in sentiment_rows(10, seed=3)]
    best_probabilities = np.loadtxt(os.path.join(out, "test_results.tsv"), delimiter="\t")
    np.testing.assert_allclose(serve_in_fresh_process(os.path.join(out, "export"), texts)["probabilities"],
                               best_probabilities, atol=1e-5)
    import tensorflow as tf

    assert int(tf.saved_model.load(os.path.join(out, "export")).global_step()) == best_step

    # The last weights, asked for, are another model: step 80's.
    last = str(tmp_path / "last")
    shutil.copytree(out, last)
    run_classifier(tiny_records, tiny_encoder, last, "--do_eval", "--do_predict", "--final_weights=last")
    assert read_results(os.path.join(last, "eval_results.txt"))["global_step"] == 80
    last_probabilities = np.loadtxt(os.path.join(last, "test_results.tsv"), delimiter="\t")
    assert np.abs(last_probabilities - best_probabilities).max() > 1e-4


@pytest.mark.slow
def test_early_stopping_stops_and_a_resumed_run_counts_on(ten_epochs, tiny_records, tiny_encoder, tmp_path):
    _, scores = ten_epochs  # the same training, evaluated at the same steps
    best_step, _ = first_best(scores)
    patience = 2
    stop_step = best_step + patience * STEPS_PER_EPOCH
    assert stop_step < 80, scores
    flags = ("--num_train_epochs=10", "--do_train", "--do_eval", f"--early_stopping_patience={patience}",
             f"--save_checkpoints_steps={STEPS_PER_EPOCH}")
    out = str(tmp_path / "run")
    done = run_classifier(tiny_records, tiny_encoder, out, *flags)
    assert evaluations(done.stderr) == [point for point in scores if point[0] <= stop_step]
    assert f"Early stopping at step {stop_step} of 80" in done.stderr
    assert tf_latest(out) == stop_step
    assert read_results(os.path.join(out, "eval_results.txt"))["global_step"] == best_step

    again = run_classifier(tiny_records, tiny_encoder, out, *flags)  # stopped already: no step more
    assert evaluations(again.stderr) == [] and "train steps" not in again.stderr
    assert tf_latest(out) == stop_step

    # Interrupted one evaluation after the best: the resumed run counts that evaluation, and stops one later.
    stop_at(out, best_step + STEPS_PER_EPOCH)
    resumed = run_classifier(tiny_records, tiny_encoder, out, *flags)
    assert f"Resuming from {os.path.join(out, f'model.ckpt-{best_step + STEPS_PER_EPOCH}')}" in resumed.stderr
    assert [step for step, _ in evaluations(resumed.stderr)] == [stop_step], resumed.stderr[:1500]
    assert tf_latest(out) == stop_step


def tf_latest(run_dir: str) -> int:
    import tensorflow as tf

    return int(tf.train.latest_checkpoint(run_dir).rsplit("-", 1)[1])


def test_eval_every_steps_adds_evaluations(tiny_records, tiny_encoder, tmp_path):
    done = run_classifier(tiny_records, tiny_encoder, str(tmp_path / "run"), "--num_train_epochs=2", "--do_train",
                          "--do_eval", "--eval_every_steps=3")
    assert [step for step, _ in evaluations(done.stderr)] == [3, 6, 8, 9, 12, 15, 16]


@pytest.mark.parametrize("flags, message", [
    (["--do_train", "--early_stopping_patience=2"], "--early_stopping_patience: 2 needs --do_train --do_eval"),
    (["--do_train", "--do_eval", "--eval_every_steps=0"], "--eval_every_steps: 0 needs"),
    (["--do_train", "--do_eval", "--best_metric=eval_loss"], "--best_metric: 'eval_loss' is not a dev metric"),
    (["--do_train", "--do_eval", "--best_metric=eval_micro_f1"], "use one of eval_accuracy, eval_mcc"),
])
def test_evaluation_flags_need_training_with_dev(tiny_records, tiny_encoder, tmp_path, flags, message):
    result = run_classifier(tiny_records, tiny_encoder, str(tmp_path / "run"), *flags, check=False)
    assert_one_error_line(result, message)


def test_best_metric_picks_the_best_weights_by_another_metric(tiny_records, tiny_encoder, tmp_path):
    out = str(tmp_path / "run")
    done = run_classifier(tiny_records, tiny_encoder, out, "--num_train_epochs=4", "--do_train", "--do_eval",
                          "--best_metric=eval_auc")
    scores = [(int(step), float(value)) for step, value in re.findall(r"Step (\d+): eval_auc = ([\d.]+)", done.stderr)]
    assert [step for step, _ in scores] == list(range(STEPS_PER_EPOCH, 33, STEPS_PER_EPOCH))
    best_step, best_auc = first_best(scores)
    best = read_results(os.path.join(out, "best", "eval_results.txt"))
    assert best["global_step"] == best_step and best["eval_auc"] == pytest.approx(best_auc, abs=1e-4)
