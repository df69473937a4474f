"""Loads BERT weights from Hugging Face or google-research/bert dirs and exports TF Hub-format SavedModels.

Both loaders return weights keyed by google-research/bert variable names, kernels laid out [in, out],
which is what `BertEncoder` takes.
"""

from __future__ import annotations

import json
import os

import numpy as np
import tensorflow as tf

from bert_tf.encoders.bert import INPUT_KEYS, BertConfig, BertEncoder, weight_shapes
from bert_tf.files import save_savedmodel

Weights = dict[str, np.ndarray]

_HF_FILES = ("config.json", "model.safetensors")
_TF1_FILES = ("bert_config.json", "bert_model.ckpt.index")


def detect_source_format(source_dir: str) -> str:
    """Returns "hf" for a Hugging Face BERT dir, "tf1" for a google-research/bert checkpoint dir."""
    if all(os.path.isfile(os.path.join(source_dir, name)) for name in _HF_FILES):
        return "hf"
    if os.path.isfile(os.path.join(source_dir, "bert_config.json")) and _tf1_checkpoint_prefix(source_dir):
        return "tf1"
    raise ValueError(
        f"{source_dir} is not a BERT model dir: expected {' + '.join(_HF_FILES)} + vocab.txt (Hugging Face) "
        f"or {' + '.join(_TF1_FILES)}/.data-* + vocab.txt (google-research/bert)"
    )


def _tf1_checkpoint_prefix(source_dir: str) -> str | None:
    # Released google-research checkpoints have no `checkpoint` index file; fine-tuned ones do.
    prefix = os.path.join(source_dir, "bert_model.ckpt")
    if os.path.isfile(prefix + ".index"):
        return prefix
    return tf.train.latest_checkpoint(source_dir) if os.path.isdir(source_dir) else None


def weights_file(source_dir: str) -> str:
    """The file holding the weights of a BERT source dir (for a TF1 checkpoint, its index)."""
    if detect_source_format(source_dir) == "hf":
        return os.path.join(source_dir, "model.safetensors")
    return _tf1_checkpoint_prefix(source_dir) + ".index"


def _vocab_path(source_dir: str) -> str:
    path = os.path.join(source_dir, "vocab.txt")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: a BERT model dir needs its WordPiece vocab.txt")
    return path


def _hf_keys(tf1_name: str) -> tuple[list[str], bool]:
    """Keys a google-research weight may have in a Hugging Face file, and whether HF stores it transposed."""
    name = tf1_name.removeprefix("bert/").replace("encoder/layer_", "encoder.layer.").replace("/", ".")
    module, leaf = name.rsplit(".", 1)
    # Old PyTorch BERT dumps name LayerNorm weight/bias gamma/beta.
    suffixes, transpose = {
        "kernel": (["weight"], True),
        "bias": (["bias"], False),
        "gamma": (["weight", "gamma"], False),
        "beta": (["bias", "beta"], False),
    }.get(leaf, ([], False))
    keys = [f"{module}.{suffix}" for suffix in suffixes] or [name + ".weight"]  # else an embedding table
    return [prefix + key for key in keys for prefix in ("", "bert.")], transpose


def load_hf_bert(source_dir: str) -> tuple[BertConfig, Weights, str, bool]:
    """Reads a Hugging Face BERT dir: config.json, model.safetensors, vocab.txt, tokenizer_config.json.

    Returns (config, weights by google-research name, vocab path, do_lower_case).
    """
    from safetensors import SafetensorError  # only this loader needs safetensors
    from safetensors.numpy import load_file

    with open(os.path.join(source_dir, "config.json"), encoding="utf-8") as f:
        raw_config = json.load(f)
    # Other architectures (RoBERTa, relative positions) load without error but compute something else.
    if raw_config.get("model_type", "bert") != "bert":
        raise ValueError(f"{source_dir}/config.json: model_type {raw_config['model_type']!r} is not 'bert'")
    if raw_config.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError(f"{source_dir}/config.json: only absolute position embeddings are supported")
    config = BertConfig.from_dict(raw_config)

    weights_path = os.path.join(source_dir, "model.safetensors")
    try:
        tensors = load_file(weights_path)
    except SafetensorError as error:  # a download cut short: its header promises more bytes than the file has
        raise ValueError(f"{weights_path} is damaged or truncated ({error}); download it again") from None
    weights = {}
    for tf1_name in weight_shapes(config):
        keys, transpose = _hf_keys(tf1_name)
        found = next((key for key in keys if key in tensors), None)
        if found is None:
            raise ValueError(f"{weights_path} has no {' or '.join(keys)}")
        value = tensors[found].astype(np.float32)
        weights[tf1_name] = value.T if transpose else value

    do_lower_case = True
    tokenizer_config = os.path.join(source_dir, "tokenizer_config.json")
    if os.path.isfile(tokenizer_config):
        with open(tokenizer_config, encoding="utf-8") as f:
            do_lower_case = bool(json.load(f).get("do_lower_case", True))
    return config, weights, _vocab_path(source_dir), do_lower_case


