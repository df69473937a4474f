"""run_classifier end to end on a tiny encoder: training, eval, predict, export, strategies, bad flags.

Resuming after a kill is in test_reliability.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from conftest import (
    assert_one_error_line,
    finish,
    max_difference,
    read_weights,
    run_classifier,
    sentiment_rows,
    serve_in_fresh_process,
    start_workers,
    stop,
    stop_at,
)

from bert_tf.reports import read_results


def test_train_eval_predict_export(tiny_records, tiny_encoder, tmp_path):
    out = str(tmp_path / "run")
    run_classifier(tiny_records, tiny_encoder, out, "--num_train_epochs=10", "--do_train", "--do_eval",
                   "--do_predict", "--do_export", "--final_weights=last")

    results = read_results(os.path.join(out, "eval_results.txt"))
    assert int(results["global_step"]) == 10 * (64 // 8)
    assert float(results["eval_accuracy"]) >= 0.9, results  # the toy task is learnable
    assert os.path.exists(os.path.join(out, f"model.ckpt-{10 * 8}.index"))

    probabilities = np.loadtxt(os.path.join(out, "test_results.tsv"), delimiter="\t")
    assert probabilities.shape == (10, 2)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)

    # The export, loaded in a fresh process with only tensorflow + tensorflow_text, gives the probabilities
    # the in-training model wrote for the same test texts.
    texts = [text for text, _ in sentiment_rows(10, seed=3)]
    answer = serve_in_fresh_process(os.path.join(out, "export"), texts)
    np.testing.assert_allclose(np.array(answer["probabilities"]), probabilities, atol=1e-5)
    labels = json.load(open(os.path.join(tiny_records, "metadata.json")))["label_names"]
    assert answer["label"] == [labels[i] for i in probabilities.argmax(axis=1)]

    predictions = open(os.path.join(out, "predictions.tsv")).read().splitlines()
    assert predictions[0].split("\t") == ["example_id", "label", "probability", "text"]
    assert [line.split("\t")[3] for line in predictions[1:]] == [" ".join(t.split()) for t in texts]


def test_strategies_reach_the_same_weights(tiny_records, tiny_encoder, tmp_path):
    """One device, MirroredStrategy on 2 logical CPUs and 2 local workers train alike on the same global batch."""
    flags = ["--do_train", "--num_train_epochs=1"]
    one = str(tmp_path / "one_device")
    run_classifier(tiny_records, tiny_encoder, one, *flags, "--distribution_strategy=one_device")
    mirrored = str(tmp_path / "mirrored")
    run_classifier(tiny_records, tiny_encoder, mirrored, *flags, "--distribution_strategy=mirrored",
                   "--num_cpu_replicas=2")

    multi = str(tmp_path / "multi_worker")
    logs = [str(tmp_path / f"worker{index}.log") for index in range(2)]
    processes = start_workers(tiny_records, tiny_encoder, multi, *flags, logs=logs)
    try:
        for process, log in zip(processes, logs):
            finish(process, log)
    finally:
        stop(processes)

    reference = read_weights(os.path.join(one, "model.ckpt-8"))
    initial = read_weights_of_encoder_start(tiny_encoder)
    moved = max(float(np.max(np.abs(reference[name] - initial[name]))) for name in initial)
    assert moved > 1e-3  # training changed the encoder, so equal weights mean equal training
    assert max_difference(reference, read_weights(os.path.join(mirrored, "model.ckpt-8"))) < 1e-5
    assert max_difference(reference, read_weights(os.path.join(multi, "model.ckpt-8"))) < 1e-5
    assert not os.path.exists(os.path.join(multi, ".worker_tmp", str(processes[1].pid)))


@pytest.mark.slow
def test_fp16_loss_scaling_trains_as_float32_where_nothing_overflows(tiny_records, tiny_encoder, tmp_path):
    """--mixed_precision=fp16 wraps the optimizer in a LossScaleOptimizer. On a CPU, grappler's float16 rewrite
    finds no GPU to rewrite for, so only the loss scaling remains: by 2^15, which is exact in float32. Two
    replicas take the optimizer's merge_call path."""
    flags = ["--do_train", "--num_train_epochs=1"]
    reference, scaled = str(tmp_path / "float32"), str(tmp_path / "fp16")
    run_classifier(tiny_records, tiny_encoder, reference, *flags)
    run_classifier(tiny_records, tiny_encoder, scaled, *flags, "--mixed_precision=fp16",
                   "--distribution_strategy=mirrored", "--num_cpu_replicas=2")

    reader = tf.train.load_checkpoint(os.path.join(scaled, "model.ckpt-8"))
    scale = [name for name in reader.get_variable_to_shape_map() if "dynamic_scale" in name]
    assert scale and float(reader.get_tensor(scale[0])) == 2.0**15  # checkpointed, and no step overflowed
    assert max_difference(read_weights(os.path.join(reference, "model.ckpt-8")),
                          read_weights(os.path.join(scaled, "model.ckpt-8"))) < 1e-5


