"""The OpenAI-compatible endpoints, with and without the `/v1` prefix (older guides omit it)."""

from django.urls import include, path

from . import views
from .responses import views as responses

endpoints = [
    path("chat/completions", views.chat_completions, name="chat-completions"),
    path("embeddings", views.create_embeddings, name="embeddings"),
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
