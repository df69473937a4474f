"""What the CPU can do, read from /proc/cpuinfo without importing TensorFlow (benchmarks ask it too)."""

from __future__ import annotations


def cpu_has_bf16() -> bool:
    """AMX or AVX512-BF16: the CPUs where oneDNN runs bfloat16 matmuls faster than float32."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = f.read()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags
