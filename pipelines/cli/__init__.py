"""What every command shares that needs neither Ray nor MLflow: flags and errors (`args.py`),
the console (`console.py`), printed commands (`hints.py`), the frame store's pre-flight check."""
