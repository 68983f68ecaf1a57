"""ClassSR for denoising, end to end on a CPU in a few minutes.

1. Train the plain network ("-O": one DnCNN of width 64) on sub-images of three photos
   scikit-image ships, with Gaussian noise of sigma 25 (the ``denoise`` task).
2. Divide the sub-images into three classes by how well that network restores them, and
   train ClassSR: DnCNN branches of width 16 / 32 / 64 plus the Class-Module, in the three
   stages of ``classsr train``.
3. On a held-out photo, compare the noisy input, -O and ClassSR: PSNR, the FLOPs ClassSR
   spent relative to -O, and the share of patches each branch got.

The networks are shallow (``--depth``, 6 convolutions instead of DnCNN's 17) and trained
for 150 iterations per stage, so the numbers show the mechanics, not the method's quality;
docs/tasks/denoise.md has the measured runs and their configs.

    python examples/denoise.py [--sigma 25] [--steps 150] [--out runs/example-denoise]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from classsr_core import load_model
from classsr_core.train import train
from classsr_core.train_config import validate_train_config

TRAIN = "skimage:astronaut,coffee,rocket"
HELD_OUT = "chelsea"  # never trained on


def make_config(out: Path, widths: list[int], args, reference: str | None = None):
    steps = args.steps
    return validate_train_config(
        {
            "seed": 0,
            "out": str(out),
            "task": {"name": "denoise", "sigma": args.sigma},
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
                # High rates with a floor (lr_min): in a run this short the narrow branches
                # must catch up with the wide one, or the classifier routes everything there.
                # The warm-up keeps the wide network from stalling at this rate.
                "branches": {
                    "iterations": steps,
                    "batch_size": 16,
                    "lr": 2e-3,
                    "lr_min": 2e-4,
                    "warmup": steps // 10,
                },
                "classifier": {"iterations": steps, "batch_size": 16, "lr": 3e-3, "lr_min": 3e-4},
                "joint": {"iterations": steps // 4, "batch_size": 16, "lr": 1e-4},
            },
        },
        source="examples/denoise.py",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sigma", type=float, default=25.0, help="noise level, 0..255 scale")
    parser.add_argument("--steps", type=int, default=150, help="iterations per stage / branch")
    parser.add_argument("--depth", type=int, default=6, help="convolutions per DnCNN")
    parser.add_argument("--out", type=Path, default=Path("runs/example-denoise"))
    args = parser.parse_args()

    print("== 1/3: the plain network (-O), also the reference that divides the data")
    plain = train(make_config(args.out / "O", [64], args), "all", progress=False)
    reference = str(plain.results[-1].path)

    print("== 2/3: ClassSR, three branches (16 / 32 / 64) and the Class-Module")
    classsr = train(
        make_config(args.out / "classsr", [16, 32, 64], args, reference), "all", progress=False
    )

    print(f"== 3/3: the held-out photo '{HELD_OUT}'")
    import skimage.data

    hr = np.asarray(getattr(skimage.data, HELD_OUT)(), dtype=np.float32) / 255.0
    task = plain.task
    noisy = task.make_input(hr, np.random.default_rng(0))
    x = torch.from_numpy(noisy).permute(2, 0, 1)[None]
    print(f"input (sigma {args.sigma:g}):  PSNR {task.score(noisy, hr)['psnr']:6.2f} dB")
    for label, path in (("-O", reference), ("ClassSR", classsr.results[-1].path)):
        model = load_model(path).eval()
        result = model.infer(x)
        out = result.output[0].clamp(0, 1).permute(1, 2, 0).numpy()
        total = sum(result.class_counts)
        shares = " / ".join(f"{100 * c / total:.0f}%" for c in result.class_counts)
        print(
            f"{label + ':':9s} PSNR {task.score(out, hr)['psnr']:6.2f} dB  "
            f"FLOPs {100 * result.flops_fraction:5.1f}% of -O  classes {shares}"
        )


if __name__ == "__main__":
    main()
