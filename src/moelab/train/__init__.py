"""Training: optimizer and schedules, atomic checkpoints, the training loop, metrics.

Import the pieces from their modules (``moelab.train.trainer.train``, ...); this package
file stays import-light so ``moelab.train.optim`` does not pull in the model or data code.
"""
