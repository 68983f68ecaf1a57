"""onnxruntime against PyTorch on this CPU, per branch of a ClassSR model (issue 25).

Each branch of MODEL is exported by ``classsr export-onnx`` and timed on a 640x426 LR input
(demo_hr.png, PIL bicubic) as one image and as 60 tiles of 64x64 in one batch, at 1 and 2
threads. PyTorch runs as the engine does on CPU (channels-last, ``inference_mode``) and in
the default layout; onnxruntime with ``intra_op_num_threads`` = threads, sequential, all
graph optimisations. Each round times every case once; min and median over rounds.

    .venv/bin/python benchmarks/onnx_speed.py --reps 5
"""

from __future__ import annotations

import argparse
import copy
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="classsr-fsrcnn-x4-fast")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", default="1,2")
    args = ap.parse_args()

    from classsr_core import load_model
    from classsr_core.commands.export_onnx import standalone

    model = load_model(args.model).eval()
    out = Path(tempfile.mkdtemp()) / "onnx"
    subprocess.run(
        [sys.executable, "-m", "classsr_core", "export-onnx", args.model, "-o", str(out)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    hr = Image.open(ROOT / "classsr_core" / "assets" / "demo_hr.png").convert("RGB")
    lr = np.asarray(hr.resize((640, 426), Image.Resampling.BICUBIC))
    x = torch.from_numpy(lr.copy()).permute(2, 0, 1)[None].float() / 255
    tiles = x[:, :, :384, :640].unfold(2, 64, 64).unfold(3, 64, 64)  # 6 x 10 tiles
    tiles = tiles.permute(0, 2, 3, 1, 4, 5).reshape(-1, 3, 64, 64).contiguous()
    inputs = {"640x426": x, f"{tiles.shape[0]} tiles 64x64": tiles}
    widths = (model.spec or {}).get("widths") or [None] * len(model.branches)
    print(f"{args.model}; torch {torch.__version__}, onnxruntime {ort.__version__}")
    print(
        "| threads | input | branch | PyTorch ch-last s | PyTorch default s | onnxruntime s "
        "| onnxruntime / best PyTorch |"
    )
    print("|---|---|---|---|---|---|---|")
    for threads in [int(t) for t in args.threads.split(",")]:
        torch.set_num_threads(threads)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        for i, branch in enumerate(model.branches):
            net = standalone(branch).eval()
            net_cl = copy.deepcopy(net).to(memory_format=torch.channels_last)
            sess = ort.InferenceSession(
                str(out / f"branch{i}.onnx"), opts, providers=["CPUExecutionProvider"]
            )
            for label, inp in inputs.items():
                cl = inp.to(memory_format=torch.channels_last)
                arr = inp.numpy()
                cases = {
                    "cl": lambda net_cl=net_cl, cl=cl: net_cl(cl),
                    "default": lambda net=net, inp=inp: net(inp),
                    "ort": lambda sess=sess, arr=arr: sess.run(None, {"lr": arr}),
                }
                times = {k: [] for k in cases}
                with torch.inference_mode():
                    for f in cases.values():  # warm-up
                        f()
                    for _ in range(args.reps):
                        for k, f in cases.items():
                            t = time.perf_counter()
                            f()
                            times[k].append(time.perf_counter() - t)
                m = {k: (min(v), statistics.median(v)) for k, v in times.items()}
                best = min(m["cl"][0], m["default"][0])
                cells = " | ".join(f"{m[k][0]:.3f} ({m[k][1]:.3f})" for k in cases)
                print(
                    f"| {threads} | {label} | {i} (width {widths[i]}) | {cells} "
                    f"| {m['ort'][0] / best:.2f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
