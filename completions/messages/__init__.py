"""Anthropic's Messages API in front of every model.

`protocol` holds the wire format (the request models), `translate` the pure
translation to and from the chat steps (requests, answers and an SSE dialect),
`envelope` Anthropic's error envelope, `native` what an Anthropic route needs to
take the request as it came, and `service` one request's life through the
`Exchange`, as the chat service does it.
"""
