# Pulse: one small image for every role. The command picks the role:
#
#   docker build -t campaign-pulse .
#   docker run --rm campaign-pulse --help
#   docker run --rm -e PULSE_KAFKA_BOOTSTRAP=kafka:9092 campaign-pulse topics
#   ... campaign-pulse worker | api | simulate | sql "SELECT ..." | compact | schema
#
# docker-compose.kafka.yml runs it next to Apache Kafka. Configuration is by the
# PULSE_* variables (pulse/settings.py); the relative defaults ./lake and ./state land
# in /data, the working directory, which compose mounts volumes under.
#
# The dashboard is already built into api/static/ and ships as package data, so no
# Node toolchain is needed here. Every dependency has a manylinux wheel for CPython
# 3.11, so no compiler is needed either.

FROM python:3.11-slim

LABEL org.opencontainers.image.title="campaign-pulse" \
      org.opencontainers.image.description="Pulse: streaming analytics for conversational campaigns (Kafka in, exact rollups, a Parquet lake and a dashboard out)" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

# A fixed uid/gid, so that volumes and bind mounts can be given to it predictably.
RUN groupadd --system --gid 10001 pulse \
 && useradd --system --uid 10001 --gid pulse --create-home --home-dir /home/pulse \
            --shell /usr/sbin/nologin pulse

# Only what the package is built from (pyproject.toml maps these folders to
# pulse, pulse.schemas, pulse.rollups, pulse.streams and pulse.api); tests,
# benchmarks and the dashboard sources stay out of the image.
WORKDIR /src
COPY pyproject.toml README.md ./
COPY pulse/ pulse/
COPY schemas/ schemas/
COPY rollups/ rollups/
COPY streams/ streams/
COPY api/ api/
COPY benchmarks/ benchmarks/
RUN pip install --no-cache-dir . \
 && rm -rf build *.egg-info \
 && pulse --version \
 && python -c "from importlib.resources import files; \
assert files('pulse.api').joinpath('static/index.html').is_file(), 'dashboard assets missing'"

# /data/lake and /data/state exist and belong to pulse, so that a named or anonymous
# volume mounted there starts out writable by it (Docker copies the ownership of the
# image's directory into an empty volume).
RUN mkdir -p /data/lake /data/state && chown -R pulse:pulse /data
WORKDIR /data
USER pulse

# `pulse api` listens here when PULSE_API_HOST=0.0.0.0 (it binds 127.0.0.1 by default).
EXPOSE 8000

ENTRYPOINT ["pulse"]
CMD ["--help"]
