# Sourced by deps.sh and bench-deps.sh: apt_missing NAME CMD=PACKAGE...
# installs, as root, the Debian package of each command not on PATH, and
# fails with the apt-get line to run when not root. Idempotent.
apt_missing() {
  local name=$1 pair missing=()
  shift
  for pair in "$@"; do
    command -v "${pair%%=*}" >/dev/null 2>&1 || missing+=("${pair#*=}")
  done
  ((${#missing[@]})) || return 0
  if [[ $(id -u) -ne 0 ]]; then
    echo "$name: missing packages ${missing[*]}; run as root or install them: apt-get install ${missing[*]}" >&2
    return 1
  fi
  echo "$name: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
