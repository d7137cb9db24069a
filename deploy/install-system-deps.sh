#!/usr/bin/env bash
# Installs the system packages vidstream and its tests use, when they are missing:
#   ffmpeg (ffprobe and a system FFmpeg beside the pinned pip build), redis-server,
#   espeak-ng (the tests speak known sentences), fonts-dejavu-core (subtitle font),
#   chromium (the page's tests drive it with Playwright; never a downloaded browser),
#   fonts-liberation2 (the timeline's Liberation families), tesseract-ocr (the compose tests
#   read the drawn text back), nginx and openssl (tests/test_nginx.py runs the documented site
#   in front of a gateway; the test starts its own nginx on free ports, never the system one;
#   Debian's package starts its default site on port 80 where systemd runs: on a machine that
#   is not to serve it, `systemctl disable --now nginx`), iproute2 (tests/test_hosts.py puts
#   roles on hosts of their own: network namespaces, with `ip netns`), redis-sentinel
#   (tests/test_failover.py starts its own Sentinels on free ports, as deploy/README.md's
#   failover runs them; the package's own starts on 26379 where systemd runs: `systemctl
#   disable --now redis-sentinel` on a machine that is not to run one).
# As root on Debian/Ubuntu it runs apt-get; otherwise it says what to install.
set -euo pipefail

missing=()
command -v ffmpeg >/dev/null 2>&1 || missing+=(ffmpeg)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v redis-sentinel >/dev/null 2>&1 || missing+=(redis-sentinel)
command -v espeak-ng >/dev/null 2>&1 || missing+=(espeak-ng)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v tesseract >/dev/null 2>&1 || missing+=(tesseract-ocr)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v ip >/dev/null 2>&1 || [ -x /usr/sbin/ip ] || [ -x /sbin/ip ] || missing+=(iproute2)
[ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || missing+=(fonts-dejavu-core)
[ -d /usr/share/fonts/truetype/liberation2 ] || missing+=(fonts-liberation2)
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "vidstream needs these packages: ${missing[*]}" >&2
  echo "install them with: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
