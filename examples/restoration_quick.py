"""The driver behind examples/denoise.py and examples/deblock.py: one recipe, two tasks.

1. Train the plain network ("-O": one DnCNN of width 64) on sub-images of three photos
   scikit-image ships, degraded by the task (Gaussian noise, or JPEG).
2. Divide the sub-images into three classes by how well that network restores them, and
   train ClassSR: DnCNN branches of width 16 / 32 / 64 plus the Class-Module, in the three
   stages of ``classsr train``.
3. On a held-out photo, compare the degraded input, -O and ClassSR: PSNR, the FLOPs ClassSR
   spent relative to -O, and the share of patches each branch got.

The networks are shallow (``--depth``, 6 convolutions instead of DnCNN's 17) and trained
for 150 iterations per stage, so the numbers show the mechanics, not the method's quality;
docs/tasks/*.md have the measured runs on real photos and their configs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from classsr_core import load_model
from classsr_core.training.config import validate_train_config
from classsr_core.training.trainer import train

TRAIN = "skimage:astronaut,coffee,rocket"
HELD_OUT = "chelsea"  # never trained on

# What differs between the tasks: the degradation's option and the stage-1 rates.
TASKS = {
    "denoise": {
        "option": ("--sigma", float, 25.0, "noise level, 0..255 scale"),
        "task": lambda a: {"name": "denoise", "sigma": a.sigma},
        "label": lambda a: f"input (sigma {a.sigma:g})",
        # High rates with a floor (lr_min): in a run this short the narrow branches must
        # catch up with the wide one, or the classifier routes everything there. The
        # warm-up keeps the wide network from stalling at this rate.
        "lr": (2e-3, 2e-4),
    },
    "deblock": {
        # 10, not the task's default 20: a network trained this briefly gains about 0.4 dB
        # on its stronger artefacts, and only about 0.2 dB at 20 (our trials).
        "option": ("--quality", int, 10, "JPEG quality, 1..100"),
        "task": lambda a: {"name": "deblock", "quality": a.quality},
        "label": lambda a: f"input (JPEG q{a.quality})",
        # Lower than for denoising: JPEG residuals are small, and at 1e-3 and above the
        # width-64 network stalled at the input's PSNR in our trials.
        "lr": (5e-4, 5e-5),
    },
}


def make_config(task: str, out: Path, widths: list[int], args, reference: str | None = None):
    steps = args.steps
    lr, lr_min = TASKS[task]["lr"]
    return validate_train_config(
        {
            "seed": 0,
            "out": str(out),
            "task": TASKS[task]["task"](args),
            "model": {
                "backbone": "dncnn",
                "widths": widths,
                "backbone_kwargs": {"nb": args.depth},
                # The official 0.1-scaled init leaves the Class-Module near uniform for
                # thousands of iterations; a run of 150 needs the plain Kaiming init.
                "classifier_kwargs": {"init_scale": 1.0},
            },
            # At scale 1 the sub-images are the tile engine's 32x32 patches themselves.
            "data": {
                "train": TRAIN,
                "val": f"skimage:{HELD_OUT}",
                "store": str(args.out / "data"),  # -O and ClassSR share one store
                "crop": 32,
                "step": 24,
            },
            "divide": {"reference": reference, "ratios": [1, 1, 1]},
            "stages": {
                "branches": {
                    "iterations": steps,
                    "batch_size": 16,
                    "lr": lr,
                    "lr_min": lr_min,
                    "warmup": steps // 10,
                },
                "classifier": {"iterations": steps, "batch_size": 16, "lr": 3e-3, "lr_min": 3e-4},
                "joint": {"iterations": steps // 4, "batch_size": 16, "lr": 1e-4},
            },
        },
        source=f"examples/{task}.py",
    )


def main(task: str, description: str) -> None:
    parser = argparse.ArgumentParser(description=description)
    flag, kind, default, text = TASKS[task]["option"]
    parser.add_argument(flag, type=kind, default=default, help=text)
    parser.add_argument("--steps", type=int, default=150, help="iterations per stage / branch")
    parser.add_argument("--depth", type=int, default=6, help="convolutions per DnCNN")
    parser.add_argument("--out", type=Path, default=Path(f"runs/example-{task}"))
    args = parser.parse_args()

    print("== 1/3: the plain network (-O), also the reference that divides the data")
    plain = train(make_config(task, args.out / "O", [64], args), "all", progress=False)
    reference = str(plain.results[-1].path)

    print("== 2/3: ClassSR, three branches (16 / 32 / 64) and the Class-Module")
    config = make_config(task, args.out / "classsr", [16, 32, 64], args, reference)
    classsr = train(config, "all", progress=False)

    print(f"== 3/3: the held-out photo '{HELD_OUT}'")
    import skimage.data

    hr = np.asarray(getattr(skimage.data, HELD_OUT)(), dtype=np.float32) / 255.0
    scorer = plain.task
    degraded = scorer.make_input(hr, np.random.default_rng(0))
    x = torch.from_numpy(degraded).permute(2, 0, 1)[None]
    print(f"{TASKS[task]['label'](args) + ':':17s} {_scores(scorer.score(degraded, hr))}")
    for label, path in (("-O", reference), ("ClassSR", classsr.results[-1].path)):
        model = load_model(path).eval()
        result = model.infer(x)
        out = result.output[0].clamp(0, 1).permute(1, 2, 0).numpy()
        total = sum(result.class_counts)
        shares = " / ".join(f"{100 * c / total:.0f}%" for c in result.class_counts)
        print(
            f"{label + ':':17s} {_scores(scorer.score(out, hr))}  "
            f"FLOPs {100 * result.flops_fraction:5.1f}% of -O  classes {shares}"
        )


def _scores(s: dict) -> str:
    text = f"PSNR {s['psnr']:6.2f} dB"
    if "psnr_b" in s:  # deblocking also reports luma PSNR and the blocking-aware PSNR-B
        text += f"  luma: PSNR {s['psnr_y']:6.2f}, PSNR-B {s['psnr_b']:6.2f} dB"
    return text
