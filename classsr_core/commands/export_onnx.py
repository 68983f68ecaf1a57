"""``classsr export-onnx MODEL -o OUT_DIR``: each branch of a model, and its classifier, to
ONNX with dynamic batch, height and width, each file checked against PyTorch on a photo.

Files written in ``OUT_DIR``: ``branch0.onnx`` .. ``branch{M-1}.onnx`` (cheapest first;
input ``lr`` ``(N, C, H, W)`` float32 in [0, 1], output ``sr`` ``(N, C, scale*H,
scale*W)``), ``classifier.onnx`` where the model has a classifier network (input
``patches`` ``(N, C, p, p)``, output ``logits`` ``(N, M)``) and ``model.json`` (what the
files are, the scale and tiling, the router, the measured differences). The edge router is
arithmetic on patch statistics and a calibrated table, not a network: nothing of it is
exported (docs/performance.md, "ONNX export").
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from classsr_core.commands.options import add_trust_code
from classsr_core.errors import ClassSRError, InputError

INSTALL_HINT = "pip install onnx onnxruntime"
OPSET = 17  # bicubic Resize needs 11 or more; 17 is what onnxruntime runs everywhere
MANIFEST = "model.json"
CLASSIFIER = "classifier.onnx"


class ExportError(ClassSRError):
    """An export failed, or its ONNX file does not reproduce PyTorch."""


class _TooFar(Exception):
    """An ONNX file differs from PyTorch by more than ``--tolerance`` (exit 1)."""


def add_parser(sub):
    p = sub.add_parser(
        "export-onnx",
        help="export each branch (and the classifier) of a model to ONNX, checked against PyTorch",
        description="Export each branch of MODEL, and its classifier network, to ONNX "
        f"(dynamic batch, height and width; opset {OPSET}) in OUT_DIR, check every file with "
        "onnxruntime against PyTorch on a photo and print the max abs difference. The edge "
        f"router is arithmetic, not a network: nothing of it is exported. Needs `{INSTALL_HINT}`.",
    )
    p.add_argument("model", metavar="MODEL", help="a shipped model's name or a model file")
    p.add_argument("-o", "--output", required=True, metavar="OUT_DIR", help="output folder")
    p.add_argument(
        "--overwrite", action="store_true", help="replace the files of an earlier export"
    )
    p.add_argument(
        "--tolerance",
        type=float,
        default=1e-4,
        help="largest max abs difference against PyTorch accepted, relative to the largest "
        "PyTorch output where that is over 1 (the classifier's logits); default 1e-4. A file "
        "that differs more is not written (exit 1)",
    )
    add_trust_code(p)
    return p


def _planned(out: Path) -> list[Path]:
    """The files of an export in ``out`` that already exist: the fixed names and every
    ``branch*.onnx`` (the branch count is known only once the model is loaded)."""
    found = [out / MANIFEST, out / CLASSIFIER]
    if out.is_dir():
        found += sorted(out.glob("branch*.onnx"))
    return [p for p in found if p.exists()]


def check_plan(model: str, out: Path, overwrite: bool) -> None:
    """Before any work: ``-o`` a folder (or a new path), no output one of the inputs, and
    no earlier export replaced without ``--overwrite``."""
    from classsr_core.commands.outputs import UnsafeOutputError, check_outputs, model_files

    if out.exists() and not out.is_dir():
        raise UnsafeOutputError(f"-o {out} is a file; give a folder (it is created if missing)")
    inputs = model_files(model)
    names = [out / MANIFEST, out / CLASSIFIER, *_planned(out)]
    check_outputs(inputs, [(p, f"-o {out}") for p in dict.fromkeys(names)])
    for path in inputs:  # the model file itself inside OUT_DIR under an output's name
        if path.resolve().parent == out.resolve() and path.name in {p.name for p in names}:
            raise UnsafeOutputError(f"{path} is the input model; choose another -o folder")
    existing = _planned(out)
    if existing and not overwrite:
        shown = ", ".join(str(p) for p in existing[:5])
        more = f" and {len(existing) - 5} more" if len(existing) > 5 else ""
        raise UnsafeOutputError(
            f"{len(existing)} output file(s) already exist: {shown}{more}; nothing was "
            "written. Pass --overwrite to replace them, or choose another -o folder"
        )


def require_onnx():
    """``(onnx, onnxruntime)``, or an error that says what to install."""
    try:
        import onnx
        import onnxruntime
    except ImportError as exc:
        raise InputError(
            f"export-onnx needs onnx and onnxruntime ({exc.name} is missing): {INSTALL_HINT}"
        ) from None
    return onnx, onnxruntime


def check_photo(scale: int):
    """``(name, LR image)``: scikit-image's astronaut (512x512) downscaled ``scale`` times
    (PIL bicubic), as a float32 tensor ``(1, 3, h, w)`` in [0, 1]; the shipped demo photo
    where scikit-image is missing."""
    import numpy as np
    import torch
    from PIL import Image

    try:
        from skimage import data

        name, rgb = "astronaut (scikit-image)", data.astronaut()
    except ImportError:
        asset = Path(__file__).resolve().parents[1] / "assets" / "demo_hr.png"
        name, rgb = "demo_hr.png (shipped)", np.asarray(Image.open(asset).convert("RGB"))
    h, w = rgb.shape[:2]
    lr = Image.fromarray(rgb).resize((w // scale, h // scale), Image.Resampling.BICUBIC)
    x = torch.from_numpy(np.asarray(lr).copy()).permute(2, 0, 1)[None].float() / 255
    return name, x


def standalone(module):
    """A plain module to trace: a weight-sharing branch as a copy with its sliced weights."""
    return module.as_module() if hasattr(module, "as_module") else module


def export_module(module, example, path: Path, input_name: str, output_name: str) -> None:
    """``torch.onnx.export`` with the TorchScript exporter (``dynamo=False``): batch,
    height and width dynamic. It needs no onnxscript and handles FSRCNN's transposed conv,
    PReLU and bicubic skip (opset >= 11)."""
    import warnings

    import torch

    names = {0: "batch", 2: "height", 3: "width"}
    out_names = {0: "batch", 2: "out_height", 3: "out_width"}
    axes = {input_name: names, output_name: out_names if output_name == "sr" else {0: "batch"}}
    with warnings.catch_warnings():
        # "You are using the legacy TorchScript-based ONNX export": on purpose (no
        # onnxscript needed, dynamic axes by name); and tracer notes on shape arithmetic.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            module,
            (example,),
            str(path),
            dynamo=False,
            input_names=[input_name],
            output_names=[output_name],
            dynamic_axes=axes,
            opset_version=OPSET,
        )


def compare(ort, path: Path, module, inputs) -> tuple[float, float, bool]:
    """``(max abs difference, max abs PyTorch output, same argmax over dim 1)`` between
    onnxruntime on ``path`` and PyTorch, over ``inputs``."""
    import torch

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    worst = peak = 0.0
    same = True
    for x in inputs:
        with torch.inference_mode():
            ref = module(x).float().numpy()
        got = session.run(None, {name: x.numpy()})[0]
        if got.shape != ref.shape:
            raise ExportError(f"{path.name}: onnxruntime gave {got.shape}, PyTorch {ref.shape}")
        worst = max(worst, float(abs(got - ref).max()))
        peak = max(peak, float(abs(ref).max()))
        same = same and bool((got.argmax(1) == ref.argmax(1)).all())
    return worst, peak, same


def run(args) -> int:
    out = Path(args.output)
    check_plan(args.model, out, args.overwrite)
    onnx, ort = require_onnx()

    import torch

    from classsr_core.io.atomic import atomic_path, atomic_write_text
    from classsr_core.model.loading import load_model

    model = load_model(args.model, device="cpu", trust_code=args.trust_code).eval()
    photo, lr = check_photo(model.scale)
    h, w = lr.shape[2:]
    # Two sizes (the dynamic axes): the whole LR and an odd, non-square crop of it.
    sizes = [lr, lr[:, :, : max(h - 37, 8), : max(w - 61, 8)].contiguous()]
    spec = model.spec or {}
    widths = spec.get("widths") or [None] * len(model.branches)
    done: list[tuple[str, torch.nn.Module, list, str, str]] = [
        (f"branch{i}.onnx", standalone(b).eval(), sizes, "lr", "sr")
        for i, b in enumerate(model.branches)
    ]
    if model.classifier is not None:
        p, s = model.patch_size, model.stride
        patches = lr.unfold(2, p, s).unfold(3, p, s).permute(0, 2, 3, 1, 4, 5)
        patches = patches.reshape(-1, lr.shape[1], p, p).contiguous()
        done.append(
            (CLASSIFIER, model.classifier.eval(), [patches, patches[:5]], "patches", "logits")
        )

    out.mkdir(parents=True, exist_ok=True)
    diffs: dict[str, float] = {}
    for name, module, inputs, in_name, out_name in done:
        target = out / name
        try:
            with atomic_path(target) as tmp:
                try:
                    export_module(module, inputs[0][:1], tmp, in_name, out_name)
                    onnx.checker.check_model(str(tmp))
                except ClassSRError:
                    raise
                except Exception as exc:  # the exporter's errors: one line, no traceback
                    raise ExportError(f"{name}: the ONNX export failed: {exc}") from exc
                diffs[name], peak, same = compare(ort, tmp, module, inputs)
                # Relative to the output's size where it is over 1 (the classifier's logits
                # reach a few hundred); the branches' outputs are in about [0, 1].
                if diffs[name] / max(1.0, peak) > args.tolerance:
                    raise _TooFar  # the temporary file is removed, not renamed
        except _TooFar:
            print(
                f"classsr export-onnx: error: {name}: max abs difference {diffs[name]:.3g} "
                f"against PyTorch is over --tolerance {args.tolerance:g}; not written",
                file=sys.stderr,
            )
            return 1
        shape = "x".join(str(v) for v in inputs[0].shape[2:])
        sizes_seen = ", ".join("x".join(str(v) for v in x.shape[2:]) for x in inputs)
        if in_name == "patches":
            what = (
                f"batches of {inputs[0].shape[0]} and {inputs[1].shape[0]} {shape} patches; "
                f"logits up to {peak:.3g}, {'the same' if same else 'a different'} class "
                "for every patch"
            )
        else:
            what = f"LR {sizes_seen}"
        print(f"{target}: max abs diff {diffs[name]:.2e} vs PyTorch ({what})")

    router = model.default_router or ("classifier" if model.classifier is not None else None)
    manifest = {
        "model": args.model,
        "scale": model.scale,
        "in_channels": model.in_channels,
        "patch_size": model.patch_size,
        "stride": model.stride,
        "opset": OPSET,
        "branch_io": "lr: float32 (N, C, H, W), RGB in [0, 1], any H and W -> "
        "sr: (N, C, scale*H, scale*W), not clipped",
        "classifier_io": "patches: float32 (N, C, patch_size, patch_size) -> logits: (N, M)",
        "branches": [
            {
                "file": f"branch{i}.onnx",
                "width": widths[i],
                "max_abs_diff": diffs[f"branch{i}.onnx"],
            }
            for i in range(len(model.branches))
        ],
        "classifier": (
            {"file": CLASSIFIER, "max_abs_diff": diffs[CLASSIFIER]}
            if model.classifier is not None
            else None
        ),
        "default_router": router,
        "checked_on": photo,
        "versions": {
            "torch": torch.__version__,
            "onnx": onnx.__version__,
            "onnxruntime": ort.__version__,
        },
    }
    atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    if router == "edge":
        print(
            "router: edge (the model's default) is arithmetic on patch statistics and a "
            "calibrated table in the model file, not a network: nothing to export"
        )
    elif router and router != "classifier":
        print(f"router: {router} is no network of the model: not exported")
    print(f"checked on {photo}, downscaled x{model.scale}; wrote {out / MANIFEST}")
    return 0
