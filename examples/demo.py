"""`make demo`: upscale a real photo with the shipped ClassSR-FSRCNN x4 models and show
where the compute went.

The photo (classsr_core/assets/demo_hr.png) is a crop of a validation photo, never seen in
training. It is shrunk x4 with MATLAB-exact bicubic, then brought back by bicubic, FSRCNN-O
and the shipped ClassSR models, each routed by its own default (its calibrated edge table,
docs/routing.md) in its own mode (regions: same-class patches merged into tiles); the
paper's model also by its Class-Module in the paper's overlapping patches, for reference;
the fast one at its default tolerance, at 0.2 dB and at a budget of 0.5. Writes to out/demo/
the images of the weight-sharing model, the default of `classsr upscale`: the SR image, the
class map, and a labelled strip bicubic | FSRCNN-O | ClassSR-FSRCNN fast | ground truth,
with the detail where they differ most enlarged below.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from classsr_core import load_model
from classsr_core._basicsr import imresize
from classsr_core.analysis.visualize import (
    colour_names,
    labelled_strip,
    most_different,
    result_overlay,
)
from classsr_core.io.images import Image, read_image, write_image
from classsr_core.tasks import Task

ASSET = Path(__file__).resolve().parents[1] / "classsr_core" / "assets" / "demo_hr.png"


def main(out_dir: str = "out/demo") -> int:
    out = Path(out_dir)
    hr = read_image(ASSET).rgb
    lr = np.clip(imresize(hr, 0.25), 0, 1).astype(np.float32)
    x = torch.from_numpy(lr).permute(2, 0, 1)[None]
    scorer = Task(name="sr", scale=4)

    rows = []
    bicubic = np.clip(imresize(lr, 4), 0, 1)
    rows.append(("bicubic", bicubic, None))
    runs = [
        ("fsrcnn-x4", {"mode": "regions"}),  # -O on the whole image: the honest reference
        # the paper's route and mode, for reference
        ("classsr-fsrcnn-x4", {"router": "classifier", "mode": "patches"}),
        ("classsr-fsrcnn-x4-shared", {}),  # every model's own router and mode: edge, regions
        ("classsr-fsrcnn-x4-fast", {}),
        ("classsr-fsrcnn-x4-fast", {"tolerance": 0.2}),
        ("classsr-fsrcnn-x4-fast", {"budget": 0.5}),
        ("srresnet-x4", {"mode": "regions"}),  # the heavy backbone: 100x FSRCNN's work
        ("classsr-srresnet-x4", {}),
    ]
    for name, options in runs:
        model = load_model(name)
        result = model.infer(x.to(next(model.parameters()).device), **options)
        label = " ".join([name, *(f"{k}={v}" for k, v in options.items())])
        rows.append((label, result.output[0].permute(1, 2, 0).cpu().numpy(), (model, result)))

    # "of -O": against the -O network of the same backbone (the first row of its family)
    o_flops = {"fsrcnn": rows[1][2][1].flops}
    for name, _, extra in rows:
        if extra is not None and name.startswith("srresnet-x4"):
            o_flops["srresnet"] = extra[1].flops
    print(f"demo photo: {ASSET.name}, LR {lr.shape[1]}x{lr.shape[0]} -> x4\n")
    w = max(len(name) for name, _, _ in rows)
    head = f"{'PSNR (dB)':>9} {'FLOPs':>9} {'of -O':>7} {'seconds':>8}  {'ran':<18} class shares"
    print(f"{'method':<{w}} {head}")
    for name, img, extra in rows:
        psnr = scorer.score(img, hr)["psnr"]
        if extra is None:
            print(f"{name:<{w}} {psnr:9.2f} {'-':>9} {'-':>7} {'-':>8}  {'-':<18}")
            continue
        _, res = extra
        ref = o_flops["srresnet" if "srresnet" in name else "fsrcnn"]
        total = sum(res.class_counts)
        shares = " / ".join(f"{100 * c / total:.0f}%" for c in res.class_counts)
        ran = f"{res.router}, {res.mode}" if len(res.class_counts) > 1 else res.mode
        print(
            f"{name:<{w}} {psnr:9.2f} {res.flops / 1e9:8.2f}G {100 * res.flops / ref:6.1f}% "
            f"{res.timings['total']:8.2f}  {ran:<18} {shares}"
        )

    model, result = rows[4][2]  # the default model of `classsr upscale`, at its defaults
    sr = rows[4][1]
    overlay = result_overlay(sr, result, model.num_classes)
    write_image(out / "classsr.png", Image(sr, None, False, 255))
    write_image(out / "class_map.png", Image(overlay, None, False, 255))
    of_o = 100 * result.flops / o_flops["fsrcnn"]
    panels = [
        ("bicubic", bicubic),
        ("FSRCNN-O", rows[1][1]),
        (f"ClassSR-FSRCNN, {of_o:.0f}% of -O's FLOPs", sr),
        ("ground truth", hr),
    ]
    size = min(hr.shape[:2]) // 4
    detail = (*most_different(sr, bicubic, size), size)  # where the methods differ most
    strip = labelled_strip(panels, detail)
    write_image(out / "strip.png", Image(strip, None, False, 255))
    widths = model.checkpoint_meta["model"]["widths"]
    colours = ", ".join(
        f"{c} = {'bicubic' if wd == 0 else f'width {wd}'}"
        for c, wd in zip(colour_names(model.num_classes), widths)
    )
    print(f"\nwrote {out}/classsr.png and {out}/class_map.png: each patch tinted by its branch,")
    print(f"  {colours} (cheapest to widest)")
    print(
        f"and {out}/strip.png: bicubic | FSRCNN-O | ClassSR-FSRCNN fast (the default) | "
        "ground truth, "
        "the detail outlined in red enlarged below"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
