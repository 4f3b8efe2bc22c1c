"""Datasets: ``prepare`` fetches, verifies, splits and stores them (one ``.npz`` each); ``prepared`` reads
that file back, keeps splits on the device as uint8 and draws minibatches by index."""
