"""The floor: a bare ASGI app answering what the mock model answers, with no framework at all."""

from typing import Any

BODY = (
    b'{"id":"chatcmpl-floor","object":"chat.completion","created":1,"model":"mock-gpt-model","choices":[{"index":0,'
    b'"message":{"role":"assistant","content":"is 1 + 1 equal to 2?","refusal":null},"logprobs":null,"finish_reason":"stop"}],'
    b'"usage":{"prompt_tokens":13,"completion_tokens":7,"total_tokens":20}}'
)
CHUNK = b'data: {"id":"chatcmpl-floor","object":"chat.completion.chunk","created":1,"model":"mock-gpt-model","choices":[{"index":0,"delta":{"content":" word"},"logprobs":null,"finish_reason":null}]}\n\n'


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if b'"stream":true' in body:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        for _ in range(9):
            await send({"type": "http.response.body", "body": CHUNK, "more_body": True})
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": BODY})
