"""``classsr train CONFIG --stage branches|classifier|joint|all [--resume]``.

Runs ``prepare`` and ``divide`` first when their results are missing. Under
``torchrun --nproc_per_node N`` the same command trains with DDP.
"""

from __future__ import annotations

from classsr_core.commands.prepare import add_config_args


def add_parser(sub):
    p = sub.add_parser(
        "train",
        help="train the branches, the classifier, then both (resumable, torchrun-ready)",
        description="Stage 1 (branches) trains each branch on its class, stage 2 "
        "(classifier) the Class-Module with frozen branches, stage 3 (joint) everything.",
    )
    add_config_args(p)
    p.add_argument(
        "--stage",
        default="all",
        choices=["branches", "classifier", "joint", "all"],
        help="which stage to run (default: all)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from OUT/state/ (and skip stages already complete)",
    )
    return p


def run(args) -> int:
    from classsr_core.training.config import load_train_config
    from classsr_core.training.trainer import train

    cfg = load_train_config(args.config, args.overrides, trust_code=args.trust_code)
    trainer = train(cfg, args.stage, resume=args.resume, progress=not args.no_progress)
    if trainer.ctx.is_main and trainer.results:
        print(f"final checkpoint: {trainer.results[-1].path}")
    return 0
