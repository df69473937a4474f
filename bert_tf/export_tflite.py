r"""Converts a classifier export into one TFLite file: raw strings in, probabilities (and the label) out.

  python -m bert_tf.export_tflite --model=RUN_DIR/export --output_file=model.tflite [--quantize=none|dynamic|float16]

The .tflite holds the tokenizer, the packing and the model, as the SavedModel export does: TFLite builtin ops
plus two tensorflow-text custom ops that have TFLite kernels, `FastBertNormalize` and
`FastWordpieceTokenizeWithOffsets` (tensorflow-text's FastBertTokenizer); no Select TF ops (Flex). Its signature
`serving_default` takes `text` (and `text_b` for pairs), [batch] strings, and returns `probabilities`
[batch, k] float32 and, for multi-class models, `label` [batch] strings. A call pads its texts to the longest
of them (the SavedModel runs length-sorted chunks). An interpreter must register tensorflow-text's TFLite ops:
in Python, LiteRT's (`ai_edge_litert.interpreter.InterpreterWithCustomOps`) or TensorFlow's own, with
`custom_op_registerers=tensorflow_text.tflite_registrar.SELECT_TFTEXT_OPS` (see `interpreter()`); an app links
tensorflow-text's TFLite kernels (tensorflow_text/core/kernels, the `*_tflite` targets) into its LiteRT build.
The SavedModel export must carry `packed_logits` and `tflite_config` (exports since TFLite support do).

The SavedModel's tokenizer (tokenization.BertTextTokenizer) normalizes with tf.strings.regex_replace,
tensorflow-text's normalize_utf8 (NFD) and tf.strings.lower, none of which has a TFLite kernel. tensorflow-text's
own TFLite normalizer (FastBertNormalizer) is a table of codepoint → replacement string, but its built-in
tables differ from BERT's (NFKD-like: "½" → "1⁄2", "ß" → "ss"; control characters become spaces instead of
being dropped). So we build the table ourselves: every codepoint is run through the SavedModel's own
normalization, and each one it changes becomes an entry (a darts-clone double-array trie in
FastBertNormalizer's flatbuffer format). The TFLite tokenizer then gives the SavedModel's ids for every single
codepoint; what a per-codepoint table cannot do is context: ICU lower-cases a word-final capital sigma "Σ" to
"ς", the table to "σ" (uncased models only), and NFD's reordering of stacked combining marks that are kept
(25 rare non-Mn marks) is not applied.

--quantize: `none` keeps float32 weights; `dynamic` stores the weights as int8 (dynamic-range quantization,
about 4x smaller, activations computed in float); `float16` stores them as float16 (about 2x smaller, computed
in float32 on CPUs). Exports made with --long_document=sliding_window are not supported.
"""

from __future__ import annotations

import os
import sys

import numpy as np
from absl import app

from bert_tf import flags as bert_flags
from bert_tf.errors import InputError, exits_cleanly_on_bad_input
from bert_tf.files import atomic_write

FLAGS = bert_flags.FLAGS

QUANTIZE_MODES = ("none", "dynamic", "float16")
# Texts the conversion runs through both the SavedModel and the .tflite, as a check that they agree.
CHECK_TEXTS = (
    "A fine film, with a plot that never drags.",
    "Café au lait, naïve résumé and a Ñandú: the Élan of 1999!",
    "THE WORST MOVIE I HAVE EVER SEEN",
    "",
)


# --- BERT's normalization as a FastBertNormalizer model -------------------------------------------------------
_DOUBLE_ARRAY_WINDOW = 4096  # how far back the trie builder looks for free slots
_VALUE_FLAG = 1 << 30  # set in every value of tensorflow-text's own normalizer models
_LENGTH_BITS = 6  # value = flag | pool offset << 6 | byte length of the replacement


def normalizer_model(tokenizer) -> bytes:
    """A FastBertNormalizer model (flatbuffer) that maps each codepoint as `tokenizer.normalize` does.

    FastBertTokenizer runs its normalizer, then WordPiece; BertTextTokenizer runs its own normalization, then
    FastBertTokenizer with the plain normalizer (which turns control characters into spaces). The table is
    both steps, codepoint by codepoint.
    """
    import tensorflow as tf
    import tensorflow_text as text

    plain = text.FastBertNormalizer(lower_case_nfd_strip_accents=False)
    codepoints = [c for c in range(0x110000) if not 0xD800 <= c < 0xE000]
    originals = [chr(c).encode("utf-8") for c in codepoints]
    normalized = []
    for start in range(0, len(originals), 1 << 17):
        batch = tf.constant(originals[start:start + (1 << 17)])
        normalized.extend(plain.normalize(tokenizer.normalize(batch)).numpy().tolist())
    mapping = {key: value for key, value in zip(originals, normalized) if key != value}
    zero = mapping.pop(b"\0", b"\0")  # the trie cannot hold a NUL key: the model has a field for it
    return _normalizer_flatbuffer(mapping, zero, tokenizer.lower_case)


