"""Fixed feature vectors of texts from an encoder's layers (what `python -m bert_tf.extract_features` writes)."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from bert_tf.encoders.loading import encoder_info, load_savedmodel
from bert_tf.errors import InputError, stops_held
from bert_tf.model import pool
from bert_tf.progress import Progress
from bert_tf.tokenization import BertTextTokenizer, load_vocab, pack_inputs


def load_feature_encoder(handle: str, vocab_file: str | None, do_lower_case: bool | None, max_seq_length: int
                         ) -> tuple[tf.Module, BertTextTokenizer, int]:
    """The encoder SavedModel behind `handle`, its tokenizer (the encoder's vocab and casing unless given), and
    its number of layers; refuses a max_seq_length beyond the encoder's position embeddings."""
    info = encoder_info(handle)
    if not 2 < max_seq_length <= info.max_position_embeddings:
        raise InputError(f"{max_seq_length} is out of range", flag="max_seq_length",
                         hint=f"the encoder has {info.max_position_embeddings} positions: use 3..{info.max_position_embeddings}")
    encoder = load_savedmodel(info.handles.encoder)
    num_layers = len(encoder.__call__.concrete_functions[0].structured_outputs["encoder_outputs"])
    lower = info.do_lower_case if do_lower_case is None else do_lower_case
    return encoder, BertTextTokenizer(load_vocab(vocab_file or info.vocab_file), lower), num_layers


def extract(texts: list[str], encoder, tokenizer: BertTextTokenizer, pooling: str, layers: list[int],
            max_seq_length: int, batch_size: int) -> np.ndarray:
    """[texts, dims] float32 features: the concatenation over `layers` of each one's `pooling` (or the pooler's
    output for pooling "pooled")."""

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def features_of(batch):
        inputs = pack_inputs([tokenizer.tokenize(batch)], max_seq_length, tokenizer.cls_id, tokenizer.sep_id,
                             tokenizer.pad_id)
        outputs = encoder(inputs, training=False)
        if pooling == "pooled":
            return outputs["pooled_output"]
        encoder_outputs = outputs["encoder_outputs"]
        return tf.concat([pool({"sequence_output": encoder_outputs[i]}, inputs["input_mask"], pooling) for i in layers],
                         axis=-1)

    vectors = []
    with Progress(len(texts), "texts") as progress:
        for start in range(0, len(texts), batch_size):
            batch = texts[start:start + batch_size]
            with stops_held():
                vectors.append(features_of(tf.constant(batch)).numpy())
            progress.update(len(batch))
    return np.concatenate(vectors).astype(np.float32)
