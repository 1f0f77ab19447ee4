"""Stage 1: the challenge layout, the frozen image encoders, and the embeddings file they fill; and the per-cell
measurement sets (segmentation, morphometry, stain controls) written in the same format.

This package's `__init__` imports nothing: `layout` and `store` are read by stage 2, which must run without
torch; only `backbones`, `preprocessing`, `embedder`, `extraction` and `measuring` import it (`images`,
`segmentation`, `morphometry` and `stain` need numpy, scipy, scikit-image and Pillow only).
"""
