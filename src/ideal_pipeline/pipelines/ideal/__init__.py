"""IDEAL's rounds: generator training, materialisation, single-pass labelling, distillation."""

from ideal_pipeline.pipelines.ideal.pipeline import create_pipeline, pool_datasets, round_namespace, student_dataset

__all__ = ["create_pipeline", "pool_datasets", "round_namespace", "student_dataset"]
