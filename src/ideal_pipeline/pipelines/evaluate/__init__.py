"""Evaluation on the real test set: accuracy, agreement, queries, pictures."""

from ideal_pipeline.pipelines.evaluate.pipeline import create_pipeline

__all__ = ["create_pipeline"]
