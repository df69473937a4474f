"""create_pretraining_data: masking statistics against BERT's rule, whole-word masking, chunks vs a reference
tokenizer, duplicates, seeds, held-out documents, the input formats and the CLI on bad input."""

from __future__ import annotations

import collections
import gzip
import json
import os
import random
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from conftest import TINY_VOCAB, TINY_WORDS, assert_one_error_line, write_csv

from bert_tf.errors import InputError
from bert_tf.pretraining_data import (
    PretrainingSettings,
    create_pretraining_data,
    feature_spec,
    held_out_documents,
    read_documents,
    read_metadata,
)
from bert_tf.tokenization import load_vocab, vocab_digest

tokenizers = pytest.importorskip("tokenizers")

CLS, SEP, MASK = (TINY_VOCAB.index(token) for token in ("[CLS]", "[SEP]", "[MASK]"))
SPECIAL_IDS = set(range(5))
WORDS = [word for word in TINY_WORDS if not word.startswith("##")]
# Words that WordPiece cuts into a piece and a '##' piece with TINY_VOCAB.
SPLIT_WORDS = ["films", "plots", "goodly", "badly", "movies", "finely"]


def random_documents(count: int, min_words: int, max_words: int, seed: int = 0, split_share: float = 0.0) -> list[str]:
    """Random documents of TINY_WORDS (all distinct, so every chunk is too); some words made of 2 pieces."""
    rng = random.Random(seed)
    documents = []
    for _ in range(count):
        words = [rng.choice(SPLIT_WORDS) if rng.random() < split_share else rng.choice(WORDS)
                 for _ in range(rng.randint(min_words, max_words))]
        documents.append(" ".join(words))
    return documents


def make(tmp_path, texts: list[str], vocab_file: str, name: str = "out", **settings) -> tuple[dict, dict]:
    """Writes texts (a .txt, one per line) as pretraining records in process; returns (metadata, records)."""
    source = tmp_path / f"{name}.txt"
    source.write_text("\n".join(texts) + "\n", encoding="utf-8")
    out = str(tmp_path / name)
    create_pretraining_data(read_documents([str(source)]), out, PretrainingSettings(**settings), vocab_file=vocab_file)
    with open(os.path.join(out, "metadata.json"), encoding="utf-8") as f:
        metadata = json.load(f)
    return metadata, {split: read_records(out, split, metadata) for split in ("train", "eval")}


def read_records(directory: str, split: str, metadata: dict) -> dict[str, np.ndarray]:
    spec = feature_spec(metadata["max_seq_length"], metadata["max_predictions_per_seq"])
    batches = [tf.io.parse_example(batch, spec)
               for batch in tf.data.TFRecordDataset(os.path.join(directory, f"{split}.tf_record")).batch(4096)]
    if not batches:
        return {name: np.zeros([0, 1]) for name in spec}
    return {name: np.concatenate([batch[name].numpy() for batch in batches]) for name in spec}


def originals(records: dict[str, np.ndarray], cls_sep: tuple[int, int] = (CLS, SEP)) -> list[tuple[int, ...]]:
    """Each record's word-pieces between [CLS] and [SEP] before masking: masked positions get masked_lm_ids back."""
    sequences = []
    for ids, mask, positions, labels, weights in zip(records["input_ids"], records["input_mask"],
                                                     records["masked_lm_positions"], records["masked_lm_ids"],
                                                     records["masked_lm_weights"]):
        ids = ids.copy()
        real = weights > 0
        ids[positions[real]] = labels[real]
        length = int(mask.sum())
        assert (ids[0], ids[length - 1]) == cls_sep
        sequences.append(tuple(int(i) for i in ids[1: length - 1]))
    return sequences


def reference_chunks(vocab_file: str, texts: list[str], chunk_length: int) -> list[list[tuple[int, ...]]]:
    """Hugging Face's WordPiece ids of each text cut into chunks of chunk_length (the last one shorter)."""
    hf = tokenizers.BertWordPieceTokenizer(vocab_file, lowercase=True)
    chunks = []
    for encoding in hf.encode_batch(texts):
        ids = encoding.ids[1:-1]
        chunks.append([tuple(ids[i: i + chunk_length]) for i in range(0, len(ids), chunk_length)])
    return chunks


