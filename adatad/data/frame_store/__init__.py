"""The frame store: each video's frames on the read grid, decoded once and kept as compressed images.

Every epoch of the recipe reads the same frames again, and H.264 must pass through every frame
between two grid frames to reach them (~1.8 CPU s per THUMOS training clip). A store built once
(``pipelines/prepare_frames.py``) holds exactly the frames windows can read, at the size the
transforms need, so a clip costs a table lookup and a cheap image decode. Layout and choices:
docs/architecture.md, "The frame store"; figures: benchmarks/README.md, "Frame store".
"""
