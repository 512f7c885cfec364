#!/bin/sh
# The image's health check: Orthanc answers GET /system for the user medserve, on the HttpPort
# that /etc/orthanc/container.json sets (8042 unless a mounted file says otherwise). A script, so
# that Compose files need no "$" (podman-compose keeps "$$" as it is).
port=$(sed -n 's/^[[:space:]]*"HttpPort"[[:space:]]*:[[:space:]]*\([0-9][0-9]*\).*/\1/p' \
    /etc/orthanc/container.json | head -n 1)
exec curl -fsS -o /dev/null --max-time 4 -u "medserve:${ORTHANC_MEDSERVE_PASSWORD}" \
    "http://127.0.0.1:${port:-8042}/system"