def expected_predictions(num_tokens: int, masked_lm_prob: float, max_predictions: int) -> int:
    return min(max_predictions, max(1, round(num_tokens * masked_lm_prob)))


# --- Masking ---------------------------------------------------------------------------------------------------
def test_masking_follows_berts_rule(tmp_path, tiny_vocab):
    """≥ 10k tokens: 15% of the real tokens chosen (as round(n × 0.15) per record), never [CLS]/[SEP]/padding;
    80/10/10 [MASK]/random/unchanged; masked_lm_ids are the originals (the reference tokenizer's chunks)."""
    texts = random_documents(40, 150, 400, seed=1)
    metadata, splits = make(tmp_path, texts, tiny_vocab, max_seq_length=64, max_predictions_per_seq=12,
                            dupe_factor=2, eval_fraction=0)
    records = splits["train"]
    expected = collections.Counter(chunk for chunks in reference_chunks(tiny_vocab, texts, 62) for chunk in chunks)
    assert collections.Counter(originals(records)) == collections.Counter({c: 2 * n for c, n in expected.items()})
    chosen = kinds = real_tokens = 0
    counts = collections.Counter()
    for record, sequence in zip(zip(*(records[name] for name in sorted(records))), originals(records)):
        ids, mask, labels, positions, weights, segments = record
        length = int(mask.sum())
        assert mask[:length].all() and not mask[length:].any() and not ids[length:].any() and not segments.any()
        n = expected_predictions(length - 2, 0.15, 12)
        assert weights.tolist() == [1.0] * n + [0.0] * (12 - n)
        assert not positions[n:].any() and not labels[n:].any()
        assert list(positions[:n]) == sorted(set(positions[:n])) and 1 <= positions[0] and positions[n - 1] <= length - 2
        assert [sequence[p - 1] for p in positions[:n]] == list(labels[:n])
        for position, original in zip(positions[:n], labels[:n]):
            seen = ids[position]
            kind = "mask" if seen == MASK else "same" if seen == original else "random"
            assert kind != "random" or seen not in SPECIAL_IDS
            counts[kind] += 1
        chosen, real_tokens, kinds = chosen + n, real_tokens + length - 2, kinds + 1
    assert real_tokens >= 10_000 and metadata["train_data_size"] == kinds
    assert abs(chosen / real_tokens - 0.15) <= 0.01, chosen / real_tokens
    shares = {kind: count / chosen for kind, count in counts.items()}
    assert abs(shares["mask"] - 0.8) <= 0.03 and abs(shares["random"] - 0.1) <= 0.03, shares
    assert abs(shares["same"] - 0.1) <= 0.03, shares


def words_of(sequence: tuple[int, ...]) -> list[list[int]]:
    """Positions (1-based, after [CLS]) of each word: a piece and the '##' pieces after it."""
    words = []
    for position, token in enumerate(sequence, start=1):
        if TINY_VOCAB[token].startswith("##") and position > 1:
            words[-1].append(position)
        else:
            words.append([position])
    return words


@pytest.mark.parametrize("whole_word_masking", [True, False])
def test_whole_word_masking_masks_every_piece_of_a_word(tmp_path, tiny_vocab, whole_word_masking):
    texts = random_documents(30, 20, 80, seed=2, split_share=0.4)
    _, splits = make(tmp_path, texts, tiny_vocab, max_seq_length=32, max_predictions_per_seq=6, dupe_factor=3,
                     eval_fraction=0, whole_word_masking=whole_word_masking)
    records = splits["train"]
    split_words_masked = partly_masked = 0
    for sequence, positions, weights in zip(originals(records), records["masked_lm_positions"],
                                            records["masked_lm_weights"]):
        chosen = set(positions[weights > 0].tolist())
        words = words_of(sequence)
        masked_words = [word for word in words if any(position in chosen for position in word)]
        budget = expected_predictions(len(sequence), 0.15, 6)
        # Whole words while they fit the budget; one word past it only when no word fits.
        assert 1 <= len(chosen) <= budget or (whole_word_masking and len(masked_words) == 1
                                               and min(map(len, words)) > budget and len(chosen) <= 6)
        for word in words:
            masked = [position in chosen for position in word]
            split_words_masked += len(word) > 1 and all(masked)
            partly_masked += any(masked) and not all(masked)
    if whole_word_masking:
        assert partly_masked == 0 and split_words_masked > 20
    else:
        assert partly_masked > 20  # token-level masking cuts words: the check above can fail


