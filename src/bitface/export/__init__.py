"""Trained model -> packed file (bits, folded BatchNorm, scales). `format` reads and writes it without
torch; `regression` converts the training-time networks (needs torch)."""
