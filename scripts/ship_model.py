"""Copy a trained checkpoint into the package as a shipped model, with its model card.

    python scripts/ship_model.py runs/fsrcnn-x4/model.safetensors fsrcnn-x4 \
        --trained-on "mate-backgrounds train split (10 photos, halved)" \
        --config examples/configs/zoo/fsrcnn-x4.yaml

The card (training data, config file, iterations, training seconds, validation scores)
travels in the safetensors metadata, and `classsr models` prints it.
"""

from __future__ import annotations

import argparse

from classsr_core.io.checkpoint import WEIGHTS_DIR, read_checkpoint, save_state


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
    card = {
        "task": args.task,
        "trained_on": args.trained_on,
        "config": args.config,
        "iterations": meta.get("iteration"),
        "stage": meta.get("stage"),
        "val": meta.get("val"),
        "train_minutes": args.train_minutes,
    }
    out = WEIGHTS_DIR / f"{args.name}.safetensors"
    save_state(state, out, {"model": meta["model"], "card": card})
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
