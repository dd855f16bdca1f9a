"""A Tune sweep without Ray: the sweep file (`spec.py`) and its results table (`results.py`)."""
