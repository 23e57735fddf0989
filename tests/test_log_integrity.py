"""No tenant's input can stop the request log for everyone: text the database can't store is made
storable, and a row the database still refuses is set aside while the rest of its batch is written."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from completions.app import current, make_log_writer
from completions.keys import create_api_key
from completions.models import RequestLog, SetAsideLogRow, UsageDaily
from completions.recorder import RequestRecord
from tests.conftest import log_rows


def test_nul_characters_from_one_tenant_never_stop_the_log(
    gateway: Any, client: Any, user: Any, django_user_model: Any
) -> None:
    # On PostgreSQL, one NUL used to make the writer retry its batch forever: nobody's rows were written.
    client.chat.completions.create(
        model="mock-gpt-model",
        messages=[{"role": "user", "content": "hi"}],
        user="x\u0000y",
        metadata={"team\u0000": "v\u0000"},
    )
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="mock\u0000", messages=[{"role": "user", "content": "hi"}])
    other = django_user_model.objects.create_user("other-tenant")
    _, other_secret = create_api_key(other, "other")
    answer = httpx.post(
        gateway.url + "/v1/chat/completions",
        json={"model": "mock-gpt-model", "messages": [{"role": "user", "content": "mine"}]},
        headers={"Authorization": f"Bearer {other_secret}"},
    )
    assert answer.status_code == 200

    assert current().log.flush(15), "the request log stopped"
    nul_user, bad_model, others = log_rows()
    assert nul_user.end_user == "x\ufffdy" and nul_user.metadata == {"team\ufffd": "v\ufffd"}
    assert bad_model.model == "mock\ufffd" and bad_model.status_code == 404 and "\x00" not in bad_model.error_message
    assert others.user_id == other.id and others.status_code == 200
    assert sum(u.requests for u in UsageDaily.objects.all()) == 3


def test_a_row_the_database_refuses_is_set_aside_and_the_batch_goes_on(transactional_db: Any) -> None:
    writer = make_log_writer()
    good = [RequestRecord(request_id=f"good-{i}", model="mock-gpt-model", prompt_tokens=3) for i in range(2)]
    refused = RequestRecord(request_id="refused", model="mock-gpt-model", prompt_tokens=-1)  # a CHECK fails
    for record in (good[0], refused, good[1]):
        writer.submit(record)
    assert writer.flush(15)
    writer.close()
    assert sorted(RequestLog.objects.values_list("request_id", flat=True)) == ["good-0", "good-1"]
    (aside,) = SetAsideLogRow.objects.all()
    assert aside.request_id == "refused" and '"prompt_tokens":-1' in aside.values
    assert writer.set_aside == 1
    assert sum(u.requests for u in UsageDaily.objects.all()) == 2


SECRET_PROMPT = "my secret plan for the quarter"


@pytest.fixture
def quoting_upstream(gateway: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """An OpenAI-compatible upstream whose errors quote the prompt back, as real ones do."""
    from completions.models import ModelRoute
    from tests.fakes.base import Reply
    from tests.fakes.openai_server import FakeOpenAI, error

    fake = FakeOpenAI().start()
    monkeypatch.setenv("QUOTING_KEY", "sk-upstream")
    ModelRoute.objects.create(
        model_name="quoting",
        provider="openai",
        upstream_model="up",
        base_url=fake.url + "/v1",
        api_key_env="QUOTING_KEY",
        max_retries=1,
    )
    fake.script(
        Reply(status=503, json=error(f"overloaded while reading '{SECRET_PROMPT}'", "server_error")),
        Reply(status=400, json=error(f"'{SECRET_PROMPT}' violates the content policy")),
    )
    yield fake
    fake.stop()


@pytest.mark.parametrize("log_content", [False, True])
def test_upstream_errors_that_quote_the_prompt_are_stored_only_with_content_logging(
    quoting_upstream: Any, client: Any, settings: Any, log_content: bool
) -> None:
    settings.GATEWAY_LOG_CONTENT = log_content
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="quoting", messages=[{"role": "user", "content": SECRET_PROMPT}])
    assert SECRET_PROMPT in caught.value.message  # the client still reads the upstream's words
    (row,) = log_rows(model="quoting")
    stored = [row.error_message, *(a["message"] for a in row.attempts)]
    assert len(stored) == 3 and row.error_type == "invalid_request_error" and row.status_code == 400
    assert all((SECRET_PROMPT in text) is log_content for text in stored), stored
