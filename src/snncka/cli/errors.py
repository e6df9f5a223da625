"""The CLI's one error policy: what a user can fix is one line on stderr (exit 1), anything else is a bug
and keeps its traceback.

User errors are ``ValueError`` (bad arguments, bad data, ``CheckpointError``, non-finite numbers) and
``OSError`` (missing files, permissions, a full disk) and ``MissingExtraError`` (an optional dependency
such as ``snncka[events]`` is not installed). Library code raises those with a message that says what
was wrong and how to fix it; commands wrap their work in ``user_errors()``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import click

from ..data import MissingExtraError

USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, MissingExtraError)


def one_line(e: BaseException) -> str:
    """The exception's message as one line (a file name for an OSError without a message)."""
    text = str(e).strip() or type(e).__name__
    if isinstance(e, OSError) and e.filename and e.strerror and str(e.filename) not in text:
        text = f"{e.strerror}: {e.filename}"
    return " ".join(text.split())


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn a user error raised inside the block into click's one-line ``Error: ...``."""
    try:
        yield
    except click.ClickException:
        raise
    except USER_ERRORS as e:
        raise click.ClickException(one_line(e)) from e
