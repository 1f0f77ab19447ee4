"""Is a new cohort like the training one? The drift reference a model keeps (reference.py), the image signals it
is made of (signals.py) and the check `predict` runs (check.py). Torch-free."""
