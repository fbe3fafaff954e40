"""Kedro project settings."""

from kedro.config import OmegaConfigLoader

from ideal_pipeline.hooks import RoundCountHook

HOOKS = (RoundCountHook(),)

# kedro-viz's own hook writes dataset statistics to .viz/ on every run; we do not need them.
DISABLE_HOOKS_FOR_PLUGINS = ("kedro-viz",)

CONFIG_LOADER_CLASS = OmegaConfigLoader
# "soft" merges an environment's parameters key by key into base instead of replacing whole sections.
CONFIG_LOADER_ARGS = {"base_env": "base", "default_run_env": "local", "merge_strategy": {"parameters": "soft"}}
