"""run_pretraining on the tiny encoder: the masked-LM loss falls, eval_results.txt, a killed run resuming to the same
weights, the export (a fresh process loads it; run_classifier fine-tunes from it; it learned; same vocab), bad input."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
from conftest import (
    TINY_VOCAB,
    assert_one_error_line,
    max_difference,
    read_log,
    read_weights,
    run_classifier,
    run_in_process,
    sentiment_rows,
    stop,
    write_csv,
)
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.util import tensor_util

from bert_tf.encoders.masked_lm import load_mlm_head_weights
from bert_tf.pretraining_data import PretrainingSettings, create_pretraining_data, read_documents
from bert_tf.reports import read_results

TOTAL = 40  # a little over an epoch: 270 chunks × 2 maskings = 540 records, 33 batches of 16
# One step per loop call and a checkpoint every 2: a kill lands between checkpoints of a run still going.
FLAGS = [f"--num_train_steps={TOTAL}", "--train_batch_size=16", "--eval_batch_size=16", "--learning_rate=1e-3",
         "--mixed_precision=none", "--iterations_per_loop=1", "--save_checkpoints_steps=2"]
RESULT_KEYS = {"masked_lm_accuracy", "masked_lm_loss", "initial_masked_lm_accuracy", "initial_masked_lm_loss",
               "global_step"}


def pretraining_command(records: str, encoder: str, output_dir: str, *flags: str) -> list[str]:
    return [sys.executable, "-m", "bert_tf.run_pretraining", f"--data_dir={records}", f"--encoder={encoder}",
            f"--output_dir={output_dir}", *FLAGS, *flags]


def run_pretraining(records: str, encoder: str, output_dir: str, *flags: str, check: bool = True
                    ) -> subprocess.CompletedProcess:
    result = subprocess.run(pretraining_command(records, encoder, output_dir, *flags), capture_output=True, text=True,
                            timeout=600, check=False)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def write_records(directory: str, encoder: str | None = None, vocab_file: str | None = None) -> str:
    """A tiny repetitive corpus (the toy sentiment sentences) as pretraining records, written in process."""
    os.makedirs(directory, exist_ok=True)
    corpus = os.path.join(directory, "corpus.txt")
    with open(corpus, "w", encoding="utf-8") as f:
        f.write("\n".join(text for text, _ in sentiment_rows(300, seed=5)) + "\n")
    out = os.path.join(directory, "records")
    settings = PretrainingSettings(max_seq_length=16, max_predictions_per_seq=3, dupe_factor=2, eval_fraction=0.1)
    create_pretraining_data(read_documents([corpus]), out, settings, encoder=encoder, vocab_file=vocab_file)
    return out


@pytest.fixture(scope="module")
def records(tiny_encoder, tmp_path_factory) -> str:
    return write_records(str(tmp_path_factory.mktemp("pretraining_records")), encoder=tiny_encoder)


@pytest.fixture(scope="module")
def pretrained(records, tiny_encoder, tmp_path_factory) -> str:
    """The output dir of an uninterrupted run of FLAGS."""
    out = str(tmp_path_factory.mktemp("pretrained") / "run")
    run_pretraining(records, tiny_encoder, out)
    return out


def train_scalars(run_dir: str, tag: str) -> list[float]:
    accumulator = event_accumulator.EventAccumulator(os.path.join(run_dir, "train"), size_guidance={"tensors": 0})
    accumulator.Reload()
    return [float(tensor_util.make_ndarray(event.tensor_proto)) for event in accumulator.Tensors(tag)]


def test_the_masked_lm_loss_falls_and_eval_results_has_its_five_keys(pretrained):
    losses = train_scalars(pretrained, "loss")
    assert len(losses) == TOTAL and np.mean(losses[-10:]) < 0.8 * np.mean(losses[:5]), losses
    accuracy = train_scalars(pretrained, "masked_lm_accuracy")
    assert len(accuracy) == TOTAL and np.mean(accuracy[-10:]) > np.mean(accuracy[:5])
    assert train_scalars(pretrained, "learning_rate")[-1] == 0.0  # the linear decay ends at 0

    results = read_results(os.path.join(pretrained, "eval_results.txt"))
    assert set(results) == RESULT_KEYS and results["global_step"] == TOTAL
    assert results["masked_lm_loss"] < 0.8 * results["initial_masked_lm_loss"], results
    assert results["masked_lm_accuracy"] > results["initial_masked_lm_accuracy"], results
    assert tf.train.latest_checkpoint(pretrained) == os.path.join(pretrained, f"model.ckpt-{TOTAL}")
    assert not os.path.exists(os.path.join(pretrained, "run.lock"))


def wait_for_checkpoint(output_dir: str, step: int, process: subprocess.Popen, log: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        latest = tf.train.latest_checkpoint(output_dir)
        if latest and int(latest.rsplit("-", 1)[1]) >= step:
            return
        assert process.poll() is None, f"ended (code {process.returncode}) before step {step}: {read_log(log)[-3000:]}"
        time.sleep(0.02)
    raise AssertionError(f"no checkpoint of step {step} in {output_dir} after {timeout}s")


@pytest.mark.slow
def test_killed_run_resumes_to_the_weights_of_an_uninterrupted_one(pretrained, records, tiny_encoder, tmp_path):
    out, log = str(tmp_path / "killed"), str(tmp_path / "killed.log")
    with open(log, "w") as f:
        process = subprocess.Popen(pretraining_command(records, tiny_encoder, out), stdout=f, stderr=subprocess.STDOUT)
    try:
        wait_for_checkpoint(out, 10, process, log)
        process.kill()
        process.wait(timeout=60)
    finally:
        stop([process])
    saved = tf.train.latest_checkpoint(out)
    step = int(saved.rsplit("-", 1)[1])
    assert 10 <= step < TOTAL, f"killed at step {step} of {TOTAL}"

    resumed = run_pretraining(records, tiny_encoder, out)
    assert f"Resuming from {saved} at step {step} of {TOTAL}" in resumed.stderr, resumed.stderr[-3000:]
    assert "before training" not in resumed.stderr  # the step-0 figures are the first run's, kept
    final = os.path.join(out, f"model.ckpt-{TOTAL}")
    assert tf.train.latest_checkpoint(out) == final
    assert max_difference(read_weights(os.path.join(pretrained, f"model.ckpt-{TOTAL}")), read_weights(final)) < 1e-5
    expected, results = (read_results(os.path.join(run, "eval_results.txt")) for run in (pretrained, out))
    assert set(results) == RESULT_KEYS
    assert {key: results[key] for key in results if key.startswith("initial_")} == \
        {key: expected[key] for key in expected if key.startswith("initial_")}
    assert abs(results["masked_lm_loss"] - expected["masked_lm_loss"]) < 1e-4


def test_freeze_encoder_steps_trains_the_head_alone_then_both(records, tiny_encoder, tmp_path):
    out = str(tmp_path / "frozen")
    run_pretraining(records, tiny_encoder, out, "--num_train_steps=6", "--freeze_encoder_steps=4",
                    "--keep_checkpoint_max=3")
    source = tf.train.load_checkpoint(os.path.join(tiny_encoder, "encoder", "variables", "variables"))
    source_values = [value for value in map(source.get_tensor, source.get_variable_to_shape_map())
                     if isinstance(value, np.ndarray)]
    weights = {step: read_weights(os.path.join(out, f"model.ckpt-{step}")) for step in (2, 4, 6)}
    encoder = [name for name in weights[4] if name.startswith("model/encoder/")]
    head = [name for name in weights[4] if name.startswith("model/head/")]
    assert encoder and head
    for name in encoder:  # the source encoder's weights, exactly, through step 4
        assert any(value.shape == weights[4][name].shape and np.array_equal(value, weights[4][name])
                   for value in source_values), name
    for name in head:
        assert np.abs(weights[2][name] - weights[4][name]).max() > 1e-6, name
    assert max_difference({name: weights[4][name] for name in encoder},
                          {name: weights[6][name] for name in encoder}) > 1e-4


# Loads the source encoder and the export in a fresh Python (tensorflow + tensorflow_text only), as a user would.
RELOAD = """
import json, sys
import tensorflow as tf, tensorflow_text
ids = tf.constant([[2, 16, 13, 18, 5, 3, 0, 0], [2, 10, 9, 3, 0, 0, 0, 0]], tf.int32)
inputs = {"input_word_ids": ids, "input_mask": tf.cast(ids > 0, tf.int32), "input_type_ids": tf.zeros_like(ids)}
answer = {}
for name, directory in (("source", sys.argv[1]), ("export", sys.argv[2])):
    encoder = tf.saved_model.load(directory + "/encoder")
    outputs = encoder(inputs, training=False)
    preprocess = tf.saved_model.load(directory + "/preprocess")
    packed = preprocess.bert_pack_inputs([preprocess.tokenize(tf.constant(["the film was good !"]))],
                                      seq_length=tf.constant(8))
    answer[name] = {"outputs": sorted(outputs), "layers": len(outputs["encoder_outputs"]),
                    "sequence_output": outputs["sequence_output"].numpy().tolist(),
                    "do_lower_case": bool(encoder.do_lower_case.numpy()),
                    "bert_config": json.loads(encoder.bert_config_json.numpy()),
                    "vocab": encoder.vocab_file.asset_path.numpy().decode(),
                    "packed": packed["input_word_ids"].numpy().tolist()}
