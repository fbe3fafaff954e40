"""Query-free re-distillation of a student on the whole labelled pool."""

from ideal_pipeline.pipelines.redistill.pipeline import create_pipeline

__all__ = ["create_pipeline"]
