#!/usr/bin/env bash
# Makes the secrets compose.yaml mounts, once: a random PostgreSQL password,
# the DATABASE_URL holding it, and a random HS256 JWT secret, in
# deploy/compose/secrets/ (ignored by git). Existing files are kept, so
# running it again changes nothing; delete the directory (and the
# postgres-data volume, which remembers the first password) to start over.
set -euo pipefail

dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/secrets"
mkdir -p "$dir"
# The directory keeps other host users out; the files themselves must be
# readable by the containers' own users (postgres, uid 10001), which see
# them through bind mounts.
chmod 700 "$dir"

random() { head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n'; }

write() {
  local name="$1" value="$2"
  if [ -s "$dir/$name" ]; then
    echo "kept    $dir/$name"
    return
  fi
  printf '%s' "$value" >"$dir/$name.tmp"
  chmod 644 "$dir/$name.tmp"
  mv -f "$dir/$name.tmp" "$dir/$name"
  echo "created $dir/$name"
}

if [ -s "$dir/postgres_password" ]; then
  password="$(cat "$dir/postgres_password")"
else
  password="$(random)"
fi
write postgres_password "$password"
write database_url "postgres://skileez:${password}@postgres:5432/skileez"
write jwt_secret "$(random)"
