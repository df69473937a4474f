"""WordPiece tokenization and BERT input packing, in-graph with tensorflow-text.

The same code runs in `create_tfrecords`, inside the exported preprocessor SavedModel and inside the
exported classifier, so the token ids a model was trained on are the ids it sees when serving.
"""

from __future__ import annotations

import hashlib

import tensorflow as tf
import tensorflow_text as text

from bert_tf.errors import InputError
from bert_tf.files import save_savedmodel

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")

# Hugging Face's BertNormalizer drops NUL, U+FFFD and control/format characters (zero-width joiners in emoji,
# soft hyphens...) but keeps tab, newline and carriage return, which are whitespace.
_CONTROL_CHARACTERS = r"[\x00-\x08\x0B\x0C\x0E-\x1F\x7F-\x9F\p{Cf}\p{Co}\x{FFFD}]"


def load_vocab(vocab_file: str) -> list[str]:
    """Reads a WordPiece vocab (one token per line) and checks that BERT's special tokens are in it."""
    try:
        with tf.io.gfile.GFile(vocab_file, "r") as f:
            vocab = [line.rstrip("\r\n") for line in f]
    except (tf.errors.NotFoundError, FileNotFoundError):
        raise InputError("vocab file not found", file=vocab_file) from None
    except UnicodeDecodeError:
        raise InputError("vocab file is not UTF-8 text", file=vocab_file) from None
    missing = [token for token in SPECIAL_TOKENS if token not in vocab]
    if missing:
        raise InputError(
            f"vocab lacks the special tokens {', '.join(missing)}",
            file=vocab_file,
            hint="use the vocab.txt that came with the encoder",
        )
    return vocab


def vocab_digest(vocab: list[str]) -> str:
    """A checksum of the vocab, stored with the records so a model is never fed ids of another vocab."""
    return hashlib.sha256("\n".join(vocab).encode("utf-8")).hexdigest()


class BertTextTokenizer(tf.Module):
    """Text → WordPiece ids, matching Hugging Face's BertTokenizer (BasicTokenizer + WordPiece) id for id.

    tensorflow-text's own lower-casing is NFKC case folding, which maps "™" to "tm" and "µ" to "μ" where
    BERT's reference tokenizer keeps them (and so yields other ids). So we normalize as BERT does: drop
    control characters, then (uncased models only) NFD, strip accents, lower-case; and give FastBertTokenizer
    the already-normalized text.

    >>> tokenizer = BertTextTokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world", "!"], True)
    >>> tokenizer.tokenize(tf.constant(["Héllo WORLD!"])).to_list()
    [[5, 6, 7]]
    """

    def __init__(self, vocab: list[str], lower_case: bool, name: str | None = None):
        super().__init__(name=name)
        self.vocab_size = len(vocab)
        self.lower_case = lower_case
        self.cls_id = vocab.index("[CLS]")
        self.sep_id = vocab.index("[SEP]")
        self.pad_id = vocab.index("[PAD]")
        self.mask_id = vocab.index("[MASK]")
        self._wordpiece = text.FastBertTokenizer(
            vocab=vocab,
            token_out_type=tf.int32,
            unknown_token="[UNK]",
            lower_case_nfd_strip_accents=False,
        )

    def normalize(self, texts: tf.Tensor) -> tf.Tensor:
        texts = tf.strings.regex_replace(texts, _CONTROL_CHARACTERS, "")
        if self.lower_case:
            texts = text.normalize_utf8(texts, "NFD")
            texts = tf.strings.regex_replace(texts, r"\p{Mn}", "")
            texts = tf.strings.lower(texts, encoding="utf-8")
        return texts

    def tokenize(self, texts: tf.Tensor) -> tf.RaggedTensor:
        """[batch] strings → [batch, (tokens)] int32 WordPiece ids."""
        return self._wordpiece.tokenize(self.normalize(texts))


def num_special_tokens(num_segments: int) -> int:
    # [CLS] a [SEP] for one segment, [CLS] a [SEP] b [SEP] for two.
    return 1 + num_segments


# Which tokens a text longer than its budget keeps (create_tfrecords --long_document, the export's packing).
TRUNCATIONS = ("truncate", "tail", "head_tail")


def default_head_tokens(budget: int | tf.Tensor) -> int | tf.Tensor:
    """head_tail's head when --head_tokens is not given: a quarter of the budget, rounded down.

    Sun et al. (2019, "How to Fine-Tune BERT for Text Classification?") found 128 head + 382 tail tokens of 510
    best on IMDb; 510 // 4 = 127 (+ 383 tail) is that quarter rounded down.
    """
    return budget // 4


