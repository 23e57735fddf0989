"""Gemini, the provider's I/O: its SDK client's options, and the provider driven directly against
the fake Gemini server (no gateway)."""

from __future__ import annotations

import httpx

from completions.providers.gemini import GeminiProvider, connect_timeout_hook, http_options
from tests.fakes.base import Gate, Reply
from tests.fakes.gemini import FakeGemini, candidate, response, text_part
from tests.providers.gemini.helpers import chat, route


def test_http_options_timeouts_retries_and_base_url() -> None:
    options = http_options(
        route(base_url="http://127.0.0.1:9/", connect_timeout=2.5, first_byte_timeout=20, idle_timeout=40)
    )
    assert options.base_url == "http://127.0.0.1:9"
    assert options.timeout == 45_000  # the gateway enforces first-byte and idle timeouts itself
    assert options.retry_options.attempts == 1
    assert http_options(route()).base_url is None  # the SDK then honours GOOGLE_GEMINI_BASE_URL
    pasted = http_options(route(base_url="https://generativelanguage.googleapis.com/v1beta/"))
    assert (pasted.base_url, pasted.api_version) == ("https://generativelanguage.googleapis.com", "v1beta")


def test_connect_timeout_hook_sets_only_the_connect_timeout() -> None:
    import asyncio

    request = httpx.Request(
        "POST", "http://x", extensions={"timeout": {"connect": 65, "read": 65, "write": 65, "pool": 65}}
    )
    asyncio.run(connect_timeout_hook(2.5)(request))
    assert request.extensions["timeout"] == {"connect": 2.5, "read": 65, "write": 65, "pool": 65}


def test_closing_the_stream_between_chunks_hangs_up_at_once(fake: FakeGemini) -> None:
    """Closed while suspended at a yield (the client left while the gateway was writing), the
    provider cuts the HTTP response itself instead of waiting for the garbage collector."""
    import asyncio

    gate = Gate()
    fake.script(
        Reply(
            events=[response(candidate(text_part("first"), finish=None)), gate, response(candidate(text_part("never")))]
        )
    )
    provider = GeminiProvider(route(base_url=fake.url))

    async def run() -> int:
        stream = provider.stream(provider.prepare(chat(stream=True)))
        first = await stream.__anext__()
        assert first["choices"][0]["delta"]["content"] == "first"
        await stream.aclose()
        for _ in range(50):
            if fake.disconnects:
                break
            await asyncio.sleep(0.01)
        await provider.aclose()
        return fake.disconnects

    try:
        assert asyncio.run(run()) == 1
    finally:
        gate.open()
