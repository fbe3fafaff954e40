"""Real data in: the victim's training set and the test set, never shown to IDEAL."""

from ideal_pipeline.pipelines.data.pipeline import create_pipeline

__all__ = ["create_pipeline"]
