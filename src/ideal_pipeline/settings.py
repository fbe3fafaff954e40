"""Kedro project settings."""

import warnings

from ideal_pipeline.config import LOADER_ARGS, ProjectConfigLoader
from ideal_pipeline.hooks import NodeTimingHook, PipelineShapeHook, ProgressHook, RunLockHook

HOOKS = (PipelineShapeHook(), RunLockHook(), NodeTimingHook(), ProgressHook())

# kedro-viz's own hook writes dataset statistics to .viz/ on every run; we do not need them.
DISABLE_HOOKS_FOR_PLUGINS = ("kedro-viz",)

# Kedro's OmegaConfigLoader, with each environment's data folder (`${data_root:}` in the catalog).
CONFIG_LOADER_CLASS = ProjectConfigLoader
CONFIG_LOADER_ARGS = LOADER_ARGS

# `redistill` and `evaluate` read IDEAL's artifacts by their namespaced names (`ideal.round_100.student`,
# `ideal.labelled_pool`): deliberate reads across namespaces, which Kedro warns about once per process.
warnings.filterwarnings("ignore", message="One or more dataset names contain '.' characters", category=UserWarning)