@pytest.mark.slow
def test_same_seed_trains_alike_with_dropout(tiny_records, tmp_path):
    """Two runs with the same --seed reach the same weights, with dropout on in the encoder and the head."""
    from conftest import TINY_CONFIG, write_tiny_encoder

    encoder = write_tiny_encoder(str(tmp_path / "encoder"),
                                 {**TINY_CONFIG, "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1})
    runs = [str(tmp_path / f"run{index}") for index in range(2)]
    for run in runs:
        run_classifier(tiny_records, encoder, run, "--do_train", "--num_train_epochs=1", "--dropout_rate=0.1",
                       "--seed=3")

    first, second = (read_weights(os.path.join(run, "model.ckpt-8")) for run in runs)
    assert max_difference(first, second) == 0


def read_weights_of_encoder_start(encoder_dir: str) -> dict[str, np.ndarray]:
    """The encoder's weights before fine-tuning, keyed as in a run's checkpoint."""
    import tensorflow_hub as hub

    restored = hub.load(os.path.join(encoder_dir, "encoder"))
    return {
        f"model/encoder/_savedmodel/trainable_variables/{i}/.ATTRIBUTES/VARIABLE_VALUE": v.numpy()
        for i, v in enumerate(restored.trainable_variables)
    }


@pytest.mark.slow
def test_gradient_accumulation_updates_every_n_batches_and_resumes(tiny_records, tiny_encoder, tmp_path):
    out = str(tmp_path / "run")
    flags = ["--do_train", "--gradient_accumulation_steps=2", "--save_checkpoints_steps=1", "--iterations_per_loop=1",
             "--keep_checkpoint_max=10"]
    run_classifier(tiny_records, tiny_encoder, out, *flags, "--num_train_epochs=1")  # 8 batches of 8
    start = read_weights_of_encoder_start(tiny_encoder)
    encoder = [read_weights(os.path.join(out, f"model.ckpt-{step}")) for step in range(1, 5)]
    encoder = [{name: w[name] for name in start} for w in encoder]
    # Batches 1 and 3 only add to the accumulated gradient; batches 2 and 4 update the weights.
    assert max_difference(encoder[0], start) == 0
    assert max_difference(encoder[1], encoder[0]) > 1e-4
    assert max_difference(encoder[2], encoder[1]) == 0
    assert max_difference(encoder[3], encoder[2]) > 1e-4
    # Steps count batches (Keras' optimizer.iterations counts updates): resuming continues at batch 4.
    stop_at(out, 4)
    resumed = run_classifier(tiny_records, tiny_encoder, out, *flags, "--num_train_epochs=1", "--do_eval")
    assert f"Resuming from {os.path.join(out, 'model.ckpt-4')} at step 4 of 8" in resumed.stderr
    results = read_results(os.path.join(out, "eval_results.txt"))
    assert int(results["global_step"]) == 8 and tf.train.latest_checkpoint(out).endswith("model.ckpt-8")


@pytest.mark.slow
def test_refuses_an_output_dir_of_another_run(tiny_records, tiny_encoder, tmp_path):
    out = str(tmp_path / "run")
    run_classifier(tiny_records, tiny_encoder, out, "--do_train", "--num_train_epochs=0.2")
    result = run_classifier(tiny_records, tiny_encoder, out, "--do_train", "--num_train_epochs=0.2", "--pooling=cls",
                            check=False)
    assert_one_error_line(result, "--output_dir", "pooling")


@pytest.mark.parametrize(
    "flags, env, expected",
    [
        (["--use_tpu"], {}, "TPU"),
        ([], {"TF_CONFIG": "{not json"}, "TF_CONFIG"),
        (["--distribution_strategy=multi_worker_mirrored"], {"TF_CONFIG": ""}, "TF_CONFIG"),
        (["--encoder=/no/such/encoder"], {}, "--encoder"),
        (["--profile_steps=5"], {}, "--profile_steps: '5' is not START,END"),
        (["--do_eval", "--tune_thresholds"], {}, "--tune_thresholds: tunes multi-label thresholds"),
        (["--train_batch_size=0"], {}, "--train_batch_size: 0 is out of range"),
        (["--train_batch_size=-8"], {}, "--train_batch_size: -8 is out of range"),
        (["--eval_batch_size=0"], {}, "--eval_batch_size: 0 is out of range"),
        (["--save_checkpoints_steps=0"], {}, "--save_checkpoints_steps: 0 is out of range"),
        (["--learning_rate=-1e-4"], {}, "--learning_rate: -0.0001 is out of range"),
        (["--num_train_epochs=0"], {}, "--num_train_epochs: 0.0 is out of range"),
        (["--warmup_proportion=1.5"], {}, "--warmup_proportion: 1.5 is out of range"),
        (["--dropout_rate=1"], {}, "--dropout_rate: 1.0 is out of range"),
        (["--iterations_per_loop=0"], {}, "--iterations_per_loop: 0 is out of range"),
        (["--gradient_accumulation_steps=0"], {}, "--gradient_accumulation_steps: 0 is out of range"),
        (["--init_checkpoint=/no/such/model.ckpt-5"], {}, "--init_checkpoint, /no/such/model.ckpt-5: no such checkpoint"),
        (["--train_batch_size=eight"], {}, "--train_batch_size"),
        (["--no_such_flag=1"], {}, "Unknown command line flag 'no_such_flag'"),
    ],
)
def test_bad_flags_give_one_line(tiny_records, tiny_encoder, tmp_path, flags, env, expected):
    command = [sys.executable, "-m", "bert_tf.run_classifier", f"--data_dir={tiny_records}",
               f"--encoder={tiny_encoder}", f"--output_dir={tmp_path / 'run'}", "--do_train", *flags]
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **env}, timeout=300)
    assert_one_error_line(result, expected)


@pytest.mark.parametrize("command", ["run_classifier", "create_tfrecords", "export_encoder", "export_tflite",
                                     "classify_text", "extract_features", "create_pretraining_data"])
def test_a_flag_typo_answers_before_tensorflow_loads(command):
    """A misspelt flag is one line and exit code 2, decided before the seconds-long TensorFlow import:
    -X importtime lists every module imported, and tensorflow is not among them."""
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", f"bert_tf.{command}", "--do_trian"],
                            capture_output=True, text=True, timeout=120)
    assert_one_error_line(result, "Unknown command line flag 'do_trian'")
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert "bert_tf.flags" in imported and "tensorflow" not in imported


def test_out_of_range_values_answer_before_tensorflow_loads(tmp_path):
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "bert_tf.run_classifier", "--do_train",
                             f"--data_dir={tmp_path}", f"--output_dir={tmp_path / 'run'}", "--learning_rate=-1e-4"],
                            capture_output=True, text=True, timeout=120)
    assert_one_error_line(result, "--learning_rate", "out of range")
    assert not any(line.rstrip().endswith("| tensorflow") for line in result.stderr.splitlines())
    assert not os.path.exists(tmp_path / "run")
