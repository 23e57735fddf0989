from django.apps import AppConfig


class CompletionsConfig(AppConfig):
    name = "completions"
    verbose_name = "LLM gateway"

    def ready(self) -> None:
        from . import signals  # noqa: F401  (connects the cache invalidation receivers)
