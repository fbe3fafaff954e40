"""Kedro project settings."""

import warnings

from kedro.config import OmegaConfigLoader

from ideal_pipeline.hooks import NodeTimingHook, PipelineShapeHook

HOOKS = (PipelineShapeHook(), NodeTimingHook())

# kedro-viz's own hook writes dataset statistics to .viz/ on every run; we do not need them.
DISABLE_HOOKS_FOR_PLUGINS = ("kedro-viz",)

CONFIG_LOADER_CLASS = OmegaConfigLoader
# "soft" merges an environment's parameters key by key into base instead of replacing whole sections.
CONFIG_LOADER_ARGS = {"base_env": "base", "default_run_env": "local", "merge_strategy": {"parameters": "soft"}}

# `redistill` and `evaluate` read IDEAL's artifacts by their namespaced names (`ideal.round_100.student`,
# `ideal.labelled_pool`): deliberate reads across namespaces, which Kedro warns about once per process.
warnings.filterwarnings("ignore", message="One or more dataset names contain '.' characters", category=UserWarning)
