from kedro.pipeline import Pipeline, node

from ideal_pipeline.pipelines.data.nodes import load_real_data, real_class_names


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(load_real_data, "params:data", ["real_train", "real_validation", "real_test"], name="load_real_data"),
            node(real_class_names, "params:data", "real_class_names", name="real_class_names"),
        ],
        namespace="data",  # one box in kedro-viz; dataset names stay as they are
        prefix_datasets_with_namespace=False,
    )
