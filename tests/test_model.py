"""What --pooling=auto picks (model.choose_pooling), per encoder and record kind."""

import pytest

from bert_tf.model import choose_pooling


@pytest.mark.parametrize("encoder, paired, expected", [
    ("default", False, "mean"),  # all-MiniLM-L6-v2 was trained through mean pooling
    ("default", True, "pooled"),  # on sentence pairs (MRPC) its pooler wins over seeds
    ("hf://google-bert/bert-base-uncased", False, "pooled"),  # a BERT with a trained pooler
    ("/models/bert_en_uncased_L-12_H-768_A-12/4", True, "pooled"),
])
def test_auto_pooling(encoder, paired, expected):
    assert choose_pooling("auto", encoder, paired) == expected


@pytest.mark.parametrize("pooling", ["pooled", "cls", "mean"])
@pytest.mark.parametrize("paired", [False, True])
def test_an_explicit_pooling_is_kept(pooling, paired):
    assert choose_pooling(pooling, "default", paired) == pooling
