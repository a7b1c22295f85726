"""Training and evaluation: the HUSE losses, the training loop and the test-split metrics of a run."""
