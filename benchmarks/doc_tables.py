"""Regenerate the measured tables in docs, in place, with the commands that print them.

Run by hand (not a test), from the repository root, after the photo scripts
(``scripts/fetch_photos.sh``, ``fetch_calib_photos.sh``, ``fetch_val_photos.sh``,
``fetch_natural_photos.sh``):

    .venv/bin/python benchmarks/doc_tables.py            # every table but the slow ones
    .venv/bin/python benchmarks/doc_tables.py --slow     # and the slow ones (they train)
    .venv/bin/python benchmarks/doc_tables.py --list     # the tables, their flags and commands
    .venv/bin/python benchmarks/doc_tables.py --only routing-natural-fast flops-fsrcnn
    .venv/bin/python benchmarks/doc_tables.py --no-timing   # only the tables without times
    .venv/bin/python benchmarks/doc_tables.py --check flops-fsrcnn   # rerun, compare, write nothing

A doc holds a table between two markers::

    <!-- numbers: NAME -->
    ...whatever the last run wrote...
    <!-- /numbers -->

and this script replaces what is between them with the command, what it printed, and the
date, commit and machine of the run. A number in docs that does not come from here is a
number nobody can rerun: add its command to ``TABLES``.

Flags of an entry: ``slow`` (it trains networks or runs for many minutes: skipped unless
``--slow`` or named by ``--only``); ``timing`` (it prints wall-clock times: rerun it on an
otherwise idle machine, and only with a benchmark that times its settings in interleaved
rounds, each setting once a round, the minimum over rounds, ratios from one process);
``fence`` (its output is plain text, not markdown: it is shown in a code block).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = ".venv/bin/python"
CLI = ".venv/bin/classsr"


@dataclass(frozen=True)
class Table:
    """One block of one doc: the command (run from the repository root) that prints it."""

    doc: str
    command: str
    slow: bool = False  # trains networks / many minutes: only with --slow or --only
    timing: bool = False  # prints wall-clock times: rerun on an idle machine
    fence: bool = False  # plain-text output: shown in a code block

    def __iter__(self):  # ``doc, command = TABLES[name]`` keeps working
        return iter((self.doc, self.command))


def _sweep(model: str, mode: str, router: str, budgets: str, out: str) -> str:
    """``classsr sweep`` on the validation photos, one thread (its PSNRs do not then depend
    on the machine's thread count); its CSV and plot go to ``out``.csv / .png."""
    written = f" -o {out}"
    return (
        f"OMP_NUM_THREADS=1 {CLI} sweep data/photos/val --model {model} --o-model fsrcnn-x4 "
        f"--mode {mode} --router {router} --budgets {budgets}{written} --no-progress"
    )


def _flops(backbone: str, widths: str, extra: str = "") -> str:
    return f"{CLI} flops --backbone {backbone} --widths {widths}{extra}"


def _quick(task: str) -> str:
    """An example's quick run from scratch, one thread: the validation lines of its training
    (the held-out photo, each branch forced) and its closing scores."""
    out = f"runs/numbers/{task}-quick"
    return (
        f"rm -rf {out} && mkdir -p {out} && OMP_NUM_THREADS=1 {PY} examples/{task}.py "
        f"--out {out} > {out}/stdout.log && "
        f"grep -E '^(\\[.*\\] iter |input|-O:|ClassSR:)' {out}/stdout.log"
    )


_DNCNN = " --scale 1 --backbone-kwargs '{\"nb\": %d}'"
_SPEED_HEAD = (
    f"{PY} benchmarks/speed.py --device cpu --images runs/speed-images --threads 2 --reps 3"
)

TABLES: dict[str, Table] = {
    "routing-natural-fast": Table(
        "docs/routing.md",
        f"{PY} benchmarks/router_headroom.py --model classsr-fsrcnn-x4-fast --o-model fsrcnn-x4 "
        "--photos data/photos/natural/holdout --routers edge --budgets none "
        "--tolerances 0.01 0.02 0.05 0.1 0.2 0.5 --halos 4 --threads 1 --reps 1",
        timing=True,
    ),
    "routing-natural-srresnet": Table(
        "docs/routing.md",
        f"{PY} benchmarks/router_headroom.py --model classsr-srresnet-x4 --o-model srresnet-x4 "
        "--photos data/photos/natural/holdout --routers edge --budgets none "
        "--tolerances 0.05 0.1 0.2 0.5 --threads 1 --reps 1",
        timing=True,
    ),
    "routing-graphics-fast": Table(
        "docs/routing.md",
        f"{PY} benchmarks/router_headroom.py --model classsr-fsrcnn-x4-fast --o-model fsrcnn-x4 "
        "--photos data/photos/holdout --routers edge --budgets none 0.5 "
        "--tolerances 0.01 0.02 0.05 0.1 0.2 0.5 --folder-budget 0.5 --threads 1 --reps 1",
        timing=True,
    ),
    "routing-time-fast": Table(
        "docs/routing.md",
        f"{PY} benchmarks/routing_time.py --model classsr-fsrcnn-x4-fast --o-model fsrcnn-x4 "
        "--photos data/photos/natural/whole --tolerances default 0.05 0.1 0.2 0.5 "
        "--threads 1 --reps 3",
        timing=True,
    ),
    "flat-shares": Table("docs/routing.md", f"{PY} benchmarks/flat_shares.py"),
    "routing-limits-fast": Table(
        "docs/routing.md",
        f"{PY} benchmarks/routing_limits.py --model classsr-fsrcnn-x4-fast",
    ),
    "routing-limits-srresnet": Table(
        "docs/routing.md",
        f"{PY} benchmarks/routing_limits.py --model classsr-srresnet-x4",
        slow=True,
    ),
    "structure-speed": Table(
        "docs/architecture.md",
        f"{PY} benchmarks/compare_commits.py 9dc1546 --rounds 5 --reps 2 --limit 4",
        timing=True,
    ),
    "model-zoo-results": Table(
        "docs/model-zoo.md",
        f"{PY} benchmarks/model_zoo.py --pair classsr-fsrcnn-x4 fsrcnn-x4 --pair "
        "classsr-fsrcnn-x4-shared fsrcnn-x4 --pair classsr-fsrcnn-x4-fast fsrcnn-x4 "
        "--budget 0.8 0.9 --threads 1 --no-seconds",
    ),
    "default-model": Table(
        "docs/model-zoo.md",
        "sh -c 'for m in classsr-fsrcnn-x4-fast classsr-fsrcnn-x4-shared classsr-fsrcnn-x4; do "
        f"{PY} benchmarks/routing_time.py --model $m --o-model fsrcnn-x4 "
        "--photos data/photos/natural/whole --tolerances default --threads 1 --reps 3 --summary "
        "| if [ $m = classsr-fsrcnn-x4-fast ]; then cat; else tail -n 1; fi; done'",
        timing=True,
    ),
    # docs/flops.md: per-patch parameters and FLOPs (deterministic; seconds each, RCAN longer).
    "flops-fsrcnn": Table("docs/flops.md", _flops("fsrcnn", "16,36,56"), fence=True),
    "flops-carn-m": Table("docs/flops.md", _flops("carn_m", "36,52,64"), fence=True),
    "flops-srresnet": Table("docs/flops.md", _flops("srresnet", "36,52,64"), fence=True),
    "flops-rcan": Table("docs/flops.md", _flops("rcan", "36,50,64"), fence=True),
    # docs/backbones.md: every paper backbone against the paper's table (about 3 minutes).
    "backbone-table": Table("docs/backbones.md", f"{PY} benchmarks/backbone_table.py"),
    # docs/budget.md: the classifier's budget in the paper's patches mode (30 s each).
    "budget-sweep-paper": Table(
        "docs/budget.md",
        _sweep(
            "classsr-fsrcnn-x4",
            "patches",
            "classifier",
            "0.62:1.0:0.06",
            "docs/images/budget-sweep-classsr-fsrcnn-x4",
        ),
        fence=True,
    ),
    "budget-sweep-shared": Table(
        "docs/budget.md",
        _sweep(
            "classsr-fsrcnn-x4-shared",
            "patches",
            "classifier",
            "0.62:1.0:0.06",
            "docs/images/budget-sweep-classsr-fsrcnn-x4-shared",
        ),
        fence=True,
    ),
    "budget-shared-vs-separate": Table(
        "docs/budget.md",
        f"{PY} benchmarks/model_zoo.py --pair classsr-fsrcnn-x4 fsrcnn-x4 --pair "
        "classsr-fsrcnn-x4-shared fsrcnn-x4 --budget 0.8 0.9 --router classifier "
        "--mode patches --no-seconds --threads 1",
    ),
    # docs/performance.md
    "speed-fast": Table(
        "docs/performance.md",
        f"{_SPEED_HEAD} --sizes 2K 4K 8K --model classsr-fsrcnn-x4-fast "
        "--router classifier edge --kinds patches regions --budget 0.5 0.6 0.7 "
        "--skip-loop-above 4K",
        slow=True,
        timing=True,
    ),
    "speed-paper-8k": Table(
        "docs/performance.md",
        f"{_SPEED_HEAD} --sizes 8K --model classsr-fsrcnn-x4 --router classifier edge "
        "--kinds patches regions",
        slow=True,
        timing=True,
    ),
    "speed-srresnet": Table(
        "docs/performance.md",
        f"{PY} benchmarks/speed.py --device cpu --images runs/speed-images --threads 2 --reps 2 "
        "--sizes 2K 4K --model classsr-srresnet-x4 --o-model srresnet-x4 --router edge "
        "--kinds regions --o-kinds whole o-regions --no-loop",
        slow=True,
        timing=True,
    ),
    "regions-val": Table(
        "docs/performance.md",
        f"{PY} benchmarks/model_zoo.py --pair classsr-fsrcnn-x4 fsrcnn-x4 --pair "
        "classsr-fsrcnn-x4-shared fsrcnn-x4 --pair classsr-fsrcnn-x4-fast fsrcnn-x4 "
        "--router classifier --mode patches regions --no-seconds --means --threads 1",
    ),
    "edge-scores": Table(
        "docs/performance.md",
        "sh -c 'set -e; for m in classsr-fsrcnn-x4 classsr-fsrcnn-x4-shared "
        "classsr-fsrcnn-x4-fast; "
        f"do {PY} benchmarks/edge_scores.py --model $m --budgets 0.5 0.7; done'",
        fence=True,
    ),
    "edge-sweep-fast": Table(
        "docs/performance.md",
        _sweep(
            "classsr-fsrcnn-x4-fast",
            "regions",
            "classifier",
            "0.4:1.0:0.1",
            "docs/images/budget-sweep-classsr-fsrcnn-x4-fast-regions",
        )
        + " && "
        + _sweep(
            "classsr-fsrcnn-x4-fast",
            "regions",
            "edge",
            "0.4:1.0:0.1",
            "docs/images/budget-sweep-classsr-fsrcnn-x4-fast-regions-edge",
        ),
        fence=True,
    ),
    "edge-sweep-shared": Table(
        "docs/performance.md",
        _sweep(
            "classsr-fsrcnn-x4-shared",
            "regions",
            "classifier",
            "0.4:1.0:0.1",
            "runs/numbers/sweep-shared-regions",
        )
        + " && "
        + _sweep(
            "classsr-fsrcnn-x4-shared",
            "regions",
            "edge",
            "0.4:1.0:0.1",
            "runs/numbers/sweep-shared-regions-edge",
        ),
        fence=True,
    ),
    "widths-time": Table(
        "docs/performance.md",
        "sh -c 'set -e; for b in srresnet,36,52,64 carn_m,36,52,64 fsrcnn,16,36,56; do "
        f"{CLI} widths --backbone ${{b%%,*}} --widths ${{b#*,}} --device cpu --threads 2 "
        "--reps 5; echo; done'",
        timing=True,
        fence=True,
    ),
    "onnx-export": Table(
        "docs/performance.md",
        "sh -c 'set -e; for m in classsr-fsrcnn-x4-fast classsr-fsrcnn-x4; do "
        f"{CLI} export-onnx $m -o runs/numbers/onnx/$m/ --overwrite 2>&1; done'",
        fence=True,
    ),
    "onnx-speed": Table(
        "docs/performance.md", f"{PY} benchmarks/onnx_speed.py --reps 3", slow=True, timing=True
    ),
    # docs/tasks: the quick CPU runs of the examples (they train small networks: minutes).
    "deblock-quick": Table("docs/tasks/deblock.md", _quick("deblock"), slow=True, fence=True),
    "denoise-quick": Table("docs/tasks/denoise.md", _quick("denoise"), slow=True, fence=True),
    "deblock-flops": Table(
        "docs/tasks/deblock.md", _flops("dncnn", "16,32,64", _DNCNN % 10), fence=True
    ),
    "denoise-flops": Table(
        "docs/tasks/denoise.md",
        _flops("dncnn", "16,32,64", _DNCNN % 10)
        + " && echo && "
        + _flops("dncnn", "16,32,64", _DNCNN % 17),
        fence=True,
    ),
}

# A block: its opening marker, a body with no other opening marker in it, its closing marker.
BLOCK = re.compile(
    r"(<!-- numbers: (?P<name>[\w-]+) -->\n)(?P<body>(?:(?!<!-- numbers: ).)*?)(<!-- /numbers -->)",
    re.S,
)
MARKER = re.compile(r"<!-- (?:numbers: (?P<name>[\w-]+)|(?P<close>/numbers)) -->")


def marker_errors(text: str) -> list[str]:
    """What is wrong with the markers of one doc: an opening marker inside an open block, a
    closing marker with none open, a block left open, a name used twice."""
    errors, open_name, seen = [], None, set()
    for m in MARKER.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        if m.group("close"):
            if open_name is None:
                errors.append(f"line {line}: '<!-- /numbers -->' closes no block")
            open_name = None
            continue
        name = m.group("name")
        if open_name is not None:
            errors.append(f"line {line}: '{name}' opens inside the open block '{open_name}'")
        if name in seen:
            errors.append(f"line {line}: a second block '{name}'")
        seen.add(name)
        open_name = name
    if open_name is not None:
        errors.append(f"block '{open_name}' is never closed")
    return errors


def blocks(text: str) -> dict[str, str]:
    """name -> body of every well-formed block of a doc."""
    return {m.group("name"): m.group("body") for m in BLOCK.finditer(text)}


def stamp() -> str:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    ).stdout.strip()
    cpu = platform.processor() or platform.machine()
    cores = len(os.sched_getaffinity(0))
    return (
        f"{time.strftime('%Y-%m-%d')}, commit {commit or '?'}{' + changes' if dirty else ''}, "
        f"{cpu}, {cores} cores"
    )


