"""WordPiece ids and BERT packing vs Hugging Face and google-research/bert, and the exported preprocessor."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from conftest import TINY_VOCAB, read_split, run_in_process, sentiment_rows, shared_data

from bert_tf.records import read_metadata, read_texts
from bert_tf.errors import InputError
from bert_tf.tokenization import (
    BertTextTokenizer,
    export_preprocessor,
    load_vocab,
    pack_inputs,
)

tokenizers = pytest.importorskip("tokenizers")


@pytest.fixture(scope="module")
def ours(minilm_vocab) -> BertTextTokenizer:
    return BertTextTokenizer(load_vocab(minilm_vocab), lower_case=True)


@pytest.fixture(scope="module")
def hf_wordpiece(minilm_vocab):
    return tokenizers.BertWordPieceTokenizer(minilm_vocab, lowercase=True)


def read_tsv(path: str, header="infer") -> pd.DataFrame:
    return pd.read_csv(
        path, sep="\t", quoting=csv.QUOTE_NONE, encoding="utf-8-sig", header=header, dtype=str, keep_default_na=False
    )


def hf_ids(hf_wordpiece, texts: list[str]) -> list[list[int]]:
    return [encoding.ids[1:-1] for encoding in hf_wordpiece.encode_batch(texts)]  # drop [CLS] ... [SEP]


def mismatch_report(texts, got, expected, limit=5) -> str:
    bad = [(text, a, b) for text, a, b in zip(texts, got, expected) if a != b]
    lines = [f"{len(bad)} of {len(texts)} texts differ from Hugging Face:"]
    lines += [f"  {text!r}\n    ours: {a}\n    HF:   {b}" for text, a, b in bad[:limit]]
    return "\n".join(lines)


# --- Token ids vs Hugging Face, on every row of real dev sets -------------------------------------------------
DEV_TEXTS = {
    "sst2": ("sst2", "dev.tsv", "infer", ["sentence"], 872),
    "mrpc": ("mrpc", "dev.tsv", "infer", ["#1 String", "#2 String"], 408),
    "goemotions": ("goemotions", "dev.tsv", None, [0], 5426),  # no header; emoji, ZWJ, ™, ´, accents
}


@pytest.mark.parametrize("dataset", sorted(DEV_TEXTS))
def test_token_ids_match_hugging_face_on_dev_sets(dataset, ours, hf_wordpiece):
    folder, name, header, columns, rows = DEV_TEXTS[dataset]
    frame = read_tsv(shared_data(folder, name), header=header)
    assert len(frame) == rows
    texts = [text for column in columns for text in frame[column].tolist()]
    got = ours.tokenize(tf.constant(texts)).to_list()
    expected = hf_ids(hf_wordpiece, texts)
    assert got == expected, mismatch_report(texts, got, expected)


def test_goemotions_dev_holds_the_hard_characters():
    # Guards the test above: these are the characters where tensorflow-text's own normalization differs.
    text = "\n".join(read_tsv(shared_data("goemotions", "dev.tsv"), header=None)[0])
    for char in ("\u200d", "\u2122", "\u00b4", "\U0001f602", "\ufe0f", "\u00e9"):
        assert char in text, f"{char!r} is no longer in GoEmotions dev"


def test_token_ids_match_hugging_face_on_edge_cases(ours, hf_wordpiece):
    texts = [
        "Héllo WORLD!", "naïve café", "™ and µ and ﬁ", "e\u0301", "tab\there\nnewline\r\nCRLF", "soft\u00adhyphen",
        "zero\u200bwidth", "👨\u200d👩\u200d👧 family", "don't stop", "¿Qué?", "中文字符", "a\x00b\ufffdc", "   ",
        "x" * 300, "unbelievably-long,punctuation...!!!", "ＦＵＬＬＷＩＤＴＨ", "İstanbul", "ǅ Σσς",
    ]
    got = ours.tokenize(tf.constant(texts)).to_list()
    expected = hf_ids(hf_wordpiece, texts)
    assert got == expected, mismatch_report(texts, got, expected, limit=len(texts))


# --- Pair packing ---------------------------------------------------------------------------------------------
def reference_pack(tokens_a: list[int], tokens_b: list[int], seq_length: int, cls_id: int, sep_id: int):
    """google-research/bert's `_truncate_seq_pair` + convert_single_example, written independently."""
    a, b = list(tokens_a), list(tokens_b)
    while len(a) + len(b) > seq_length - 3:
        if len(a) > len(b):
            a.pop()
        else:  # ties pop from b
            b.pop()
    ids = [cls_id] + a + [sep_id] + b + [sep_id]
    types = [0] * (len(a) + 2) + [1] * (len(b) + 1)
    mask = [1] * len(ids)
    padding = seq_length - len(ids)
    return ids + [0] * padding, types + [0] * padding, mask + [0] * padding


