# Sourced by the reference scripts (hf_tokenizer_reference.sh, chat_template_reference.sh) once
# ROOT is the repository: NODE_PATH at the JavaScript port of the tokenizers library that
# scripts/prepare_data.sh fetches, exiting 77 (ctest: skipped) without node or the port, and a
# temporary directory $tmp removed on exit; tokenizer_here.
export NODE_PATH=$ROOT/.deps/node_modules
command -v node >/dev/null || { echo "skipped: no node"; exit 77; }
[ -s "$NODE_PATH/@lenml/tokenizers/dist/main.js" ] ||
  { echo "skipped: no reference in $NODE_PATH (scripts/prepare_data.sh llama3)"; exit 77; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# tokenizer_here NAME DIR TARGET: whether DIR holds a tokenizer.json; where not, says that NAME is
# skipped and what fetches it (scripts/prepare_data.sh TARGET).
tokenizer_here() {
  [ -s "$2/tokenizer.json" ] && return 0
  echo "$1: skipped: no $2/tokenizer.json (scripts/prepare_data.sh $3)"
  return 1
}
