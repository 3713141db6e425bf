"""Property-based fuzzing of every webhook and messenger parser, and the OpenAPI description.

Each property runs with a fixed, derandomized example budget (`budget`), so a run is repeatable
and its cost known. Parsers may only raise their documented errors; webhooks never answer 5xx,
never raise, never log an unexpected error, and stay within a memory bound (tracemalloc peak).
The web app runs against Redis database 13, where no worker lives: nothing is processed, and
admission answers that no worker is there, which is a fine answer to fuzz.
`pytest --run-slow tests/test_fuzz.py` also runs them with ten times the budget.
"""

from __future__ import annotations

import json
import logging
import re
import time
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import schemathesis
from flask import got_request_exception
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from bot.core.errors import NotAMessengerRequest, Unreadable
from bot.messengers import kakao, line, telegram

pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning")
FAST, LONG = 200, 2000  # examples per property: default suite, and `--run-slow`
OPENAPI_FAST, OPENAPI_LONG = 25, 250  # per OpenAPI operation


def budget(examples: int) -> settings:
    """A fixed, repeatable budget: derandomized, no example database, no deadline."""
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )


# Peak traced allocations while one body is handled (bodies are at most a few hundred kB).
PARSER_PEAK_BYTES = 8_000_000
WEBHOOK_PEAK_BYTES = 16_000_000

# --- what attackers type -------------------------------------------------------------------

HOSTILE = [
    "",
    " ",
    "\x00",
    "\x00\x01\x02\x1b[31m",
    "\u202eevil\u202c",
    "\u200f\u200e\u2066x\u2069",
    "\ufeff",
    "가" * 1200,
    "x" * 5000,
    "도움말",
    "다시 그리기",
    "결과 보기",
    "취소",
    "/점검 끝",
    "/차단 u1",
    "!원문",
    "--seed 99999999999999999999",
    "--ar 0:0",
    "### Human: <im_start><im_patch></s>",
    "{{7*7}}",
    "${jndi:ldap://x}",
    "<script>",
    "' OR 1=1",
    "http://127.0.0.1:6379/",
    "https://talk.kakaocdn.net/dna/x.jpg",
    "file:///etc/passwd",
    "List(https://talk.kakaocdn.net/a.jpg, http://10.0.0.1/b.jpg)",
    "\n" * 50,
    "🐨" * 300,
]


def mostly(
    common: st.SearchStrategy[Any], rare: st.SearchStrategy[Any], odds: int = 7
) -> st.SearchStrategy[Any]:
    """`common` `odds` times in `odds + 1`, else `rare` (one_of would weigh them alike)."""
    return st.integers(0, odds).flatmap(lambda i: rare if i == odds else common)


texts = mostly(
    st.one_of(st.text(max_size=80), st.sampled_from(HOSTILE)),
    st.text(alphabet=st.characters(categories=["Cc", "Cf", "Zl", "Zp", "Co"]), max_size=8),
    odds=5,
)
urls = st.one_of(
    st.sampled_from(
        [
            "https://bot-api.kakao.com/v1/bots/b/callback/t",
            "http://127.0.0.1:1/cb",
            "https://talk.kakaocdn.net/dna/a/img.jpg",
            "http://2130706433/",
            "http://0177.0.0.1/",
            "http://[::1]:80/",
            "https://bot-api.kakao.com@127.0.0.1/",
            "gopher://x/",
            "//x",
            "https://talk.kakaocdn.net:8443/x.jpg",
            "http://localhost/",
            "https://x.test/\r\nHost: y",
        ]
    ),
    texts,
)
ids = mostly(st.text(min_size=1, max_size=40).filter(str.strip), texts)
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), texts)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(texts, children, max_size=4),
    max_leaves=16,
)


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly the field as the messenger sends it (7 in 8), sometimes anything at all."""
    return mostly(strategy, json_values)


def plugin_value() -> st.SearchStrategy[Any]:
    """The secure-image plugin's answer, as the JSON text Kakao puts in a param."""
    document = st.fixed_dictionaries(
        {
            "privacyAgreement": maybe(st.sampled_from(["Y", "N"])),
            "imageQuantity": maybe(st.integers(0, 20).map(str)),
            "secureUrls": maybe(st.lists(urls, max_size=12).map(lambda u: f"List({', '.join(u)})")),
        }
    )
    return st.one_of(document.map(json.dumps), texts)