@pytest.fixture(scope="module")
def mrpc_dev_pairs():
    frame = read_tsv(shared_data("mrpc", "dev.tsv"))
    return frame["#1 String"].tolist(), frame["#2 String"].tolist()


def pack_ours(tokenizer: BertTextTokenizer, a: list[str], b: list[str], seq_length: int) -> dict[str, np.ndarray]:
    packed = pack_inputs(
        [tokenizer.tokenize(tf.constant(a)), tokenizer.tokenize(tf.constant(b))],
        seq_length, tokenizer.cls_id, tokenizer.sep_id, tokenizer.pad_id,
    )
    return {name: value.numpy() for name, value in packed.items()}


def test_pair_packing_matches_google_research_bert_on_mrpc_dev(ours, hf_wordpiece, mrpc_dev_pairs):
    """`pack_inputs` at L=32 equals google-research/bert's truncation ("pop from the longer, ties pop b").

    This compares against the independent `reference_pack` above, fed with Hugging Face's WordPiece ids, and not
    against `BertTokenizerFast(..., truncation="longest_first")`: HF splits an odd budget the other way when the
    first segment is the shorter one (see the next test), on 183 of the 408 rows here.
    """
    a, b = mrpc_dev_pairs
    seq_length = 32
    got = pack_ours(ours, a, b, seq_length)
    tokens_a, tokens_b = hf_ids(hf_wordpiece, a), hf_ids(hf_wordpiece, b)
    truncated = sum(len(x) + len(y) > seq_length - 3 for x, y in zip(tokens_a, tokens_b))
    assert truncated > 300, "MRPC pairs at L=32 should mostly be truncated"
    bad = []
    for i, (x, y) in enumerate(zip(tokens_a, tokens_b)):
        ids, types, mask = reference_pack(x, y, seq_length, ours.cls_id, ours.sep_id)
        if (ids, types, mask) != (
            got["input_word_ids"][i].tolist(), got["input_type_ids"][i].tolist(), got["input_mask"][i].tolist()
        ):
            bad.append(f"row {i}: {a[i]!r} / {b[i]!r}\n  ours: {got['input_word_ids'][i].tolist()}\n  ref:  {ids}")
    assert not bad, f"{len(bad)} pairs differ from google-research/bert:\n" + "\n".join(bad[:5])


