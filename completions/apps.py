from django.apps import AppConfig


class CompletionsConfig(AppConfig):
    name = "completions"
    verbose_name = "LLM gateway"

    def ready(self) -> None:
        from . import signals  # noqa: F401  (connects the cache invalidation receivers)
        from .keys import record_key_use
        from .recorder import writer

        if record_key_use not in writer.hooks:
            writer.hooks.append(record_key_use)
