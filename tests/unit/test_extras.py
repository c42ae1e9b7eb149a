"""The optional parts: each extra's modules are what the code imports, and a missing one says
how to install it."""

from __future__ import annotations

import pytest

from kongflow import extras
from kongflow.extras import MissingExtra, require


def test_an_installed_extra_passes() -> None:
    require("service", "the jobs service")
    require("embedded", "the embedded PostgreSQL")


def test_a_missing_extra_names_the_feature_and_the_install_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(extras.EXTRAS, "service", ("fastapi", "no_such_module_here"))
    with pytest.raises(MissingExtra) as caught:
        require("service", "kongflow serve")
    assert str(caught.value) == (
        "kongflow serve needs kongflow's 'service' extra (no_such_module_here not installed):"
        " pip install 'kongflow[service]'"
    )
    assert isinstance(caught.value, ImportError) and caught.value.extra == "service"


def test_every_extra_is_declared_by_the_package() -> None:
    from importlib.metadata import metadata

    declared = set(metadata("kongflow").get_all("Provides-Extra") or [])
    assert set(extras.EXTRAS) <= declared
