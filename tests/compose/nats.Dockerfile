# Test stand-in for the official nats image (tests/compose/run.sh tags it with the tag
# docker-compose.yml uses; no registry is reachable here): Debian's nats-server, and wget for
# the compose healthcheck, as in the official alpine variant. The compose file gives the
# whole command line, starting with nats-server.
FROM debian:bookworm-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nats-server wget \
 && rm -rf /var/lib/apt/lists/*
EXPOSE 4222 8222
CMD ["nats-server"]
