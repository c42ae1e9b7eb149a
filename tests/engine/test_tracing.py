"""OpenTelemetry: the trace started at enqueue continues in the worker's span for the job."""

from __future__ import annotations

from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from kongflow import Client, RunningJob, Worker

exporter = InMemorySpanExporter()
_provider = TracerProvider()
_provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(_provider)


async def test_trace_context_travels_from_enqueue_to_execution(client: Client) -> None:
    exporter.clear()

    async def ok(payload: Any, job: RunningJob) -> None:
        return None

    async def bad(payload: Any, job: RunningJob) -> None:
        raise RuntimeError("kaput")

    tracer = trace.get_tracer("test")
    with tracer.start_as_current_span("request") as request:
        job = await client.add_job("ok", queue_name="traced")
        await client.add_job("bad", max_attempts=1)
    assert job.headers and "traceparent" in job.headers
    async with Worker(client.pool, {"ok": ok, "bad": bad}, schema=client.schema) as worker:
        await worker.drain()

    spans = {s.name: s for s in exporter.get_finished_spans()}
    trace_id = request.get_span_context().trace_id
    enqueue, run = spans["kongflow enqueue ok"], spans["kongflow run ok"]
    assert enqueue.context.trace_id == run.context.trace_id == trace_id
    assert run.parent is not None and run.parent.span_id == enqueue.context.span_id
    assert run.attributes is not None and run.attributes["kongflow.job_id"] == job.id
    assert enqueue.attributes is not None
    for span in (enqueue, run):
        assert (span.attributes["kongflow.task"], span.attributes["kongflow.queue"]) == (  # type: ignore[index]
            "ok",
            "traced",
        )
    failed = spans["kongflow run bad"]
    assert failed.status.status_code == StatusCode.ERROR
    assert any(e.name == "exception" for e in failed.events)
