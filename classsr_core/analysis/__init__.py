"""Measuring: FLOPs, widths for the hardware, budget sweeps, pictures."""
