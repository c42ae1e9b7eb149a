"""kongflow's web dashboard: queues, jobs, workers and cron; and, over the jobs service,
environments, endpoints, runs and Test a job. Mount `create_dashboard(...)` (the API does, at
/dashboard) or serve it alone (`kongflow dashboard`)."""

from kongflow.dashboard.app import create_dashboard
from kongflow.dashboard.security import DashboardOptions

__all__ = ["DashboardOptions", "create_dashboard"]
