"""The jobs service (trigger.dev v2): environments and API keys, jobs, runs, and their flow."""

from kongflow.service.environments import Environment, EnvironmentService, generate_api_key

__all__ = ["Environment", "EnvironmentService", "generate_api_key"]
