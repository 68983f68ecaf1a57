"""benchmarks/doc_tables.py rewrites only the block it is asked for, and refuses a doc that
has none (the tables themselves are benchmarks, run by hand)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _module():
    spec = importlib.util.spec_from_file_location(
        "doc_tables", ROOT / "benchmarks" / "doc_tables.py"
    )
    module = importlib.util.module_from_spec(spec)
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
    monkeypatch.setattr(tables, "TABLES", {"a": ("doc.md", "true"), "b": ("doc.md", "true")})
    tables.write("a", "new a\n")
    assert doc.read_text() == (
        "intro\n<!-- numbers: a -->\nnew a\n<!-- /numbers -->\nmiddle\n"
        "<!-- numbers: b -->\nold b\n<!-- /numbers -->\nend\n"
    )
    monkeypatch.setattr(tables, "TABLES", {"c": ("doc.md", "true")})
    with pytest.raises(SystemExit, match="no '<!-- numbers: c -->' block"):
        tables.write("c", "x\n")


def test_every_table_has_its_block_in_its_doc():
    tables = _module()
    for name, (doc, _) in tables.TABLES.items():
        assert f"<!-- numbers: {name} -->" in (ROOT / doc).read_text(), (name, doc)
