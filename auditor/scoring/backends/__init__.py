"""Scoring backends: each turns prompt token ids into option-letter log-probabilities."""
