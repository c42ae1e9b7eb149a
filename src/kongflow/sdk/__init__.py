"""The endpoint SDK: define jobs in Python and serve them to kongflow's jobs service over
trigger.dev v2's endpoint protocol.

    endpoint = Endpoint(id="my-app", api_key=os.environ["KONGFLOW_API_KEY"])

    @endpoint.job(id="hello", name="Hello", version="1.0.0",
                  trigger=event_trigger("example.hello", schema=Hello))
    async def hello(payload: Hello, io: IO, ctx: Context) -> dict[str, str]:
        return {"greeting": f"Hello, {payload.name}!"}

    # serve endpoint.app with any ASGI server, e.g. `uvicorn module:endpoint.app`
"""

from kongflow.sdk.context import IO, Context
from kongflow.sdk.endpoint import Endpoint, EventTrigger, Job, JobRun, event_trigger

__all__ = ["IO", "Context", "Endpoint", "EventTrigger", "Job", "JobRun", "event_trigger"]
