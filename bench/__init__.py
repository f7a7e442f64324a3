"""Benchmarks (not tests): each module measures a baseline and our implementation in the same
process and prints one JSON line with the ratio; `make bench` runs them all."""
