"""Stage 1: the frozen image encoders and the extraction that fills the embeddings file described in
`lymphocytosis.contract`; and the per-cell measurement sets (segmentation, morphometry, stain controls) written
in the same format. Stage 2 never imports this package.
"""