kakao_bodies = st.fixed_dictionaries(
    {
        "userRequest": maybe(
            st.fixed_dictionaries(
                {
                    "utterance": maybe(texts),
                    "user": maybe(st.fixed_dictionaries({"id": maybe(ids), "type": texts})),
                    "lang": maybe(texts),
                },
                optional={
                    "callbackUrl": maybe(urls),
                    "params": maybe(
                        st.fixed_dictionaries(
                            {
                                "media": maybe(
                                    st.fixed_dictionaries(
                                        {
                                            "type": maybe(
                                                st.sampled_from(["image", "video", "audio"])
                                            ),
                                            "url": maybe(urls),
                                        }
                                    )
                                )
                            }
                        )
                    ),
                },
            )
        ),
    },
    optional={
        "action": maybe(
            st.fixed_dictionaries(
                {
                    "params": maybe(st.dictionaries(texts, plugin_value(), max_size=3)),
                    "detailParams": maybe(
                        st.dictionaries(
                            texts,
                            st.fixed_dictionaries({"origin": maybe(urls), "value": plugin_value()}),
                            max_size=3,
                        )
                    ),
                }
            )
        ),
        "flow": maybe(
            st.fixed_dictionaries({"trigger": maybe(st.fixed_dictionaries({"type": maybe(texts)}))})
        ),
        "bot": json_values,
        "intent": json_values,
    },
)
photo_sizes = st.lists(
    st.fixed_dictionaries(
        {"file_id": maybe(texts), "width": maybe(st.integers()), "height": maybe(st.integers())}
    ),
    max_size=4,
)
telegram_bodies = st.fixed_dictionaries(
    {"update_id": maybe(st.integers(-(2**63), 2**63))},
    optional={
        "message": maybe(
            st.fixed_dictionaries(
                {"chat": maybe(st.fixed_dictionaries({"id": maybe(st.integers() | texts)}))},
                optional={
                    "text": maybe(texts),
                    "caption": maybe(texts),
                    "photo": maybe(photo_sizes),
                    "from": maybe(st.fixed_dictionaries({"language_code": maybe(texts)})),
                    "document": maybe(
                        st.fixed_dictionaries({"mime_type": maybe(texts), "file_id": maybe(texts)})
                    ),
                    "sticker": json_values,
                    "video": json_values,
                    "location": json_values,
                },
            )
        ),
        "edited_message": json_values,
    },
)
line_events = st.fixed_dictionaries(
    {
        "type": maybe(st.sampled_from(["message", "follow", "unfollow", "postback"])),
        "replyToken": maybe(texts),
        "source": maybe(
            st.fixed_dictionaries(
                {"type": texts},
                optional={"userId": maybe(texts), "groupId": maybe(texts), "roomId": maybe(texts)},
            )
        ),
    },
    optional={
        "webhookEventId": maybe(texts),
        "message": maybe(
            st.fixed_dictionaries(
                {"type": maybe(st.sampled_from(["text", "image", "video", "sticker", "file"]))},
                optional={"text": maybe(texts), "id": maybe(texts | st.integers())},
            )
        ),
    },
)
line_bodies = st.fixed_dictionaries(
    {"events": maybe(st.lists(line_events, max_size=3))}, optional={"destination": texts}
)


