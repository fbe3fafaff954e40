"""Evaluation on the real test set: accuracy, agreement, queries, pictures."""
