"""Stage 2: clinical table + per-cell features -> patient features -> LightGBM; evaluation, persistence, tuning.

Nothing here imports torch: stage 2 runs on a laptop CPU from an embeddings file made elsewhere.
"""
