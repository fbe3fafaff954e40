"""The victim: a classifier trained on real data, then served only as a label-only black box."""
