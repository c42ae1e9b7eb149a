"""The example endpoint that `kongflow dev` serves and the demo runs: two small typed jobs."""

from __future__ import annotations

from pydantic import BaseModel

from kongflow.sdk.context import IO, Context
from kongflow.sdk.endpoint import Endpoint, event_trigger


class HelloPayload(BaseModel):
    name: str = "world"


class Greeting(BaseModel):
    greeting: str


class TextPayload(BaseModel):
    text: str


class WordCount(BaseModel):
    words: int
    characters: int


def example_endpoint(api_key: str, id: str = "kongflow-example") -> Endpoint:
    """A fresh endpoint with `hello-world` (event `example.hello`) and `count-words`
    (event `example.text`)."""
    endpoint = Endpoint(id=id, api_key=api_key)

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

    return endpoint
