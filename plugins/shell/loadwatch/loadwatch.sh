#!/bin/sh
# loadwatch: a ballast process plugin without the control protocol (lifecycle only).
#
# Every few seconds it writes one line with the load average, memory available and the number
# of processes, which ballast captures into the plugin's log (`ballast plugin loadwatch logs`).
# It learns its level from BALLAST_LEVEL, which ballast sets; a level change restarts it:
#   level 0: a line every LOADWATCH_INTERVAL seconds (default 5)
#   level 1: a line every 6 times that (a cheaper, coarser record)
# It exits on SIGTERM, which is how ballast stops it.

interval=${LOADWATCH_INTERVAL:-5}
if [ "${BALLAST_LEVEL:-0}" -ge 1 ]; then
    interval=$((interval * 6))
fi

trap 'echo "loadwatch: stopping"; exit 0' TERM INT

echo "loadwatch: started at level ${BALLAST_LEVEL:-0}, a line every ${interval}s"
while :; do
    read -r load1 load5 load15 running rest < /proc/loadavg
    available=$(awk '/^MemAvailable:/ { printf "%d", $2 / 1024 }' /proc/meminfo)
    echo "load ${load1} ${load5} ${load15}, runnable/total ${running}, memory available ${available} MiB"
    # Sleep in the background and wait, so that SIGTERM is handled at once.
    sleep "$interval" &
    wait $!
done
