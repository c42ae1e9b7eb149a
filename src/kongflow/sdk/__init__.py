"""The endpoint SDK: define jobs in Python and serve them to kongflow's jobs service over
trigger.dev v2's endpoint protocol, with trigger.dev's durable io (the same wire format as its
Node SDK 2.3, so a Python job and a Node job behave alike).

    endpoint = Endpoint(id="my-app", api_key=os.environ["KONGFLOW_API_KEY"])

    @endpoint.job(id="hello", name="Hello", version="1.0.0",
                  trigger=event_trigger("example.hello", schema=Hello))
    async def hello(payload: Hello, io: IO, ctx: Context) -> dict[str, str]:
        async def fetch(task: ServerTask) -> str:
            return await lookup(payload.name)  # runs once, whatever the executions

        name = await io.run_task("fetch", fetch, retry=RetryOptions(limit=3))
        await io.wait("pause", 60)  # the run is resumed in a minute
        return {"greeting": f"Hello, {name}!"}

    # serve endpoint.app with any ASGI server, e.g. `uvicorn module:endpoint.app`

io calls reach kongflow's API at `Endpoint(api_url=...)`, by default KONGFLOW_API_URL (else
TRIGGER_API_URL).
"""

from kongflow.extras import require

require("service", "the Python SDK for endpoints (kongflow.sdk)")

from kongflow.sdk.api import ApiError, MissingApiUrl, ServerTask  # noqa: E402
from kongflow.sdk.context import IO, Context  # noqa: E402
from kongflow.sdk.endpoint import Endpoint, Job, JobRun, RunHook  # noqa: E402
from kongflow.sdk.flow import ControlFlow  # noqa: E402
from kongflow.sdk.io import IOLogger, Status, TaskError  # noqa: E402
from kongflow.sdk.retry import DEFAULT_RETRY_OPTIONS, RetryOptions  # noqa: E402
from kongflow.sdk.store import KeyValueStore, RunKeyValueStore  # noqa: E402
from kongflow.sdk.triggers import (  # noqa: E402
    EventTrigger,
    InvokeTrigger,
    Scheduled,
    ScheduledTrigger,
    cron_trigger,
    event_trigger,
    interval_trigger,
    invoke_trigger,
)

__all__ = [
    "DEFAULT_RETRY_OPTIONS",
    "IO",
    "ApiError",
    "Context",
    "ControlFlow",
    "Endpoint",
    "EventTrigger",
    "IOLogger",
    "InvokeTrigger",
    "Job",
    "JobRun",
    "KeyValueStore",
    "MissingApiUrl",
    "RetryOptions",
    "RunHook",
    "RunKeyValueStore",
    "Scheduled",
    "ScheduledTrigger",
    "ServerTask",
    "Status",
    "TaskError",
    "cron_trigger",
    "event_trigger",
    "interval_trigger",
    "invoke_trigger",
]
