"""``classsr divide CONFIG``: class labels for the sub-images from a reference model's PSNR."""

from __future__ import annotations

from classsr_core.commands.prepare import add_config_args


def add_parser(sub):
    p = sub.add_parser(
        "divide",
        help="label sub-images easy..hard by a reference model's PSNR",
        description="Run a reference model (or bicubic) on every prepared sub-image and split "
        "them into one class per branch by PSNR quantiles (divide.ratios).",
    )
    add_config_args(p)
    p.add_argument(
        "--reference",
        metavar="CHECKPOINT",
        help="reference model (overrides divide.reference; default: bicubic)",
    )
    p.add_argument("--device", help="cpu, cuda, ... (default: the config's, else the best)")
    return p


def run(args) -> int:
    from classsr_core.training.config import load_train_config
    from classsr_core.training.divide import divide

    cfg = load_train_config(args.config, args.overrides, trust_code=args.trust_code)
    divide(cfg, reference=args.reference, device=args.device, progress=not args.no_progress)
    return 0
