"""trigger.dev's real v2 Node SDK for the protocol tests: installed with npm, once, into a cache
directory keyed by tests/node/package.json (nothing in the repository: no node_modules, no lock
file), next to the endpoint and client scripts it runs."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import platformdirs

SOURCE = Path(__file__).resolve().parent.parent / "node"
FILES = ("package.json", "endpoint.mjs", "client.mjs")
EXAMPLE = SOURCE.parents[1] / "examples" / "trigger-node" / "server.mjs"
"""The example endpoint, run beside the SDK as `example-server.mjs` (same dependencies)."""


def install() -> Path:
    """The directory holding the SDK and the scripts, installing the SDK if needed. Raises
    RuntimeError saying what is missing when node or npm cannot do it."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        raise RuntimeError("the Node SDK tests need node and npm on PATH (Node 20)")
    manifest = (SOURCE / "package.json").read_bytes()
    root = Path(
        os.environ.get("KONGFLOW_NODE_CACHE") or platformdirs.user_cache_dir("kongflow")
    ) / ("node-" + hashlib.sha256(manifest).hexdigest()[:12])
    root.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        shutil.copyfile(SOURCE / name, root / name)
    shutil.copyfile(EXAMPLE, root / "example-server.mjs")
    if not (root / "node_modules" / "@trigger.dev" / "sdk" / "package.json").exists():
        done = subprocess.run(
            ["npm", "install", "--no-package-lock", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"npm install of the Node SDK failed:\n{done.stderr[-2000:]}")
    return root


@dataclass
class NodeSdk:
    root: Path
    api_url: str
    api_key: str
    endpoint_id: str

    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        return (
            os.environ
            | {
                "TRIGGER_API_URL": self.api_url,
                "TRIGGER_API_KEY": self.api_key,
                "ENDPOINT_ID": self.endpoint_id,
            }
            | self.extra_env
        )

    endpoint_url: str = ""

    async def calls(self) -> dict[str, dict[str, int]]:
        """What the endpoint's jobs recorded, by run: how often each step ran, which hooks."""
        async with httpx.AsyncClient() as client:
            response = await client.get(f"{self.endpoint_url}/calls")
        calls: dict[str, dict[str, int]] = response.json()
        return calls

    @asynccontextmanager
    async def endpoint(self) -> AsyncIterator[str]:
        """The Node endpoint, running; yields its URL."""
        process = await asyncio.create_subprocess_exec(
            "node",
            "endpoint.mjs",
            cwd=self.root,
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
        )
        try:
            assert process.stdout is not None
            line = await asyncio.wait_for(process.stdout.readline(), 30)
            port = json.loads(line)["port"]
            self.endpoint_url = f"http://127.0.0.1:{port}"
            yield self.endpoint_url
        finally:
            if process.returncode is None:
                process.terminate()
            await process.wait()

    async def call(self, action: str, *args: str) -> Any:
        """One client call (`sendEvent`, `invokeJob`) by the SDK; its result."""
        process = await asyncio.create_subprocess_exec(
            "node",
            "client.mjs",
            action,
            *args,
            cwd=self.root,
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), 60)
        if process.returncode != 0:
            raise AssertionError(f"the Node SDK's {action} failed: {err.decode()[-2000:]}")
        return json.loads(out)
