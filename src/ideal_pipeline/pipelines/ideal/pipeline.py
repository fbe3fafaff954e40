"""IDEAL: E rounds of `train_generator` -> `materialize_synthetic` -> `label_with_teacher` -> `distill_student`.

The default graph: no edge from real training data. The rounds' shared steps and namespaces
come from `ideal_pipeline.rounds`.
"""

from __future__ import annotations

from kedro.pipeline import Pipeline, node

from ideal_pipeline.pipelines.ideal import nodes
from ideal_pipeline.rounds.pipeline import IDEAL, create_method_pipeline, materialize_synthetic_node


def image_source(reinitialize: bool):
    """IDEAL's image source of round r; the previous round's generator is read only when it is continued."""

    def nodes_of(round_index: int) -> list:
        continued = ["previous_generator"] if not reinitialize and round_index > 1 else []
        train = node(
            nodes.train_generator,
            [
                "previous_student",
                "previous_pool_summary",
                "teacher_api",
                "params:ideal.generator",
                "params:ideal.student",
                "params:ideal.batch_size",
                "params:ideal.seed",
                "params:compute",
                *continued,
            ],
            ["generator", "image_source_log"],
            name="train_generator",
        )
        return [train, materialize_synthetic_node()]

    return nodes_of


def create_pipeline(rounds: int = 1, reinitialize: bool = True, **kwargs) -> Pipeline:
    return create_method_pipeline(IDEAL, rounds, image_source(reinitialize))
