"""Masked-language-model inputs, in-graph with tensorflow-text: BERT's masking procedure on batches of chunks.

Of a sequence's real tokens (never [CLS], [SEP] or padding), `masked_lm_prob` are chosen for prediction
(rounded, at least 1, at most `max_predictions_per_seq`). Of the chosen tokens, 80% become [MASK], 10% a random
token of the vocab (none of its bracketed special tokens) and 10% stay as they are; the records keep their
positions and original ids. The 10% left unchanged are why a model cannot trust an unmasked token to be the
original, so it keeps a representation of every token, not only of [MASK]s.

With whole-word masking the items chosen are words (a piece and the '##' continuation pieces after it), so all
pieces of a word are masked together; words are added in a random order until the next would pass the number of
tokens to predict (the first may pass it, up to max_predictions_per_seq, when no word fits).

tensorflow_text.mask_language_model does the work. Its RandomItemSelector and MaskValuesChooser draw from
stateful random ops (RandomItemSelector inside a map_fn, whose iterations may run in any order), so the same
seed could give other records; the subclasses here draw from stateless random ops keyed by a seed tensor, the
same seed giving the same masks.

>>> vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "play", "##ing", "ball"]
>>> masker = MaskedLmMasker(vocab, max_seq_length=8, max_predictions_per_seq=2, masked_lm_prob=0.5)
>>> features = masker.features(tf.ragged.constant([[5, 6, 7]], tf.int64), tf.constant([1, 2], tf.int64))
>>> features["masked_lm_weights"].numpy().tolist()  # round(3 × 0.5) = 2 predictions
[[1.0, 1.0]]
"""

from __future__ import annotations

import re

import tensorflow as tf
import tensorflow_text as text

from bert_tf.tokenization import SPECIAL_TOKENS

MASK_TOKEN_RATE = 0.8
RANDOM_TOKEN_RATE = 0.1
# [PAD], [CLS], [unused17]...: tokens a text never yields, so never a random replacement.
_BRACKETED = re.compile(r"\[[^\[\]]+\]")
CONTINUATION_PREFIX = "##"


def replacement_ids(vocab: list[str]) -> list[int]:
    """The ids a chosen token may be replaced by at random: every token but the bracketed special ones."""
    ids = [i for i, token in enumerate(vocab) if not _BRACKETED.fullmatch(token) and token not in SPECIAL_TOKENS]
    if not ids:
        raise ValueError("the vocab has no token but special ones")
    return ids


def is_continuation(vocab: list[str]) -> list[bool]:
    """Per id: whether the token continues a word ('##ing'), which whole-word masking masks with the word."""
    return [token.startswith(CONTINUATION_PREFIX) and len(token) > len(CONTINUATION_PREFIX) for token in vocab]


def num_to_predict(num_tokens: tf.Tensor, masked_lm_prob: float, max_predictions_per_seq: int) -> tf.Tensor:
    """Tokens to predict in a sequence of num_tokens real tokens: round(n × p), at least 1, at most the maximum
    (google-research/bert's rule; rounding half to even, as Python's round)."""
    wanted = tf.round(tf.cast(num_tokens, tf.float64) * masked_lm_prob)
    return tf.clip_by_value(tf.cast(wanted, tf.int64), 1, max_predictions_per_seq)


class SeededItemSelector(text.RandomItemSelector):
    """RandomItemSelector choosing `num_to_predict` tokens' worth of items per row, from a stateless seed.

    Items are the tokens of a [batch, (tokens)] input, or the words of a [batch, (words), (pieces)] one. They
    are taken in a random order while their pieces add up to at most the row's number to predict (the first
    item may pass it, up to max_selections_per_batch, so every row with a selectable item gets one).
    """

    def __init__(self, max_selections_per_batch: int, selection_rate: float, unselectable_ids: list[int],
                 seed: tf.Tensor):
        super().__init__(max_selections_per_batch, selection_rate, unselectable_ids)
        self._seed = seed

    def get_selection_mask(self, input_ids: tf.RaggedTensor, axis: int = 1) -> tf.RaggedTensor:
        if axis != 1:
            raise ValueError("SeededItemSelector selects along axis 1 (tokens or words)")
        selectable = self.get_selectable(input_ids, axis)  # [batch, (items)]
        pieces = input_ids.values.row_lengths() if input_ids.ragged_rank > 1 else tf.ones_like(
            input_ids.values, tf.int64)
        pieces = tf.where(selectable.flat_values, tf.cast(pieces, tf.int64), 0)
        budget = num_to_predict(tf.reduce_sum(selectable.with_flat_values(pieces), axis=1), self.selection_rate,
                                self.max_selections_per_batch)
        item_budget = tf.gather(budget, selectable.value_rowids())
        # Random order; items that fit the budget come first, then those that fit the maximum, unselectable last.
        keys = tf.random.stateless_uniform(tf.shape(pieces), seed=self._seed, dtype=tf.float64)
        keys += tf.cast(pieces > item_budget, tf.float64) + tf.cast(pieces > self.max_selections_per_batch, tf.float64)
        keys += 3.0 * tf.cast(pieces == 0, tf.float64)
        order = tf.argsort(selectable.with_flat_values(keys).to_tensor(default_value=4.0), axis=1, stable=True)
        sorted_pieces = tf.gather(selectable.with_flat_values(pieces).to_tensor(), order, batch_dims=1)
        total = tf.cumsum(sorted_pieces, axis=1)
        first = tf.range(tf.shape(order)[1]) == 0
        take = (sorted_pieces > 0) & ((total <= budget[:, None]) |
                                      (first[None, :] & (sorted_pieces <= self.max_selections_per_batch)))
        take = tf.gather(take, tf.argsort(order, axis=1), batch_dims=1)  # back to the items' own order
        return tf.RaggedTensor.from_tensor(take, lengths=selectable.row_lengths())


