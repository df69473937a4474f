"""export_tflite: the .tflite tokenizes as the SavedModel does and returns its probabilities, per --quantize.

Nothing is trained: a classifier on the tiny encoder with a random head (scaled so its classes are far apart)
is exported as run_classifier would, then converted."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_text as text
from conftest import assert_one_error_line

from bert_tf import export, export_tflite
from bert_tf.encoders.hub_layers import HubEncoder
from bert_tf.model import BertClassifier
from bert_tf.records import RecordsMetadata
from bert_tf.tokenization import BertTextTokenizer, load_vocab, pack_inputs, trim_to_longest

# English with accents and casing, punctuation, a long text (truncated at 16 tokens), characters BERT drops
# (soft hyphen, zero-width space and joiner, a private-use character) or keeps (no-break space, "½", "ß",
# which tensorflow-text's own normalizer would rewrite), and empty texts.
TEXTS = [
    "the movie was very good !", "The MOVIE was GREAT!", "Thé fílm wás nót góod.", "ÁWFUL plot, and a PÓOR film",
    "i love it", "I HATE IT !!", "the plot is fine , the film is not", "Goods and films, fine-ly", "Very, VERY bad.",
    "great " * 20, "a fine\u00adly made film", "the\u200bmovie\u200d was good", "it was\u00a0good", "½ good, ß bad",
    "poor\ue000 plot", "tab\tand\nnewline : good", "Ça, c'est un FILM très BÔN", "", "   ", "NOT bad . not BAD",
    "hate hate love", "the film is awful ; the plot is great",
]
BOUNDS = {"none": 1e-5, "dynamic": 0.2, "float16": 0.02}  # max |probability - the SavedModel's|; measured: 3e-8, 0.087, 0.0088


def build_export(tiny_encoder: str, directory: str, metadata: RecordsMetadata) -> str:
    model = BertClassifier(HubEncoder(os.path.join(tiny_encoder, "encoder")), metadata.num_labels, pooling="mean")
    serving = export.ServingModel(model, os.path.join(tiny_encoder, "vocab.txt"), True, metadata)
    # A random head gives every text nearly the same probabilities; centred and scaled on TEXTS' logits, its
    # classes are far apart and TEXTS reach each of them.
    kernel = model.head.kernel
    kernel.assign(np.random.default_rng(0).normal(0, 1, kernel.shape).astype(np.float32))
    t = serving._tokenizer
    logits = model(pack_inputs([t.tokenize(tf.constant(TEXTS))], metadata.max_seq_length, t.cls_id, t.sep_id),
                   training=False).numpy()
    scale = 4 / logits.std(axis=0)
    kernel.assign(kernel.numpy() * scale)
    model.head.bias.assign(-logits.mean(axis=0) * scale)
    return export.save_serving_model(serving, directory)


@pytest.fixture(scope="module")
def single_export(tiny_encoder, tmp_path_factory) -> str:
    metadata = RecordsMetadata(task_type="multiclass", num_labels=3, label_names=["neg", "neu", "pos"],
                               max_seq_length=16)
    return build_export(tiny_encoder, str(tmp_path_factory.mktemp("tflite") / "export"), metadata)


def savedmodel_outputs(export_dir: str, texts: list[str], texts_b: list[str] | None = None) -> dict[str, np.ndarray]:
    serve = tf.saved_model.load(export_dir).signatures["serving_default"]
    inputs = {"text": tf.constant(texts)} if texts_b is None else {"text": tf.constant(texts),
                                                                   "text_b": tf.constant(texts_b)}
    return {name: value.numpy() for name, value in serve(**inputs).items()}


@pytest.mark.parametrize("quantize", ["none", "dynamic", pytest.param("float16", marks=pytest.mark.slow)])
def test_tflite_gives_the_savedmodels_probabilities(single_export, tmp_path, quantize):
    output = str(tmp_path / f"model_{quantize}.tflite")
    result = subprocess.run([sys.executable, "-m", "bert_tf.export_tflite", f"--model={single_export}",
                             f"--output_file={output}", f"--quantize={quantize}"], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "labels agree on 100%" in result.stdout
    assert [name for name in os.listdir(tmp_path) if name != os.path.basename(output)] == []  # no temp file left

    interp = export_tflite.interpreter(output)
    signature = interp.get_signature_list()["serving_default"]
    assert signature["inputs"] == ["text"] and sorted(signature["outputs"]) == ["label", "probabilities"]
    ops = {op["op_name"] for op in interp._get_ops_details()}
    assert not [op for op in ops if op.startswith("Flex")], ops  # no Select TF ops
    assert {"FastBertNormalize", "FastWordpieceTokenizeWithOffsets"} <= ops

    got = export_tflite.predict_tflite(interp, TEXTS)
    expected = savedmodel_outputs(single_export, TEXTS)
    assert got["probabilities"].shape == expected["probabilities"].shape == (len(TEXTS), 3)
    assert np.max(np.abs(got["probabilities"] - expected["probabilities"])) <= BOUNDS[quantize]
    assert list(got["label"]) == list(expected["label"])
    # The texts reach all three classes with clear margins, so the agreement is not a constant answer's.
    assert len(set(expected["label"])) == 3


def test_pairs_with_truncation(tiny_encoder, tmp_path):
    metadata = RecordsMetadata(task_type="multiclass", num_labels=2, label_names=["no", "yes"], max_seq_length=12,
                               paired=True)
    export_dir = build_export(tiny_encoder, str(tmp_path / "export"), metadata)
    loaded, config, vocab = export_tflite.load_export(export_dir)
    interp = export_tflite.interpreter(model_content=export_tflite.convert_loaded(loaded, config, vocab))
    texts_b = TEXTS[::-1]
    got = export_tflite.predict_tflite(interp, TEXTS, texts_b)["probabilities"]
    expected = savedmodel_outputs(export_dir, TEXTS, texts_b)["probabilities"]
    np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("truncation", ["truncate", "tail", "head_tail"])
@pytest.mark.parametrize("num_segments", [1, 2])
def test_packing_equals_pack_inputs(truncation, num_segments):
    rng = np.random.default_rng(num_segments)
    segments = [tf.ragged.constant([list(rng.integers(5, 50, size=int(n))) for n in rng.integers(0, 20, size=30)],
                                   dtype=tf.int32) for _ in range(num_segments)]
    expected = trim_to_longest(pack_inputs(segments, 16, 2, 3, 0, truncation=truncation, head_tokens=3))
    got = export_tflite.pack_for_tflite(segments, 16, 2, 3, 0, truncation=truncation, head_tokens=3)
    for name in expected:
        np.testing.assert_array_equal(got[name].numpy(), expected[name].numpy(), err_msg=name)


@pytest.mark.parametrize("lower_case", [True, False])
def test_normalizer_model_maps_every_codepoint_as_the_savedmodel(lower_case):
    tokenizer = BertTextTokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a"], lower_case)
    normalizer = text.FastBertNormalizer(model_buffer=export_tflite.normalizer_model(tokenizer))
    plain = text.FastBertNormalizer(lower_case_nfd_strip_accents=False)  # what FastBertTokenizer adds after ours
    characters = [chr(c) for c in range(0x110000) if not 0xD800 <= c < 0xE000]
    # Each character twice, after a space: a capital sigma after a letter would become a final sigma "ς" in the
    # SavedModel (ICU lower-cases in context), which a per-character table cannot do (a documented divergence).
    strings = tf.constant([f"{c} {c}".encode() for c in characters])
    mismatches = np.flatnonzero(normalizer.normalize(strings).numpy() !=
                                plain.normalize(tokenizer.normalize(strings)).numpy())
    assert [hex(ord(characters[i])) for i in mismatches[:10]] == []


def tokenizer_tflite(vocab: list[str], lower_case: bool) -> bytes:
    tokenizer = export_tflite.tflite_tokenizer(vocab, lower_case)
    fn = tf.function(lambda texts: {"ids": tokenizer.tokenize(texts).values,
                                    "row_splits": tokenizer.tokenize(texts).row_splits})
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [fn.get_concrete_function(tf.TensorSpec([None], tf.string, name="texts"))], tf.Module())
    converter.allow_custom_ops = True
    return converter.convert()


ENGLISH = [
    "Héllo WORLD! Naïve café owners' résumés — 12½ “quotes” and the Élan of CAFÉ SOCIETY.",
    "I can't believe it's NOT butter!!! ☺ 👍🏽 co\u00adoperate e\u0301clair ﬁne",
    "Zoë's façade: Ångström, Øresund, Straße, and a\u200dz",
]


@pytest.mark.parametrize("lower_case", [True, False])
def test_tflite_tokenizer_gives_the_savedmodels_ids(minilm_vocab, lower_case):
    vocab = load_vocab(minilm_vocab)
    texts = ENGLISH + TEXTS
    interp = export_tflite.interpreter(model_content=tokenizer_tflite(vocab, lower_case))
    got = interp.get_signature_runner("serving_default")(texts=np.array([t.encode() for t in texts], dtype=object))
    expected = BertTextTokenizer(vocab, lower_case).tokenize(tf.constant(texts))
    np.testing.assert_array_equal(got["row_splits"], expected.row_splits.numpy())
    np.testing.assert_array_equal(got["ids"], expected.values.numpy())
    # tensorflow-text's own normalizer would not do: it gives other ids for some of these texts.
    stock = text.FastBertTokenizer(vocab=vocab, token_out_type=tf.int32, lower_case_nfd_strip_accents=lower_case)
    assert stock.tokenize(tf.constant(texts)).to_list() != expected.to_list()


def run_export_tflite(*flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bert_tf.export_tflite", *flags], capture_output=True, text=True,
                          check=False)


def test_bad_flags_give_one_error_line(single_export, tmp_path):
    output = f"--output_file={tmp_path / 'model.tflite'}"
    assert_one_error_line(run_export_tflite(f"--model={single_export}", output, "--quantize=int4"),
                          "--quantize", "none, dynamic, float16")
    assert_one_error_line(run_export_tflite(f"--model={tmp_path / 'missing'}", output), "--model",
                          "run_classifier --do_export")
    assert_one_error_line(run_export_tflite(output), "--model", "required")
    assert_one_error_line(run_export_tflite(f"--model={single_export}"), "--output_file", "required")
    old = str(tmp_path / "old_export")
    tf.saved_model.save(tf.Module(), old)  # an export without packed_logits, as exports before TFLite support
    assert_one_error_line(run_export_tflite(f"--model={old}", output), "--model", "export it again")
    assert not os.path.exists(tmp_path / "model.tflite")
