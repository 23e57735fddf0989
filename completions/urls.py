"""The OpenAI-compatible endpoints, with and without the `/v1` prefix (older guides omit it)."""

from django.urls import include, path

from . import views

endpoints = [
    path("chat/completions", views.chat_completions, name="chat-completions"),
    path("embeddings", views.create_embeddings, name="embeddings"),
    path("models", views.list_models, name="models"),
    path("models/<path:model>", views.retrieve_model, name="model"),
]

urlpatterns = [
    path("v1/", include((endpoints, "completions"), namespace="v1")),
    path("", include((endpoints, "completions"), namespace="bare")),
]
