"""The README's snippets run as written.

Every ```python block of README.md runs, in order and in one namespace (later blocks use
names of earlier ones), in a temporary folder, with ``lr_image`` (the one name the README
leaves to the reader) a 48x64 crop of a real photo. A block preceded by
``<!-- not run: reason -->`` is skipped (it needs a file the tests do not have). The CLI
block's commands must all exist, and those that need no files run.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pytest

from classsr_core.cli import main

README = Path(__file__).parents[1] / "README.md"
NOT_RUN = re.compile(r"<!--\s*not run:\s*(.+?)\s*-->")
# CLI lines that read no files and write nothing: run them (the rest only must exist).
RUNNABLE = {"models", "plugins", "flops"}


def blocks(lang: str) -> list[tuple[str, str | None]]:
    """``(code, skip reason or None)`` of every fenced block opened with ```lang."""
    lines = README.read_text(encoding="utf-8").splitlines()
    found, i = [], 0
    while i < len(lines):
        fence = lines[i].strip()
        if fence.startswith("```"):  # any block: a closing fence never opens the next one
            j = i + 1
            while lines[j].strip() != "```":
                j += 1
            if fence == f"```{lang}":
                before = next((line for line in reversed(lines[:i]) if line.strip()), "")
                match = NOT_RUN.search(before)
                found.append(("\n".join(lines[i + 1 : j]), match.group(1) if match else None))
            i = j
        i += 1
    return found


def cli_lines() -> list[list[str]]:
    """Each ``classsr ...`` line of the README's plain code blocks, split like a shell."""
    out = []
    for code, _ in blocks(""):
        for line in code.splitlines():
            line = line.split("  #")[0].strip()
            for part in line.split("&&"):
                words = shlex.split(part)
                if words and words[0] == "classsr":
                    out.append(words[1:])
    return out


@pytest.fixture(scope="module")
def lr_image() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[100:148, 180:244])  # (48, 64, 3) uint8


def test_python_blocks_run_as_written(lr_image, tmp_path, monkeypatch):
    code = blocks("python")
    assert len(code) >= 3
    assert any(reason for _, reason in code), "the from_official block is marked not run"
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__main__", "lr_image": lr_image}
    for i, (source, reason) in enumerate(code):
        if reason:
            continue
        exec(compile(source, f"README.md python block {i + 1}", "exec"), namespace)
    # What the prose around the blocks promises.
    assert (tmp_path / "my-model.safetensors").is_file()
    out = namespace["result"].output
    assert out.dtype == np.uint8 and out.shape == (48 * 4, 64 * 4, 3)


def test_quick_start_is_two_commands():
    text = README.read_text(encoding="utf-8")
    quick = text.split("## Quick start", 1)[1].split("##", 1)[0]
    code = quick.split("```", 2)[1]
    commands = [line.split("#")[0].strip() for line in code.splitlines() if line.strip()]
    assert commands == ["make demo", "make test"]


def test_cli_lines_name_real_commands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    listed = capsys.readouterr().out
    lines = cli_lines()
    assert len(lines) >= 10
    for words in lines:
        assert re.search(rf"^\s+{re.escape(words[0])}\s", listed, re.M), words[0]


@pytest.mark.parametrize(
    "words", [w for w in cli_lines() if w[0] in RUNNABLE], ids=lambda w: " ".join(w)
)
def test_cli_lines_without_files_run(words, capsys):
    assert main(words) == 0
    assert capsys.readouterr().out.strip()


def test_output_conventions_as_the_readme_says(lr_image):
    import torch

    from classsr_core import load_model

    model = load_model("classsr-fsrcnn-x4")
    out = model.infer(lr_image).output
    assert out.dtype == np.uint8 and out.shape == (48 * model.scale, 64 * model.scale, 3)
    x = torch.from_numpy(lr_image).permute(2, 0, 1).float() / 255
    for image in (x[None], x):  # (1, 3, H, W) and (3, H, W): the same layout back
        y = model.infer(image).output
        assert y.dtype == torch.float32
        assert y.shape == (*image.shape[:-2], 48 * model.scale, 64 * model.scale)
    # Not clipped: the uint8 output is the float one rounded and clipped.
    raw = model.infer(x[None]).output[0].permute(1, 2, 0).numpy()
    expected = np.round(np.clip(raw, 0, 1) * 255)
    assert np.abs(expected - out.astype(np.float64)).max() <= 1


DOCS = sorted([README, *README.parent.glob("docs/**/*.md")])
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
# A path in backticks that names a file of the repository (not an output such as out/...).
REPO_PATH = re.compile(
    r"`((?:classsr_core|docs|examples|scripts|benchmarks|tests|plugins)/[\w./-]*|[A-Z]+\.md)`"
)


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    return {_slug(h) for h in re.findall(r"^#+\s+(.+)$", text, flags=re.M)}


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(README.parent)))
def test_relative_links_resolve(doc):
    """Every relative link of the README and docs/ names a file (or folder) of the repo,
    and every #anchor a heading of its page."""
    text = re.sub(r"```.*?```", "", doc.read_text(encoding="utf-8"), flags=re.S)
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (doc.parent / path).resolve() if path else doc
        if not file.exists():
            broken.append(target)
            continue
        if anchor and file.suffix == ".md" and anchor not in _anchors(file):
            broken.append(target)
    assert not broken, f"{doc.name}: broken links {broken}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(README.parent)))
def test_paths_named_in_backticks_exist(doc):
    rel = str(doc.relative_to(README.parent))
    text = doc.read_text(encoding="utf-8")
    missing = [
        p for p in REPO_PATH.findall(text) if "*" not in p and not (README.parent / p).exists()
    ]
    assert not missing, f"{rel} names files that do not exist: {missing}"


def test_readme_points_to_the_api_in_the_repo():
    text = README.read_text(encoding="utf-8")
    assert "design notes" not in text
    assert "docs/api.md" in text and (README.parent / "docs" / "api.md").is_file()
