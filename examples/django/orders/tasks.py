"""The shop's background work, found by kongflow's app at start-up (each app's tasks.py)."""

from typing import Any

from kongflow.integrations.django import task
from orders.models import Order


@task("orders.charge", timeout=30)
def charge(payload: dict[str, Any], job: Any) -> None:
    Order.objects.filter(id=payload["order"]).update(charged=True)
