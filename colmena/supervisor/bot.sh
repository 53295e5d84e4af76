#!/bin/sh
# Sample colmena bot (busybox sh / POSIX sh).
#
# Contract with the supervisor (colmena/supervisor/health.py parses the heartbeat):
#   BOT_TENANT, BOT_CONFIG (JSON), BOT_CONFIG_VERSION   who it is and what to do
#   BOT_HEARTBEAT_SECONDS (default 10)                  "colmena-heartbeat <unix seconds>" lines
#   BOT_CRASH_AFTER (seconds), BOT_CRASH_CODE (def. 3)  exit non-zero after that long (tests)
# Provider keys arrive as further environment variables; this script never prints them.

interval="${BOT_HEARTBEAT_SECONDS:-10}"
crash_after="${BOT_CRASH_AFTER:-}"
crash_code="${BOT_CRASH_CODE:-3}"
sleeper=""

stop() {
    echo "colmena-bot stopping on $1"
    [ -n "$sleeper" ] && kill "$sleeper" 2>/dev/null
    exit 0
}
trap 'stop TERM' TERM
trap 'stop INT' INT

echo "colmena-bot starting tenant=${BOT_TENANT:-unknown} config_version=${BOT_CONFIG_VERSION:-0}"
echo "colmena-bot config ${BOT_CONFIG:-{\}}"

started=$(date +%s)
while :; do
    now=$(date +%s)
    echo "colmena-heartbeat $now"
    if [ -n "$crash_after" ] && [ $((now - started)) -ge "$crash_after" ]; then
        echo "colmena-bot crashing with code $crash_code as told" >&2
        exit "$crash_code"
    fi
    nap="$interval"
    if [ -n "$crash_after" ]; then
        left=$((started + crash_after - now))
        [ "$left" -lt "$nap" ] && nap="$left"
        [ "$nap" -lt 1 ] && nap=1
    fi
    # Sleep in the background and wait: a trapped signal interrupts `wait` at once,
    # whereas a foreground sleep would delay the trap until it ends.
    sleep "$nap" &
    sleeper=$!
    wait "$sleeper"
    sleeper=""
done
