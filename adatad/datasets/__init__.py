"""Making data sets: a user's own videos + a segment table -> a THUMOS-layout data set, and the built-in
synthetic data set.

Used by `pipelines/prepare_dataset.py` and `pipelines/make_synthetic.py` (and tests/benchmarks that need
real videos); a training or test run never imports this package. The input a run reads (annotations,
sampling, decoding, the data check) lives in `adatad/data/`.
"""
