# Sourced by the device scripts: `step NAME LIMIT CMD...` runs CMD under a timeout of LIMIT
# seconds with its output in $out/NAME.log, and adds "NAME  seconds  exit code" to the `summary`
# array (print it last). Returns CMD's exit code. Needs $out set.
summary=()
step() {
  local name=$1 limit=$2 t0 rc
  shift 2
  t0=$(date +%s)
  timeout --kill-after=5 "$limit" "$@" >"$out/$name.log" 2>&1
  rc=$?
  summary+=("$(printf '%-22s %4ss  exit %s' "$name" "$(($(date +%s) - t0))" "$rc")")
  return $rc
}
