"""`model.py report`: a folder that shows how good the model is, why it decides, and where it comes from.

It reads saved cross-validation results (`model.py cv`), never re-running anything itself: `importance` and
`figures` turn them into tables and pictures, `thumbnails` shows the cells behind each patient's cell score,
`document` assembles a neutral document that `render_html` and `render_markdown` write, and `build` does it all.
"""
