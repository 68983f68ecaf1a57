"""`import classsr_core` stays light: basicsr, timm and fvcore load only where used."""

import subprocess
import sys


def test_import_pulls_no_heavy_dependency():
    code = (
        "import sys, classsr_core\n"
        "from classsr_core import cli\n"
        "cli.build_parser()\n"
        "print(sorted(m for m in ('basicsr', 'timm', 'fvcore') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_basicsr_imports_through_the_shim():
    from classsr_core._basicsr import arch_registry

    assert "MSRResNet" in arch_registry()
