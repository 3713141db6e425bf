"""One small error hierarchy for the webhook, and the one function that maps it to HTTP."""

from __future__ import annotations


class WebhookError(Exception):
    """Base: a request we will not process as a normal message."""

    status = 400


class NotAMessengerRequest(WebhookError):
    """Not JSON, wrong content type, or missing the messenger's envelope."""

    status = 400


class BodyTooLarge(WebhookError):
    """The body is over the size cap."""

    status = 413


class Unauthorized(WebhookError):
    """Wrong or missing shared secret or signature."""

    status = 401


class Unreadable(WebhookError):
    """A real messenger request we cannot serve; the user sees `message_key`.

    Kakao shows our answer to the user, so this maps to 200 with a friendly text.
    """

    status = 200

    def __init__(self, message_key: str, detail: str = "") -> None:
        super().__init__(detail or message_key)
        self.message_key = message_key


def http_status(exc: WebhookError) -> int:
    """The HTTP status for a webhook error."""
    return exc.status