def shown(command: str) -> str:
    return command.replace(f"{PY} ", ".venv/bin/python ")


LOAD: dict[str, float] = {}  # name -> the load average when its command started


def execute(name: str) -> str:
    """Run the table's command; what it printed on stdout, stripped (exits on failure)."""
    command = TABLES[name].command
    print(f"numbers: {name}: {command}", file=sys.stderr, flush=True)
    LOAD[name] = os.getloadavg()[0]
    t0 = time.perf_counter()
    done = subprocess.run(command, shell=True, cwd=ROOT, capture_output=True, text=True)
    took = time.perf_counter() - t0
    if done.returncode != 0:
        sys.exit(f"numbers: {name} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    print(f"numbers: {name}: ran in {took:.0f} s", file=sys.stderr, flush=True)
    return done.stdout.strip()


def output_text(name: str, printed: str) -> str:
    """How ``printed`` appears in the block: a code block for plain-text output."""
    return f"```\n{printed}\n```" if TABLES[name].fence else printed


def render(name: str, printed: str) -> str:
    load = ""
    if TABLES[name].timing and name in LOAD:  # times mean little on a busy machine
        load = f", load average {LOAD[name]:.2f} at the start"
    return (
        f"```\n{shown(TABLES[name].command)}\n```\n\n{output_text(name, printed)}\n\n"
        f"_Printed by the command above ({stamp()}{load}); "
        f"`benchmarks/doc_tables.py --only {name}` reruns it and rewrites this block._\n"
    )


def run(name: str) -> str:
    return render(name, execute(name))


def write(name: str, text: str) -> None:
    doc = ROOT / TABLES[name].doc
    source = doc.read_text()
    errors = marker_errors(source)
    if errors:
        sys.exit(f"numbers: {doc}: markers out of order, nothing written: " + "; ".join(errors))
    found = False

    def replace(m: re.Match) -> str:
        nonlocal found
        if m.group("name") != name:
            return m.group(0)
        found = True
        return f"{m.group(1)}{text}{m.group(4)}"

    updated = BLOCK.sub(replace, source)
    if not found:
        sys.exit(f"numbers: no '<!-- numbers: {name} -->' block in {doc}")
    tmp = doc.with_suffix(doc.suffix + ".tmp")
    tmp.write_text(updated)
    tmp.replace(doc)


def check(name: str) -> bool:
    """Rerun ``name`` and compare what it prints with its block (the stamp line aside)."""
    body = blocks((ROOT / TABLES[name].doc).read_text()).get(name)
    if body is None:
        sys.exit(f"numbers: no '<!-- numbers: {name} -->' block in {TABLES[name].doc}")
    expected = output_text(name, execute(name))
    same = expected in body
    print(f"numbers: {name}: {'the same as' if same else 'DIFFERS from'} {TABLES[name].doc}")
    return same


def selected(args) -> list[str]:
    if args.only:
        return args.only
    return [
        name
        for name, table in TABLES.items()
        if (args.slow or not table.slow) and not (args.no_timing and table.timing)
    ]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", nargs="+", choices=list(TABLES), help="just these tables")
    ap.add_argument("--slow", action="store_true", help="also the slow tables (they train)")
    ap.add_argument(
        "--no-timing", action="store_true", help="leave out the tables that print times"
    )
    ap.add_argument("--list", action="store_true", help="print the tables and commands")
    ap.add_argument(
        "--check", nargs="+", choices=list(TABLES), help="rerun and compare; write nothing"
    )
    args = ap.parse_args(argv)
    if args.list:
        for name, table in TABLES.items():
            flags = [f for f in ("slow", "timing", "fence") if getattr(table, f)]
            print(f"{name}  ({table.doc}{', ' + ', '.join(flags) if flags else ''})")
            print(f"    {table.command}")
        return 0
    if args.check:
        return 0 if all([check(name) for name in args.check]) else 1
    for name in selected(args):
        write(name, run(name))
        print(f"numbers: {name} written to {TABLES[name].doc}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
