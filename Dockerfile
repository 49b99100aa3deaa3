# syntax=docker/dockerfile:1
# Build stage: install notifier and its dependencies into a virtualenv.
FROM python:3.11-slim AS build
WORKDIR /src
RUN python -m venv /opt/venv
COPY pyproject.toml README.md ./
COPY src ./src
RUN /opt/venv/bin/pip install --no-cache-dir .

# Run stage: the virtualenv only, as a non-root user, data on a volume.
FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin notifier \
    && mkdir /data && chown notifier:notifier /data
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    NOTIFIER_SERVER_HOST=0.0.0.0 \
    NOTIFIER_SERVER_PORT=8000 \
    NOTIFIER_DATABASE_PATH=/data/notifier.db \
    NOTIFIER_EMULATOR_INBOX_PATH=/data/notifier-inbox.db \
    NOTIFIER_DISPATCHER_SHUTDOWN_GRACE_S=7
WORKDIR /data
USER 10001:10001
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health/live' % os.environ['NOTIFIER_SERVER_PORT'], timeout=2)"]
# Exec form: SIGTERM from `docker stop` reaches notifier, which drains on shutdown;
# the 7 s grace above ends well inside docker stop's default 10 s.
ENTRYPOINT ["notifier"]
CMD ["serve"]
