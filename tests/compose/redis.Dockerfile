# Test stand-in for the official redis image (tests/compose/run.sh tags it with the tag
# docker-compose.yml uses): Debian's redis-server and redis-cli, and a docker-entrypoint.sh
# that does what the official one does with "redis-server ...": run it as the redis user.
FROM debian:bookworm-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /data && chown redis:redis /data \
 && printf '%s\n' '#!/bin/sh' 'set -e' \
      'if [ "$1" = redis-server ] && [ "$(id -u)" = 0 ]; then' \
      '  chown -R redis:redis /data 2>/dev/null || true' \
      '  exec setpriv --reuid=redis --regid=redis --init-groups "$@"' \
      'fi' 'exec "$@"' >/usr/local/bin/docker-entrypoint.sh \
 && chmod 755 /usr/local/bin/docker-entrypoint.sh
WORKDIR /data
EXPOSE 6379
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["redis-server"]
