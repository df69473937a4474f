"""bert_tf: fine-tune TF Hub BERT encoders for text classification with TensorFlow 2 and Keras 3."""

import os

from bert_tf.console import quiet_when_a_command

__version__ = "0.1.0"

# Two TensorFlow settings that must be made before TensorFlow is imported, hence here, where every bert_tf
# import passes first. A user's own value in the environment wins. Each is measured in README Results
# (bench/train_step.py --onednn=off, --allocator=malloc):
#
# - TensorFlow's x86 wheels turn oneDNN on by default only on CPUs with AVX512-VNNI, AVX512-BF16 or AMX;
#   elsewhere (AVX2) matmuls run on Eigen, at about half oneDNN's float32 rate.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
# - Without oneDNN (TF_ENABLE_ONEDNN_OPTS=0, or a CPU where it is unavailable), TensorFlow's CPU allocator
#   hands every tensor to malloc, and glibc serves blocks over 32 MB with a fresh mmap: the word-embedding
#   gradient and its AdamW temporaries (30,522 × 384 floats = 47 MB each) were page-faulted in and unmapped
#   at every step. TensorFlow's BFC allocator keeps and reuses that memory; oneDNN's own allocator pools large
#   blocks too.
os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")

quiet_when_a_command()


def __getattr__(name: str):
    # `from bert_tf import TextClassifier` without importing TensorFlow for every bert_tf import (the commands
    # check their flags before TensorFlow loads).
    if name == "TextClassifier":
        from bert_tf.text_classifier import TextClassifier

        return TextClassifier
    raise AttributeError(f"module 'bert_tf' has no attribute {name!r}")
