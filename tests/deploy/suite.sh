#!/bin/sh
# tests/deploy/suite.sh — the systemd unit and the Kubernetes manifests
# under deploy/ (run by tests/run.sh with BUILD and PYTHON). Every check is
# in check_deploy.py; it prints "ok"/"FAIL"/"skip" lines and a summary, and
# exits 1 when a check failed. Needs build/moegate (policy check) and
# PyYAML; systemd-analyze, systemd-sysusers, systemd-tmpfiles and kubectl
# are used when present (a check that cannot run says so and is skipped).
set -u
BUILD=${BUILD:-build}
PYTHON=${PYTHON:-/usr/bin/python3}
exec "$PYTHON" tests/deploy/check_deploy.py --moegate "$BUILD/moegate"
