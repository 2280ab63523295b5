"""Training: the LightningModule, its objectives, augmentation, callbacks, loggers and checkpoints."""
