"""`ideal-teacher serve`: a saved classifier as a label-only black box over HTTP (docs/http-teacher.md).

- `app`: the service and its routes (`create_app`, `LabelService`, `ServerSettings`);
- `upload`: reading and checking a `.npy` request body;
- `state`: billing and the idempotency cache, in SQLite;
- `model`: the served model, its fingerprint and start-up self-test;
- `limits`: every limit and its default; `connections`: how uvicorn enforces the connection-level ones;
- `cli`: the `ideal-teacher` command;
- `testing`: fault injection and an in-thread server, for tests only (the CLI imports it for `--fault-*` only).
"""

from ideal_pipeline.teacher.server.app import LabelService, ServerSettings, client_id, create_app
from ideal_pipeline.teacher.server.limits import Limits
from ideal_pipeline.teacher.server.model import ModelSelfTestError
from ideal_pipeline.teacher.server.upload import Reject

__all__ = ["LabelService", "Limits", "ModelSelfTestError", "Reject", "ServerSettings", "client_id", "create_app"]
