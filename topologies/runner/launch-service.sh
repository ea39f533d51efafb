#!/bin/sh
# Runs inside `ip netns exec` (which gave it a private, slave mount namespace and the
# namespace's /etc/hosts): builds the service's root on a tmpfs - the host's top-level
# folders bound in, volumes at their targets - then execs the service chrooted into it.
# Usage: launch-service.sh ROOT WORKDIR NMOUNTS [SRC TARGET ro|rw]... -- never run by hand.
set -e
R="$1"; WD="$2"; N="$3"; shift 3
mount -t tmpfs -o mode=0755 cw-root "$R"
for d in /* /.[!.]*; do
  [ -e "$d" ] || [ -L "$d" ] || continue
  n="${d#/}"
  if [ -L "$d" ]; then ln -s "$(readlink "$d")" "$R/$n"
  elif [ -d "$d" ]; then mkdir "$R/$n"; mount --rbind "$d" "$R/$n"
  else touch "$R/$n"; mount --bind "$d" "$R/$n"
  fi
done
# The recursive bind of the folder holding R shows R inside itself; hide that copy.
if mountpoint -q "$R$R"; then umount -l "$R$R"; fi
i=0
while [ "$i" -lt "$N" ]; do
  SRC="$1"; TGT="$2"; MODE="$3"; shift 3
  if [ ! -e "$R$TGT" ]; then
    if [ -d "$SRC" ]; then mkdir -p "$R$TGT"; else mkdir -p "$(dirname "$R$TGT")"; touch "$R$TGT"; fi
  fi
  mount --bind "$SRC" "$R$TGT"
  if [ "$MODE" = ro ]; then mount -o remount,bind,ro "$R$TGT"; fi
  i=$((i+1))
done
[ -d "$R$WD" ] || mkdir -p "$R$WD"
exec chroot "$R" /bin/sh -c 'cd "$1" && shift && exec "$@"' sh "$WD" "$@"