def load_tf1_checkpoint(
    source_dir: str, do_lower_case: bool | None = None
) -> tuple[BertConfig, Weights, str, bool]:
    """Reads a google-research/bert dir: bert_config.json, bert_model.ckpt.*, vocab.txt.

    Returns (config, weights by google-research name, vocab path, do_lower_case). Casing follows the
    google-research naming convention (a dir named "*cased*" but not "*uncased*" is cased) unless given.
    """
    config = BertConfig.from_json_file(os.path.join(source_dir, "bert_config.json"))
    prefix = _tf1_checkpoint_prefix(source_dir)
    if prefix is None:
        raise ValueError(f"{source_dir} has no TF1 checkpoint (bert_model.ckpt.index)")
    reader = tf.train.load_checkpoint(prefix)
    available = reader.get_variable_to_shape_map()
    missing = [name for name in weight_shapes(config) if name not in available]
    if missing:
        raise ValueError(f"{prefix} lacks {len(missing)} BERT variables, e.g. {missing[:3]}")
    weights = {name: reader.get_tensor(name).astype(np.float32) for name in weight_shapes(config)}
    if do_lower_case is None:
        dir_name = os.path.basename(os.path.normpath(source_dir)).lower()
        do_lower_case = not ("cased" in dir_name and "uncased" not in dir_name)
    return config, weights, _vocab_path(source_dir), do_lower_case


def export_encoder_savedmodel(
    config: BertConfig, weights: Weights, vocab_path: str, do_lower_case: bool, output_dir: str
) -> None:
    """Writes a SavedModel with the API of TF Hub's bert_en_uncased_L-12_H-768_A-12/4 to `output_dir`.

    `obj(inputs, training=False|True)` maps a dict of int32 [batch, seq] `input_word_ids`, `input_mask`,
    `input_type_ids` to `pooled_output`, `sequence_output`, `encoder_outputs` (one per layer) and `default`.
    The object also carries `vocab_file`, `do_lower_case` and `bert_config_json` for the preprocessor.
    """
    encoder = BertEncoder(config, weights)

    @tf.function
    def call(inputs, training=False):
        return encoder(inputs, training=training)

    input_spec = {key: tf.TensorSpec([None, None], tf.int32, name=key) for key in INPUT_KEYS}
    for training in (False, True):
        call.get_concrete_function(input_spec, training=training)

    # A Checkpoint (not a tf.Module) as root, because tf.Module reserves the `*variables` names as properties.
    root = tf.train.Checkpoint()
    root.encoder = encoder
    root.vocab_file = tf.saved_model.Asset(vocab_path)
    root.do_lower_case = tf.Variable(do_lower_case, trainable=False, name="do_lower_case")
    root.bert_config_json = tf.Variable(
        json.dumps(config.to_dict(), sort_keys=True), trainable=False, name="bert_config_json"
    )
    root.trainable_variables = list(encoder.weights.values())
    root.non_trainable_variables = [root.do_lower_case, root.bert_config_json]
    root.variables = root.trainable_variables + root.non_trainable_variables
    root.__call__ = call

    save_savedmodel(root, output_dir)


def write_encoder(config: BertConfig, weights: Weights, vocab_path: str, do_lower_case: bool, output_dir: str,
                  mlm_head: Weights | None = None) -> None:
    """Writes `output_dir/encoder` (export_encoder_savedmodel) and `output_dir/preprocess` (the vocab's
    tokenizer), and `output_dir/mlm_head.npz` when a masked-LM head's weights are given (see `masked_lm.py`).

    What `convert` writes from a checkpoint's weights, and `run_pretraining` from the weights it trained.
    """
    export_encoder_savedmodel(config, weights, vocab_path, do_lower_case, os.path.join(output_dir, "encoder"))
    from bert_tf.encoders.masked_lm import save_mlm_head_weights  # imports Keras

    # The pretraining head, when there is one, for further masked-LM pretraining (OUT/mlm_head.npz).
    save_mlm_head_weights(mlm_head, output_dir)

    from bert_tf.tokenization import export_preprocessor  # tensorflow_text is heavy; only needed here

    export_preprocessor(
        vocab_path,
        do_lower_case,
        os.path.join(output_dir, "preprocess"),
        default_seq_length=min(128, config.max_position_embeddings),
    )


def convert(source_dir: str, output_dir: str, do_lower_case: bool | None = None) -> None:
    """Converts a Hugging Face or google-research/bert dir into `output_dir/encoder` and `output_dir/preprocess`,
    plus `output_dir/mlm_head.npz` when the checkpoint has a masked-LM head (see `masked_lm.py`).

    `do_lower_case` overrides the casing read from the source (tokenizer_config.json or the dir name).
    """
    if detect_source_format(source_dir) == "hf":
        config, weights, vocab_path, source_lower_case = load_hf_bert(source_dir)
    else:
        config, weights, vocab_path, source_lower_case = load_tf1_checkpoint(source_dir)
    if do_lower_case is None:
        do_lower_case = source_lower_case
    from bert_tf.encoders.masked_lm import read_source_mlm_head  # imports Keras

    write_encoder(config, weights, vocab_path, do_lower_case, output_dir, read_source_mlm_head(source_dir, config))