print(json.dumps(answer))
"""


def test_the_export_loads_in_a_fresh_process_has_learned_and_keeps_the_vocab(pretrained, tiny_encoder):
    export = os.path.join(pretrained, "export")
    assert sorted(os.listdir(export)) == ["encoder", "mlm_head.npz", "preprocess"]
    done = subprocess.run([sys.executable, "-c", RELOAD, tiny_encoder, export], capture_output=True, text=True,
                          check=True, timeout=300)
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    source, exported = answer["source"], answer["export"]
    for key in ("outputs", "layers", "do_lower_case", "bert_config", "packed"):
        assert exported[key] == source[key], key  # the same API, config and tokenizer
    assert float(np.max(np.abs(np.array(exported["sequence_output"]) - np.array(source["sequence_output"])))) > 1e-2
    with open(source["vocab"], "rb") as f, open(exported["vocab"], "rb") as g:
        assert f.read() == g.read() == ("\n".join(TINY_VOCAB) + "\n").encode()

    # mlm_head.npz holds the trained head, so pretraining can continue from the export.
    head = load_mlm_head_weights(os.path.join(export, "encoder"))
    trained = read_weights(os.path.join(pretrained, f"model.ckpt-{TOTAL}"))
    names = {"cls/predictions/transform/dense/kernel": "transform_kernel", "cls/predictions/output_bias": "output_bias",
             "cls/predictions/transform/LayerNorm/gamma": "layer_norm_gamma"}
    for name, variable in names.items():
        np.testing.assert_array_equal(head[name], trained[f"model/head/{variable}/.ATTRIBUTES/VARIABLE_VALUE"])


def test_run_classifier_fine_tunes_from_the_export(pretrained, tmp_path):
    export = os.path.join(pretrained, "export")
    train = write_csv(str(tmp_path / "train.csv"), sentiment_rows(32, seed=1))
    dev = write_csv(str(tmp_path / "dev.csv"), sentiment_rows(16, seed=2))
    task = str(tmp_path / "task")
    metadata = run_in_process([f"--train_file={train}", f"--dev_file={dev}", "--text_column=text",
                               "--label_column=label", f"--encoder={export}", "--max_seq_length=16",
                               f"--output_dir={task}"])
    assert metadata["encoder"] == export
    run = str(tmp_path / "run")
    run_classifier(task, export, run, "--do_train", "--do_eval", "--num_train_epochs=1")
    results = read_results(os.path.join(run, "eval_results.txt"))
    assert results["global_step"] == 32 // 8 and 0 <= results["eval_accuracy"] <= 1


def test_another_vocab_than_the_encoders_is_one_line(tiny_encoder, tmp_path):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(TINY_VOCAB[:-1] + ["##ed"]) + "\n", encoding="utf-8")
    other = write_records(str(tmp_path / "other"), vocab_file=str(vocab))
    result = run_pretraining(other, tiny_encoder, str(tmp_path / "run"), check=False)
    assert_one_error_line(result, "--encoder", "another vocab")
    assert not os.path.exists(tmp_path / "run" / "run_config.json")


@pytest.fixture(scope="module")
def classifier_records(tiny_encoder, tmp_path_factory) -> str:
    tmp = tmp_path_factory.mktemp("classifier_records")
    train = write_csv(str(tmp / "train.csv"), sentiment_rows(16, seed=1))
    out = str(tmp / "records")
    run_in_process([f"--train_file={train}", "--text_column=text", "--label_column=label",
                    f"--encoder={tiny_encoder}", "--max_seq_length=16", f"--output_dir={out}"])
    return out


@pytest.mark.parametrize("flags, expected", [
    (["--data_dir={classifier_records}"], "holds classification records, not pretraining records"),
    (["--data_dir={tmp_path}"], "no metadata.json here"),
    (["--data_dir="], "--data_dir: is required"),
    (["--num_train_steps=0"], "--num_train_steps: 0 is out of range"),
    (["--warmup_steps=50"], "--warmup_steps: 50 is out of range"),
    (["--freeze_encoder_steps=40"], "--freeze_encoder_steps: 40 is out of range"),
    (["--train_batch_size=0"], "--train_batch_size: 0 is out of range"),
    (["--vocab_file=vocab.txt"], "--vocab_file: is not for run_pretraining"),
    (["--num_train_epochs=1"], "Unknown command line flag 'num_train_epochs'"),
])
def test_bad_input_is_one_line_before_tensorflow_loads(flags, expected, records, classifier_records, tiny_encoder,
                                                         tmp_path):
    flags = [flag.format(classifier_records=classifier_records, tmp_path=tmp_path) for flag in flags]
    command = pretraining_command(records, tiny_encoder, str(tmp_path / "run"), *flags)
    result = subprocess.run([command[0], "-X", "importtime", *command[1:]], capture_output=True, text=True,
                            timeout=120, check=False)
    assert_one_error_line(result, expected)
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert "bert_tf.flags" in imported and "tensorflow" not in imported
    assert not os.path.exists(tmp_path / "run")


# Defines run_pretraining's flags alone in a fresh process (this one holds every tool's flags).
FLAG_DEFAULTS = """
import json
from bert_tf import flags
flags.define_pretraining_flags()
print(json.dumps({flag.name: flag.default for flag in flags.FLAGS.get_key_flags_for_module("bert_tf.flags")}))
"""


def test_pretraining_config_is_run_pretrainings_flags_with_their_defaults():
    from bert_tf.pretraining_config import PretrainingConfig

    done = subprocess.run([sys.executable, "-c", FLAG_DEFAULTS], capture_output=True, text=True, check=True)
    flag_defaults = json.loads(done.stdout.splitlines()[-1])
    config_defaults = {field.name: field.default for field in dataclasses.fields(PretrainingConfig)}
    # The encoder group's casing and vocab flags are refused (the export keeps the encoder's own).
    assert sorted(config_defaults) == sorted(set(flag_defaults) - {"vocab_file", "do_lower_case"})
    assert {name: value for name, value in config_defaults.items() if flag_defaults[name] != value} == {}
