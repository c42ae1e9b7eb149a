"""kongflow's optional parts: what each extra installs, and the error that says how to get it.

The core (enqueue, workers, the CLI's queue commands) needs only the database driver; the embedded
server, the jobs service and the framework integrations come with extras, so an application that
only enqueues does not carry a web stack and a PostgreSQL build."""

from __future__ import annotations

import importlib.util

# The modules each extra provides, as its code imports them.
EXTRAS: dict[str, tuple[str, ...]] = {
    "embedded": ("pgserver",),
    "service": ("fastapi", "uvicorn", "httpx", "jinja2", "itsdangerous"),
    "django": ("django",),
    "sqlalchemy": ("sqlalchemy",),
}


class MissingExtra(ImportError):
    """A part of kongflow was used whose extra is not installed."""

    def __init__(self, extra: str, feature: str, missing: list[str]) -> None:
        self.extra = extra
        super().__init__(
            f"{feature} needs kongflow's {extra!r} extra ({', '.join(missing)} not installed):"
            f" pip install 'kongflow[{extra}]'"
        )


def require(extra: str, feature: str) -> None:
    """Raise MissingExtra, naming `feature`, unless everything `extra` installs is importable."""
    missing = [name for name in EXTRAS[extra] if importlib.util.find_spec(name) is None]
    if missing:
        raise MissingExtra(extra, feature, missing)
