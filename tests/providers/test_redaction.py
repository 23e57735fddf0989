"""Credentials never leave the gateway in an upstream's words: not to the client, not into the request log.

An upstream that echoes the gateway's credential in an error (a body, a stream error event) is driven
through the real gateway with the official openai SDK, for each provider; the unit tests below pin
what `redact()` removes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import openai
import pytest

from completions.providers.base import Route
from completions.redaction import MARKER, redact
from tests.conftest import log_rows
from tests.fakes import anthropic as fa
from tests.fakes import gemini as fg
from tests.fakes import openai_server as fo
from tests.fakes.base import FakeUpstream, Reply

KEY_ENV = "LEAKY_UPSTREAM_KEY"
# The fake Gemini answers only requests carrying its key, so that route's credential is the fake's.
CREDENTIALS = {"gemini": "test-key", "anthropic": "anthropic-upstream-secret-77", "openai": "local-server-token-1234"}


def echo_before(provider: str, credential: str) -> Reply:
    """An error answer (before any byte of the reply) quoting the credential."""
    said = f"The key {credential} may not use this model."
    if provider == "gemini":
        return fg.error_reply(403, "PERMISSION_DENIED", said)
    if provider == "anthropic":
        return fa.error_reply(403, "permission_error", said)
    return Reply(status=403, json=fo.error(said, type="invalid_request_error", code="model_access_denied"))


def echo_mid_stream(provider: str, credential: str) -> Reply:
    """A stream that starts, then fails with an error event quoting the credential."""
    said = f"backend refused key {credential} mid-way"
    if provider == "gemini":
        first = fg.response(fg.candidate(fg.text_part("partial"), finish=None))
        return Reply(events=[first, {"error": {"code": 500, "message": said, "status": "INTERNAL"}}])
    if provider == "anthropic":
        msg = fa.message([fa.text("partial answer")])
        return Reply(events=[*fa.stream_events(msg)[:5], fa.error_event("api_error", said)])
    return Reply(events=[*fo.text_events()[:3], fo.error(said, type="server_error")])


@pytest.fixture
def leaky(
    gateway: Any,
    monkeypatch: pytest.MonkeyPatch,
    gemini_server: fg.FakeGemini,
    anthropic_server: fa.FakeAnthropic,
    openai_server: fo.FakeOpenAI,
) -> Iterator[Callable[[str], tuple[str, str, FakeUpstream]]]:
    """A route `leaky-<provider>` to that provider's fake: (model, credential, fake)."""
    from completions.models import ModelRoute

    fakes: dict[str, FakeUpstream] = {"gemini": gemini_server, "anthropic": anthropic_server, "openai": openai_server}
    for fake in fakes.values():
        fake.reset()

    def make(provider: str) -> tuple[str, str, FakeUpstream]:
        fake = fakes[provider]
        monkeypatch.setenv(KEY_ENV, CREDENTIALS[provider])
        ModelRoute.objects.create(
            model_name=f"leaky-{provider}",
            provider=provider,
            upstream_model="some-model",
            base_url=fake.url + ("/v1" if provider == "openai" else ""),
            api_key_env=KEY_ENV,
            max_retries=0,
        )
        return f"leaky-{provider}", CREDENTIALS[provider], fake

    yield make
    for fake in fakes.values():
        fake.reset()


PROVIDERS = ["gemini", "anthropic", "openai"]


@pytest.fixture(autouse=True)
def upstream_text_logged(settings: Any) -> None:
    """With content logging on the upstream's words are stored too: redacted all the same."""
    settings.GATEWAY_LOG_CONTENT = True


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
@pytest.mark.parametrize("provider", PROVIDERS)
def test_e2e_credential_echoed_in_an_error_answer_is_redacted(
    client: Any, leaky: Callable[[str], tuple[str, str, FakeUpstream]], provider: str, stream: bool
) -> None:
    model, credential, fake = leaky(provider)
    fake.script(echo_before(provider, credential))
    with pytest.raises(openai.PermissionDeniedError) as caught:
        result = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}], stream=stream)
        if stream:
            list(result)
    assert len(fake.requests) == 1  # the upstream did answer, echoing the credential
    text = caught.value.response.text
    assert credential not in text and MARKER in text  # the explanation is relayed, the credential is not
    (row,) = log_rows(model=model)
    assert row.status_code == 403
    assert credential not in row.error_message and MARKER in row.error_message
    assert credential not in str(row.attempts)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_e2e_credential_echoed_in_a_mid_stream_error_event_is_redacted(
    client: Any, leaky: Callable[[str], tuple[str, str, FakeUpstream]], provider: str
) -> None:
    model, credential, fake = leaky(provider)
    fake.script(echo_mid_stream(provider, credential))
    stream = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}], stream=True)
    with pytest.raises(openai.APIError) as caught:
        for _ in stream:
            pass
    said = f"{caught.value.message} {caught.value.body}"
    assert credential not in said and MARKER in said
    (row,) = log_rows(model=model)
    assert row.stream and row.error_message
    assert credential not in row.error_message and MARKER in row.error_message


# ---- redact() ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "Incorrect API key provided: sk-proj-abcdefghijklmnop1234.",
        "key sk-ant-api03-AbCdEf_123-xyz is disabled",
        "masked sk-upst*****test echoed",
        "groq says gsk_abcdefghijklmnop1234 is invalid",
        "API key AIzaSyA1b2C3d4E5f6G7h8I9j0KlMnOpQrStUvW not valid",
        "forwarded header: Authorization: Bearer abc.def-ghi_jkl9",
        "xai-abcdefghijkl rk-abcdefghijkl pk-abcdefghijkl",
    ],
)
def test_key_shapes_are_redacted(text: str) -> None:
    out = redact(text)
    assert MARKER in out
    for secret in (
        "abcdefghijklmnop1234",
        "AbCdEf_123",
        "upst*****test",
        "AIzaSyA1b2C3",
        "abc.def-ghi_jkl9",
        "abcdefghijkl",
    ):
        assert secret not in out


def test_every_known_credential_value_is_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", "gemini-plain-value-1")
    monkeypatch.setenv("GOOGLE_API_KEY", "google-plain-value-2")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "anthropic-plain-value-3")
    monkeypatch.setenv("OPENAI_API_KEY", "openai-plain-value-4")
    monkeypatch.setenv("SOME_ROUTE_KEY", "route-plain-value-5")
    Route(model_name="m", provider="openai", upstream_model="u", api_key_env="SOME_ROUTE_KEY")  # names its env var
    text = " ".join(os.environ[name] for name in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "ANTHROPIC_API_KEY"))
    text += f" {os.environ['OPENAI_API_KEY']} {os.environ['SOME_ROUTE_KEY']}"
    assert redact(text) == " ".join([MARKER] * 5)
    monkeypatch.setenv("SOME_ROUTE_KEY", "rotated-plain-value-6")  # read at redaction time: rotation is covered
    assert redact("now rotated-plain-value-6") == f"now {MARKER}"


def test_ordinary_text_is_left_alone() -> None:
    text = "The model `gemini-2.5-flash` is overloaded (task-7); retry in 3 s. Risk-free: ask-me."
    assert redact(text) == text
