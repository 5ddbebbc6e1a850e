"""Training: losses, optimizers (incl. ACN's asynchronous two-rate update), checkpoints, the loop."""