def as_bytes(bodies: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    """A body as JSON bytes (ASCII-escaped or UTF-8), cut short, or no JSON at all."""
    encoded = st.one_of(
        bodies.map(lambda b: json.dumps(b).encode()),
        bodies.map(lambda b: json.dumps(b, ensure_ascii=False).encode("utf-8", "surrogatepass")),
    )
    return mostly(
        encoded,
        st.one_of(
            st.tuples(encoded, st.integers(0, 200)).map(lambda t: t[0][: t[1]]),
            json_values.map(lambda v: json.dumps(v).encode()),
            st.binary(max_size=512),
            st.sampled_from(
                [
                    b"[" * 100_000,
                    b'{"a":' * 50_000,
                    b"\xff\xfe\x00",
                    b"null",
                    b"1e999",
                    # lone surrogates: valid JSON escapes, but no Unicode text
                    b'{"userRequest": {"user": {"id": "\\ud800"}, "utterance": "a\\udfffb"}}',
                    b'{"update_id": 1, "message": {"chat": {"id": "\\udc00"}, "text": "x"}}',
                ]
            ),
        ),
        odds=3,
    )


# --- the parsers ---------------------------------------------------------------------------


def traced(call: Callable[[], Any], bound: int) -> Any:
    """Run `call` with allocation tracing; its peak must stay under `bound` bytes."""
    tracemalloc.start()
    try:
        result = call()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < bound, f"{peak} bytes allocated at the peak"
    return result


@given(body=as_bytes(kakao_bodies))
def kakao_parser(body: bytes) -> None:
    try:
        event, photos = traced(lambda: kakao.parse(body, time.time(), "fuzz"), PARSER_PEAK_BYTES)
    except (NotAMessengerRequest, Unreadable):
        return
    assert isinstance(event.user, str) and 0 < len(event.user) <= kakao.MAX_USER_ID
    assert isinstance(event.text, str) and not kakao.CONTROL.search(event.text)
    assert event.callback_url is None or isinstance(event.callback_url, str)
    assert len(photos.urls) <= kakao.MAX_IMAGES
    assert all(isinstance(u, str) and u.startswith("http") for u in photos.urls)
    assert event.lang in {"ko", "en"}


@given(body=as_bytes(telegram_bodies))
def telegram_parser(body: bytes) -> None:
    try:
        update = traced(lambda: telegram.parse(body, time.time(), "fuzz"), PARSER_PEAK_BYTES)
    except NotAMessengerRequest:
        return
    assert isinstance(update.update_id, int)
    if update.event is not None:
        assert isinstance(update.event.text, str) and update.chat_id == update.event.user
        assert update.photo_file_id is None or isinstance(update.photo_file_id, str)


@given(body=as_bytes(line_bodies))
def line_parser(body: bytes) -> None:
    try:
        messages = traced(lambda: line.parse(body, time.time()), PARSER_PEAK_BYTES)
    except NotAMessengerRequest:
        return
    for message in messages:
        assert isinstance(message.reply_token, str) and isinstance(message.event.text, str)
        assert isinstance(message.event.user, str) and message.event.user
        assert message.image_id is None or isinstance(message.image_id, str)


@pytest.mark.parametrize(
    "parser", [kakao_parser, telegram_parser, line_parser], ids=["kakao", "telegram", "line"]
)
def test_parsers_raise_only_their_own_errors_within_bounded_memory(parser: Any) -> None:
    budget(FAST)(parser)()


# --- the webhooks, through the real app ----------------------------------------------------


class Trouble(logging.Handler):
    """Collects error records with a traceback, and exceptions Flask saw escape a view."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.found: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            self.found.append(f"{record.name}: {record.getMessage()}")

    def escaped(self, _sender: Any, exception: BaseException, **_: Any) -> None:
        self.found.append(f"unhandled {type(exception).__name__}: {exception}")


@pytest.fixture(scope="module")
def fuzz_app(make_app: Any, module_redis_url: str) -> Iterator[Any]:
    """The real app on a database of this module's own (no worker there), with its log watched
    for trouble."""
    app = make_app(redis_url=module_redis_url)
    trouble = Trouble()
    logging.getLogger().addHandler(trouble)
    got_request_exception.connect(trouble.escaped, app)
    app.extensions["trouble"] = trouble
    try:
        yield app
    finally:
        logging.getLogger().removeHandler(trouble)
        got_request_exception.disconnect(trouble.escaped, app)


@pytest.fixture(scope="module")
def make_app(stack: Any) -> Any:  # module scope: one app for every property
    from bot.core.settings import Settings
    from bot.web.app import create_app

    def build(**overrides: Any) -> Any:
        env = {f"KOALATALK_{k.upper()}": v for k, v in stack["settings"].items()}
        return create_app(Settings.from_env(env, **overrides))

    return build


def kakao_ok(response: Any) -> None:
    assert response.status_code in {200, 400, 413}, response.status_code
    if response.status_code == 200:
        body = response.get_json()
        outputs = body["template"]["outputs"] if "template" in body else None
        assert body.get("useCallback") is True or (outputs and len(outputs) <= 3), body


def webhook_property(
    app: Any,
    path: str,
    bodies: st.SearchStrategy[bytes],
    headers: Callable[[bytes], dict[str, str]],
) -> Callable[[], None]:
    client = app.test_client()

    @given(body=bodies, content_type=st.sampled_from(["application/json"] * 6 + ["text/plain"]))
    def run(body: bytes, content_type: str) -> None:
        response = traced(
            lambda: client.post(path, data=body, content_type=content_type, headers=headers(body)),
            WEBHOOK_PEAK_BYTES,
        )
        assert response.status_code < 500, (path, response.status_code, body[:200])
        if path == "/kakao/skill":
            kakao_ok(response)

    return run


def line_headers(secret: str) -> Callable[[bytes], dict[str, str]]:
    def sign(body: bytes) -> dict[str, str]:
        # Most bodies are signed, so they reach the parser; a few carry a forged signature.
        forged = len(body) % 7 == 0
        return {line.SIGNATURE_HEADER: "Zm9yZ2Vk" if forged else line.signature(body, secret)}

    return sign


def webhook_case(
    stack: Any, messenger: str
) -> tuple[str, st.SearchStrategy[bytes], Callable[[bytes], dict[str, str]]]:
    settings_ = stack["settings"]
    cases = {
        "kakao": ("/kakao/skill", as_bytes(kakao_bodies), lambda _b: {}),
        "telegram": (
            "/telegram/webhook",
            as_bytes(telegram_bodies),
            lambda _b: {telegram.SECRET_HEADER: settings_["telegram_secret"]},
        ),
        "line": (
            "/line/webhook",
            as_bytes(line_bodies),
            line_headers(settings_["line_channel_secret"]),
        ),
    }
    return cases[messenger]


@pytest.mark.parametrize("messenger", ["kakao", "telegram", "line"])
def test_webhooks_never_fail_and_stay_within_bounded_memory(
    fuzz_app: Any, stack: Any, messenger: str
) -> None:
    trouble = fuzz_app.extensions["trouble"]
    trouble.found.clear()
    budget(FAST)(webhook_property(fuzz_app, *webhook_case(stack, messenger)))()
    assert trouble.found == []


@given(
    session=maybe(texts),
    token=st.text(min_size=1, max_size=80).filter(lambda t: "/" not in t),
    body=as_bytes(json_values),
    upload=st.binary(max_size=2048),
)
def playground_property(app: Any, session: Any, token: str, body: bytes, upload: bytes) -> None:
    import io

    client = app.test_client()
    calls: list[Callable[[], Any]] = [
        lambda: client.post("/playground/api/callback-url", json={"session": session}),
        lambda: client.post(
            f"/playground/callback/{token}", data=body, content_type="application/json"
        ),
        lambda: client.get(f"/playground/api/inbox/{token}"),
        lambda: client.post(
            "/playground/upload",
            data={"photo": (io.BytesIO(upload), "p.jpg")},
            content_type="multipart/form-data",
        ),
    ]
    answers = [traced(call, WEBHOOK_PEAK_BYTES) for call in calls]
    for response in answers:
        assert response.status_code < 500, (response.request.path, response.status_code)


def test_playground_endpoints_never_fail(fuzz_app: Any) -> None:
    trouble = fuzz_app.extensions["trouble"]
    trouble.found.clear()
    budget(FAST)(playground_property)(fuzz_app)
    assert trouble.found == []


# --- the OpenAPI description, checked with schemathesis --------------------------------------


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def test_every_endpoint_answers_as_its_openapi_description_says(fuzz_app: Any) -> None:
    check_openapi(fuzz_app, OPENAPI_FAST)


def check_openapi(fuzz_app: Any, examples: int) -> None:
    """Every route is described, and generated requests get the answers described."""
    schema = schemathesis.openapi.from_wsgi("/openapi.yaml", fuzz_app)
    described = {
        (method.upper(), path)
        for path, item in schema.raw_schema["paths"].items()
        for method in item
    }
    routes = {
        (method, re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule))
        for rule in fuzz_app.url_map.iter_rules()
        if rule.endpoint != "playground.static"
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    assert routes == described, "every route is described, and only those"
    for operation in (result.ok() for result in schema.get_all_operations()):
        # A documented 5xx (readiness, Redis down for Telegram and LINE) is a conforming answer;
        # everywhere else a 5xx fails.
        documented_5xx = any(
            str(code).startswith("5") for code in operation.definition.raw.get("responses", {})
        )
        conforms(operation, CHECKS[1:] if documented_5xx else CHECKS, examples)


def conforms(operation: Any, checks: list[Any], examples: int) -> None:
    """Generated requests to one operation get answers its description allows."""

    @budget(examples)
    @given(case=operation.as_strategy())
    def run(case: Any) -> None:
        case.call_and_validate(checks=checks)

    run()


@pytest.mark.slow
def test_long_fuzz_runs(fuzz_app: Any, stack: Any) -> None:
    """Ten times the default budgets (`pytest --run-slow tests/test_fuzz.py`)."""
    trouble = fuzz_app.extensions["trouble"]
    trouble.found.clear()
    for parser in (kakao_parser, telegram_parser, line_parser):
        budget(LONG)(parser)()
    for messenger in ("kakao", "telegram", "line"):
        budget(LONG)(webhook_property(fuzz_app, *webhook_case(stack, messenger)))()
    budget(LONG)(playground_property)(fuzz_app)
    check_openapi(fuzz_app, OPENAPI_LONG)
    assert trouble.found == []
