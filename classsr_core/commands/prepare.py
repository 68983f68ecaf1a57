"""``classsr prepare CONFIG``: HR images -> task inputs -> sub-images in a compact store."""

from __future__ import annotations


def add_config_args(p) -> None:
    p.add_argument("config", help="training YAML (see examples/configs/)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set stages.joint.lr=1e-5 (repeatable)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--trust-code",
        action="store_true",
        help="allow model.backbone (and divide.reference's file) to name module:ClassName, "
        "which imports and runs that code; only for configs you trust (docs/safety.md)",
    )


def add_parser(sub):
    p = sub.add_parser(
        "prepare",
        help="cut HR images into training sub-images (multi-scale, task inputs)",
        description="Read the HR images of data.train / data.val, make the task's inputs "
        "(or read them: paired folders {inputs: DIR, targets: DIR}) and store sub-images "
        "with a manifest. Re-running skips what is done.",
    )
    add_config_args(p)
    return p


def run(args) -> int:
    import json

    from classsr_core.training.config import load_train_config
    from classsr_core.training.prepare import prepare

    cfg = load_train_config(args.config, args.overrides, trust_code=args.trust_code)
    summary = prepare(cfg, progress=not args.no_progress)
    print(json.dumps(summary))
    return 0