def _normalizer_flatbuffer(mapping: dict[bytes, bytes], zero: bytes, lower_case: bool) -> bytes:
    """FastBertNormalizerModel: lower_case_nfd_strip_accents, trie_array, data_for_codepoint_zero, pool."""
    import flatbuffers

    pool, offsets, values = bytearray(), {}, {}
    for key in sorted(mapping) + [None]:
        replacement = zero if key is None else mapping[key]
        if replacement not in offsets:
            offsets[replacement] = len(pool)
            pool += replacement
        if len(replacement) >= 1 << _LENGTH_BITS:
            raise ValueError(f"normalized form of {key!r} is too long for the normalizer model")
        value = _VALUE_FLAG | offsets[replacement] << _LENGTH_BITS | len(replacement)
        if key is None:
            zero_value = value
        else:
            values[key] = value
    units = _double_array(values)
    builder = flatbuffers.Builder(4 * len(units) + len(pool) + 1024)
    pool_offset = builder.CreateString(bytes(pool))
    trie_offset = builder.CreateNumpyVector(units)
    builder.StartObject(4)
    builder.PrependBoolSlot(0, lower_case, False)
    builder.PrependUOffsetTRelativeSlot(1, trie_offset, 0)
    builder.PrependUint32Slot(2, zero_value, 0)
    builder.PrependUOffsetTRelativeSlot(3, pool_offset, 0)
    builder.Finish(builder.EndObject())
    return bytes(builder.Output())


