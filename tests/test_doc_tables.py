"""benchmarks/doc_tables.py rewrites only the block it is asked for, and refuses a doc that
has none or whose markers are out of order; every block in docs names the TABLES entry that
regenerates it, and one small deterministic table is rerun and compared with its doc (the
other tables are benchmarks, run by hand)."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted([*(ROOT / "docs").rglob("*.md"), ROOT / "README.md"])


def _module():
    spec = importlib.util.spec_from_file_location(
        "doc_tables", ROOT / "benchmarks" / "doc_tables.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["doc_tables"] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


def test_write_replaces_the_named_block_only(tmp_path, monkeypatch):
    tables = _module()
    doc = tmp_path / "doc.md"
    doc.write_text(
        "intro\n<!-- numbers: a -->\nold a\n<!-- /numbers -->\nmiddle\n"
        "<!-- numbers: b -->\nold b\n<!-- /numbers -->\nend\n"
    )
    monkeypatch.setattr(tables, "ROOT", tmp_path)
    monkeypatch.setattr(
        tables, "TABLES", {"a": tables.Table("doc.md", "true"), "b": tables.Table("doc.md", "true")}
    )
    tables.write("a", "new a\n")
    assert doc.read_text() == (
        "intro\n<!-- numbers: a -->\nnew a\n<!-- /numbers -->\nmiddle\n"
        "<!-- numbers: b -->\nold b\n<!-- /numbers -->\nend\n"
    )
    monkeypatch.setattr(tables, "TABLES", {"c": tables.Table("doc.md", "true")})
    with pytest.raises(SystemExit, match="no '<!-- numbers: c -->' block"):
        tables.write("c", "x\n")


def test_write_refuses_markers_out_of_order(tmp_path, monkeypatch):
    """An opening marker inside an open block would have the block swallow its neighbour."""
    tables = _module()
    doc = tmp_path / "doc.md"
    text = "<!-- numbers: a -->\nold a\n<!-- numbers: b -->\nold b\n<!-- /numbers -->\n"
    doc.write_text(text)
    monkeypatch.setattr(tables, "ROOT", tmp_path)
    monkeypatch.setattr(tables, "TABLES", {"b": tables.Table("doc.md", "true")})
    with pytest.raises(SystemExit, match="'b' opens inside the open block 'a'"):
        tables.write("b", "new b\n")
    assert doc.read_text() == text
    assert tables.marker_errors("<!-- /numbers -->") == [
        "line 1: '<!-- /numbers -->' closes no block"
    ]
    assert tables.marker_errors("<!-- numbers: a -->\n") == ["block 'a' is never closed"]


def test_render_fences_plain_text_and_names_its_entry(monkeypatch):
    tables = _module()
    monkeypatch.setattr(tables, "stamp", lambda: "today")
    monkeypatch.setattr(
        tables, "TABLES", {"t": tables.Table("doc.md", f"{tables.PY} x.py", fence=True)}
    )
    assert tables.render("t", "a  b\nc  d") == (
        "```\n.venv/bin/python x.py\n```\n\n```\na  b\nc  d\n```\n\n"
        "_Printed by the command above (today); `benchmarks/doc_tables.py --only t` reruns it "
        "and rewrites this block._\n"
    )


def test_slow_tables_run_only_when_asked():
    tables = _module()
    args = argparse_namespace(only=None, slow=False, no_timing=False)
    plain = tables.selected(args)
    assert "deblock-quick" not in plain and "flops-fsrcnn" in plain
    assert "deblock-quick" in tables.selected(argparse_namespace(only=None, slow=True))
    assert tables.selected(argparse_namespace(only=["deblock-quick"])) == ["deblock-quick"]
    no_timing = tables.selected(argparse_namespace(only=None, slow=True, no_timing=True))
    assert "speed-fast" not in no_timing and "budget-sweep-paper" in no_timing


def argparse_namespace(only, slow=False, no_timing=False):
    import argparse

    return argparse.Namespace(only=only, slow=slow, no_timing=no_timing)


def test_every_table_has_its_block_in_its_doc():
    tables = _module()
    for name, table in tables.TABLES.items():
        assert f"<!-- numbers: {name} -->" in (ROOT / table.doc).read_text(), (name, table.doc)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_block_is_well_formed_and_names_its_entry(doc):
    """Markers pair up; each block belongs to a TABLES entry of this doc, and says (in its
    stamp line) which command of doc_tables.py rewrites it."""
    tables = _module()
    text = doc.read_text()
    assert tables.marker_errors(text) == []
    rel = str(doc.relative_to(ROOT))
    for name, body in tables.blocks(text).items():
        assert name in tables.TABLES, f"{rel}: block '{name}' has no entry in TABLES"
        assert tables.TABLES[name].doc == rel, (name, tables.TABLES[name].doc, rel)
        assert f"`benchmarks/doc_tables.py --only {name}`" in body, (
            f"{rel}: block '{name}' does not name `benchmarks/doc_tables.py --only {name}`"
        )


def test_a_deterministic_table_reruns_to_what_its_doc_says():
    """`classsr flops` for the paper's FSRCNN (seconds): the block in docs/flops.md is what
    the command prints now, character for character."""
    tables = _module()
    body, printed = _rerun(tables, "flops-fsrcnn")
    assert f"```\n{tables.shown(tables.TABLES['flops-fsrcnn'].command)}\n```\n" in body
    assert printed in body


def _rerun(tables, name: str) -> tuple[str, str]:
    """Block ``name`` as its doc holds it, and what its command prints now (rendered as
    the script writes it), run with this test's Python."""
    table = tables.TABLES[name]
    # .venv/bin/python first: the Python put in for the CLI may itself be that path.
    command = table.command.replace(tables.PY, sys.executable)
    command = command.replace(tables.CLI, f"{sys.executable} -m classsr_core")
    done = subprocess.run(command, shell=True, cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    body = tables.blocks((ROOT / table.doc).read_text())[name]
    return body, tables.output_text(name, done.stdout.strip())


def test_stamp_lines_of_generated_blocks_follow_the_format():
    """A block written by the script carries the date, commit and machine of its run."""
    tables = _module()
    pattern = re.compile(
        r"_Printed by the command above \(\d{4}-\d{2}-\d{2}, commit \S+( \+ changes)?, "
        r"[^,]+, \d+ cores(, load average [\d.]+ at the start)?\); "
        r"`benchmarks/doc_tables\.py --only [\w-]+` reruns it and rewrites this block\._"
    )
    for doc in DOCS:
        for name, body in tables.blocks(doc.read_text()).items():
            if "_Printed by the command above" in body:
                assert pattern.search(body), (doc, name)


@pytest.mark.skipif(
    not (ROOT / "data/photos/val").is_dir(),
    reason="needs the validation photos (scripts/fetch_photos.sh): PSNR and FLOPs of the "
    "shipped models are checked where they are",
)
def test_shipped_models_psnr_and_flops_rerun_to_what_model_zoo_md_says():
    """The shipped models on the two validation photos (PSNR, FLOPs, classes; about 30 s):
    docs/model-zoo.md's results block is what benchmarks/model_zoo.py prints now."""
    tables = _module()
    assert not tables.TABLES["model-zoo-results"].timing, "no seconds: compared exactly"
    body, printed = _rerun(tables, "model-zoo-results")
    assert printed in body


def test_the_routing_benchmarks_feed_8_bit_inputs(tmp_path):
    """The routing tables judge the LR a file on disk can hold, as `classsr calibrate`
    measures: unrounded float LR flattered the widest branch on clean vector art."""
    from PIL import Image

    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        spec = importlib.util.spec_from_file_location(
            "router_headroom", ROOT / "benchmarks" / "router_headroom.py"
        )
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    rng = np.random.default_rng(0)
    path = tmp_path / "photo.png"
    Image.fromarray(rng.integers(0, 256, (34, 41, 3), dtype=np.uint8)).save(path)
    hr8, lr = module.load_pair(path, 4)
    assert hr8.shape == (32, 40, 3) and tuple(lr.shape) == (1, 3, 8, 10)
    levels = lr.double() * 255
    assert (levels - levels.round()).abs().max() < 1e-4  # float32 holds k/255 to ~1e-5
