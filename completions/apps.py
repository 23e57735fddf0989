from django.apps import AppConfig


class CompletionsConfig(AppConfig):
    name = "completions"
    verbose_name = "LLM gateway"

    def ready(self) -> None:
        from . import signals  # noqa: F401  (connects the cache invalidation receivers)
        from .keys import record_key_use
        from .recorder import writer
        from .usage import rollup

        for hook in (rollup, record_key_use):
            if hook not in writer.hooks:
                writer.hooks.append(hook)
