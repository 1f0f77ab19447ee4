"""The contract between the two stages, torch-free: the challenge layout and its CSVs, image listing and
fingerprints, the embeddings/measurements file format, and provenance.

Stage 1 (`extract/`) writes what this package describes and stage 2 (`model/`, `report/`) reads it; both rest on
it side by side, so neither imports the other. Nothing here may import torch (tests/test_structure.py checks).
"""
