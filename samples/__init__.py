"""The digits sample: data, training, images, evaluation (`python -m samples.<name>` from the repository root)."""
