"""What every messenger adapter shares: the constant-time check of a shared secret."""

from __future__ import annotations

import hmac

from bot.core.errors import Unauthorized


def check_secret(header: str | None, secret: str, development: bool) -> None:
    """Constant-time comparison of a shared secret; development may run without one."""
    if not secret:
        if development:
            return
        raise Unauthorized("no secret configured")
    if header is None or not hmac.compare_digest(header.encode(), secret.encode()):
        raise Unauthorized("wrong secret")
