"""Data semantics a run reads: annotations, temporal sampling plans, fixed-shape examples, video checks.

Making data sets (own videos -> THUMOS layout, the synthetic set) lives in `adatad/datasets/`."""