# --- Chunks, duplicates, seeds, held-out documents -------------------------------------------------------------
def test_long_documents_are_cut_into_chunks_covering_them(tmp_path, minilm_vocab):
    """Real text and vocab: every document's chunks, in order, are Hugging Face's WordPiece ids of it."""
    texts = [
        "BERT reads at most max_seq_length tokens, so a longer document is cut into chunks. " * 12,
        "Short one.",
        "Café owners in Zürich said the naïve résumé was «remarkable» — twice! " * 5,
        "x " * 126,  # exactly one full chunk
        "x " * 127,  # one more token: a second chunk of one token
    ]
    metadata, splits = make(tmp_path, texts, minilm_vocab, max_seq_length=128, dupe_factor=1, eval_fraction=0)
    reference = reference_chunks(minilm_vocab, texts, 126)
    assert [len(chunks) for chunks in reference][3:] == [1, 2]
    vocab = load_vocab(minilm_vocab)
    cls_sep = (vocab.index("[CLS]"), vocab.index("[SEP]"))
    assert collections.Counter(originals(splits["train"], cls_sep)) == collections.Counter(
        chunk for chunks in reference for chunk in chunks)
    assert metadata["chunks"] == {"train": sum(map(len, reference)), "eval": 0}
    assert metadata["tokens"]["train"] == sum(len(chunk) for chunks in reference for chunk in chunks)
    assert metadata["documents"] == {"train": 5, "eval": 0} and metadata["train_data_size"] == metadata["chunks"]["train"]
    assert metadata["vocab_sha256"] == vocab_digest(vocab)


def test_dupes_are_masked_differently_and_the_seed_repeats_them(tmp_path, tiny_vocab):
    texts = random_documents(12, 60, 200, seed=3)
    settings = {"max_seq_length": 64, "dupe_factor": 4, "eval_fraction": 0.2}
    metadata, splits = make(tmp_path, texts, tiny_vocab, "a", **settings)
    groups = collections.defaultdict(list)
    for sequence, positions in zip(originals(splits["train"]), splits["train"]["masked_lm_positions"]):
        groups[sequence].append(tuple(positions))
    assert {len(masks) for masks in groups.values()} == {4} and metadata["train_data_size"] == 4 * len(groups)
    long_chunks = [masks for sequence, masks in groups.items() if len(sequence) >= 40]
    assert long_chunks and all(len(set(masks)) == 4 for masks in long_chunks)
    make(tmp_path, texts, tiny_vocab, "b", **settings)
    make(tmp_path, texts, tiny_vocab, "c", **settings, random_seed=7)
    for split in ("train", "eval"):
        same, other = ((tmp_path / name / f"{split}.tf_record").read_bytes() for name in ("b", "c"))
        assert (tmp_path / "a" / f"{split}.tf_record").read_bytes() == same != other


def test_documents_not_chunks_are_held_out(tmp_path, tiny_vocab):
    texts = random_documents(40, 40, 120, seed=4)
    metadata, splits = make(tmp_path, texts, tiny_vocab, max_seq_length=32, dupe_factor=2, eval_fraction=0.1)
    reference = reference_chunks(tiny_vocab, texts, 30)
    train, held = collections.Counter(originals(splits["train"])), collections.Counter(originals(splits["eval"]))
    in_eval = [all(held[chunk] == 1 and not train[chunk] for chunk in chunks) for chunks in reference]
    in_train = [all(train[chunk] == 2 and not held[chunk] for chunk in chunks) for chunks in reference]
    assert all(a != b for a, b in zip(in_eval, in_train))  # each document wholly in one split
    assert sum(in_eval) == 4 == metadata["documents"]["eval"] and metadata["documents"]["train"] == 36
    assert metadata["eval_data_size"] == metadata["chunks"]["eval"] == sum(len(reference[i]) for i, e in enumerate(in_eval) if e)
    assert read_metadata(str(tmp_path / "out")).settings["eval_fraction"] == 0.1


