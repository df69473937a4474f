"""Documents longer than max_seq_length: overlapping windows in, one prediction per document out.

BERT reads at most max_seq_length tokens (512 for most encoders, often 128 to keep fine-tuning cheap), and
truncation throws away the rest of a review or a report, however telling. --long_document=tail or head_tail
choose which part the one record keeps (its end, or its start and end: tokenization.trim_segments). With
--long_document=sliding_window create_tfrecords cuts each document into windows of max_seq_length - 2 tokens
(room for [CLS] and [SEP]) whose starts are --doc_stride tokens apart, as google-research/bert's run_squad.py
does for SQuAD contexts. Every window becomes a training example with its document's label; at evaluation,
prediction and serving time the windows' logits are aggregated back into one prediction per document
(--aggregation).

Both halves are TensorFlow ops, so the exported model windows and aggregates in-graph:

>>> tokens = tf.ragged.constant([[1, 2, 3, 4, 5], [6]])
>>> windows, document, index = sliding_windows(tokens, window=3, stride=2)
>>> windows.to_list(), document.numpy().tolist(), index.numpy().tolist()
([[1, 2, 3], [3, 4, 5], [6]], [0, 0, 1], [0, 1, 0])
"""

from __future__ import annotations

import tensorflow as tf

from bert_tf.heads import TaskHead

LONG_DOCUMENT_MODES = ("truncate", "tail", "head_tail", "sliding_window")  # the first three: TRUNCATIONS
AGGREGATIONS = ("mean", "max", "vote")


def default_stride(window: int) -> int:
    """Half a window: every token but the first and last half-window's is seen twice, once near a middle."""
    return max(1, window // 2)


def num_windows(num_tokens: tf.Tensor, window: int, stride: int) -> tf.Tensor:
    """Windows a document of num_tokens tokens is cut into (at least one, even when empty)."""
    beyond_first = tf.maximum(num_tokens - window, 0)
    return 1 + (beyond_first + stride - 1) // stride


def sliding_windows(tokens: tf.RaggedTensor, window: int, stride: int) -> tuple[tf.RaggedTensor, tf.Tensor, tf.Tensor]:
    """[documents, (tokens)] → (windows [n, (≤ window tokens)], document of each window [n], window index [n]).

    Window k of a document holds its tokens [k·stride, k·stride + window); the last window ends at the
    document's end, so no token is lost and no window is empty (unless the document is).
    """
    if not 1 <= stride <= window:
        raise ValueError(f"stride must be in 1..{window}, not {stride}")
    tokens = tokens.merge_dims(-2, -1) if tokens.ragged_rank > 1 else tokens
    lengths = tokens.row_lengths()
    counts = num_windows(lengths, window, stride)
    document = tf.repeat(tf.range(tf.shape(lengths, out_type=tf.int64)[0]), counts)
    index = tf.ragged.range(counts).flat_values
    start = index * stride
    begin = tf.gather(tokens.row_starts(), document) + start
    end = begin + tf.minimum(tf.cast(window, tf.int64), tf.gather(lengths, document) - start)
    return tf.gather(tokens.flat_values, tf.ragged.range(begin, end)), document, index


def aggregate(logits: tf.Tensor, document: tf.Tensor, num_documents: tf.Tensor, head: TaskHead,
              rule: str) -> tf.Tensor:
    """Windows' logits [n, k] → one row of probabilities (or regression values) per document [documents, k].

    mean   averages the windows' logits: evidence adds up across the document.
    max    takes each class's (label's) highest logit over the windows: one telling passage decides.
    vote   each window votes for its most probable class (multi-label: for each label at probability ≥ 0.5);
           a class's share of the votes is its score, ties going to the higher mean probability. The returned
           row is those scores normalized to sum to 1 (multi-label: the share of windows voting each label).
    """
    logits = tf.cast(logits, tf.float32)
    document = tf.cast(document, tf.int32)
    num_documents = tf.cast(num_documents, tf.int32)
    if rule == "mean":
        return head.probabilities(tf.math.unsorted_segment_mean(logits, document, num_documents))
    if rule == "max":
        return head.probabilities(tf.math.unsorted_segment_max(logits, document, num_documents))
    if rule != "vote":
        raise ValueError(f"aggregation must be one of {AGGREGATIONS}, not {rule!r}")
    window_probabilities = head.probabilities(logits)
    shares = tf.math.unsorted_segment_mean(head.window_votes(window_probabilities), document, num_documents)
    if head.independent_labels:  # each label has its own vote: no tie between labels to break
        return shares
    # Shares of unequal vote counts differ by at least 1/n; a tie-break below 1/(n+1) cannot overturn them.
    windows = tf.math.unsorted_segment_sum(tf.ones_like(document, tf.float32), document, num_documents)[:, None]
    mean_probability = tf.math.unsorted_segment_mean(window_probabilities, document, num_documents)
    scores = shares + mean_probability / (windows + 1.0)
    return scores / tf.reduce_sum(scores, axis=-1, keepdims=True)
