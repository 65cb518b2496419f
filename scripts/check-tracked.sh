#!/usr/bin/env bash
# Fails when a tracked file is an ELF binary or larger than 1 MiB: a build
# output committed by accident bloats every clone for good. Files under a
# testdata/ directory and bench/results.json are allowed.
#   usage: scripts/check-tracked.sh
# It reads the index, not the working tree, so it judges what a commit holds.
set -euo pipefail
cd "$(dirname "$0")/.."
limit=$((1024 * 1024))
status=0
# One git process for every size; only files git itself finds binary
# (eolinfo "-text"; empty for an empty file, hence the brackets) are opened to look for the ELF magic.
while read -r size hash mode eol path; do
  [[ $mode == 100* ]] || continue # symlinks and submodules hold no bytes
  case "/$path" in
    */testdata/* | /bench/results.json) continue ;;
  esac
  if ((size > limit)); then
    echo "tracked file larger than 1 MiB: $path ($size bytes)" >&2
    status=1
  fi
  if [[ $eol == '[-text]' ]] &&
    [[ $(git cat-file blob "$hash" | head -c 4 | od -An -tx1 | tr -d ' \n') == 7f454c46 ]]; then
    echo "tracked file is an ELF binary: $path" >&2
    status=1
  fi
done < <(git ls-files --format='%(objectname) %(objectname) %(objectmode) [%(eolinfo:index)] %(path)' |
  git cat-file --batch-check='%(objectsize) %(rest)')
if ((status)); then
  echo "untrack it (git rm --cached PATH) and list it in .gitignore" >&2
fi
exit $status
