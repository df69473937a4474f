"""The Python API: TextClassifier over the commands' own steps, interchangeable with the CLI on one run."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import (
    max_difference,
    read_weights,
    run_classifier,
    run_create_tfrecords,
    sentiment_rows,
    serve_in_fresh_process,
    stop_at,
    write_csv,
)
from sklearn import metrics as skm

from bert_tf import TextClassifier
from bert_tf.reports import read_results

# conftest's BASE_FLAGS as settings: both sides of a comparison train alike.
SETTINGS = {"train_batch_size": 8, "eval_batch_size": 8, "learning_rate": 1e-3, "mixed_precision": "none",
            "dropout_rate": 0.0, "iterations_per_loop": 3}
TEXTS = ["the film was great !", "the plot was awful and poor .", "a very fine movie", "i hate it"]


@pytest.fixture(scope="module")
def tables(tmp_path_factory) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("tables")
    return {split: write_csv(str(tmp / f"{split}.csv"), sentiment_rows(count, seed=seed))
            for split, count, seed in (("train", 64, 1), ("dev", 20, 2), ("test", 24, 3))}


def test_fit_evaluate_predict_export_and_load(tables, tiny_encoder, tmp_path):
    run_dir = str(tmp_path / "run")
    train = pd.read_csv(tables["train"])  # a DataFrame; dev stays a file path
    classifier = TextClassifier(encoder=tiny_encoder, max_seq_length=16, output_dir=run_dir, **SETTINGS)
    classifier.fit(train, dev=tables["dev"], num_train_epochs=10)  # the toy task is learnt by then

    assert classifier.label_names == ["neg", "pos"]
    best = read_results(os.path.join(run_dir, "best", "eval_results.txt"))
    assert classifier.dev_results_ == best  # the final weights are the best evaluation's (final_weights="best")
    test = pd.read_csv(tables["test"])
    result = classifier.evaluate(test)
    probabilities = classifier.predict_proba(test["text"].tolist())
    truth = [classifier.label_names.index(label) for label in test["label"]]
    assert result["eval_accuracy"] == pytest.approx(skm.accuracy_score(truth, probabilities.argmax(1)))
    assert result["eval_examples"] == len(test) and result["eval_accuracy"] > 0.8
    assert classifier.predict(TEXTS) == [classifier.label_names[i] for i in classifier.predict_proba(TEXTS).argmax(1)]

    api_export = classifier.export(str(tmp_path / "api_export"))
    # The CLI's export of the same run (restored from its checkpoint) serves the same probabilities.
    run_classifier(os.path.join(run_dir, "records"), tiny_encoder, run_dir, "--do_export")
    cli = serve_in_fresh_process(os.path.join(run_dir, "export"), TEXTS)
    np.testing.assert_allclose(classifier.predict_proba(TEXTS), cli["probabilities"], atol=1e-6)
    for path in (api_export, run_dir):  # an export, and the run directory itself, in a fresh process
        script = ("import json, sys; from bert_tf import TextClassifier\n"
                  f"c = TextClassifier.load({path!r}, mixed_precision='none')\n"
                  f"print(json.dumps([c.label_names, c.predict_proba({TEXTS!r}).tolist(), c.predict({TEXTS!r})]))")
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        names, loaded, labels = json.loads(done.stdout.splitlines()[-1])
        assert names == ["neg", "pos"] and labels == cli["label"]
        np.testing.assert_allclose(loaded, cli["probabilities"], atol=1e-6)


@pytest.mark.slow
def test_a_run_continues_from_the_cli_to_the_api_and_back(tables, tiny_encoder, tmp_path, caplog):
    records = str(tmp_path / "records")
    run_create_tfrecords(f"--train_file={tables['train']}", f"--dev_file={tables['dev']}", "--text_column=text",
                         "--label_column=label", f"--encoder={tiny_encoder}", "--max_seq_length=16",
                         f"--output_dir={records}")
    plan = ("--do_train", "--num_train_epochs=3", "--save_checkpoints_steps=8")  # 8 steps an epoch
    reference = str(tmp_path / "uninterrupted")
    run_classifier(records, tiny_encoder, reference, *plan)

    mixed = str(tmp_path / "mixed")
    shutil.copytree(reference, mixed)
    stop_at(mixed, 8)  # the CLI stopped after epoch 1; the API goes on
    classifier = TextClassifier.load(mixed, **SETTINGS)
    with caplog.at_level(logging.INFO, logger="absl"):
        classifier.fit(tables["train"], dev=tables["dev"], num_train_epochs=3, save_checkpoints_steps=8)
    assert f"Resuming from {os.path.join(mixed, 'model.ckpt-8')} at step 8 of 24" in caplog.text
    for step in (16, 24):
        assert max_difference(read_weights(os.path.join(mixed, f"model.ckpt-{step}")),
                              read_weights(os.path.join(reference, f"model.ckpt-{step}"))) < 1e-6, step
    stop_at(mixed, 16)  # the API stopped after epoch 2; the CLI goes on, on the records the API wrote
    resumed = run_classifier(os.path.join(mixed, "records"), tiny_encoder, mixed, *plan)
    assert f"Resuming from {os.path.join(mixed, 'model.ckpt-16')} at step 16 of 24" in resumed.stderr
    assert max_difference(read_weights(os.path.join(mixed, "model.ckpt-24")),
                          read_weights(os.path.join(reference, "model.ckpt-24"))) < 1e-6


def test_tables_come_as_dataframes_dicts_tuples_or_paths(tables, tiny_encoder, tmp_path):
    rows = sentiment_rows(16, seed=5)
    texts, labels = [text for text, _ in rows], [label for _, label in rows]
    written = {}
    for name, table in (("frame", pd.DataFrame({"text": texts, "label": labels})), ("dict", {"text": texts, "label": labels}),
                        ("tuple", (texts, labels)), ("path", write_csv(str(tmp_path / "t.csv"), rows))):
        classifier = TextClassifier(encoder=tiny_encoder, max_seq_length=16, output_dir=str(tmp_path / name),
                                    **{**SETTINGS, "train_batch_size": 16})
        classifier.fit(table, num_train_epochs=1)
        written[name] = read_weights(os.path.join(tmp_path, name, "model.ckpt-1"))
    for name in ("dict", "tuple", "path"):
        assert max_difference(written[name], written["frame"]) == 0.0, name


def test_bad_settings_and_tables_say_what_is_wrong(tiny_encoder, tmp_path):
    with pytest.raises(TypeError, match="unknown setting 'learnin_rate'"):
        TextClassifier(encoder=tiny_encoder, learnin_rate=1e-3)
    with pytest.raises(TypeError, match="'do_train' is not a setting here"):
        TextClassifier(encoder=tiny_encoder, do_train=True)
    classifier = TextClassifier(encoder=tiny_encoder, max_seq_length=16, output_dir=str(tmp_path / "run"))
    from bert_tf.errors import InputError

    with pytest.raises(InputError, match="the train data, row 2, column 'text': empty text"):
        classifier.fit(pd.DataFrame({"text": ["good film", " "], "label": ["pos", "neg"]}))
    with pytest.raises(RuntimeError, match="fit first"):
        classifier.export()
    with pytest.raises(TypeError, match="not one string"):
        classifier.predict("one text")
