"""Bearer tokens read from environment variables: stripped, checked, never echoed.

A token travels in an `Authorization` header, so it may only hold printable ASCII without
spaces. A variable set with a stray `\\r` or `\\n` (a file saved on Windows, `echo` into a
`.env`) is stripped; anything else is refused with an error that names the variable and the
kind of character, never the token or any part of it.
"""

from __future__ import annotations

import os

from ideal_pipeline.errors import UserError


class TokenError(UserError, ValueError):
    """A token cannot be used as given; the message names where it came from, never its value."""


def _describe(char: str) -> str:
    """A character's kind, not its value: naming an ordinary character would leak part of a secret."""
    names = {"\r": "a carriage return (\\r)", "\n": "a line feed (\\n)", " ": "a space", "\t": "a tab"}
    if char in names:
        return names[char]
    return "a non-ASCII character" if ord(char) > 0x7E else "a control character"


def check_token(value: str | None, source: str) -> str:
    """`value` stripped of surrounding whitespace, if it is a valid bearer token; `source` names it in errors."""
    token = (value or "").strip()
    if not token:
        raise TokenError(f"{source} is not set or empty")
    bad = next((char for char in token if not "\x21" <= char <= "\x7e"), None)
    if bad is not None:
        raise TokenError(
            f"{source} holds a token with {_describe(bad)} inside it, which an HTTP header cannot carry; "
            "tokens are printable ASCII without spaces, e.g. python -c 'import secrets; print(secrets.token_hex(32))'"
        )
    return token


def read_token(env: str) -> str:
    """The one token in environment variable `env`."""
    return check_token(os.environ.get(env), f"the environment variable {env!r}")


def read_tokens(env: str, required: bool = True) -> list[str]:
    """The comma-separated tokens in environment variable `env` (empty entries are skipped).

    With `required=False` an unset or empty variable means no tokens; a malformed entry is
    still an error, named by its position, never by its value.
    """
    entries = [entry for entry in os.environ.get(env, "").split(",") if entry.strip()]
    if not entries:
        if required:
            raise TokenError(f"the environment variable {env!r} is not set or empty: it must hold the client token(s)")
        return []
    return [
        check_token(entry, f"entry {position} of {len(entries)} in the environment variable {env!r}")
        for position, entry in enumerate(entries, 1)
    ]
