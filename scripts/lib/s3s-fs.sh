# shellcheck shell=bash
# A local S3 server for the demo and the benchmarks: s3s-fs (installed by
# ./scripts/setup) on a free 127.0.0.1 port. Sourced, not run.

# start_s3s_fs ROOT [ACCESS_KEY SECRET_KEY]
#   Serves ROOT (each directory under it is a bucket), anonymously unless
#   keys are given. Sets S3S_ENDPOINT and S3S_PID; the caller stops the
#   server (kill "$S3S_PID") in its EXIT trap. Its log is ROOT.log.
start_s3s_fs() {
  local root=$1 port
  local auth=()
  if [ $# -ge 3 ]; then
    auth=(--access-key "$2" --secret-key "$3")
  fi
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  s3s-fs --host 127.0.0.1 --port "$port" "${auth[@]}" "$root" >"$root.log" 2>&1 &
  S3S_PID=$!
  S3S_ENDPOINT=http://127.0.0.1:$port
  local _
  for _ in $(seq 100); do
    if curl -s -o /dev/null "$S3S_ENDPOINT/"; then
      return 0
    fi
    kill -0 "$S3S_PID" 2>/dev/null || break
    sleep 0.1
  done
  echo "s3s-fs did not start; its log:" >&2
  cat "$root.log" >&2
  return 1
}
