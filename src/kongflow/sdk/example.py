"""The example endpoint that `kongflow dev` serves and the demo runs: three small typed jobs,
one of which waits (durably: its run is resumed by the jobs service) between two tasks."""

from __future__ import annotations

from pydantic import BaseModel

from kongflow.sdk.api import ServerTask
from kongflow.sdk.context import IO, Context
from kongflow.sdk.endpoint import Endpoint
from kongflow.sdk.triggers import event_trigger


class HelloPayload(BaseModel):
    name: str = "world"


class Greeting(BaseModel):
    greeting: str


class TextPayload(BaseModel):
    text: str


class WordCount(BaseModel):
    words: int
    characters: int


class WaitPayload(BaseModel):
    name: str = "world"
    seconds: float = 2


def example_endpoint(
    api_key: str, id: str = "kongflow-example", api_url: str | None = None
) -> Endpoint:
    """A fresh endpoint with `hello-world` (event `example.hello`), `count-words` (event
    `example.text`) and `wait-and-greet` (event `example.wait`, which needs the API at
    `api_url`, by default KONGFLOW_API_URL)."""
    endpoint = Endpoint(id=id, api_key=api_key, api_url=api_url)

    @endpoint.job(
        id="hello-world",
        name="Hello world",
        version="1.0.0",
        trigger=event_trigger("example.hello", schema=HelloPayload),
    )
    async def hello_world(payload: HelloPayload, io: IO, ctx: Context) -> Greeting:
        io.logger.info("greeting %s", payload.name)
        return Greeting(greeting=f"Hello, {payload.name}!")

    @endpoint.job(
        id="count-words",
        name="Count words",
        version="1.0.0",
        trigger=event_trigger("example.text", schema=TextPayload),
    )
    async def count_words(payload: TextPayload, io: IO, ctx: Context) -> WordCount:
        return WordCount(words=len(payload.text.split()), characters=len(payload.text))

    @endpoint.job(
        id="wait-and-greet",
        name="Wait and greet",
        version="1.0.0",
        trigger=event_trigger("example.wait", schema=WaitPayload),
    )
    async def wait_and_greet(payload: WaitPayload, io: IO, ctx: Context) -> Greeting:
        async def compose(task: ServerTask) -> str:
            return f"Hello, {payload.name}!"

        greeting: str = await io.run_task("compose", compose, name="Compose the greeting")
        await io.wait("pause", payload.seconds)

        async def finish(task: ServerTask) -> dict[str, str]:
            return {"greeting": f"{greeting} (after {payload.seconds:g} s)"}

        return Greeting.model_validate(
            await io.run_task("finish", finish, name="Finish the greeting")
        )

    return endpoint
