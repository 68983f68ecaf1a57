"""Files: checkpoints (safetensors), official ClassSR .pth files, images."""
