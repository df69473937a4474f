"""bert_tf: fine-tune TF Hub BERT encoders for text classification with TensorFlow 2 and Keras 3."""

import os

__version__ = "0.1.0"

# Two TensorFlow settings that must be made before TensorFlow is imported, hence here, where every bert_tf
# import passes first. A user's own value in the environment wins. Measured on a 2-core AMD EPYC (AVX2):
#
# - TensorFlow's x86 wheels turn oneDNN on by default only on CPUs with AVX512-VNNI, AVX512-BF16 or AMX;
#   elsewhere matmuls run on Eigen. oneDNN's float32 GEMM ran a 4096² matmul at 171 GFLOP/s against Eigen's
#   ~90 (bench/train_step.py), and an 8,000-row SST-2 epoch took 108 s instead of 123 (bench/epoch_sst2.py
#   --side=ours --max_train_examples=8000 --learning_rate=1e-4, with and without TF_ENABLE_ONEDNN_OPTS=0).
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
# - Without oneDNN (TF_ENABLE_ONEDNN_OPTS=0, or a CPU where it is unavailable), TensorFlow's CPU allocator
#   hands every tensor to malloc, and glibc serves blocks over 32 MB with a fresh mmap: the word-embedding
#   gradient and its AdamW temporaries (30,522 × 384 floats = 47 MB each) were page-faulted in and unmapped
#   at every step, a third of the time spent in the kernel. TensorFlow's BFC allocator keeps and reuses that
#   memory: training steps at 16 tokens 1.86x faster (bench/train_step.py --onednn=off, --allocator=malloc
#   or not). oneDNN's own allocator pools large blocks too.
os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")
