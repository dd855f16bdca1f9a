"""Reports of training runs, from their records alone (no Ray, no MLflow): the history's checks
(`history.py`), the curves figure (`curves.py`), TRAINING_SUMMARY.md (`summary.py`), the settings
comparison across runs (`comparison.py`) and the one markdown table writer they share (`markdown.py`)."""
