"""MLflow (no Ray): runs and their metrics (`runs.py`), the logged model (`model.py`), one finish for a
completed or stopped training run (`finish.py`), the runs of a sweep (`sweep_runs.py`) and `report.py compare`."""
