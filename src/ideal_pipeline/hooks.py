"""Project hooks."""

from __future__ import annotations

from kedro.framework.hooks import hook_impl


class RoundCountHook:
    """Builds the `ideal` pipeline with as many rounds as the run's parameters ask for.

    The rounds are Kedro nodes, so their number shapes the pipeline; this hook hands the
    run's parameters (environment and `--params` included) to the registry before Kedro
    builds the pipelines.
    """

    @hook_impl
    def after_context_created(self, context) -> None:
        from kedro.framework.project import pipelines

        from ideal_pipeline import pipeline_registry

        rounds = int(context.params["ideal"]["rounds"])
        if rounds != pipeline_registry.configured_rounds():
            pipeline_registry.set_rounds(rounds)
            # Drop pipelines built for another round count (another session in this process).
            pipelines.configure(pipelines._pipelines_module)
