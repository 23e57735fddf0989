"""Codex CLI itself against the gateway's mock model: `codex exec` with a custom provider
(`wire_api = "responses"`), a plain answer and a function-tool round trip.

The CLI is installed from npm on first use into `.cache/codex-cli` (git-ignored); without npm
or the registry this test fails rather than skips.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import log_rows, node_tool

CODEX_VERSION = "0.169.0"
CACHE = Path(__file__).resolve().parents[2] / ".cache" / "codex-cli"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture(scope="session")
def codex() -> Path:
    binary = CACHE / "node_modules" / ".bin" / "codex"
    installed = CACHE / "node_modules" / "@openai" / "codex" / "package.json"
    if not (binary.exists() and f'"version": "{CODEX_VERSION}"' in installed.read_text()):
        npm = node_tool("npm")
        CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [npm, "install", "--prefix", str(CACHE), "--no-audit", "--no-fund", f"@openai/codex@{CODEX_VERSION}"],
            check=True,
            capture_output=True,
            timeout=500,
        )
    return binary


def codex_exec(codex: Path, home: Path, url: str, key: str, prompt: str, model: str = "mock-gpt-model") -> str:
    """`codex exec PROMPT` with the gateway as its model provider; its answer (stdout)."""
    (home / "config.toml").write_text(
        f"""check_for_update_on_startup = false
model = "{model}"
model_provider = "gateway"

[model_providers.gateway]
name = "LLM gateway"
base_url = "{url}/v1"
env_key = "GATEWAY_KEY"
wire_api = "responses"

[analytics]
enabled = false
"""
    )
    work = home / "work"
    work.mkdir(exist_ok=True)
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "CODEX_HOME": str(home), "GATEWAY_KEY": key}
    done = subprocess.run(
        [str(codex), "exec", "--skip-git-repo-check", prompt],
        cwd=work,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_codex_exec_answers_and_runs_a_tool_round_trip(
    codex: Path, gateway: Any, api_key: str, tmp_path: Path, settings: Any
) -> None:
    settings.GATEWAY_LOG_CONTENT = True  # to see what Codex sent
    assert codex_exec(codex, tmp_path, gateway.url, api_key, "hello from codex").strip() == "hello from codex"

    # The mock calls a tool the user names: Codex runs get_goal and sends its output back.
    answer = codex_exec(codex, tmp_path, gateway.url, api_key, "please call get_goal")
    assert '"goal":null' in answer.replace(" ", "")

    rows = log_rows(endpoint="responses")
    assert len(rows) == 3 and all(r.status_code == 200 and r.stream for r in rows)
    assert [r.finish_reason for r in rows] == ["stop", "tool_calls", "stop"]
    first, call_turn, answer_turn = (r.request_body for r in rows)
    assert [i.get("type", "message") for i in call_turn["input"]] == ["message"] * len(call_turn["input"])
    assert first["store"] is False and first["tool_choice"] == "auto"
    assert {t["type"] for t in first["tools"]} == {"function", "namespace", "web_search"}
    resent = [item for item in answer_turn["input"] if item.get("type", "message") != "message"]
    assert [item["type"] for item in resent] == ["function_call", "function_call_output"]
    assert resent[0]["name"] == "get_goal" and resent[0]["id"].startswith("fc_")
    assert resent[1]["call_id"] == resent[0]["call_id"]
    from completions.models import StoredResponse

    assert not StoredResponse.objects.exists()  # Codex sends store: false


@pytest.mark.parametrize("model", ["chat-gemini", "chat-anthropic", "chat-openai"])
def test_codex_exec_tool_loop_on_each_fake_provider(
    codex: Path, routed: dict[str, Any], gateway: Any, api_key: str, tmp_path: Path, model: str
) -> None:
    """These fakes call one of the declared tools whenever tools are offered, then answer with its output:
    Codex runs it (or reports why it can't), and the next turn carries its history (with Gemini's
    thought signature in our signed reasoning item) to the provider."""
    answer = codex_exec(codex, tmp_path, gateway.url, api_key, "weather?", model=model)
    assert "The tool said" in answer
    provider = model.removeprefix("chat-")
    fake = routed[provider]
    assert len(fake.requests) == 2
    rows = log_rows(endpoint="responses", model=model)
    assert [r.finish_reason for r in rows] == ["tool_calls", "stop"] and all(r.status_code == 200 for r in rows)
    if provider == "gemini":
        from tests.fakes import gemini as fg

        sent = fg.canonical(fake.requests[-1].json)
        calls = [p for turn in sent["contents"] for p in turn["parts"] if "functionCall" in p]
        assert fg.decoded_signature(calls[0]) == b"sig"  # Codex resent our reasoning item
