"""Data semantics: annotations, temporal sampling plans, fixed-shape examples and synthetic data."""
