"""Every Redis key KoalaTalk writes, in one place.

All carry a TTL except the worker set and the metric counters (bot/core/metrics.py).
"""

from __future__ import annotations

P = "kt:"


def user(kind: str, messenger: str, user_id: str) -> str:
    """A per-user key, e.g. kt:last:kakao:<id>."""
    return f"{P}{kind}:{messenger}:{user_id}"


def last_prompt(messenger: str, user_id: str) -> str:
    return user("last", messenger, user_id)


def seed_pin(messenger: str, user_id: str) -> str:
    """The seed kept for the user's next prompt only (`같은 시드로`)."""
    return user("seedpin", messenger, user_id)


def translation(model: str, text_sha256: str) -> str:
    """A cached translation, by the model and a hash of the source text."""
    return f"{P}tr:{model}:{text_sha256}"


def kept(messenger: str, user_id: str) -> str:
    return user("kept", messenger, user_id)


def slot(messenger: str, user_id: str) -> str:
    return user("slot", messenger, user_id)


def seen_user(messenger: str, user_id: str) -> str:
    return user("seen", messenger, user_id)


def photo_session(messenger: str, user_id: str) -> str:
    """The photo conversation: private photo ids and recent turns (bot/core/conversation.py)."""
    return user("photo", messenger, user_id)


def other_reading(messenger: str, user_id: str) -> str:
    """The other reading of the user's last ambiguous message (`{"action", "text"}`), behind the
    fixed quick-reply label `이 문장으로 그리기` / `사진에 대해 묻기`; short TTL."""
    return user("other", messenger, user_id)


def claim(request_id: str) -> str:
    return f"{P}claim:{request_id}"


def result(request_id: str) -> str:
    return f"{P}result:{request_id}"


def wake(request_id: str) -> str:
    return f"{P}wake:{request_id}"


def running(request_id: str) -> str:
    """Which worker runs this job right now (set at start, removed at the end)."""
    return f"{P}run:{request_id}"


def heartbeat(worker_name: str) -> str:
    return f"{P}hb:{worker_name}"


WORKERS = f"{P}workers"
# Direct hand-overs the worker won, by when the waiting webhook must have taken them: a worker's
# heartbeat keeps the result of one nobody took (a web process that died or lost Redis mid-wait).
HANDOVERS = f"{P}handovers"
PHOTO_PURGE = f"{P}photopurge"  # held a few minutes by whoever purges old photos


def seen_delivery(messenger: str, delivery_id: str) -> str:
    """A Telegram update_id or LINE webhookEventId already taken (redeliveries are dropped)."""
    return f"{P}seen-delivery:{messenger}:{delivery_id}"


def group_photo(messenger: str, message_id: str) -> str:
    """A photo a group member sent, not addressed to the bot (LINE): its chat, kept so that a
    message quoting it with a mention asks about it (only the id; nothing is fetched before)."""
    return f"{P}group-photo:{messenger}:{message_id}"


def group_photos_by(messenger: str, person: str) -> str:
    """The group_photo keys of the photos a person sent (a set): `기록 삭제` deletes them."""
    return user("group-photos", messenger, person)


def line_sent(message_id: str) -> str:
    """A message the bot sent to a LINE group: a reply quoting it is addressed to the bot."""
    return f"{P}line-sent:{message_id}"


def playground_callback(token: str) -> str:
    """A playground callback token, valid for a minute like Kakao's; holds the page's session."""
    return f"{P}pg:cb:{token}"


def playground_inbox(session: str) -> str:
    """Callback answers waiting for one playground page."""
    return f"{P}pg:inbox:{session}"


def metric(name: str) -> str:
    """One Prometheus metric's hash (bot/core/metrics.py); counters, so no TTL."""
    return f"{P}m:{name}"


def as_text(raw: bytes | str) -> str:
    """Redis answers bytes; make them text."""
    return raw.decode() if isinstance(raw, bytes) else raw


MODEL_CALLS = f"{P}modelcalls"  # capped list of recent model calls (start, end, batch size)
SERVICE_TIMES = f"{P}svc"  # hash: "<queue>:<preset>" -> moving average of seconds per job
MAINTENANCE = f"{P}maintenance"  # operator's maintenance message, when set
BLOCKED = f"{P}blocked"  # set of "<messenger>:<user>" refused by an operator


def dropped(request_id: str) -> str:
    """Set when the user cancelled a job that was already running: its result is not sent."""
    return f"{P}drop:{request_id}"


def media(media_id: str) -> str:
    """A picture in the Redis image store (MEDIA_BACKEND=redis)."""
    return f"{P}media:{media_id}"
