"""Loading TF Hub encoders and preprocessors, and reading what bert_tf needs to know about them."""

from __future__ import annotations

import dataclasses
import json

import tensorflow as tf

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
    encoder = load_savedmodel(handles.encoder)
    if not hasattr(encoder, "vocab_file") or not hasattr(encoder, "do_lower_case"):
        raise InputError(
            f"{handles.encoder} has no vocab_file/do_lower_case", flag="encoder",
            hint="pass --vocab_file and --do_lower_case, or use a TF Hub BERT encoder",
        )
    max_positions = DEFAULT_MAX_POSITIONS
    if hasattr(encoder, "bert_config_json"):
        config = json.loads(encoder.bert_config_json.numpy().decode("utf-8"))
        max_positions = int(config.get("max_position_embeddings", DEFAULT_MAX_POSITIONS))
    vocab_file = encoder.vocab_file.asset_path.numpy().decode("utf-8")
    return EncoderInfo(handles, vocab_file, bool(encoder.do_lower_case.numpy()), max_positions)


def variable_name(variable: tf.Variable) -> str:
    """A Keras-legal name for a restored variable: Keras rejects '/' and ':' ('bert/.../kernel:0')."""
    return variable.name.split(":")[0].replace("/", "_")
