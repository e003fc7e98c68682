# Test stand-in for the official redis image (tests/compose/run.sh tags it with the tag
# docker-compose.yml uses): Debian's redis-server and redis-cli. The compose file gives the
# whole command line, starting with redis-server.
FROM debian:bookworm-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /data
WORKDIR /data
EXPOSE 6379
CMD ["redis-server"]
