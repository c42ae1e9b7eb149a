"""Where kongflow finds its database and schema: one place that reads the environment."""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import urlsplit

import platformdirs

DEFAULT_SCHEMA = "kongflow"
# 48 leaves room for NOTIFY channel names ("<schema>:cancel") within PostgreSQL's 63 bytes.
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,47}$")


def validate_schema(name: str) -> str:
    """Schema names are spliced into DDL, so only plain lower-case identifiers are accepted."""
    if not _SCHEMA_NAME.match(name):
        raise ValueError(
            "schema must be a lower-case SQL identifier of at most 48 letters, digits or _,"
            f" got {name!r}"
        )
    return name


def mask_url(url: str) -> str:
    """A database URL fit to print: its password (in the URL, a `password=` parameter or a
    libpq keyword string) replaced by `***`."""
    if "://" not in url:  # a libpq keyword string: host=... password=...
        return re.sub(r"(?i)\bpassword\s*=\s*('(?:[^'\\]|\\.)*'|\S+)", "password=***", url)
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable database URL>"
    netloc = parts.netloc
    userinfo, at, host = netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc = f"{userinfo.partition(':')[0]}:***@{host}"
    query = re.sub(r"(?i)(^|&)(password=)[^&]*", r"\1\2***", parts.query)
    query = f"?{query}" if query else ""
    fragment = f"#{parts.fragment}" if parts.fragment else ""
    return f"{parts.scheme}://{netloc}{parts.path}{query}{fragment}"


def data_dir() -> Path:
    """The per-user directory holding the embedded PostgreSQL data (KONGFLOW_HOME overrides)."""
    override = os.environ.get("KONGFLOW_HOME")
    base = Path(override) if override else Path(platformdirs.user_data_dir("kongflow"))
    return base.expanduser()


def env_schema() -> str:
    """KONGFLOW_SCHEMA, else "kongflow": the schema of a client, worker or service not given one
    (as DATABASE_URL is their database)."""
    return validate_schema(os.environ.get("KONGFLOW_SCHEMA") or DEFAULT_SCHEMA)
