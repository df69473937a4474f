"""bert_tf: fine-tune TF Hub BERT encoders for text classification with TensorFlow 2 and Keras 3."""

import os

__version__ = "0.1.0"

# TensorFlow's default CPU allocator hands every tensor to malloc, and glibc serves blocks over 32 MB with a
# fresh mmap: the word-embedding gradient and its AdamW temporaries (30,522 × 384 floats = 47 MB each) are
# page-faulted in and unmapped again at every step. Measured on a 2-core CPU: 250,000 page faults a second
# and a third of the training time in the kernel. TensorFlow's BFC allocator keeps and reuses that memory
# (training step 1.55x faster at 128 tokens, 1.84x at 16: bench/train_step.py --allocator=malloc vs bfc).
# It must be chosen before TensorFlow allocates its first tensor, hence here, where every bert_tf import
# passes first. TF_CPU_ALLOCATOR_USE_BFC=false in the environment keeps malloc.
os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")
