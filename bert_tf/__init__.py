"""bert_tf: fine-tune TF Hub BERT encoders for text classification with TensorFlow 2 and Keras 3."""

import os

__version__ = "0.1.0"

# Two TensorFlow settings that must be made before TensorFlow is imported, hence here, where every bert_tf
# import passes first. A user's own value in the environment wins. Measured on a 2-core AMD EPYC (AVX2),
# all-MiniLM-L6-v2 training step, bench/train_step.py --ours_only with --onednn and --allocator:
#
# - TensorFlow's x86 wheels turn oneDNN on by default only on CPUs with AVX512-VNNI, AVX512-BF16 or AMX;
#   elsewhere matmuls run on Eigen. oneDNN's float32 GEMM ran a 4096² matmul at 174 GFLOP/s against Eigen's
#   90, and the training step was 15% faster at 128 tokens.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
# - Without oneDNN (TF_ENABLE_ONEDNN_OPTS=0, or a CPU where it is unavailable), TensorFlow's CPU allocator
#   hands every tensor to malloc, and glibc serves blocks over 32 MB with a fresh mmap: the word-embedding
#   gradient and its AdamW temporaries (30,522 × 384 floats = 47 MB each) were page-faulted in and unmapped
#   at every step, a third of the time spent in the kernel. TensorFlow's BFC allocator keeps and reuses that
#   memory: 1.84x faster at 16 tokens. (oneDNN's own allocator pools large blocks too.)
os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")
