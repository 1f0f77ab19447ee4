"""Tumoral vs reactive lymphocytosis from a bag of blood-cell images and clinical attributes.

Stage 1 (`extract.py`) embeds every cell image with a frozen pretrained CNN into HDF5; stage 2
(`model.py`, `tune.py`) turns each patient's bag of embeddings plus age, sex and lymphocyte count
into a LightGBM prediction, evaluated by repeated patient-level cross-validation.
"""

__version__ = "0.1.0"
