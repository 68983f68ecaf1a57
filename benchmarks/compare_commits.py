"""Wall clock of the same runs at two versions of the code: an earlier commit and the
working tree, in interleaved rounds (a process per version per round, each the minimum of
``--reps`` calls after a warm-up; the minimum over rounds). For a change that must not move
the speed table (a refactoring): the ratio should be 1 within the noise, which the spread
between rounds shows.

    .venv/bin/python benchmarks/compare_commits.py 9dc1546 --rounds 5
    .venv/bin/python benchmarks/compare_commits.py HEAD~3 --model classsr-srresnet-x4 --limit 2

The earlier commit is checked out with ``git worktree`` into a temporary folder and imported
ahead of the installed (editable) package; both versions use this machine's .venv. Each
image runs ``model.infer(lr)`` with the model's defaults (its router, mode and halo): the
default path, as ``classsr upscale`` runs it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def child(args) -> None:
    """Time every image at this process's version of the code; print JSON seconds."""
    import time

    import torch
    from router_headroom import load_pair

    import classsr_core
    from classsr_core.io.images import list_images
    from classsr_core.model.loading import load_model

    torch.set_num_threads(args.threads)
    model = load_model(args.model, device="cpu")
    out = {"code": str(Path(classsr_core.__file__).parent), "seconds": {}}
    for f in list_images([args.photos])[: args.limit]:
        _, lr = load_pair(f, model.scale)  # as the routing benchmarks make their inputs
        with torch.inference_mode():
            model.infer(lr)  # warm-up
            best = float("inf")
            for _ in range(args.reps):
                t0 = time.perf_counter()
                model.infer(lr)
                best = min(best, time.perf_counter() - t0)
        out["seconds"][Path(f).stem] = best
    print(json.dumps(out))


def run_version(args, pythonpath: str | None) -> dict:
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, __file__, "--child", "--model", args.model, "--photos", args.photos]
    cmd += ["--reps", str(args.reps), "--threads", str(args.threads)]
    cmd += ["--limit", str(args.limit)] if args.limit else []
    res = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    if res.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("base", nargs="?", help="the earlier commit (git rev)")
    ap.add_argument("--model", default="classsr-fsrcnn-x4-fast")
    ap.add_argument("--photos", default="data/photos/natural/whole")
    ap.add_argument("--limit", type=int, default=4, help="first N photos (0: all)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.limit = args.limit or None
    if args.child:
        child(args)
        return 0
    if not args.base:
        ap.error("give the earlier commit")
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "base"
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(tree), args.base],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        try:
            # The built-in plugins are the package ``classsr_plugins`` in folder ``plugins``.
            links = Path(tmp) / "links"
            links.mkdir()
            (links / "classsr_plugins").symlink_to(tree / "plugins")
            path = f"{tree}{os.pathsep}{links}"
            rounds = {"base": [], "tree": []}
            for r in range(args.rounds):
                for name, pp in (("base", path), ("tree", None)):
                    got = run_version(args, pp)
                    rounds[name].append(got["seconds"])
                    print(f"round {r + 1} {name}: {got['code']}", file=sys.stderr, flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT)
    images = list(rounds["tree"][0])
    print(f"`{args.model}`, default path, {args.threads} thread(s); seconds: minimum over")
    print(f"{args.rounds} interleaved rounds (each the minimum of {args.reps} calls)\n")
    print(f"| image | {args.base} | working tree | ratio | ratio range over rounds |")
    print("|---|---|---|---|---|")
    ratios = []
    for img in images:
        b = min(r[img] for r in rounds["base"])
        t = min(r[img] for r in rounds["tree"])
        per = [tr[img] / br[img] for br, tr in zip(rounds["base"], rounds["tree"])]
        ratios.append(t / b)
        print(f"| {img} | {b:.3f} | {t:.3f} | {t / b:.3f} | {min(per):.3f}-{max(per):.3f} |")
    print(f"| mean | | | {sum(ratios) / len(ratios):.3f} | |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