class SeededMaskValuesChooser(text.MaskValuesChooser):
    """MaskValuesChooser drawing from a stateless seed, its random tokens from `replacements` (no special ids)."""

    def __init__(self, replacements: list[int], mask_token: int, seed: tf.Tensor,
                 mask_token_rate: float = MASK_TOKEN_RATE, random_token_rate: float = RANDOM_TOKEN_RATE):
        super().__init__(len(replacements), mask_token, mask_token_rate, random_token_rate)
        self._replacements = tf.constant(replacements, tf.int64)
        self._seed = seed

    def get_mask_values(self, masked_lm_ids: tf.RaggedTensor) -> tf.RaggedTensor:
        ids = masked_lm_ids.merge_dims(1, -1) if masked_lm_ids.ragged_rank > 1 else masked_lm_ids
        original = ids.flat_values
        seeds = tf.random.experimental.stateless_split(self._seed, 2)
        draw = tf.random.stateless_uniform(tf.shape(original), seed=seeds[0], dtype=tf.float64)
        pick = tf.random.stateless_uniform(tf.shape(original), seed=seeds[1], minval=0,
                                           maxval=tf.size(self._replacements, out_type=tf.int64), dtype=tf.int64)
        random_ids = tf.cast(tf.gather(self._replacements, pick), original.dtype)
        mask_rate, random_rate = self._mask_token_rate, self.random_token_rate
        values = tf.where(draw < mask_rate, tf.cast(self.mask_token, original.dtype),
                          tf.where(draw < mask_rate + random_rate, random_ids, original))
        return ids.with_flat_values(values)


def group_words(sequences: tf.RaggedTensor, continuation: tf.Tensor) -> tf.RaggedTensor:
    """[batch, (tokens)] → [batch, (words), (pieces)]: a word is a piece and the continuation pieces after it.

    The first two tokens ([CLS] and the chunk's first piece, which may continue a word cut at the chunk's start)
    always start a word.
    """
    position = tf.ragged.range(sequences.row_lengths()).flat_values
    starts = ~tf.gather(continuation, sequences.flat_values) | (position <= 1)
    words = tf.RaggedTensor.from_row_starts(sequences.flat_values, tf.where(starts)[:, 0])
    words_per_row = tf.math.segment_sum(tf.cast(starts, tf.int64), sequences.value_rowids())
    words_per_row = tf.pad(words_per_row, [[0, sequences.nrows() - tf.shape(words_per_row, out_type=tf.int64)[0]]])
    return tf.RaggedTensor.from_row_lengths(words, words_per_row)


class MaskedLmMasker:
    """Packs chunks of word-piece ids as `[CLS] chunk [SEP]` and masks them: the pretraining records' features."""

    def __init__(self, vocab: list[str], max_seq_length: int, max_predictions_per_seq: int, masked_lm_prob: float,
                 whole_word_masking: bool = False):
        self.max_seq_length = max_seq_length
        self.max_predictions_per_seq = max_predictions_per_seq
        self.masked_lm_prob = masked_lm_prob
        self.whole_word_masking = whole_word_masking
        self.cls_id, self.sep_id, self.pad_id = (vocab.index(token) for token in ("[CLS]", "[SEP]", "[PAD]"))
        self.mask_id = vocab.index("[MASK]")
        self._replacements = replacement_ids(vocab)
        self._continuation = tf.constant(is_continuation(vocab))

    def features(self, chunks: tf.RaggedTensor, seed: tf.Tensor) -> dict[str, tf.Tensor]:
        """[batch, (≤ max_seq_length - 2 ids)] int64 chunks and a [2] int64 seed → the records' padded features."""
        sequences, _ = text.combine_segments([tf.cast(chunks, tf.int64)], self.cls_id, self.sep_id)
        items = group_words(sequences, self._continuation) if self.whole_word_masking else sequences
        select_seed, values_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        selector = SeededItemSelector(self.max_predictions_per_seq, self.masked_lm_prob,
                                      [self.cls_id, self.sep_id, self.pad_id], select_seed)
        chooser = SeededMaskValuesChooser(self._replacements, self.mask_id, values_seed)
        masked, positions, originals = text.mask_language_model(items, selector, chooser, axis=1)
        input_ids, input_mask = text.pad_model_inputs(masked, self.max_seq_length, self.pad_id)
        positions, weights = text.pad_model_inputs(positions, self.max_predictions_per_seq)
        masked_lm_ids, _ = text.pad_model_inputs(originals, self.max_predictions_per_seq)
        return {
            "input_ids": input_ids,
            "input_mask": input_mask,
            "segment_ids": tf.zeros_like(input_ids),
            "masked_lm_positions": positions,
            "masked_lm_ids": masked_lm_ids,
            "masked_lm_weights": tf.cast(weights, tf.float32),
        }
