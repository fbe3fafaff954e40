"""`ideal-teacher serve`: serve a saved classifier as a label-only HTTP teacher.

Tokens are read from environment variables (comma-separated for several clients), never from
the command line, where `ps` would show them. A start-up problem (no or malformed token, an
untrusted or unloadable model file, a model that fails its self-test, a connection cap the
process's file descriptors cannot hold) exits with status 1 and one line naming it.
"""

from __future__ import annotations

import argparse
import json
import logging
import logging.config
import os
import sqlite3
import sys
from pathlib import Path

from ideal_pipeline.models.files import model_fingerprint
from ideal_pipeline.teacher.server.app import create_app
from ideal_pipeline.teacher.server.connections import ensure_file_descriptors, uvicorn_config
from ideal_pipeline.teacher.server.limits import Limits
from ideal_pipeline.teacher.tokens import read_tokens

logger = logging.getLogger("ideal_pipeline.teacher.server.cli")
_DEFAULTS = Limits()
_FAULT_OPTIONS = ("fault_500", "fault_429", "fault_slow", "fault_drop")


def _shape(text: str) -> tuple[int, int, int]:
    parts = tuple(int(part) for part in text.replace("x", ",").split(","))
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"expected C,H,W (e.g. 1,28,28), got {text!r}")
    return parts


def _add_limits(serve: argparse.ArgumentParser) -> None:
    limits = serve.add_argument_group("limits (docs/http-teacher.md, Limits)")
    add = limits.add_argument
    add("--max-batch", type=int, default=_DEFAULTS.max_batch, help="images per request; more is 413")
    add("--max-body-mb", type=float, default=None, help="request body limit (default: from max-batch and input-shape)")
    add("--rate-limit", type=float, default=None, help="requests per second per token (token bucket); default: none")
    add("--burst", type=float, default=None, help="token bucket size (default: max(1, rate-limit))")
    add(
        "--max-uploads-per-client",
        type=int,
        default=_DEFAULTS.max_uploads_per_client,
        help="request bodies one token may have received or in memory at once; as many more may wait",
    )
    add(
        "--max-uploads",
        type=int,
        default=_DEFAULTS.max_uploads,
        help="request bodies received or in memory at once, all tokens: memory is about this x the body limit",
    )
    add(
        "--max-concurrent",
        type=int,
        default=_DEFAULTS.max_concurrent,
        help="requests validated and labelled at once, each once its whole body has arrived",
    )
    add(
        "--max-connections",
        type=int,
        default=_DEFAULTS.max_connections,
        help="open connections; above, the one idle longest is closed",
    )
    add(
        "--max-header-bytes",
        type=int,
        default=_DEFAULTS.max_header_bytes,
        help="request line and headers, in bytes; more is 431",
    )
    add("--max-headers", type=int, default=_DEFAULTS.max_headers, help="header fields per request; more is 431")
    add(
        "--header-timeout",
        type=float,
        default=_DEFAULTS.header_timeout_s,
        metavar="S",
        help="seconds from connecting (or the previous answer) to the end of the request headers; then 408",
    )
    add(
        "--body-timeout",
        type=float,
        default=_DEFAULTS.body_timeout_s,
        metavar="S",
        help="seconds to receive a request body (then 408), and the longest wait for an upload slot (then 429/503)",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ideal-teacher", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve a classifier label-only over HTTP")
    serve.add_argument(
        "--model", required=True, help="this project's .safetensors, or a TorchScript .pt / torch.export .pt2 file"
    )
    serve.add_argument(
        "--trust-model-file",
        action="store_true",
        help=".pt/.pt2 files are unpickled, which runs any code in them: load one only if you trust its source",
    )
    serve.add_argument("--host", default="127.0.0.1", help="bind address (default: 127.0.0.1, local only)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--token-env", default="IDEAL_TEACHER_TOKEN", help="env var holding client token(s), comma-separated"
    )
    serve.add_argument(
        "--admin-token-env",
        default="IDEAL_TEACHER_ADMIN_TOKEN",
        help="env var holding the owner's token (GET /billing for all clients)",
    )
    serve.add_argument(
        "--input-shape",
        type=_shape,
        required=True,
        help="C,H,W the model takes, e.g. 1,28,28: other shapes are 422; checked at start with batches of 1 and 2",
    )
    serve.add_argument(
        "--state-db",
        type=Path,
        default=None,
        help="SQLite file for billing and the idempotency cache (default: "
        "$XDG_STATE_HOME/ideal-teacher/<model fingerprint[:16]>.sqlite, XDG_STATE_HOME defaulting to ~/.local/state)",
    )
    serve.add_argument(
        "--idempotency-cache-size", type=int, default=100_000, help="answers kept for replay, per client token"
    )
    _add_limits(serve)
    serve.add_argument("--device", default="cpu")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    testing = serve.add_argument_group("fault injection (FOR TESTING ONLY: never enable in production)")
    testing.add_argument("--fault-500", type=float, default=0.0, metavar="P", help="probability of a 500 answer")
    testing.add_argument("--fault-429", type=float, default=0.0, metavar="P", help="probability of a 429 answer")
    testing.add_argument("--fault-slow", type=float, default=0.0, metavar="P", help="probability of a slow answer")
    testing.add_argument("--fault-slow-s", type=float, default=1.0, metavar="S", help="delay of a slow answer")
    testing.add_argument(
        "--fault-drop",
        type=float,
        default=0.0,
        metavar="P",
        help="probability of dropping the connection after billing",
    )
    testing.add_argument("--fault-seed", type=int, default=None)
    return parser


