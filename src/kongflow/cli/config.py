"""Options from a file and the environment, under the command line: CLI > environment > file >
the option's default, for every option of every command.

The file is `kongflow.toml` in the working directory, else the `[tool.kongflow]` table of its
`pyproject.toml` (KONGFLOW_CONFIG names another file). Top-level `database_url` and `schema`
apply to every command; a table per command holds its options, by their names:

    [tool.kongflow]
    schema = "app_jobs"

    [tool.kongflow.worker]
    tasks = "app.jobs:tasks"
    concurrency = 20
    queue_limit = ["runs:*=1"]

Every option also reads KONGFLOW_<COMMAND>_<OPTION> (KONGFLOW_WORKER_CONCURRENCY=20), unless it
names its own variable (DATABASE_URL, KONGFLOW_SCHEMA). This is click's own precedence (command
line, then `auto_envvar_prefix`, then `default_map`), so a value from the file or the
environment is checked exactly as the same flag would be; the file is checked when it is read,
naming the file and the key.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ENV_PREFIX = "KONGFLOW"
COMMON = ("database_url", "schema")
"""Top-level keys: options of (almost) every command, set once for all."""


class ConfigError(Exception):
    """A configuration file that cannot be used, with where and why."""


@dataclass(frozen=True)
class ConfigFile:
    """The file in use: its kongflow table, and that table's name in it (for errors)."""

    path: Path
    table: dict[str, Any]
    prefix: str


def find_config(cwd: Path) -> ConfigFile | None:
    """The configuration file in use, or None."""
    named = os.environ.get(f"{ENV_PREFIX}_CONFIG")
    if named:
        path = Path(named)
        if not path.is_file():
            raise ConfigError(f"{ENV_PREFIX}_CONFIG names {path}, which is not a file")
        candidates = [path]
    else:
        candidates = [cwd / "kongflow.toml", cwd / "pyproject.toml"]
    for path in candidates:
        if not path.is_file():
            continue
        document = _read(path)
        if path.name != "pyproject.toml" and "tool" not in document:
            return ConfigFile(path, document, "")
        table = document.get("tool", {}).get("kongflow")
        if table is not None or named:
            if not isinstance(table, dict):
                raise ConfigError(f"{path}: [tool.kongflow] must be a table")
            return ConfigFile(path, table, "tool.kongflow")
    return None


def _read(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as file:
            return tomllib.load(file)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc


@dataclass(frozen=True)
class _Place:
    """Where in the file a table is, for errors: `pyproject.toml: [tool.kongflow.worker]`."""

    path: Path
    prefix: str
    names: tuple[str, ...] = ()

    def inner(self, name: str) -> _Place:
        return _Place(self.path, self.prefix, (*self.names, name))

    def __str__(self) -> str:
        table = ".".join((*([self.prefix] if self.prefix else []), *self.names))
        return f"{self.path}: [{table}]" if table else f"{self.path}"


def default_map(group: Any, config: ConfigFile) -> dict[str, Any]:
    """click's `default_map` for `group` from the file's table: the common keys given to every
    command that has them, each command's table to it; unknown keys and invalid values are
    errors that name the file and the key."""
    table = _normalized(config.table)
    common = {key: table[key] for key in COMMON if key in table}
    return _for_group(group, table, common, _Place(config.path, config.prefix))


def _for_group(
    group: Any, table: dict[str, Any], common: dict[str, Any], place: _Place
) -> dict[str, Any]:
    top = not place.names
    unknown = sorted(
        key for key in table if key not in group.commands and not (top and key in COMMON)
    )
    if unknown:
        known = sorted(group.commands) + (list(COMMON) if top else [])
        raise ConfigError(
            f"{place} has no {', '.join(map(repr, unknown))} (it takes: {', '.join(known)})"
        )
    defaults: dict[str, Any] = {}
    for name, command in group.commands.items():
        section = table.get(name, {})
        inner = place.inner(name)
        if not isinstance(section, dict):
            raise ConfigError(f"{inner} must be a table, got {section!r}")
        if _is_group(command):
            defaults[name] = _for_group(command, _normalized(section), common, inner)
        else:
            defaults[name] = _for_command(command, _normalized(section), common, inner)
    return defaults


def _for_command(
    command: Any, section: dict[str, Any], common: dict[str, Any], place: _Place
) -> dict[str, Any]:
    params = _options(command)
    by_flag = {
        flag.lstrip("-").replace("-", "_"): name
        for name, param in params.items()
        for flag in param.opts
        if flag.startswith("--")
    }
    unknown = sorted(key for key in section if key not in params and key not in by_flag)
    if unknown:
        raise ConfigError(
            f"{place} has no option {', '.join(map(repr, unknown))}"
            f" (it takes: {', '.join(sorted(by_flag))})"
        )
    given = {key: value for key, value in common.items() if key in params}
    values = given | {by_flag.get(key, key): value for key, value in section.items()}
    context = _context_class(command)(command, info_name=command.name)
    for key, value in values.items():
        try:
            params[key].process_value(context, value)
        except Exception as exc:  # the option's own check: BadParameter, UsageError, ValueError
            reason = getattr(exc, "message", None) or str(exc)
            raise ConfigError(f"{place} {key}: {reason}") from exc
    return values


def _normalized(table: dict[str, Any]) -> dict[str, Any]:
    """Keys as option names: `poll-only` and `poll_only` alike."""
    return {key.replace("-", "_"): value for key, value in table.items()}


SECRET_WORDS = ("token", "secret", "password")


def resolved(root: Any, names: list[str]) -> list[tuple[str, Any, str]]:
    """The options of the command at `names` as it would run now with no flags: (option,
    value, where the value comes from)."""
    context, command = root, root.command
    for name in names:
        if not _is_group(command) or name not in command.commands:
            raise ConfigError(f"no command {' '.join(names)!r}")
        command = command.commands[name]
        context = type(root)(command, info_name=name, parent=context, resilient_parsing=True)
    if _is_group(command):
        raise ConfigError(f"{' '.join(names)!r} is a group: name one of its commands")
    command.parse_args(context, [])
    rows = []
    for name, param in _options(command).items():
        if param.hidden:
            continue
        source = context.get_parameter_source(name)
        where = _SOURCES.get(source.name if source is not None else "", "default")
        flags = [flag for flag in param.opts if flag.startswith("--")]
        rows.append((flags[0] if flags else name, context.params.get(name), where))
    return rows


_SOURCES = {
    "COMMANDLINE": "command line",
    "ENVIRONMENT": "environment",
    "DEFAULT_MAP": "file",
    "DEFAULT": "default",
}


# click's classes are reached through the objects (typer may carry its own copy of click).
def _is_group(command: Any) -> bool:
    return hasattr(command, "commands")


def _options(command: Any) -> dict[str, Any]:
    return {p.name: p for p in command.params if p.param_type_name == "option" and p.name}


def _context_class(command: Any) -> Any:
    return command.context_class
