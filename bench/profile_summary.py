"""Where a profiled training step spends its time: TensorFlow op types by self time, from a profiler trace.

  .venv/bin/python bench/train_step.py --ours_only --profile_dir=/tmp/profile
  XPROF_PYTHON/bin/python bench/profile_summary.py /tmp/profile [--top=25]

Reads the newest `plugins/profile/*/*.xplane.pb` under the logdir (bench/train_step.py --profile_dir, or
run_classifier --profile_steps, which writes to OUTPUT_DIR/train), converts it with xprof's framework_op_stats
tool (the numbers TensorBoard's Profile tab shows) and prints each host op type's share of the total op self time
(idle excluded), the share of the matrix multiplications (MatMul, BatchMatMul*, _Fused*MatMul*, Einsum) and that of
the element-wise ops (ELEMENTWISE_TYPES). The LAST line is one JSON object with those figures.

xprof is not a bert_tf dependency (it pulls in Google Cloud client libraries): install it with `pip install xprof`,
in a separate venv if you prefer; this script needs nothing else.
"""

from __future__ import annotations

import glob
import json
import os
import sys
from collections import defaultdict

MATMUL_TYPES = ("MatMul", "BatchMatMul", "Einsum")
# What XLA or a fused kernel would merge into its neighbours: GELU, LayerNorm, dropout, softmax, AdamW's update.
ELEMENTWISE_TYPES = ("Mul", "AddV2", "BiasAdd", "Sub", "Neg", "Erf", "Erfc", "Square", "Sqrt", "SquaredDifference",
                     "RealDiv", "SelectV2", "GreaterEqual", "RandomUniform", "Cast", "BroadcastTo", "Rsqrt", "Softmax",
                     "Maximum", "Minimum")


def newest_xplane(logdir: str) -> str:
    paths = glob.glob(os.path.join(logdir, "plugins", "profile", "*", "*.xplane.pb"))
    if not paths:
        sys.exit(f"error: {logdir}: no plugins/profile/*/*.xplane.pb; profile first (see this script's docstring)")
    return max(paths, key=os.path.getmtime)


def op_stats(xplane: str) -> list[dict]:
    """framework_op_stats rows: one per op, with its type, host/device and self time (µs)."""
    try:
        from xprof.convert import raw_to_tool_data
    except ImportError:
        sys.exit("error: this script needs xprof: pip install xprof")
    data, _ = raw_to_tool_data.xspace_to_tool_data([xplane], "framework_op_stats", {})
    tables = json.loads(data)
    table = tables[0] if isinstance(tables, list) else tables
    columns = [column["id"] for column in table["cols"]]
    return [dict(zip(columns, (cell.get("v") if cell else None for cell in row["c"]))) for row in table["rows"]]


def main(argv: list[str]) -> None:
    if len(argv) < 2:
        sys.exit(__doc__)
    top = next((int(a.split("=", 1)[1]) for a in argv[2:] if a.startswith("--top=")), 25)
    rows = op_stats(newest_xplane(argv[1]))
    by_type: dict[str, float] = defaultdict(float)
    for row in rows:
        if row["type"] != "IDLE":  # the executor threads' waiting, not work
            # oneDNN's kernels carry a prefix (_MklMatMul, _MklNativeFusedMatMul): count them under their op type.
            by_type[row["type"].removeprefix("_MklNative").removeprefix("_Mkl")] += float(row["total_self_time"])
    total = sum(by_type.values())
    print(f"{'op type':>40}  share of op self time")
    for op_type, self_time in sorted(by_type.items(), key=lambda item: -item[1])[:top]:
        print(f"{op_type:>40}  {self_time / total:6.1%}")
    matmul = sum(t for op_type, t in by_type.items() if any(m in op_type for m in MATMUL_TYPES))
    figures = {"matmul_share": round(matmul / total, 4),
               "top_op_types": [op for op, _ in sorted(by_type.items(), key=lambda item: -item[1])[:5]]}
    elementwise = sum(by_type.get(t, 0.0) for t in ELEMENTWISE_TYPES)
    figures["elementwise_share"] = round(elementwise / total, 4)
    print(f"matrix multiplications: {matmul / total:.1%} of op self time; element-wise ops: {elementwise / total:.1%}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main(sys.argv)
