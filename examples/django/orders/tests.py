"""The shop with kongflow: transactional enqueue, the worker, the admin (Django's test runner)."""

from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import TestCase, TransactionTestCase

from kongflow.integrations.django import jobs
from orders.models import Order


class PlacingAnOrder(TestCase):
    def test_the_order_and_its_job_commit_together(self) -> None:
        response = self.client.post("/orders/", {"total": 42})
        assert response.status_code == 201
        order = Order.objects.get()
        (job,) = jobs().list_jobs(task="orders.charge")
        assert (job.id, job.payload) == (response.json()["job"], {"order": order.id})

    def test_a_declined_card_rolls_back_the_order_and_its_job(self) -> None:
        response = self.client.post("/orders/", {"total": 42, "card": "declined"})
        assert response.status_code == 402
        assert not Order.objects.exists()
        assert jobs().list_jobs(task="orders.charge") == []

    def test_the_admin_shows_jobs_and_changes_none(self) -> None:
        job = jobs().add_job("orders.charge", {"order": 7}, queue_name="payments")
        admin = User.objects.create_superuser("admin", "admin@shop.test", "pw")
        self.client.force_login(admin)
        listing = self.client.get("/admin/kongflow/job/?state=available")
        self.assertContains(listing, "orders.charge")
        self.assertContains(listing, "payments")
        detail = self.client.get(f"/admin/kongflow/job/{job.id}/change/")
        self.assertContains(detail, "orders.charge")
        self.assertNotContains(detail, 'name="_save"')  # read-only: no save button
        assert self.client.get("/admin/kongflow/job/add/").status_code == 403
        delete = self.client.post(f"/admin/kongflow/job/{job.id}/delete/", {"post": "yes"})
        assert delete.status_code == 403
        assert jobs().get_job(job.id) is not None


class TheWorker(TransactionTestCase):
    def test_manage_py_kongflow_worker_once_charges_the_order(self) -> None:
        order_id = self.client.post("/orders/", {"total": 42}).json()["order"]
        call_command("kongflow", "worker", "--once")
        assert Order.objects.get(id=order_id).charged
        (job,) = jobs().list_jobs(task="orders.charge")
        assert job.state == "completed"
