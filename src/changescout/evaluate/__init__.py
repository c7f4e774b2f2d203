"""Evaluation of change rankings against ground truth (planted changes, benchmarks, baselines)."""
