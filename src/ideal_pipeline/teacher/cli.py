"""`ideal-teacher serve`: serve a saved classifier as a label-only HTTP teacher.

Tokens are read from environment variables (comma-separated for several clients), never from
the command line, where `ps` would show them.
"""

from __future__ import annotations

import argparse
import logging
import logging.config
import os
import sys

from ideal_pipeline.teacher.server import Faults, JsonFormatter, create_app


def _shape(text: str) -> tuple[int, int, int]:
    parts = tuple(int(part) for part in text.replace("x", ",").split(","))
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"expected C,H,W (e.g. 1,28,28), got {text!r}")
    return parts


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ideal-teacher", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve a .pt / .pt2 classifier label-only over HTTP")
    serve.add_argument("--model", required=True, help="TorchScript (.pt) or torch.export (.pt2) model file")
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
    serve.add_argument("--max-batch", type=int, default=1000, help="images per request; more is 413")
    serve.add_argument(
        "--max-body-mb", type=float, default=None, help="request body limit (default: from max-batch and input-shape)"
    )
    serve.add_argument(
        "--input-shape", type=_shape, default=None, help="C,H,W the model takes, e.g. 1,28,28 (other shapes are 422)"
    )
    serve.add_argument(
        "--rate-limit",
        type=float,
        default=None,
        help="requests per second per token (token bucket); default: unlimited",
    )
    serve.add_argument("--burst", type=float, default=None, help="token bucket size (default: max(1, rate-limit))")
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


def _tokens(env: str) -> list[str]:
    return [token.strip() for token in os.environ.get(env, "").split(",") if token.strip()]


def serve(args: argparse.Namespace) -> None:
    import uvicorn

    logging.config.dictConfig(_log_config(args.log_level))
    tokens = _tokens(args.token_env)
    if not tokens:
        sys.exit(f"ideal-teacher: set the client token(s) in the environment variable {args.token_env}")
    faults = Faults(
        args.fault_500, args.fault_429, args.fault_slow, args.fault_slow_s, args.fault_drop, seed=args.fault_seed
    )
    app = create_app(
        args.model,
        tokens,
        admin_tokens=_tokens(args.admin_token_env),
        max_batch=args.max_batch,
        max_body_bytes=int(args.max_body_mb * 2**20) if args.max_body_mb else None,
        input_shape=args.input_shape,
        rate_limit_rps=args.rate_limit,
        rate_limit_burst=args.burst,
        faults=faults,
        device=args.device,
    )
    # Our JSON request log replaces the access log; no Server/Date headers: answers carry labels only.
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_config=_log_config(args.log_level),
        access_log=False,
        server_header=False,
        date_header=False,
    )


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        serve(args)


if __name__ == "__main__":
    main()
