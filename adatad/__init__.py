"""AdaTAD: end-to-end temporal action detection in plain PyTorch/NumPy (no Ray in this package)."""
