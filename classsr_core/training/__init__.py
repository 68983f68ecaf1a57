"""Training: config, data, dividing into classes, the trainer, losses, distributed."""
