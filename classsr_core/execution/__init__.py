"""Executors run each branch on its patches and stitch the output (docs/architecture.md)."""