def _double_array(values: dict[bytes, int]) -> np.ndarray:
    """A darts-clone double array (uint32 units) of byte keys → 31-bit values, as darts-clone lays it out.

    Unit of a node: label (bits 0-7), has-leaf (bit 8), offset (bits 10-30): the child for byte c sits at
    index ^ offset ^ c, and the node's value at index ^ offset (a unit with bit 31 set). Nodes are placed
    breadth-first at the first base whose slots are all free.
    """
    root: dict = {}
    for key, value in values.items():
        node = root
        for byte in key:
            node = node.setdefault(byte, {})
        node[None] = value
    capacity = 256 * (2 + (2 * sum(len(key) for key in values) + 2 * len(values)) // 256 + 2)
    units = np.zeros(capacity, np.uint32)
    used = np.zeros(capacity, bool)
    used_base = np.zeros(capacity, bool)
    used[0] = True
    size = 256
    queue = [(0, root)]
    for index, node in queue:  # grows while it is read: breadth-first
        labels = sorted(label for label in node if label is not None)
        slots = np.array(([0] if None in node else []) + labels, np.int64)
        start = max(0, size - _DOUBLE_ARRAY_WINDOW)
        candidates = (np.flatnonzero(~used[start:size]) + start) ^ slots[0]
        candidates = candidates[~used_base[candidates]]
        if len(candidates) and len(slots) > 1:
            candidates = candidates[~used[candidates[:, None] ^ slots[None, 1:]].any(axis=1)]
        if len(candidates):
            base = int(candidates[0])
        else:
            base, size = size, size + 256
        used_base[base] = True
        units[index] |= np.uint32((index ^ base) << 10)
        if None in node:
            units[index] |= np.uint32(1 << 8)
            units[base] = np.uint32(1 << 31 | node[None])
            used[base] = True
        for label in labels:
            used[base ^ label] = True
            units[base ^ label] |= np.uint32(label)
            queue.append((base ^ label, node[label]))
    if size >= 1 << 21:
        raise ValueError("normalizer trie too large for darts-clone offsets")
    return units[:size]


# --- The TFLite graph: tokenizer, packing, the export's model ---------------------------------------------------
def tflite_tokenizer(vocab: list[str], lower_case: bool):
    """FastBertTokenizer with BertTextTokenizer's normalization: the same ids, in ops that have TFLite kernels."""
    import tensorflow as tf
    import tensorflow_text as text

    from bert_tf.tokenization import BertTextTokenizer

    model = normalizer_model(BertTextTokenizer(vocab, lower_case))
    return text.FastBertTokenizer(vocab=vocab, token_out_type=tf.int32, unknown_token="[UNK]",
                                  fast_bert_normalizer_model_buffer=model)


def _kept_lengths(lengths: list, budget: int) -> list:
    """Tokens kept of each segment: RoundRobinTrimmer's allocation (one token each in turn), in closed form."""
    import tensorflow as tf

    if len(lengths) == 1:
        return [tf.minimum(lengths[0], budget)]
    a, b = lengths
    kept_a = tf.minimum(a, tf.maximum((budget + 1) // 2, budget - b))
    return [kept_a, tf.minimum(b, budget - kept_a)]


def pack_for_tflite(segments: list, seq_length: int, cls_id: int, sep_id: int, pad_id: int,
                    truncation: str = "truncate", head_tokens: int | None = None) -> dict:
    """tokenization.pack_inputs + trim_to_longest in builtin TFLite ops: [CLS] a [SEP] (b [SEP]) per row, the
    tokens trim_segments keeps (RoundRobinTrimmer's counts; first, last or first and last tokens), padded to
    the batch's longest row."""
    import tensorflow as tf

    from bert_tf.tokenization import default_head_tokens, num_special_tokens

    budget = seq_length - num_special_tokens(len(segments))
    if head_tokens is None:
        head_tokens = default_head_tokens(budget)
    lengths = [tf.cast(segment.row_lengths(), tf.int32)[:, None] for segment in segments]
    kept = _kept_lengths(lengths, budget)
    end_a = kept[0] + 1  # position of the first [SEP]
    end = end_a if len(segments) == 1 else end_a + kept[1] + 1  # position of the last [SEP]
    position = tf.range(tf.maximum(tf.reduce_max(end) + 1, 1))[None, :]
    ids = tf.where(position == 0, cls_id, tf.where(position <= end, sep_id, pad_id))
    first = 1  # where the segment's tokens start in the row
    for segment, length, count in zip(segments, lengths, kept):
        head = {"truncate": count, "tail": 0 * count, "head_tail": count * head_tokens // budget}[truncation]
        slot = position - first  # the slot's place among the kept tokens; past the head they come from the end
        offset = tf.where(slot < head, slot, slot + length - count)
        values = tf.concat([tf.cast(segment.values, tf.int32), [pad_id]], axis=0)
        index = tf.clip_by_value(tf.cast(segment.row_splits[:-1], tf.int32)[:, None] + offset, 0,
                                 tf.shape(values)[0] - 1)
        ids = tf.where((slot >= 0) & (slot < count), tf.gather(values, index), ids)
        first = first + count + 1
    mask = tf.cast(position <= end, tf.int32)
    type_ids = tf.cast((position > end_a) & (position <= end), tf.int32)
    return {"input_word_ids": ids, "input_mask": mask, "input_type_ids": type_ids}


def read_config(loaded) -> dict:
    """The export's tflite_config() as Python values; an InputError for exports that cannot be converted."""
    if not hasattr(loaded, "tflite_config") or not hasattr(loaded, "packed_logits"):
        raise InputError("this export predates TFLite support (it has no packed_logits function)", flag="model",
                         hint="export it again: run_classifier --do_export with the run's --output_dir")
    config = {name: value.numpy() for name, value in loaded.tflite_config().items()}
    config = {name: value.decode("utf-8") if isinstance(value, bytes) else value for name, value in config.items()}
    config["label_names"] = [name.decode("utf-8") for name in config["label_names"]]
    config.setdefault("truncation", "truncate")  # exports from before --long_document=tail|head_tail
    config.setdefault("head_tokens", -1)
    if config["doc_stride"]:
        raise InputError("sliding-window exports (--long_document=sliding_window) cannot be converted to TFLite",
                         flag="model", hint="convert an export of records written without --long_document")
    return config


def serving_function(loaded, config: dict, vocab: list[str]):
    """The .tflite's serving_default as a concrete function of the loaded export."""
    import tensorflow as tf

    from bert_tf.heads import MultiClassHead, head_for

    tokenizer = tflite_tokenizer(vocab, bool(config["do_lower_case"]))
    head = head_for(config["task_type"])
    names = config["label_names"]
    special = {token: vocab.index(token) for token in ("[CLS]", "[SEP]", "[PAD]")}
    head_tokens = None if config["head_tokens"] < 0 else int(config["head_tokens"])
    temperature = float(config.get("temperature", 1.0))  # exports before --calibrate have none

    def predict(*segments):
        tokens = [tokenizer.tokenize(segment) for segment in segments]
        inputs = pack_for_tflite(tokens, int(config["max_seq_length"]), special["[CLS]"], special["[SEP]"],
                                 special["[PAD]"], config["truncation"], head_tokens)
        probabilities = head.probabilities(loaded.packed_logits(**inputs) / temperature)
        outputs = {"probabilities": probabilities}
        if isinstance(head, MultiClassHead):
            outputs["label"] = head.serving_labels(probabilities, names, None)
        return outputs

    specs = [tf.TensorSpec([None], tf.string, name="text")]
    if config["paired"]:
        specs.append(tf.TensorSpec([None], tf.string, name="text_b"))
    return tf.function(predict).get_concrete_function(*specs)


def frozen_for_tflite(function):
    """The function with its variables as constants, every call inlined and `x[:, None]`-style slices as
    ExpandDims: TFLite's converter keeps a StridedSlice with a new_axis_mask on a dynamic shape as a TF op
    (which would need Flex), and the encoder's attention mask and mean pooling have two of them."""
    import tensorflow as tf
    from tensorflow.python.framework import convert_to_constants

    frozen = convert_to_constants.convert_variables_to_constants_v2(function)
    graph_def = frozen.graph.as_graph_def()
    new_axes_as_expand_dims(graph_def)
    inputs = [tensor.name for tensor in frozen.inputs]
    outputs = [tensor.name for tensor in frozen.outputs]
    specs = tf.nest.flatten(function.structured_input_signature)

    def rebuilt(*tensors):
        results = tf.graph_util.import_graph_def(graph_def, input_map=dict(zip(inputs, tensors)),
                                                 return_elements=outputs, name="")
        return tf.nest.pack_sequence_as(function.structured_outputs, results)

    return tf.function(rebuilt).get_concrete_function(*specs)


def _bits(mask: int, count: int) -> list[bool]:
    return [bool(mask >> i & 1) for i in range(count)]


def new_axes_as_expand_dims(graph_def) -> int:
    """Rewrites, in place, each StridedSlice that only inserts axes (x[:, None, None, :]) as ExpandDims ops;
    returns how many it rewrote. Its begin/end/strides must be constants (as in a frozen graph)."""
    import tensorflow as tf

    constants = {node.name: node for node in graph_def.node if node.op == "Const"}
    rewritten, added = 0, []
    for node in graph_def.node:
        attr = node.attr
        if node.op != "StridedSlice" or not attr["new_axis_mask"].i or attr["ellipsis_mask"].i or \
                attr["shrink_axis_mask"].i:
            continue
        operands = [name.split(":")[0] for name in node.input[1:4]]
        if not all(name in constants for name in operands):
            continue
        strides = tf.make_ndarray(constants[operands[2]].attr["value"].tensor)
        count = len(strides)
        new_axis = _bits(attr["new_axis_mask"].i, count)
        full = [b and e and s == 1 for b, e, s in zip(_bits(attr["begin_mask"].i, count),
                                                         _bits(attr["end_mask"].i, count), strides)]
        if not all(n or f for n, f in zip(new_axis, full)):
            continue
        # One ExpandDims per new axis, left to right (an axis's position counts the axes inserted before it);
        # the last one takes the node's name, so its consumers read it unchanged.
        source, dtype = node.input[0], attr["T"].type
        positions = [i for i in range(count) if new_axis[i]]
        for k, position in enumerate(positions):
            name = node.name if k == len(positions) - 1 else f"{node.name}/new_axis_{position}"
            added.append(_const_node(f"{node.name}/new_axis_{position}/axis", position))
            expand = _expand_dims_node(name, source, added[-1].name, dtype)
            if name == node.name:
                node.CopyFrom(expand)
            else:
                added.append(expand)
            source = name
        rewritten += 1
    graph_def.node.extend(added)
    return rewritten


def _const_node(name: str, value: int):
    import tensorflow as tf

    node = tf.compat.v1.NodeDef(name=name, op="Const")
    node.attr["dtype"].type = tf.int32.as_datatype_enum
    node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(value, tf.int32))
    return node


def _expand_dims_node(name: str, source: str, axis: str, dtype):
    import tensorflow as tf

    node = tf.compat.v1.NodeDef(name=name, op="ExpandDims", input=[source, axis])
    node.attr["T"].type = dtype
    node.attr["Tdim"].type = tf.int32.as_datatype_enum
    return node


def load_export(export_dir: str):
    """(the loaded SavedModel, its tflite_config() as Python values, its vocab)."""
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (registers the export's tokenizer ops)

    from bert_tf.tokenization import load_vocab

    loaded = tf.saved_model.load(export_dir)
    return loaded, read_config(loaded), load_vocab(loaded.vocab_file.asset_path.numpy().decode("utf-8"))


def convert_loaded(loaded, config: dict, vocab: list[str], quantize: str = "none") -> bytes:
    """The .tflite flatbuffer of a loaded classifier export (see the module docstring)."""
    import tensorflow as tf

    if quantize not in QUANTIZE_MODES:
        raise ValueError(f"quantize must be one of {QUANTIZE_MODES}, not {quantize!r}")
    frozen = frozen_for_tflite(serving_function(loaded, config, vocab))
    # A trackable object makes the converter take its current path, which writes the serving_default signature.
    converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen], tf.Module())
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    converter.allow_custom_ops = True  # tensorflow-text's ops, whose TFLite kernels tflite_registrar adds
    if quantize != "none":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    return converter.convert()


def convert(export_dir: str, quantize: str = "none") -> bytes:
    """The .tflite flatbuffer of the classifier export in export_dir."""
    return convert_loaded(*load_export(export_dir), quantize=quantize)


def interpreter(model_path: str | None = None, model_content: bytes | None = None, num_threads: int | None = None):
    """A TFLite interpreter with tensorflow-text's TFLite ops registered, tensors allocated.

    LiteRT's (`pip install ai-edge-litert`) when it is installed, else TensorFlow's own (deprecated) one.
    """
    import tensorflow_text as text

    try:
        from ai_edge_litert.interpreter import InterpreterWithCustomOps
    except ImportError:
        from tensorflow.lite.python.interpreter import InterpreterWithCustomOps
    interp = InterpreterWithCustomOps(model_path=model_path, model_content=model_content, num_threads=num_threads,
                                      custom_op_registerers=text.tflite_registrar.SELECT_TFTEXT_OPS)
    interp.allocate_tensors()
    return interp


def predict_tflite(interp, texts: list[str], texts_b: list[str] | None = None) -> dict[str, np.ndarray]:
    """The .tflite's serving_default on texts: {"probabilities": [n, k] float32, "label": [n] bytes (multi-class)}."""
    runner = interp.get_signature_runner("serving_default")
    inputs = {"text": np.array([t.encode("utf-8") for t in texts], dtype=object)}
    if texts_b is not None:
        inputs["text_b"] = np.array([t.encode("utf-8") for t in texts_b], dtype=object)
    return runner(**inputs)


def compare_with_export(loaded, interp, texts: list[str], texts_b: list[str] | None = None) -> dict[str, float]:
    """How the .tflite's probabilities differ from the SavedModel's on texts: max |Δ| and label agreement."""
    import tensorflow as tf

    inputs = {"text": tf.constant(texts)}
    if texts_b is not None:
        inputs["text_b"] = tf.constant(texts_b)
    expected = loaded.signatures["serving_default"](**inputs)["probabilities"].numpy()
    got = predict_tflite(interp, texts, texts_b)["probabilities"]
    return {"max_abs_difference": float(np.max(np.abs(got - expected))),
            "label_agreement": float(np.mean(got.argmax(axis=1) == expected.argmax(axis=1)))}


@exits_cleanly_on_bad_input
def main(argv):
    bert_flags.check_command_line(argv, FLAGS, required=("model", "output_file"))
    if FLAGS.quantize not in QUANTIZE_MODES:
        raise InputError(f"'{FLAGS.quantize}' is not a quantization mode", flag="quantize",
                         hint=f"use one of {', '.join(QUANTIZE_MODES)}")
    if not os.path.isfile(os.path.join(FLAGS.model, "saved_model.pb")):
        raise InputError("no exported model there", flag="model",
                         hint="give RUN_DIR/export, written by run_classifier --do_export")
    if os.path.isdir(FLAGS.output_file):
        raise InputError("is a directory", flag="output_file", hint="give a file name such as model.tflite")
    loaded, config, vocab = load_export(FLAGS.model)
    content = convert_loaded(loaded, config, vocab, FLAGS.quantize)
    print("(the custom ops listed above are tensorflow-text's, which have TFLite kernels: an interpreter loads "
          "them from tensorflow_text.tflite_registrar.SELECT_TFTEXT_OPS)", file=sys.stderr)
    os.makedirs(os.path.dirname(os.path.abspath(FLAGS.output_file)), exist_ok=True)
    atomic_write(FLAGS.output_file, content)
    texts = list(CHECK_TEXTS)
    check = compare_with_export(loaded, interpreter(model_content=content), texts,
                                texts[::-1] if config["paired"] else None)
    print(f"wrote {FLAGS.output_file}: {len(content) / 1e6:.1f} MB, --quantize={FLAGS.quantize}; on {len(texts)} "
          f"texts, max |probability - the SavedModel's| = {check['max_abs_difference']:.2g}, "
          f"labels agree on {check['label_agreement']:.0%}")


if __name__ == "__main__":
    bert_flags.define_export_tflite_flags()
    app.run(main, flags_parser=bert_flags.parse_or_exit)
