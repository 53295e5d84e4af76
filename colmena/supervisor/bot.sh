#!/bin/sh
# Sample colmena bot (busybox sh / POSIX sh).
#
# Contract with the supervisor (colmena/supervisor/health.py parses the heartbeat):
#   BOT_TENANT, BOT_CONFIG (JSON), BOT_CONFIG_VERSION   who it is and what to do
#   BOT_HEARTBEAT_SECONDS (default 10)                  "colmena-heartbeat <unix seconds>" lines
#   BOT_CRASH_AFTER (seconds), BOT_CRASH_CODE (def. 3)  exit non-zero after that long (tests)
#   BOT_KEYS_FILE                                       path of the provider keys, JSON
#                                                       {"<provider>": "<key>"}; it may appear
#                                                       just after start: wait until readable.
#                                                       It is replaced (renamed over, never
#                                                       half-written) when the tenant changes a
#                                                       key: re-read it (here: every heartbeat)
#   BOT_KEYS_WAIT_SECONDS (default 30)                  give up (exit 4) when it has not appeared
# Keys never travel in the environment; this script never prints them.

interval="${BOT_HEARTBEAT_SECONDS:-10}"
crash_after="${BOT_CRASH_AFTER:-}"
crash_code="${BOT_CRASH_CODE:-3}"
keys_wait="${BOT_KEYS_WAIT_SECONDS:-30}"
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

# The file becomes readable once it is complete; a real bot would parse it here.
waited=0
while [ -n "${BOT_KEYS_FILE:-}" ] && [ ! -r "$BOT_KEYS_FILE" ]; do
    if [ "$waited" -ge "$((keys_wait * 10))" ]; then
        echo "colmena-bot keys file $BOT_KEYS_FILE did not appear" >&2
        exit 4
    fi
    sleep 0.1
    waited=$((waited + 1))
done
keys=$(cat "${BOT_KEYS_FILE:-/dev/null}")
echo "colmena-bot keys loaded (${#keys} bytes)"

started=$(date +%s)
while :; do
    now=$(date +%s)
    # Before the heartbeat: stdout and stderr reach the log by separate paths, so a heartbeat
    # written just before would race the last words for the last line.
    if [ -n "$crash_after" ] && [ $((now - started)) -ge "$crash_after" ]; then
        echo "colmena-bot crashing with code $crash_code as told" >&2
        exit "$crash_code"
    fi
    # A key the tenant changed: the supervisor renamed a new file over the old one.
    if [ -n "${BOT_KEYS_FILE:-}" ] && fresh=$(cat "$BOT_KEYS_FILE" 2>/dev/null) \
        && [ "$fresh" != "$keys" ]; then
        keys="$fresh"
        echo "colmena-bot keys reloaded (${#keys} bytes)"
    fi
    echo "colmena-heartbeat $now"
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
