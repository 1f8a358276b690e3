"""Benchmarks (`make bench`): each module's main() measures and prints its figures,
with ratios against a baseline measured in the same run."""