def trim_segments(segments: list[tf.RaggedTensor], budget: int | tf.Tensor, truncation: str = "truncate",
                  head_tokens: int | None = None) -> list[tf.RaggedTensor]:
    """Cuts [batch, (tokens)] segments to `budget` tokens per row in all, in-graph (no loop over rows).

    RoundRobinTrimmer decides how many tokens each segment keeps (a pair loses from its longer segment first);
    `truncation` decides which ones, in each segment that must lose some:
      truncate   its first tokens (google-research/bert);
      tail       its last tokens;
      head_tail  its first and last tokens: of a segment keeping k tokens, the first k * head_tokens // budget
                 and the last others. A single text keeps k = budget, so exactly head_tokens from its start
                 (default budget // 4); the segments of a pair keep the same share of what each keeps.
    A segment that fits is kept whole whatever the truncation.

    >>> tokens = tf.ragged.constant([[1, 2, 3, 4, 5, 6, 7, 8, 9], [1, 2, 3]])
    >>> [trim_segments([tokens], 5, mode, 2)[0].to_list() for mode in TRUNCATIONS]
    [[[1, 2, 3, 4, 5], [1, 2, 3]], [[5, 6, 7, 8, 9], [1, 2, 3]], [[1, 2, 7, 8, 9], [1, 2, 3]]]
    """
    if truncation not in TRUNCATIONS:
        raise ValueError(f"truncation must be one of {TRUNCATIONS}, not {truncation!r}")
    trimmer = text.RoundRobinTrimmer(max_seq_length=budget)
    if truncation == "truncate":
        return trimmer.trim(segments)
    budget = tf.cast(budget, tf.int64)
    if head_tokens is None:
        head_tokens = default_head_tokens(budget)
    trimmed = []
    for segment, kept_mask in zip(segments, trimmer.generate_mask(segments)):  # one or two segments
        lengths = segment.row_lengths()
        kept = tf.reduce_sum(tf.cast(kept_mask, tf.int64), axis=1)
        head = tf.zeros_like(kept) if truncation == "tail" else kept * tf.cast(head_tokens, tf.int64) // budget
        position = tf.ragged.range(lengths)
        keep = (position < head[:, None]) | (position >= (lengths - (kept - head))[:, None])
        trimmed.append(tf.ragged.boolean_mask(segment, keep))
    return trimmed


def pack_inputs(
    segments: list[tf.RaggedTensor],
    seq_length: int | tf.Tensor,
    cls_id: int,
    sep_id: int,
    pad_id: int = 0,
    truncation: str = "truncate",
    head_tokens: int | None = None,
) -> dict[str, tf.Tensor]:
    """Packs 1 or 2 tokenized segments into BERT's three int32 [batch, seq_length] inputs.

    The sequence is `[CLS] a [SEP]` or `[CLS] a [SEP] b [SEP]`: [CLS]'s final hidden state is what the
    pooler (and so the classifier) reads, and [SEP] marks where a segment ends. `input_type_ids` are 0 on
    `[CLS] a [SEP]` and 1 on `b [SEP]`, so the model can tell the sentences of a pair apart.

    When a pair is too long we trim the longer segment first, one token at a time (as google-research/bert's
    `_truncate_seq_pair`): cutting only the end would drop all of the second sentence, whose tokens carry as
    much of the pair's meaning as the first's. RoundRobinTrimmer gives exactly that allocation. `truncation`
    and `head_tokens` choose which of its tokens a cut segment keeps (see trim_segments).
    """
    segments = [segment.merge_dims(-2, -1) if segment.ragged_rank > 1 else segment for segment in segments]
    segments = [tf.cast(segment, tf.int32) for segment in segments]
    budget = seq_length - num_special_tokens(len(segments))
    trimmed = trim_segments(segments, budget, truncation, head_tokens)
    word_ids, type_ids = text.combine_segments(trimmed, start_of_sequence_id=cls_id, end_of_segment_id=sep_id)
    word_ids, mask = text.pad_model_inputs(word_ids, max_seq_length=seq_length, pad_value=pad_id)
    type_ids, _ = text.pad_model_inputs(type_ids, max_seq_length=seq_length, pad_value=0)
    return {
        "input_word_ids": tf.cast(word_ids, tf.int32),
        "input_mask": tf.cast(mask, tf.int32),
        "input_type_ids": tf.cast(type_ids, tf.int32),
    }


