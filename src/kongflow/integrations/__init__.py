"""kongflow inside other frameworks: each module integrates one (`fastapi`, `sqlalchemy`,
`django`)."""
