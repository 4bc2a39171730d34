#!/usr/bin/env bash
# Backs up and restores the update system's own state: the named volumes of its compose project (trusted
# TUF metadata, the blob cache, the install journal, data backups, Redis's AOF, NATS's stream, and
# Prometheus's data if used). One tar per volume in DIR. A container that uses a volume is stopped while
# that volume is archived or restored (a consistent copy), then started again.
#
#   bash infra/state-backup.sh backup  DIR [PROJECT]
#   bash infra/state-backup.sh restore DIR [PROJECT]
#
# PROJECT is the compose project: COMPOSE_PROJECT_NAME, else the name of the folder holding
# docker-compose.yml (compose's default). Restore creates a missing volume with compose's labels, so a
# later `docker compose up -d` adopts it. The archiving runs in the installer's image (it has tar);
# AICO_STATE_BACKUP_IMAGE picks another.
set -euo pipefail

usage() { echo "usage: $0 backup|restore DIR [PROJECT]" >&2; exit 64; }
[ $# -ge 2 ] || usage
action=$1
dir=$(mkdir -p "$2" && cd "$2" && pwd)
project=${3:-${COMPOSE_PROJECT_NAME:-$(basename "$(cd "$(dirname "$0")/.." && pwd)")}}
image=${AICO_STATE_BACKUP_IMAGE:-aico-update/installer:${AICO_UPDATE_IMAGE_TAG:-local}}
say() { echo "[state-backup] $*"; }

docker image inspect "$image" >/dev/null 2>&1 ||
  { echo "no image $image to run tar in: build the stack first, or set AICO_STATE_BACKUP_IMAGE" >&2; exit 1; }

# Runs tar in a throwaway container with the volume at /volume and DIR at /backup.
in_volume() {
  local volume=$1; shift
  docker run --rm --user 0 --network none -v "$volume:/volume" -v "$dir:/backup" "$image" "$@"
}

# Stops the running containers that use a volume, runs the command, starts them again (also on failure).
with_users_stopped() {
  local volume=$1; shift
  local users
  users=$(docker ps -q --filter "volume=$volume")
  # shellcheck disable=SC2086 # ids, one word each
  [ -z "$users" ] || docker stop $users >/dev/null
  local status=0
  "$@" || status=$?
  # shellcheck disable=SC2086
  [ -z "$users" ] || docker start $users >/dev/null
  return $status
}

# In the helper: /volume/.aico-restore (the archive, extracted) replaces the volume's contents.
# shellcheck disable=SC2016 # expanded by the helper's shell
restore_script='set -e
s=/volume/.aico-restore; o=/volume/.aico-old
rm -rf "$s" "$o"
mkdir "$s"
tar -C "$s" --numeric-owner -xpf "/backup/$1.tar" || { rm -rf "$s"; exit 1; }
mkdir "$o"
find /volume -mindepth 1 -maxdepth 1 ! -name .aico-restore ! -name .aico-old -exec mv -- {} "$o"/ \;
find "$s" -mindepth 1 -maxdepth 1 -exec mv -- {} /volume/ \;
chown "$(stat -c %u:%g "$s")" /volume && chmod "$(stat -c %a "$s")" /volume
rm -rf "$s" "$o"'

case $action in
  backup)
    volumes=$(docker volume ls -q --filter "label=com.docker.compose.project=$project")
    [ -n "$volumes" ] || { echo "no volumes of compose project '$project' (pass PROJECT?)" >&2; exit 1; }
    for volume in $volumes; do
      name=$(docker volume inspect --format '{{index .Labels "com.docker.compose.volume"}}' "$volume")
      with_users_stopped "$volume" in_volume "$volume" tar -C /volume -cf "/backup/$name.tar.partial" .
      mv "$dir/$name.tar.partial" "$dir/$name.tar"
      say "$volume → $dir/$name.tar ($(du -h "$dir/$name.tar" | cut -f1))"
    done
    ;;
  restore)
    archives=$(find "$dir" -maxdepth 1 -name '*.tar' | sort)
    [ -n "$archives" ] || { echo "no *.tar in $dir" >&2; exit 1; }
    for archive in $archives; do
      name=$(basename "$archive" .tar)
      volume=${project}_${name}
      docker volume inspect "$volume" >/dev/null 2>&1 ||
        docker volume create --label "com.docker.compose.project=$project" \
          --label "com.docker.compose.volume=$name" "$volume" >/dev/null
      # Extracted into a staging folder first: a damaged or cut archive fails there and the volume keeps
      # its data. Only a whole extraction is swapped in (renames on the volume), the old contents removed.
      if ! with_users_stopped "$volume" in_volume "$volume" sh -c "$restore_script" restore "$name"; then
        echo "restoring $archive failed: $volume was left as it was" >&2
        exit 1
      fi
      say "$archive → $volume"
    done
    ;;
  *) usage ;;
esac
