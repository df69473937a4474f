"""`hf://ORG/NAME[@REVISION]` encoders: the files a BERT conversion reads, fetched with huggingface_hub.

The files land in huggingface_hub's own cache, as for any Hugging Face library: $HF_HUB_CACHE, else $HF_HOME/hub
(~/.cache/huggingface/hub); HF_HUB_OFFLINE=1 reads only that cache; HF_TOKEN or `hf auth login` give access to
private and gated models. Only `config.json` is fetched before the architecture is checked, so a model that is
not a BERT costs no weight download. Weights are read from `model.safetensors` only: a pickled `pytorch_model.bin`
is never downloaded nor loaded. Every failure is a ValueError of one line (the registry's convention).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re

from absl import logging

SCHEME = "hf://"
WEIGHTS = "model.safetensors"
TOKENIZER_CONFIG = "tokenizer_config.json"  # says whether the model is cased; optional
_REPO_ID = re.compile(r"(?:[A-Za-z0-9][\w.-]*/)?[A-Za-z0-9][\w.-]*")
_COMMIT = re.compile(r"[0-9a-f]{40}")
# Where weights are when model.safetensors is not: each with what to say about it.
_OTHER_WEIGHTS = {
    "model.safetensors.index.json": "sharded safetensors weights (model.safetensors.index.json), which bert_tf does "
                                    "not convert: merge the shards into one model.safetensors in a local directory "
                                    "and pass that directory",
    "pytorch_model.bin": "no safetensors weights, only pytorch_model.bin, a pickle that bert_tf never loads",
    "pytorch_model.bin.index.json": "no safetensors weights, only sharded pytorch_model-*.bin pickles, which bert_tf "
                                    "never loads",
    "tf_model.h5": "no safetensors weights, only tf_model.h5, which bert_tf does not convert",
}
_GET_SAFETENSORS = (
    "use a revision with model.safetensors (https://huggingface.co/spaces/safetensors/convert opens one as a pull "
    "request: hf://{repo}@refs/pr/N), or convert the weights to safetensors in a trusted environment and pass "
    "that directory"
)


@dataclasses.dataclass(frozen=True)
class HubModel:
    """A model repo on the Hugging Face Hub, at a branch, tag or commit (None: the default branch)."""

    repo_id: str
    revision: str | None = None

    def __str__(self) -> str:
        return f"{SCHEME}{self.repo_id}" + (f"@{self.revision}" if self.revision else "")

    @property
    def commit(self) -> str | None:
        """The revision if it is a full commit hash, which names the files for good."""
        return self.revision if self.revision and _COMMIT.fullmatch(self.revision) else None


def parse(handle: str) -> HubModel:
    """`hf://ORG/NAME[@REVISION]` → HubModel; ValueError when it is not of that form.

    >>> parse("hf://sentence-transformers/all-MiniLM-L6-v2@refs/pr/1")
    HubModel(repo_id='sentence-transformers/all-MiniLM-L6-v2', revision='refs/pr/1')
    """
    repo_id, at, revision = handle.removeprefix(SCHEME).partition("@")
    if not _REPO_ID.fullmatch(repo_id) or "--" in repo_id or ".." in repo_id or (at and not revision):
        raise ValueError(f"{handle!r} is not a Hugging Face model handle: expected hf://ORG/NAME or "
                         f"hf://ORG/NAME@REVISION (a branch, tag or commit)")
    return HubModel(repo_id, revision or None)


def fingerprint(repo_id: str, commit: str) -> str:
    """Identifies a conversion: a commit names the files exactly, so a new revision converts again."""
    return hashlib.sha256(f"{SCHEME}{repo_id}@{commit}".encode()).hexdigest()


def cache_name(repo_id: str, commit: str) -> str:
    """The directory name of the conversion under $BERT_TF_HOME/encoders."""
    return f"hf-{repo_id.replace('/', '--')}-{fingerprint(repo_id, commit)[:16]}"


def download(model: HubModel) -> tuple[str, str]:
    """Fetches (or finds in the cache) a BERT's files; returns (snapshot dir holding them, commit hash).

    Raises a one-line ValueError when the model cannot be had, is not a BERT or has no safetensors weights.
    """
    try:
        import huggingface_hub  # noqa: F401
    except ImportError:
        raise ImportError(f"{model} needs huggingface_hub: pip install 'huggingface_hub>=1.0,<3'") from None
    config = _fetch(model, "config.json", model.revision)
    if config is None:
        raise ValueError(f"{model} has no config.json, so it is not a Transformers model; bert_tf converts BERTs")
    directory = os.path.dirname(config)
    commit = os.path.basename(directory)
    if not _COMMIT.fullmatch(commit):
        raise ValueError(f"{model}: unexpected Hugging Face cache layout at {directory}")
    _check_architecture(model, config)
    # The same commit for every file, even if the branch moves meanwhile.
    if _fetch(model, WEIGHTS, commit) is None:
        raise ValueError(_no_safetensors(model, commit, directory))
    if _fetch(model, "vocab.txt", commit) is None:
        raise ValueError(f"{model} has no vocab.txt, the WordPiece vocabulary a BERT conversion needs")
    _fetch(model, TOKENIZER_CONFIG, commit)  # none: lower-case, as for a local Hugging Face directory
    return directory, commit


def _check_architecture(model: HubModel, config_path: str) -> None:
    try:
        with open(config_path, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError) as error:
        raise ValueError(f"{model}: cannot read its config.json ({_first_line(error)})") from None
    model_type = config.get("model_type", "bert") if isinstance(config, dict) else None
    if model_type != "bert":
        raise ValueError(
            f"{model} is not a BERT: its config.json has model_type {model_type!r}; bert_tf converts only "
            f"model_type 'bert' (for RoBERTa, DistilBERT, ... use a BERT-architecture model)"
        )


def _fetch(model: HubModel, filename: str, revision: str | None) -> str | None:
    """The cached path of `filename` at `revision` (downloaded unless offline); None if the model has no such file.

    A file missing from an offline cache is an error unless the cache records that the model lacks it: guessing
    that an absent tokenizer_config.json is absent from the model would silently convert a cased model as uncased.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    try:
        return hf_hub_download(model.repo_id, filename, revision=revision)
    except LocalEntryNotFoundError as error:
        if _known_absent(model, filename, revision):
            return None  # an earlier online look-up found no such file
        if filename == WEIGHTS and _offline():
            return None  # _no_safetensors says what the cache holds instead
        raise ValueError(_not_cached(model, filename, revision, error)) from None
    except EntryNotFoundError:  # the Hub says the commit has no such file
        return None
    except Exception as error:  # noqa: BLE001  (huggingface_hub raises HTTP, OS and validation errors)
        raise ValueError(_hub_error(model, error)) from None


