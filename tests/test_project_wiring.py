"""The project as a user meets it: public Kedro API only, a graph kedro-viz draws at once."""

from pathlib import Path

from kedro.framework.startup import bootstrap_project

from tests.conftest import REPO

# kedro-viz asks before drawing when visible nodes + 1.5 x visible edges exceed this (its source: rJ=1e3).
KEDRO_VIZ_LARGE_GRAPH = 1000


def test_no_private_kedro_api():
    sources = [p.read_text() for p in (REPO / "src").rglob("*.py")]
    assert not [s for s in sources if "_pipelines_module" in s]


def top_level(name: str, namespaced: set[str]) -> str:
    """The element kedro-viz shows for `name` when every namespace is collapsed."""
    head = name.removeprefix("params:").split(".")[0]
    return head if head in namespaced else name


def test_kedro_viz_draws_the_default_pipeline_without_the_large_graph_prompt(monkeypatch):
    from kedro.framework.project import pipelines
    from kedro_viz.data_access.repositories.modular_pipelines import ModularPipelinesRepository

    from ideal_pipeline import pipeline_registry

    monkeypatch.chdir(REPO)
    monkeypatch.delenv("KEDRO_ENV", raising=False)
    # An earlier test's in-process run may have shaped the registry after conf/test (2 rounds).
    pipeline_registry.RUN_SHAPE.forget()
    bootstrap_project(Path(REPO))  # configures `pipelines` afresh
    default = pipelines["__default__"]  # 100 rounds: the default parameters
    assert len(default.nodes) > 400
    repository = ModularPipelinesRepository()
    repository.populate_tree(default)
    shown = repository.as_dict()["__root__"].children
    namespaced = {n.namespace.split(".")[0] for n in default.nodes if n.namespace}
    edges = set()
    for node in default.nodes:
        here = top_level(node.name, namespaced)
        edges |= {(top_level(i, namespaced), here) for i in node.inputs if top_level(i, namespaced) != here}
        edges |= {(here, top_level(o, namespaced)) for o in node.outputs if top_level(o, namespaced) != here}
    assert len(shown) + 1.5 * len(edges) < KEDRO_VIZ_LARGE_GRAPH, (len(shown), len(edges))
    assert {"data", "victim", "ideal", "redistill", "evaluate"} <= namespaced


def test_parameters_load_from_many_threads_at_once():
    # A sweep worker reads its trials' parameters in threads; Kedro's loader registers its `globals`
    # resolver process-wide while it is built, and unguarded this failed on the first batch.
    from concurrent.futures import ThreadPoolExecutor

    from ideal_pipeline.config import BASE_ENV, parameters_from_conf

    alone = parameters_from_conf(REPO, BASE_ENV)
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(lambda _: parameters_from_conf(REPO, BASE_ENV), range(64)))
    assert together == [alone] * 64
    assert alone["victim_api"]["published_model_path"].endswith("victim_teacher.safetensors")  # `globals` resolved
