"""The victim: a classifier trained on real data, then served only as a label-only black box."""

from ideal_pipeline.pipelines.teacher.pipeline import create_pipeline

__all__ = ["create_pipeline"]
