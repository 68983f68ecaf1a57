"""Regenerate the measured tables in docs, in place, with the commands that print them.

Run by hand (not a test), from the repository root, after the photo scripts
(``scripts/fetch_photos.sh``, ``fetch_calib_photos.sh``, ``fetch_val_photos.sh``,
``fetch_natural_photos.sh``):

    .venv/bin/python benchmarks/doc_tables.py            # every table (about 40 minutes here)
    .venv/bin/python benchmarks/doc_tables.py --list     # the tables and their commands
    .venv/bin/python benchmarks/doc_tables.py --only routing-natural-fast

A doc holds a table between two markers::

    <!-- numbers: NAME -->
    ...whatever the last run wrote...
    <!-- /numbers -->

and this script replaces what is between them with the command, what it printed, and the
date, commit and machine of the run. A number in docs that does not come from here is a
number nobody can rerun: add its command to ``TABLES``.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = ".venv/bin/python"

# name -> (doc, command). Commands run from the repository root.
TABLES: dict[str, tuple[str, str]] = {
    "routing-natural-fast": (
        "docs/routing.md",
        f"{PY} benchmarks/router_headroom.py --model classsr-fsrcnn-x4-fast --o-model fsrcnn-x4 "
        "--photos data/photos/natural/holdout --routers edge --budgets none "
        "--tolerances 0.05 0.1 0.2 0.5 --threads 1 --reps 1",
    ),
    "routing-natural-srresnet": (
        "docs/routing.md",
        f"{PY} benchmarks/router_headroom.py --model classsr-srresnet-x4 --o-model srresnet-x4 "
        "--photos data/photos/natural/holdout --routers edge --budgets none "
        "--tolerances 0.05 0.1 0.2 0.5 --threads 1 --reps 1",
    ),
    "routing-graphics-fast": (
        "docs/routing.md",
        f"{PY} benchmarks/router_headroom.py --model classsr-fsrcnn-x4-fast --o-model fsrcnn-x4 "
        "--photos data/photos/holdout --routers edge --budgets none 0.5 "
        "--tolerances 0.05 0.1 0.2 0.5 --folder-budget 0.5 --threads 1 --reps 1",
    ),
    "routing-time-fast": (
        "docs/routing.md",
        f"{PY} benchmarks/routing_time.py --model classsr-fsrcnn-x4-fast --o-model fsrcnn-x4 "
        "--photos data/photos/natural/whole --tolerances default 0.05 0.1 0.2 0.5 "
        "--threads 1 --reps 3",
    ),
    "model-zoo-results": (
        "docs/model-zoo.md",
        f"{PY} benchmarks/model_zoo.py --pair classsr-fsrcnn-x4 fsrcnn-x4 --pair "
        "classsr-fsrcnn-x4-shared fsrcnn-x4 --pair classsr-fsrcnn-x4-fast fsrcnn-x4 "
        "--budget 0.8 0.9 --threads 1",
    ),
    "default-model": (
        "docs/model-zoo.md",
        "sh -c 'for m in classsr-fsrcnn-x4-fast classsr-fsrcnn-x4-shared classsr-fsrcnn-x4; do "
        f"{PY} benchmarks/routing_time.py --model $m --o-model fsrcnn-x4 "
        "--photos data/photos/natural/whole --tolerances default --threads 1 --reps 3 --summary "
        "| if [ $m = classsr-fsrcnn-x4-fast ]; then cat; else tail -n 1; fi; done'",
    ),
}

BLOCK = re.compile(r"(<!-- numbers: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /numbers -->)", re.S)


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


def run(name: str) -> str:
    _, command = TABLES[name]
    print(f"numbers: {name}: {command}", file=sys.stderr, flush=True)
    done = subprocess.run(command, shell=True, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"numbers: {name} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    shown = command.replace(f"{PY} ", ".venv/bin/python ")
    return (
        f"```\n{shown}\n```\n\n{done.stdout.strip()}\n\n"
        f"_Printed by the command above ({stamp()}); `benchmarks/doc_tables.py --only {name}` "
        "reruns it and rewrites this block._\n"
    )


def write(name: str, text: str) -> None:
    doc = ROOT / TABLES[name][0]
    source = doc.read_text()
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", nargs="+", choices=sorted(TABLES), help="just these tables")
    ap.add_argument("--list", action="store_true", help="print the tables and commands")
    args = ap.parse_args(argv)
    if args.list:
        for name, (doc, command) in TABLES.items():
            print(f"{name}  ({doc})\n    {command}")
        return 0
    for name in args.only or list(TABLES):
        write(name, run(name))
        print(f"numbers: {name} written to {TABLES[name][0]}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
