"""The OpenAI-compatible endpoints and Anthropic's Messages API, with and without the `/v1` prefix
(older guides omit it)."""

from django.urls import include, path

from . import views
from .responses import views as responses

endpoints = [
    path("chat/completions", views.chat_completions, name="chat-completions"),
    path("embeddings", views.create_embeddings, name="embeddings"),
    path("messages", views.create_message, name="messages"),
    path("messages/count_tokens", views.count_message_tokens, name="messages-count-tokens"),
    path("messages/<path:rest>", views.unknown_messages_path, name="messages-unknown"),
    path("models", views.list_models, name="models"),
    path("models/<path:model>", views.retrieve_model, name="model"),
    path("responses", responses.create_response, name="responses"),
    path("responses/<str:response_id>", responses.response_detail, name="response"),
    path("responses/<str:response_id>/input_items", responses.response_input_items, name="response-input-items"),
]

urlpatterns = [
    path("v1/", include((endpoints, "completions"), namespace="v1")),
    path("", include((endpoints, "completions"), namespace="bare")),
]
