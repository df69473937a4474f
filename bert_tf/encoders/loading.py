"""Loading TF Hub encoders and preprocessors, and reading what bert_tf needs to know about them."""

from __future__ import annotations

import dataclasses
import json
import os

import tensorflow as tf
from google.protobuf.message import DecodeError
from tensorflow.core.protobuf import saved_model_pb2

from bert_tf.encoders.registry import EncoderHandles, resolve_encoder
from bert_tf.errors import InputError

# TF Hub's BERTs do not record their number of positions; every published one has 512.
DEFAULT_MAX_POSITIONS = 512


def resolve(handle: str) -> EncoderHandles:
    try:
        return resolve_encoder(handle)
    except (ValueError, FileNotFoundError) as error:
        raise InputError(str(error), flag="encoder") from None
    except ImportError as error:
        raise InputError(str(error), flag="encoder") from None


def load_savedmodel(handle: str):
    """hub.load with one clear line when the handle cannot be loaded (offline, a typo, not a SavedModel)."""
    import tensorflow_hub as hub
    import tensorflow_text  # noqa: F401  (registers the ops preprocessors use)

    try:
        return hub.load(handle)
    except Exception as error:  # tensorflow_hub raises IOError, ValueError, tf.errors.* or urllib errors
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        hint = "a URL needs network access; offline, use --encoder=default or a local directory"
        raise InputError(f"cannot load {handle}: {message}", flag="encoder", hint=hint) from None


@dataclasses.dataclass(frozen=True)
class EncoderInfo:
    handles: EncoderHandles
    vocab_file: str
    do_lower_case: bool
    max_position_embeddings: int


def encoder_info(handle: str) -> EncoderInfo:
    """The vocab, casing and number of positions of an encoder, from the assets TF Hub BERTs carry."""
    handles = resolve(handle)
    info = _read_root_attributes(handles)
    if info is not None:
        return info
    encoder = load_savedmodel(handles.encoder)
    if not hasattr(encoder, "vocab_file") or not hasattr(encoder, "do_lower_case"):
        raise InputError(
            f"{handles.encoder} has no vocab_file/do_lower_case", flag="encoder",
            hint="pass --vocab_file and --do_lower_case, or use a TF Hub BERT encoder",
        )
    max_positions = DEFAULT_MAX_POSITIONS
    if hasattr(encoder, "bert_config_json"):
        max_positions = _max_positions(encoder.bert_config_json.numpy())
    vocab_file = encoder.vocab_file.asset_path.numpy().decode("utf-8")
    return EncoderInfo(handles, vocab_file, bool(encoder.do_lower_case.numpy()), max_positions)


def _max_positions(bert_config_json: bytes) -> int:
    return int(json.loads(bert_config_json.decode("utf-8")).get("max_position_embeddings", DEFAULT_MAX_POSITIONS))


def _read_root_attributes(handles: EncoderHandles) -> EncoderInfo | None:
    """encoder_info read from a SavedModel directory's files, without restoring the model.

    hub.load restores every weight and traced function (seconds for a BERT) where only three attributes of the
    root object are needed: the vocab asset's file name is in saved_model.pb, do_lower_case and
    bert_config_json are in the variables checkpoint. None when the handle is not a directory (a URL: hub.load
    downloads it) or its root lacks them (the caller's hub.load path then says so in one line).
    """
    directory = handles.encoder
    try:
        if not tf.io.gfile.isdir(directory):
            return None
        with tf.io.gfile.GFile(os.path.join(directory, "saved_model.pb"), "rb") as f:
            saved_model = saved_model_pb2.SavedModel.FromString(f.read())
        meta_graph = saved_model.meta_graphs[0]
        nodes = meta_graph.object_graph_def.nodes
        root = {child.local_name: nodes[child.node_id] for child in nodes[0].children}
        if root.get("vocab_file") is None or root["vocab_file"].WhichOneof("kind") != "asset" or "do_lower_case" not in root:
            return None
        filename = meta_graph.asset_file_def[root["vocab_file"].asset.asset_file_def_index].filename
        checkpoint = tf.train.load_checkpoint(os.path.join(directory, "variables", "variables"))
        do_lower_case = bool(checkpoint.get_tensor("do_lower_case/.ATTRIBUTES/VARIABLE_VALUE"))
        config_key = "bert_config_json/.ATTRIBUTES/VARIABLE_VALUE"
        max_positions = (_max_positions(checkpoint.get_tensor(config_key)) if checkpoint.has_tensor(config_key)
                         else DEFAULT_MAX_POSITIONS)
    except (tf.errors.OpError, OSError, ValueError, IndexError, DecodeError):
        return None
    return EncoderInfo(handles, os.path.join(directory, "assets", filename), do_lower_case, max_positions)


def variable_name(variable: tf.Variable) -> str:
    """A Keras-legal name for a restored variable: Keras rejects '/' and ':' ('bert/.../kernel:0')."""
    return variable.name.split(":")[0].replace("/", "_")
