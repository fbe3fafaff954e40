"""Kedro datasets for this project's artifacts (one file per kind of artifact)."""

from ideal_pipeline.datasets.classifier_weights_dataset import ClassifierWeightsDataset
from ideal_pipeline.datasets.label_store_dataset import LabelStoreDataset
from ideal_pipeline.datasets.labelled_pool_dataset import LabelledPoolDataset
from ideal_pipeline.datasets.tensor_dataset import TensorDataset

__all__ = ["ClassifierWeightsDataset", "LabelStoreDataset", "LabelledPoolDataset", "TensorDataset"]
