#!/bin/sh
# Installs the Debian 12 packages moegate's build, tests and quickstart need.
# A no-op when every package is already installed. Runs apt-get as root, or
# through sudo when not root. Each package and why: see README.md.
set -eu

PKGS="build-essential pkg-config clang libclang-rt-14-dev
libopenblas-dev libpcre2-dev libpq-dev libssl-dev libyaml-dev libmicrohttpd-dev libgnutls28-dev
libjansson-dev libcmocka-dev postgresql python3 python3-numpy python3-yaml nodejs npm curl ca-certificates"

missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done
# npm may come from outside Debian (e.g. a Node.js install in /usr/local): accept it.
case " $missing " in *" npm "*) command -v npm >/dev/null 2>&1 && missing=$(echo "$missing" | sed 's/ npm//') ;; esac
case " $missing " in *" nodejs "*) command -v node >/dev/null 2>&1 && missing=$(echo "$missing" | sed 's/ nodejs//') ;; esac
[ -z "$missing" ] && exit 0

echo "deps: installing:$missing"
SUDO=""
if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "deps: need root or sudo to install:$missing" >&2; exit 1; }
    SUDO=sudo
fi
$SUDO apt-get update -qq
# shellcheck disable=SC2086
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
echo "deps: done"