def trim_to_longest(inputs: dict[str, tf.Tensor], multiple: int = 1) -> dict[str, tf.Tensor]:
    """Packed inputs cut to their longest real row, rounded up to a multiple (training, eval and the export).

    Records and served texts are packed to max_seq_length; a batch of short sentences would otherwise spend
    most of its compute on padding.
    """
    mask = inputs["input_mask"]
    longest = tf.reduce_max(tf.reduce_sum(tf.cast(mask, tf.int32), axis=1))
    length = tf.minimum((longest + multiple - 1) // multiple * multiple, tf.shape(mask)[1])
    return {name: value[:, :length] for name, value in inputs.items()}


def count_truncated(segments: list[tf.RaggedTensor], seq_length: int) -> tf.Tensor:
    """How many rows lose tokens when packed at seq_length (a [batch] bool tensor)."""
    total = tf.add_n([tf.cast(segment.row_lengths(), tf.int32) for segment in segments])
    return total > seq_length - num_special_tokens(len(segments))


class _TokenizeModule(tf.Module):
    """The preprocessor's `tokenize` object: callable, with `get_special_tokens_dict()` as TF Hub's."""

    def __init__(self, tokenizer: BertTextTokenizer):
        super().__init__()
        self._tokenizer = tokenizer

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def __call__(self, texts):
        # TF Hub's tokenize returns [batch, (words), (wordpieces)]; we keep one wordpiece per "word",
        # which bert_pack_inputs merges the same way.
        tokens = self._tokenizer.tokenize(texts)
        values = tokens.values
        per_token = tf.RaggedTensor.from_row_lengths(values, tf.ones_like(values, dtype=tf.int64))
        return tf.RaggedTensor.from_row_splits(per_token, tokens.row_splits)

    @tf.function(input_signature=[])
    def get_special_tokens_dict(self):
        t = self._tokenizer
        return {
            "vocab_size": tf.constant(t.vocab_size, tf.int32),
            "start_of_sequence_id": tf.constant(t.cls_id, tf.int32),
            "end_of_segment_id": tf.constant(t.sep_id, tf.int32),
            "padding_id": tf.constant(t.pad_id, tf.int32),
            "mask_id": tf.constant(t.mask_id, tf.int32),
        }


class _PackModule(tf.Module):
    """The preprocessor's `bert_pack_inputs(segments, seq_length)` for one or two segments."""

    def __init__(self, tokenizer: BertTextTokenizer):
        super().__init__()
        self._tokenizer = tokenizer

    @tf.function
    def __call__(self, segments, seq_length=128):
        t = self._tokenizer
        return pack_inputs(list(segments), seq_length, t.cls_id, t.sep_id, t.pad_id)


class BertPreprocessor(tf.Module):
    """A SavedModel-ready preprocessor with the API of TF Hub's `bert_en_uncased_preprocess/3`.

    `preprocessor(texts)` packs single sentences at `default_seq_length`; `preprocessor.tokenize(texts)` and
    `preprocessor.bert_pack_inputs([tok_a, tok_b], seq_length=…)` handle pairs and other lengths.
    """

    def __init__(self, vocab_file: str, do_lower_case: bool, default_seq_length: int = 128):
        super().__init__()
        vocab = load_vocab(vocab_file)
        self.vocab_file = tf.saved_model.Asset(vocab_file)
        self.do_lower_case = tf.Variable(do_lower_case, trainable=False, name="do_lower_case")
        self._tokenizer = BertTextTokenizer(vocab, do_lower_case)
        self._default_seq_length = default_seq_length
        self.tokenize = _TokenizeModule(self._tokenizer)
        self.bert_pack_inputs = _PackModule(self._tokenizer)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def __call__(self, texts):
        return self.bert_pack_inputs([self.tokenize(texts)], self._default_seq_length)

    def trace_signatures(self) -> None:
        """Traces every call pattern a SavedModel user may make, so they all survive export."""
        ragged = tf.RaggedTensorSpec([None, None, None], tf.int32, ragged_rank=2)
        length = tf.TensorSpec([], tf.int32)
        for num_segments in (1, 2):
            self.bert_pack_inputs.__call__.get_concrete_function([ragged] * num_segments, length)
        self.tokenize.get_special_tokens_dict.get_concrete_function()


def export_preprocessor(
    vocab_file: str, do_lower_case: bool, output_dir: str, default_seq_length: int = 128
) -> str:
    """Writes the preprocessor SavedModel to output_dir (via a temp dir, so never half-written)."""
    preprocessor = BertPreprocessor(vocab_file, do_lower_case, default_seq_length)
    preprocessor.trace_signatures()
    return save_savedmodel(preprocessor, output_dir)
