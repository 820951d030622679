"""The training module (a LightningModule), checkpoint I/O and the Python API factory."""
