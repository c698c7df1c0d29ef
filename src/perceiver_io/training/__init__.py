"""Training with PyTorch Lightning: task modules, data, checkpoints without pickle."""
