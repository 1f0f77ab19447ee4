"""The command-line front ends (`extract.py`, `model.py`, `tune.py` are thin entry points to these)."""
