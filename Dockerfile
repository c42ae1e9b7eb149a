# kongflow's image: the `kongflow` command with the jobs service (`pip install .[service]`),
# run as a non-root user. It needs DATABASE_URL (PostgreSQL; 15 and 16 are tested): the embedded
# server is not in the image.
#
#   docker build -t kongflow .
#   docker run -e DATABASE_URL=postgresql://... -p 8030:8030 kongflow            # API + worker
#   docker run -e DATABASE_URL=... kongflow serve --no-worker --host 0.0.0.0    # API only
#   docker run -e DATABASE_URL=... kongflow serve --no-api                      # worker only
#   docker run -e DATABASE_URL=... kongflow migrate
#
# The HEALTHCHECK asks the API's /health (200 when it reaches its database): containers that
# serve no API (`serve --no-api`, `worker`, `migrate`) should turn it off (compose.yaml does).

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/kongflow
WORKDIR /src
# What the build reads: the project's metadata (its readme included) and the package.
COPY pyproject.toml README.md LICENSE ./
COPY src/ src/
RUN /opt/kongflow/bin/pip install ".[service]"

FROM python:3.11-slim
ENV PATH=/opt/kongflow/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY --from=build /opt/kongflow /opt/kongflow
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/kongflow kongflow \
    && mkdir /app && chown kongflow:kongflow /app
USER kongflow
# `kongflow worker --tasks app.jobs` imports from the working directory: put your code here.
WORKDIR /app
EXPOSE 8030
# (python -c: the slim image has no curl; a 503 or no answer raises, which exits 1.)
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 CMD ["python", "-c", \
    "import os, urllib.request; port = os.environ.get('KONGFLOW_SERVE_PORT', '8030'); \
urllib.request.urlopen(f'http://127.0.0.1:{port}/health', timeout=4)"]
ENTRYPOINT ["kongflow"]
# The jobs service, API and worker in one process, reachable from outside the container.
CMD ["serve", "--host", "0.0.0.0"]
