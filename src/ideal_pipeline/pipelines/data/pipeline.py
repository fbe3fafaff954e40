from kedro.pipeline import Pipeline, node

from ideal_pipeline.pipelines.data.nodes import load_real_data


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [node(load_real_data, "params:data", ["real_train", "real_validation", "real_test"], name="load_real_data")],
        namespace="data",  # one box in kedro-viz; dataset names stay as they are
        prefix_datasets_with_namespace=False,
    )