def test_pair_packing_vs_hugging_face_longest_first(ours, minilm_vocab, hf_wordpiece, mrpc_dev_pairs):
    """HF's longest_first equals ours except where it gives an odd budget's spare token to segment b.

    tokenizers (Rust) cuts both segments to budget//2 and gives the remainder to the longer one; BERT's
    `_truncate_seq_pair` (and RoundRobinTrimmer) end with a one token longer whenever both are cut.
    """
    transformers = pytest.importorskip("transformers")
    a, b = mrpc_dev_pairs
    seq_length = 32
    got = pack_ours(ours, a, b, seq_length)
    hf = transformers.BertTokenizerFast(minilm_vocab, do_lower_case=True)
    encoded = hf(a, b, truncation="longest_first", max_length=seq_length, padding="max_length")
    hf_input = {
        "input_word_ids": np.array(encoded["input_ids"]),
        "input_type_ids": np.array(encoded["token_type_ids"]),
        "input_mask": np.array(encoded["attention_mask"]),
    }
    tokens_a, tokens_b = hf_ids(hf_wordpiece, a), hf_ids(hf_wordpiece, b)
    budget = seq_length - 3
    same = differ = 0
    for i, (x, y) in enumerate(zip(tokens_a, tokens_b)):
        rows_equal = all((hf_input[name][i] == got[name][i]).all() for name in got)
        both_cut = min(len(x), len(y)) > budget // 2
        if not (both_cut and budget % 2 == 1 and len(x) <= len(y)):
            assert rows_equal, f"row {i} differs from HF: {a[i]!r} / {b[i]!r}"
            same += 1
            continue
        differ += 1
        # The only difference: HF keeps one token less of a and one more of b.
        ours_a = int((got["input_type_ids"][i] == 0).sum()) - 2
        hf_a = int((hf_input["input_type_ids"][i] == 0).sum()) - 2
        assert (ours_a, hf_a) == (budget // 2 + 1, budget // 2), f"row {i}"
        assert got["input_word_ids"][i][1 : 1 + hf_a].tolist() == x[:hf_a]
        assert got["input_mask"][i].sum() == hf_input["input_mask"][i].sum() == seq_length
    assert same > 100 and differ > 100, (same, differ)


@pytest.fixture(scope="module")
def tiny_tokenizer() -> BertTextTokenizer:
    return BertTextTokenizer(TINY_VOCAB, lower_case=True)


def test_pair_truncation_keeps_both_segments(tiny_tokenizer):
    t = tiny_tokenizer
    good, bad = TINY_VOCAB.index("good"), TINY_VOCAB.index("bad")
    a, b = " ".join(["good"] * 40), " ".join(["bad"] * 30)
    packed = pack_ours(t, [a, "good good", a], [b, b, "bad"], 16)
    ids, types, mask = packed["input_word_ids"], packed["input_type_ids"], packed["input_mask"]
    assert ids.shape == types.shape == mask.shape == (3, 16)
    assert all(value.dtype == np.int32 for value in packed.values())
    # Both long: budget 13 → a 7 (the longer segment gives up tokens first; ties pop b), b 6.
    assert ids[0].tolist() == [t.cls_id] + [good] * 7 + [t.sep_id] + [bad] * 6 + [t.sep_id]
    assert types[0].tolist() == [0] * 9 + [1] * 7
    assert mask[0].tolist() == [1] * 16
    # Short a stays whole; b takes the rest of the budget.
    assert ids[1].tolist() == [t.cls_id, good, good, t.sep_id] + [bad] * 11 + [t.sep_id]
    assert types[1].tolist() == [0] * 4 + [1] * 12
    # Short b stays whole, padded with 0s (type 0, mask 0) after the final [SEP].
    assert ids[2].tolist() == [t.cls_id] + [good] * 12 + [t.sep_id, bad, t.sep_id]
    assert types[2].tolist() == [0] * 14 + [1] * 2
    short = pack_ours(t, ["good"], ["bad bad"], 8)
    assert short["input_word_ids"][0].tolist() == [t.cls_id, good, t.sep_id, bad, bad, t.sep_id, 0, 0]
    assert short["input_type_ids"][0].tolist() == [0, 0, 0, 1, 1, 1, 0, 0]
    assert short["input_mask"][0].tolist() == [1, 1, 1, 1, 1, 1, 0, 0]


def test_single_segment_layout(tiny_tokenizer):
    t = tiny_tokenizer
    packed = pack_inputs([t.tokenize(tf.constant(["the movie was good !", "good " * 20]))], 8, t.cls_id, t.sep_id)
    words = [TINY_VOCAB.index(w) for w in ("the", "movie", "was", "good", "!")]
    assert packed["input_word_ids"].numpy().tolist() == [
        [t.cls_id, *words, t.sep_id, 0],
        [t.cls_id] + [TINY_VOCAB.index("good")] * 6 + [t.sep_id],
    ]
    assert packed["input_type_ids"].numpy().tolist() == [[0] * 8, [0] * 8]
    assert packed["input_mask"].numpy().tolist() == [[1] * 7 + [0], [1] * 8]


# --- Vocab checks ---------------------------------------------------------------------------------------------
def test_load_vocab_without_cls_names_the_file(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(token for token in TINY_VOCAB if token != "[CLS]") + "\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"\[CLS\]") as raised:
        load_vocab(str(path))
    assert str(path) in str(raised.value)
    assert "\n" not in str(raised.value)


def test_load_vocab_missing_file_names_it(tmp_path):
    path = str(tmp_path / "nope.txt")
    with pytest.raises(InputError, match="not found") as raised:
        load_vocab(path)
    assert path in str(raised.value)


# --- The exported preprocessor, loaded where bert_tf is not ---------------------------------------------------
FRESH_PROCESS = r"""
import json, sys
import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the ops the SavedModel uses)

request = json.load(open(sys.argv[1]))
result = {}
for name, job in request.items():
    pre = tf.saved_model.load(job["preprocessor"])
    segments = [pre.tokenize(tf.constant(texts)) for texts in job["segments"]]
    packed = pre.bert_pack_inputs(segments, seq_length=job["seq_length"])  # a Python int
    result[name] = {key: value.numpy().tolist() for key, value in packed.items()}
    if len(segments) == 1:
        default = pre(tf.constant(job["segments"][0]))  # packed at the default length, 128
        result[name]["default"] = default["input_word_ids"].numpy().tolist()
    result[name]["special"] = {k: int(v) for k, v in pre.tokenize.get_special_tokens_dict().items()}
assert not [m for m in sys.modules if m == "bert_tf" or m.startswith("bert_tf.")]
print(json.dumps(result))
"""


def test_exported_preprocessor_matches_records_in_fresh_process(tmp_path, tiny_encoder, tiny_records, minilm_vocab):
    # Single sentences: the tiny encoder's preprocess/ vs the records create_tfrecords wrote (conftest).
    single_texts = read_texts(tiny_records, "test")
    single_records = read_split(tiny_records, "test")
    single_length = read_metadata(tiny_records).max_seq_length
    assert single_texts and single_length == 16

    # Pairs: MRPC dev with the MiniLM vocab at L=32 (mostly truncated), written in this process.
    frame = read_tsv(shared_data("mrpc", "dev.tsv"))
    frame = frame.rename(columns={"#1 String": "a", "#2 String": "b", "Quality": "label"})[["a", "b", "label"]]
    frame.to_csv(tmp_path / "pairs.csv", index=False)
    records_dir = str(tmp_path / "pair_records")
    run_in_process([
        f"--train_file={tmp_path / 'pairs.csv'}", "--text_column=a", "--text_b_column=b", "--label_column=label",
        f"--vocab_file={minilm_vocab}", "--max_seq_length=32", f"--output_dir={records_dir}",
    ])
    pair_records = read_split(records_dir, "train")
    preprocess_dir = export_preprocessor(minilm_vocab, True, str(tmp_path / "minilm_preprocess"))

    request = {
        "single": {"preprocessor": os.path.join(tiny_encoder, "preprocess"), "segments": [single_texts],
                   "seq_length": single_length},
        "pair": {"preprocessor": preprocess_dir, "segments": [frame["a"].tolist(), frame["b"].tolist()],
                 "seq_length": 32},
    }
    request_file = tmp_path / "request.json"
    request_file.write_text(json.dumps(request), encoding="utf-8")
    script = tmp_path / "fresh.py"
    script.write_text(FRESH_PROCESS, encoding="utf-8")
    done = subprocess.run([sys.executable, str(script), str(request_file)], capture_output=True, text=True,
                          check=False, timeout=300, cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])

    for name, records in (("single", single_records), ("pair", pair_records)):
        got = result[name]
        assert np.array_equal(got["input_word_ids"], records["input_ids"]), name
        assert np.array_equal(got["input_type_ids"], records["segment_ids"]), name
        assert np.array_equal(got["input_mask"], records["input_mask"]), name
    assert (pair_records["segment_ids"] == 1).any(axis=1).all()  # every pair kept some of b
    default = np.array(result["single"]["default"])
    assert default.shape == (len(single_texts), 128)
    assert np.array_equal(default[:, :single_length], single_records["input_ids"])
    assert not default[:, single_length:].any()
    assert result["single"]["special"] == {
        "vocab_size": len(TINY_VOCAB), "start_of_sequence_id": 2, "end_of_segment_id": 3, "padding_id": 0,
        "mask_id": 4,
    }


def test_tiny_records_match_hugging_face(tiny_encoder, tiny_records):
    """The conftest records (tiny vocab, L=16) vs HF's WordPiece on the same texts: dev texts are regenerated."""
    hf = tokenizers.BertWordPieceTokenizer(os.path.join(tiny_encoder, "vocab.txt"), lowercase=True)
    hf.enable_truncation(max_length=16)
    hf.enable_padding(length=16, pad_id=0)
    texts = [text for text, _ in sentiment_rows(20, seed=2)]
    records = read_split(tiny_records, "dev")
    encoded = hf.encode_batch(texts)
    assert records["input_ids"].tolist() == [e.ids for e in encoded]
    assert records["input_mask"].tolist() == [e.attention_mask for e in encoded]
    assert records["segment_ids"].tolist() == [e.type_ids for e in encoded]

