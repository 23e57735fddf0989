"""Claude Code itself against the gateway's mock model: `claude -p … --output-format json` with
`ANTHROPIC_BASE_URL` pointed here and a scratch `HOME`, as an operator would run it.

The CLI is installed by this module on first use (npm, pinned, into `.tools/claude-code` under
the repository, which git ignores); a machine without npm or the registry fails here, it never skips.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import log_rows, node_tool

VERSION = "2.1.332"
TOOLS = Path(__file__).resolve().parents[2] / ".tools" / "claude-code"
CLI = TOOLS / "node_modules" / ".bin" / "claude"


@pytest.fixture(scope="module")
def claude_cli() -> Path:
    """The pinned Claude Code CLI, installed once."""
    if not _installed():
        npm = node_tool("npm")
        TOOLS.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--prefix", str(TOOLS), f"@anthropic-ai/claude-code@{VERSION}"],
            check=True,
            capture_output=True,
            timeout=600,
        )
    assert _installed(), f"Claude Code {VERSION} did not install into {TOOLS}"
    return CLI


def _installed() -> bool:
    if not CLI.exists():
        return False
    done = subprocess.run([str(CLI), "--version"], capture_output=True, text=True, timeout=60)
    return done.returncode == 0 and done.stdout.startswith(VERSION)


def run_claude(cli: Path, gateway: Any, key: str, home: Path, prompt: str) -> dict[str, Any]:
    """One non-interactive Claude Code run; its JSON result. Only what it needs is in its environment."""
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "ANTHROPIC_BASE_URL": gateway.url,
        "ANTHROPIC_API_KEY": key,
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1",
    }
    done = subprocess.run(
        [str(cli), "-p", prompt, "--output-format", "json", "--model", "mock-gpt-model"],
        env=env,
        cwd=home,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def test_claude_code_answers_through_the_gateway(claude_cli: Path, gateway: Any, api_key: str, tmp_path: Path) -> None:
    result = run_claude(claude_cli, gateway, api_key, tmp_path, "say hello")
    assert result["is_error"] is False and result["subtype"] == "success" and result["num_turns"] == 1
    assert result["result"].endswith("say hello")  # the mock echoes the last user text
    (row,) = log_rows(endpoint="messages")
    assert (row.status_code, row.stream, row.provider, row.model) == (200, True, "mock", "mock-gpt-model")
    assert row.prompt_tokens > 1000 and row.completion_tokens > 0  # its system prompt, tools and environment
    assert result["usage"]["input_tokens"] == row.prompt_tokens
    assert json.loads(row.end_user)["session_id"] == result["session_id"]  # metadata.user_id is JSON


def test_claude_code_tool_round_trip(claude_cli: Path, gateway: Any, api_key: str, tmp_path: Path) -> None:
    """The mock calls the tool the prompt names (Read, with the prompt as its path); Claude Code runs it,
    sends the failed result back (`is_error`, `cache_control`), and the mock echoes it."""
    result = run_claude(claude_cli, gateway, api_key, tmp_path, "Read the file")
    assert result["is_error"] is False and result["num_turns"] == 2
    assert result["result"].startswith("Error: ")  # is_error, as the translation words it to the model
    rows = log_rows(endpoint="messages")
    assert [r.status_code for r in rows] == [200, 200] and rows[0].finish_reason == "tool_calls"
    assert rows[1].prompt_tokens > rows[0].prompt_tokens
