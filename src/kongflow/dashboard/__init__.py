"""kongflow's web dashboard: queues, jobs, workers and cron; and, over the jobs service,
environments, endpoints, runs and Test a job. Mount `create_dashboard(...)` (the API does, at
/dashboard) or serve it alone (`kongflow dashboard`)."""

from kongflow.extras import require

require("service", "the dashboard (kongflow.dashboard)")

from kongflow.dashboard.app import create_dashboard  # noqa: E402
from kongflow.dashboard.security import DashboardOptions  # noqa: E402

__all__ = ["DashboardOptions", "create_dashboard"]
