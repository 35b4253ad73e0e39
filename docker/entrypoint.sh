#!/bin/sh
# Entrypoint of the sipagent image.
#
#   entrypoint.sh                  -> sipagent run
#   entrypoint.sh --config f.toml  -> sipagent run --config f.toml
#   entrypoint.sh run|twilio ...   -> sipagent run|twilio ...
#   entrypoint.sh healthcheck      -> exit 0 when GET /health on the admin port answers 200
#   entrypoint.sh <command> ...    -> that command (a shell for debugging, say)
#
# Secrets may come as files (Docker/Kubernetes secrets): NAME_FILE=/run/secrets/x sets NAME to
# the file's content (trailing newline removed) for OPENAI_API_KEY, SIPAGENT_ADMIN_TOKEN,
# SIPAGENT_REGISTRAR_PASSWORD, SIPAGENT_AUTH_USERS, TWILIO_AUTH_TOKEN and DATABASE_URL.
# Setting both NAME and NAME_FILE is an error. The data directory (SQLite history) and the
# recordings directory must be writable: checked here so the container stops with one line
# saying which, rather than failing on the first call.
set -eu

die() {
    echo "entrypoint: $*" >&2
    exit 78  # EX_CONFIG
}

load_secret_file() {
    name="$1"
    file_var="${name}_FILE"
    eval "file=\${$file_var:-}"
    eval "value_set=\${$name+set}"
    [ -n "$file" ] || return 0
    [ -z "$value_set" ] || die "$name and $file_var are both set; set one"
    [ -r "$file" ] || die "$file_var: cannot read $file"
    value="$(cat "$file")"
    export "$name=$value"
    unset "$file_var"
}

check_writable_dir() {
    setting="$1"
    dir="$2"
    mkdir -p "$dir" 2>/dev/null || die "$setting: cannot create $dir"
    [ -w "$dir" ] || die "$setting: $dir is not writable by uid $(id -u)"
}

healthcheck() {
    exec python3 - <<'PY'
import os
import sys
import urllib.request

host = os.environ.get("SIPAGENT_ADMIN_HOST", "127.0.0.1")
if host in ("0.0.0.0", "::", ""):
    host = "127.0.0.1"
if ":" in host:
    host = f"[{host}]"
port = os.environ.get("SIPAGENT_ADMIN_PORT", "8080")
try:
    with urllib.request.urlopen(f"http://{host}:{port}/health", timeout=2) as response:
        sys.exit(0 if response.status == 200 else 1)
except OSError as exc:
    print(f"healthcheck: {exc}", file=sys.stderr)
    sys.exit(1)
PY
}

for name in OPENAI_API_KEY SIPAGENT_ADMIN_TOKEN SIPAGENT_REGISTRAR_PASSWORD SIPAGENT_AUTH_USERS \
    TWILIO_AUTH_TOKEN DATABASE_URL; do
    load_secret_file "$name"
done

if [ "$#" -eq 0 ]; then
    set -- run
fi
case "$1" in
    healthcheck)
        healthcheck
        ;;
    -*)
        set -- run "$@"
        ;;
esac

case "$1" in
    run)
        database_url="${DATABASE_URL:-${SIPAGENT_DATABASE_URL:-sqlite:///data/sipagent.sqlite3}}"
        case "$database_url" in
            sqlite:///*)
                db_path="${database_url#sqlite:///}"
                check_writable_dir DATABASE_URL "$(dirname "$db_path")"
                ;;
        esac
        if [ -n "${SIPAGENT_RECORDINGS_DIR:-}" ]; then
            check_writable_dir SIPAGENT_RECORDINGS_DIR "$SIPAGENT_RECORDINGS_DIR"
        fi
        exec sipagent "$@"
        ;;
    twilio)
        exec sipagent "$@"
        ;;
    *)
        exec "$@"
        ;;
esac