def test_held_out_share_cap_and_edges():
    assert held_out_documents(1000, 0.01, 10_000, 1).sum() == 10
    assert held_out_documents(1000, 0.5, 30, 1).sum() == 30
    assert held_out_documents(50, 0.001, 100, 1).sum() == 1  # at least one
    assert held_out_documents(1, 0.5, 100, 1).sum() == 0  # the only document trains
    assert held_out_documents(100, 0.0, 100, 1).sum() == 0
    assert (held_out_documents(100, 0.1, 100, 5) == held_out_documents(100, 0.1, 100, 5)).all()
    assert (held_out_documents(100, 0.1, 100, 5) != held_out_documents(100, 0.1, 100, 6)).any()


# --- Input formats ---------------------------------------------------------------------------------------------
def test_text_files_one_document_per_line_or_blank_line_separated(tmp_path):
    lines = tmp_path / "lines.txt"
    lines.write_text("\n\nthe film was good\r\nthe plot was bad\n  \n", encoding="utf-8")
    paragraphs = tmp_path / "paragraphs.txt.gz"
    paragraphs.write_bytes(gzip.compress(b"first sentence.\nsecond sentence.\n\n\n \nanother document.\n"))
    documents = read_documents([str(lines), str(paragraphs)])
    assert documents.texts == ["the film was good", "the plot was bad", "first sentence.\nsecond sentence.",
                               "another document."]
    assert [(s["layout"], s["documents"]) for s in documents.sources] == [("lines", 2), ("paragraphs", 2)]


def test_tables_text_column_default_and_labels_ignored(tmp_path):
    a = write_csv(str(tmp_path / "a.csv"), [("1", "the film was very good", "pos")], ("id", "text", "label"))
    b = write_csv(str(tmp_path / "b.csv"), [("a long sentence of words", "pos")], ("sentence", "label"))
    c = write_csv(str(tmp_path / "c.csv"), [("the film", "the plot")], ("text_a", "text_b"))
    documents = read_documents([a, b])
    assert documents.texts == ["the film was very good", "a long sentence of words"]
    assert [s["text_column"] for s in documents.sources] == ["text", "sentence"]
    assert read_documents([c], "text_b").texts == ["the plot"]
    with pytest.raises(InputError, match="cannot tell which column holds the text; name it with --text_column"):
        read_documents([c])


# --- The command line ------------------------------------------------------------------------------------------
def run_cli(*flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bert_tf.create_pretraining_data", *flags], check=False,
                          capture_output=True, text=True, timeout=300)


