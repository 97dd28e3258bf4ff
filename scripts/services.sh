#!/usr/bin/env bash
# Makes sure the local RabbitMQ and Redis answer: starts them when installed but stopped,
# says clearly what is missing otherwise. Exits non-zero when one cannot be had.
set -uo pipefail

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() {
  local port=$1 name=$2
  for _ in $(seq 1 120); do
    listening "$port" && return 0
    sleep 0.5
  done
  echo "services: $name did not start listening on 127.0.0.1:$port" >&2
  return 1
}

status=0
if listening 6379; then
  :
elif command -v redis-server >/dev/null 2>&1; then
  echo "services: starting Redis" >&2
  mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log >&2
  wait_for 6379 Redis || status=1
else
  echo "services: Redis is not installed and nothing listens on 127.0.0.1:6379" \
    "(install it: apt-get install redis-server)" >&2
  status=1
fi

if listening 5672; then
  :
elif command -v rabbitmq-server >/dev/null 2>&1; then
  echo "services: starting RabbitMQ" >&2
  rabbitmq-server -detached >&2
  wait_for 5672 RabbitMQ || status=1
  rabbitmqctl await_startup >/dev/null 2>&1 || true
else
  echo "services: RabbitMQ is not installed and nothing listens on 127.0.0.1:5672" \
    "(install it: apt-get install rabbitmq-server)" >&2
  status=1
fi

if ! command -v rabbitmqctl >/dev/null 2>&1; then
  echo "services: rabbitmqctl is missing; the tests need it to create their own vhosts" >&2
  status=1
fi
exit $status
