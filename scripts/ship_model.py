"""Copy a trained checkpoint into the package as a shipped model, with its model card.

    python scripts/ship_model.py runs/fsrcnn-x4/model.safetensors fsrcnn-x4 \
        --trained-on "mate-backgrounds train split (10 photos, halved)" \
        --config examples/configs/zoo/fsrcnn-x4.yaml

The card (training data, config file, iterations, training seconds, validation scores)
travels in the safetensors metadata, and `classsr models` prints it. Weights that would
take more than 5 MB in fp32 are stored in fp16 (`load_state_dict` copies them into the
model's fp32 parameters on load); the card says which.
"""

from __future__ import annotations

import argparse

from classsr_core.io.checkpoint import WEIGHTS_DIR, read_checkpoint, save_state

# Above this, fp32 weights go to disk as fp16: half the wheel, and the precision lost
# (about 3 decimal digits) is below what 8-bit outputs show.
FP16_ABOVE = 5 * 1024 * 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("name")
    parser.add_argument("--trained-on", required=True)
    parser.add_argument("--config", required=True, help="the YAML that trained it")
    parser.add_argument("--task", default="sr")
    parser.add_argument("--train-minutes", type=float, default=None)
    args = parser.parse_args()
    state, meta = read_checkpoint(args.checkpoint)
    fp32_bytes = sum(v.numel() * 4 for v in state.values() if v.is_floating_point())
    stored_as = "float16" if fp32_bytes > FP16_ABOVE else "float32"
    if stored_as == "float16":
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    card = {
        "task": args.task,
        "trained_on": args.trained_on,
        "config": args.config,
        "iterations": meta.get("iteration"),
        "stage": meta.get("stage"),
        "val": meta.get("val"),
        "train_minutes": args.train_minutes,
        "stored_as": stored_as,
    }
    out = WEIGHTS_DIR / f"{args.name}.safetensors"
    save_state(state, out, {"model": meta["model"], "card": card})
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KB, {stored_as})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