class JsonFormatter(logging.Formatter):
    """One JSON object per line; `extra={"fields": {...}}` adds structured fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": round(record.created, 3),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def _log_config(level: str) -> dict:
    """Everything, uvicorn's own messages included, as one JSON object per line on stderr."""
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
    loggers = {
        name: {"handlers": ["json"], "level": level.upper(), "propagate": False}
        for name in ("uvicorn", "ideal_pipeline")
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {"json": handler},
        "loggers": loggers,
    }


def default_state_db(model: str | Path) -> Path:
    """One state file per model (by its fingerprint, so a re-saved copy shares it), outside the project."""
    root = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    return root / "ideal-teacher" / f"{model_fingerprint(model).rpartition(':')[2][:16]}.sqlite"


def _faults(args: argparse.Namespace):
    """Injected failures, only when asked for: the testing module is not loaded otherwise."""
    if not any(getattr(args, name) for name in _FAULT_OPTIONS):
        return None
    from ideal_pipeline.teacher.server.testing import Faults

    return Faults(
        args.fault_500, args.fault_429, args.fault_slow, args.fault_slow_s, args.fault_drop, seed=args.fault_seed
    )


def _limits(args: argparse.Namespace) -> dict:
    return {
        "max_batch": args.max_batch,
        "max_body_bytes": int(args.max_body_mb * 2**20) if args.max_body_mb else None,
        "rate_limit_rps": args.rate_limit,
        "rate_limit_burst": args.burst,
        "max_uploads_per_client": args.max_uploads_per_client,
        "max_uploads": args.max_uploads,
        "max_concurrent": args.max_concurrent,
        "max_connections": args.max_connections,
        "max_header_bytes": args.max_header_bytes,
        "max_headers": args.max_headers,
        "header_timeout_s": args.header_timeout,
        "body_timeout_s": args.body_timeout,
    }


def _app(args: argparse.Namespace):
    """The app, or SystemExit(one line) on a start-up problem: a traceback would bury it."""
    if not Path(args.model).is_file():
        sys.exit(f"ideal-teacher: model file not found: {args.model}")
    try:
        tokens, admin_tokens = read_tokens(args.token_env), read_tokens(args.admin_token_env, required=False)
        limits = Limits(**_limits(args))
        ensure_file_descriptors(limits)
        state_db = args.state_db or default_state_db(args.model)
        app = create_app(
            args.model,
            tokens,
            faults=_faults(args),
            admin_tokens=admin_tokens,
            input_shape=args.input_shape,
            idempotency_cache_size=args.idempotency_cache_size,
            device=args.device,
            state_db=state_db,
            trust_model_file=args.trust_model_file,
            **_limits(args),
        )
    except (ValueError, OSError, sqlite3.Error) as error:  # TokenError, UntrustedModelFile, ModelSelfTestError, ...
        sys.exit(f"ideal-teacher: {error}")
    logger.info("serving", extra={"fields": {"model": str(args.model), "state_db": str(state_db)}})
    return app


def serve(args: argparse.Namespace) -> None:
    import uvicorn

    logging.config.dictConfig(_log_config(args.log_level))
    app = _app(args)
    config = uvicorn_config(app, host=args.host, port=args.port, log_config=_log_config(args.log_level))
    uvicorn.Server(config).run()


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        serve(args)


if __name__ == "__main__":
    main()
