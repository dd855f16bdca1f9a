"""A training or test run before and after Ray: its plan and folder (`plan.py`, `evaluation_plan.py`),
the checks before anything starts (`preflight.py`), stopping on SIGTERM (`stop.py`), the closing lines."""