def _known_absent(model: HubModel, filename: str, revision: str | None) -> bool:
    """Whether the cache records (in .no_exist/, from an earlier online look-up) that the revision lacks the file."""
    from huggingface_hub import _CACHED_NO_EXIST, try_to_load_from_cache

    return try_to_load_from_cache(model.repo_id, filename, revision=revision) is _CACHED_NO_EXIST


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _cache_dir() -> str:
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


def _not_cached(model: HubModel, filename: str, revision: str | None, error: Exception) -> str:
    first = filename == "config.json"  # the first file asked for: the model itself is missing
    what = str(model) if first else f"{filename} of {model}" + (f" at {revision}" if revision != model.revision else "")
    if _offline():
        return (f"{what} is not in the Hugging Face cache ({_cache_dir()}) and HF_HUB_OFFLINE=1 forbids downloading "
                f"it: unset HF_HUB_OFFLINE (with network access) to download it once, or set HF_HOME / HF_HUB_CACHE "
                f"to a cache that holds it")
    cause = error.__cause__ or error.__context__
    reason = f" ({type(cause).__name__}: {_first_line(cause)})" if cause else ""
    return (f"cannot reach the Hugging Face Hub{reason}, and {what} is not in its cache ({_cache_dir()}): check the "
            f"network (proxy, HF_ENDPOINT), or set HF_HUB_OFFLINE=1 with HF_HOME / HF_HUB_CACHE pointing to a cache "
            f"that holds it")


def _hub_error(model: HubModel, error: Exception) -> str:
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    if isinstance(error, GatedRepoError):
        return (f"{model} is gated: accept its conditions on https://huggingface.co/{model.repo_id}, then log in "
                f"(`hf auth login`, or set HF_TOKEN)")
    if isinstance(error, RepositoryNotFoundError):
        return (f"{model}: no such model on the Hugging Face Hub (check the name; if it is private, log in with "
                f"`hf auth login` or set HF_TOKEN)")
    if isinstance(error, RevisionNotFoundError):
        return f"{model}: the model has no revision {model.revision!r} (a branch, tag or commit hash)"
    return f"cannot download {model}: {type(error).__name__}: {_first_line(error)}"


def _no_safetensors(model: HubModel, commit: str, directory: str) -> str:
    """What to say when the commit's model.safetensors cannot be had, after looking at which files it has."""
    files, known = _repo_files(model, commit, directory)
    known = known or _known_absent(model, WEIGHTS, commit)
    how = _GET_SAFETENSORS.format(repo=model.repo_id)
    found = next((file for file in _OTHER_WEIGHTS if file in files), None)
    if not known and _offline():
        held = f" (the cache holds only {found})" if found else ""
        return (f"{model}: {WEIGHTS} is not in the Hugging Face cache{held} and HF_HUB_OFFLINE=1 forbids looking for "
                f"it: unset HF_HUB_OFFLINE to download it if the model has one; if it has none, {how}")
    if found is None:
        return f"{model} has no safetensors weights ({WEIGHTS}); {how}"
    if found.startswith("model.safetensors"):
        return f"{model} has {_OTHER_WEIGHTS[found]}"
    return f"{model} has {_OTHER_WEIGHTS[found]}; {how}"


def _repo_files(model: HubModel, commit: str, directory: str) -> tuple[set[str], bool]:
    """(the commit's file names, whether that is the Hub's full list) – offline, only what the cache holds."""
    if not _offline():
        from huggingface_hub import HfApi

        try:
            return set(HfApi().list_repo_files(model.repo_id, revision=commit)), True
        except Exception as error:  # noqa: BLE001  (unreachable now: fall back to the cache)
            logging.info("Cannot list the files of %s: %s", model, _first_line(error))
    try:
        return set(os.listdir(directory)), False
    except OSError:
        return set(), False


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
