"""The pretrained backbone files the configs train from: where each is published (`sources.py`) and
a resumable, hash-checked download (`fetch.py`); `pipelines/fetch_weights.py` is the command."""