def test_cli_writes_what_the_library_writes(tmp_path, tiny_vocab):
    texts = random_documents(20, 10, 60, seed=5, split_share=0.2)
    make(tmp_path, texts, tiny_vocab, "lib", max_seq_length=24, max_predictions_per_seq=4, masked_lm_prob=0.2,
         dupe_factor=2, random_seed=3, whole_word_masking=True, eval_fraction=0.1)
    out = tmp_path / "cli"
    done = run_cli(f"--input_file={tmp_path / 'lib.txt'}", f"--vocab_file={tiny_vocab}", "--max_seq_length=24",
                   "--max_predictions_per_seq=4", "--masked_lm_prob=0.2", "--dupe_factor=2", "--random_seed=3",
                   "--whole_word_masking", "--eval_fraction=0.1", f"--output_dir={out}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(os.listdir(out)) == ["eval.tf_record", "metadata.json", "train.tf_record"]
    for name in ("train.tf_record", "eval.tf_record"):
        assert (out / name).read_bytes() == (tmp_path / "lib" / name).read_bytes()
    metadata = json.loads((out / "metadata.json").read_text())
    assert {key: metadata[key] for key in ("max_seq_length", "max_predictions_per_seq", "masked_lm_prob", "dupe_factor",
                                           "random_seed", "whole_word_masking", "do_lower_case", "objective")} == {
        "max_seq_length": 24, "max_predictions_per_seq": 4, "masked_lm_prob": 0.2, "dupe_factor": 2,
        "random_seed": 3, "whole_word_masking": True, "do_lower_case": True, "objective": "masked_lm"}
    assert f"Wrote {metadata['train_data_size']} train examples" in done.stdout


OK_TXT = "the film was good\nthe plot was bad\n"
BAD_INPUTS = {
    "missing text column": ({"t.csv": "text,label\ngood,pos\n"}, ["--input_file={tmp}/t.csv", "--text_column=body"],
                            ["t.csv", "no column 'body'"]),
    "no obvious text column": ({"t.csv": "a,b\ngood film,bad plot\n"}, ["--input_file={tmp}/t.csv"],
                               ["--text_column", "t.csv", "cannot tell which column"]),
    "empty text cell": ({"t.csv": "text,label\ngood,pos\n,neg\n"}, ["--input_file={tmp}/t.csv"], ["t.csv", "row 3", "empty text"]),
    "empty txt": ({"t.txt": "\n \n"}, ["--input_file={tmp}/t.txt"], ["t.txt", "file is empty"]),
    "empty csv": ({"t.csv": ""}, ["--input_file={tmp}/t.csv"], ["t.csv", "file is empty"]),
    "not UTF-8": ({"t.txt": "good\ncafé\n".encode("latin-1")}, ["--input_file={tmp}/t.txt"],
                  ["t.txt", "row 2", "not UTF-8"]),
    "missing file": ({}, ["--input_file={tmp}/nope.txt"], ["nope.txt", "file not found"]),
    "unknown format": ({"t.md": OK_TXT}, ["--input_file={tmp}/t.md"], ["t.md", "unknown input format"]),
    "no input file": ({}, [], ["--input_file", "required"]),
    "masked_lm_prob 0": ({"t.txt": OK_TXT}, ["--input_file={tmp}/t.txt", "--masked_lm_prob=0"],
                         ["--masked_lm_prob", "out of range"]),
    "masked_lm_prob 1": ({"t.txt": OK_TXT}, ["--input_file={tmp}/t.txt", "--masked_lm_prob=1"],
                         ["--masked_lm_prob", "out of range"]),
    "max_predictions_per_seq 0": ({"t.txt": OK_TXT}, ["--input_file={tmp}/t.txt", "--max_predictions_per_seq=0"],
                                  ["--max_predictions_per_seq", "out of range"]),
    "dupe_factor 0": ({"t.txt": OK_TXT}, ["--input_file={tmp}/t.txt", "--dupe_factor=0"], ["--dupe_factor"]),
    "eval_fraction 1": ({"t.txt": OK_TXT}, ["--input_file={tmp}/t.txt", "--eval_fraction=1"], ["--eval_fraction"]),
    "max_seq_length 2": ({"t.txt": OK_TXT}, ["--input_file={tmp}/t.txt", "--max_seq_length=2"], ["--max_seq_length"]),
    "max_seq_length past the positions": ({"t.txt": OK_TXT}, ["--input_file={tmp}/t.txt", "--max_seq_length=10000"],
                                          ["--max_seq_length", "10000 is out of range"]),
    "stray argument": ({"t.txt": OK_TXT}, ["--input_file={tmp}/t.txt", "extra"], ["unexpected argument 'extra'"]),
    "not a number": ({"t.txt": OK_TXT}, ["--input_file={tmp}/t.txt", "--dupe_factor=two"], ["dupe_factor", "two"]),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_cli_bad_input_is_one_error_line(tmp_path, tiny_vocab, case):
    files, flags, expected = BAD_INPUTS[case]
    for name, data in files.items():
        (tmp_path / name).write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    out = tmp_path / "out"
    done = run_cli(*(flag.format(tmp=tmp_path) for flag in flags), f"--vocab_file={tiny_vocab}", f"--output_dir={out}")
    assert_one_error_line(done, *expected)
    assert not out.exists() or os.listdir(out) == []
