"""Workflows: jobs that run when the jobs they depend on have completed, enqueued together in one
transaction (fan-out, fan-in, chains).

    flow = Workflow("order-42")
    fetch = flow.step("fetch", "orders.fetch", {"order": 42})
    resize = flow.step("resize", "images.resize", after=[fetch])
    notify = flow.step("notify", "orders.notify", after=[fetch, resize], run_if_failed=True)
    run = await client.add_workflow(flow)           # run.jobs["notify"] is its Job
    await client.wait_for(run.jobs["notify"])
    steps = await client.workflow_jobs(run.id)       # {"fetch": Job, ...}, each with its state

A step becomes runnable when every step (and job) it comes after completed. When one fails for
good or is cancelled, the steps after it are cancelled, and those after them, unless a step says
`run_if_failed`. A step's handler reads what its dependencies returned with
`client.dependency_results(job)`. The engine keeps this in SQL (`add_workflow`, and the settle
of each job), so it holds whatever worker dies when; cycles are refused at enqueue.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from kongflow.engine.errors import InvalidJobError
from kongflow.engine.models import Job, JobSpec


@dataclass(frozen=True)
class Step:
    """One job of a workflow, named, with what it comes after (step names or job ids)."""

    name: str
    spec: JobSpec
    after: tuple[str, ...] = ()
    after_jobs: tuple[int, ...] = ()
    run_if_failed: bool = False


@dataclass
class Workflow:
    """Steps to enqueue together (`client.add_workflow`)."""

    name: str | None = None
    steps: list[Step] = field(default_factory=list)

    def step(
        self,
        name: str,
        identifier: str,
        payload: Any = None,
        *,
        after: Sequence[str | int | Job] = (),
        run_if_failed: bool = False,
        queue_name: str | None = None,
        max_attempts: int | None = None,
        priority: int | None = None,
        flags: Sequence[str] | None = None,
    ) -> str:
        """Add a step; returns its name, to use in other steps' `after`. `after` holds step
        names, or jobs (or their ids) enqueued before."""
        if not isinstance(name, str) or not name:
            raise InvalidJobError("step", f"a step needs a name, got {name!r}")
        if any(step.name == name for step in self.steps):
            raise InvalidJobError("step", f"the workflow has a step {name!r} already")
        names = tuple(a for a in after if isinstance(a, str))
        jobs = tuple(a.id if isinstance(a, Job) else a for a in after if not isinstance(a, str))
        if not all(isinstance(j, int) and not isinstance(j, bool) for j in jobs):
            raise InvalidJobError(f"{name}.after", "takes step names, jobs or job ids")
        spec = JobSpec(identifier, payload, queue_name, None, max_attempts, None, priority, flags)
        self.steps.append(Step(name, spec, names, jobs, run_if_failed))
        return name

    def document(self) -> dict[str, Any]:
        """The JSON `add_workflow` takes, steps in dependency order; each step's job is checked
        as `add_job` checks it, and an unknown step or a cycle is refused, naming the steps."""
        if not self.steps:
            raise InvalidJobError("workflow", "a workflow needs at least one step")
        return {
            "name": self.name,
            "steps": [
                {
                    "step": step.name,
                    "spec": step.spec.validated(f"{step.name}.", encode=False),
                    "after": list(step.after),
                    "after_jobs": list(step.after_jobs),
                    "run_if_failed": step.run_if_failed,
                }
                for step in _in_dependency_order(self.steps)
            ],
        }


def _in_dependency_order(steps: Sequence[Step]) -> list[Step]:
    """Kahn's order: every step after those it comes after (in the order given otherwise)."""
    by_name = {step.name: step for step in steps}
    for step in steps:
        unknown = [name for name in step.after if name not in by_name]
        if unknown:
            raise InvalidJobError(f"{step.name}.after", f"no step named {unknown[0]!r}")
    waiting = {step.name: len(set(step.after)) for step in steps}
    dependents: dict[str, list[str]] = {}
    for step in steps:
        for name in set(step.after):
            dependents.setdefault(name, []).append(step.name)
    ready = deque(step.name for step in steps if waiting[step.name] == 0)
    ordered: list[Step] = []
    while ready:
        name = ready.popleft()
        ordered.append(by_name[name])
        for dependent in dependents.get(name, ()):
            waiting[dependent] -= 1
            if waiting[dependent] == 0:
                ready.append(dependent)
    if len(ordered) < len(steps):
        cycle = sorted(name for name, count in waiting.items() if count > 0)
        raise InvalidJobError(
            "workflow", f"the steps {', '.join(cycle)} depend on each other in a cycle"
        )
    return ordered


@dataclass(frozen=True)
class WorkflowRun:
    """An enqueued workflow: its id, and each step's job as enqueued."""

    id: int
    jobs: dict[str, Job]
