"""``classsr convert-official IN.pth OUT.safetensors --arch ...``: an official ClassSR
checkpoint as a classsr safetensors file that ``load_model`` loads."""

from __future__ import annotations

# The official names, and the backbones' names where they differ (carn is the backbone
# carn_m, srresnet msrresnet): either is accepted.
ARCH_CHOICES = ("fsrcnn", "carn", "carn_m", "srresnet", "msrresnet", "rcan")


def add_parser(sub):
    p = sub.add_parser(
        "convert-official",
        help="convert an official ClassSR .pth checkpoint to a classsr .safetensors file",
        description="Read an official ClassSR checkpoint (weights only, no pickled code) and "
        "write a self-describing safetensors file that `load_model` and `--model` load.",
    )
    p.add_argument("input", metavar="IN.pth", help="the official checkpoint")
    p.add_argument("output", metavar="OUT.safetensors", help="where to write the converted model")
    p.add_argument(
        "--arch",
        required=True,
        choices=ARCH_CHOICES,
        help="which official model the file is (carn and carn_m name the same model)",
    )
    return p


def run(args) -> int:
    from classsr_core.commands.outputs import check_outputs
    from classsr_core.model.loading import from_official

    check_outputs([args.input], [(args.output, "OUT.safetensors")])  # before reading IN
    model = from_official(args.input, arch=args.arch)
    model.save(args.output)
    params = sum(p.numel() for p in model.parameters())
    widths = model.spec["widths"]
    print(
        f"wrote {args.output}: official ClassSR-{args.arch}, x{model.scale}, branches of "
        f"width {widths}, {params:,} parameters"
    )
    return 0
