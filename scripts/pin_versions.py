"""Pin every dependency's exact version in pyproject.toml ([tool.uv] constraint-dependencies), so
that a fresh clone installs what was tested, without committing a lock file (uv.lock records
download addresses).

    python3 scripts/pin_versions.py            # re-pin what the current resolution has
    python3 scripts/pin_versions.py --upgrade  # the newest versions the ranges allow

then run the test suite and commit pyproject.toml.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
BEGIN = "# Exact versions, written by scripts/pin_versions.py: do not edit by hand."
BLOCK = re.compile(
    rf"\n{re.escape(BEGIN)}\n\[tool\.uv\]\nconstraint-dependencies = \[\n.*?\n\]\n", re.S
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upgrade", action="store_true", help="resolve the newest versions")
    upgrade = parser.parse_args().upgrade
    text = PYPROJECT.read_text()
    unpinned = BLOCK.sub("\n", text)
    PYPROJECT.write_text(unpinned)  # resolve free of the old pins
    try:
        subprocess.run(["uv", "lock", *(["--upgrade"] if upgrade else [])], check=True)
        exported = subprocess.run(
            [
                *("uv", "export", "--frozen", "--no-hashes", "--all-extras", "--all-groups"),
                *("--no-emit-project", "--no-header", "--no-annotate"),
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    except BaseException:
        PYPROJECT.write_text(text)
        raise
    pins = [line.strip() for line in exported.splitlines() if line.strip()]
    if any("://" in pin or " @ " in pin for pin in pins):
        PYPROJECT.write_text(text)
        sys.exit("a pin names a download address; pins must be name==version only")
    entries = "\n".join(f'    "{pin}",' for pin in pins)
    block = f"\n{BEGIN}\n[tool.uv]\nconstraint-dependencies = [\n{entries}\n]\n"
    PYPROJECT.write_text(unpinned.rstrip("\n") + "\n" + block)
    subprocess.run(["uv", "lock"], check=True)
    print(f"pinned {len(pins)} packages in {PYPROJECT.name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
