"""Stage 1: the challenge layout, the frozen image encoders, and the embeddings file they fill.

This package's `__init__` imports nothing: `layout` and `store` are read by stage 2, which must run without
torch; only `backbones`, `preprocessing`, `embedder` and `extraction` import it.
"""
