"""Placing an order: the order row and the job that charges it commit together, or neither."""

from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from kongflow.integrations.django import jobs
from orders.models import Order


class CardDeclined(Exception):
    pass


@csrf_exempt
@require_POST
def place_order(request: HttpRequest) -> JsonResponse:
    try:
        with transaction.atomic():
            order = Order.objects.create(total=int(request.POST["total"]))
            job = jobs().add_job("orders.charge", {"order": order.id})
            if request.POST.get("card") == "declined":
                raise CardDeclined
    except CardDeclined:
        return JsonResponse({"error": "card declined"}, status=402)
    return JsonResponse({"order": order.id, "job": job.id}, status=201)
