"""The callback endpoint resets the connection or stalls past the deadline: retries stay bounded
by the callback's deadline, and the picture is kept for the user's next message.

(FAIL, 500 and a slow-but-answering endpoint are in test_core_faults.py.)
"""

from __future__ import annotations

import time
from typing import Any

from bot.core import keys
from tests.support import kakao_payload, new_user, wait_until

DEADLINE_S = 5.0


def test_reset_and_stalled_callbacks_are_bounded_by_the_deadline_and_the_result_kept(
    make_app: Any, stack: Any, callback_server: Any
) -> None:
    r = stack["redis"]
    client = make_app(sync_wait_s=0.0, callback_deadline_s=DEADLINE_S).test_client()
    cases = {"reset": new_user(), "slow:30": new_user()}
    sent: dict[str, float] = {}
    for behaviour, user in cases.items():
        sent[user] = time.time()
        url = callback_server.url(behaviour.replace(":", "") + user, behaviour)
        body = client.post("/kakao/skill", json=kakao_payload(user, "콜백 장애", url)).get_json()
        assert body["useCallback"] is True
    kept_at: dict[str, float] = {}

    def all_kept() -> bool:
        for user in cases.values():
            if user not in kept_at and r.llen(keys.kept("kakao", user)):
                kept_at[user] = time.time()
        return len(kept_at) == len(cases)

    assert wait_until(all_kept, timeout=DEADLINE_S + 10, step=0.02)
    for behaviour, user in cases.items():
        # Kept no later than the deadline (plus one poll and the hand-over), never later.
        took = kept_at[user] - sent[user]
        assert took < DEADLINE_S + 1.5, (behaviour, took)
        hits = callback_server.hits.get(behaviour.replace(":", "") + user, 0)
        if behaviour == "reset":
            assert 2 <= hits <= 6, f"a reset is retried, within the deadline ({hits} tries)"
        else:
            assert hits == 1, "one stalled try takes the whole deadline"
        later = client.post("/kakao/skill", json=kakao_payload(user, "결과 보기")).get_json()
        assert any("simpleImage" in o for o in later["template"]["outputs"])
        assert r.get(keys.slot("kakao", user)) is None
