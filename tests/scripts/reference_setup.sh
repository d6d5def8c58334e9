# Sourced by the reference scripts (hf_tokenizer_reference.sh, chat_template_reference.sh) once
# ROOT is the repository: NODE_PATH at the JavaScript port of the tokenizers library that
# scripts/prepare_data.sh fetches, exiting 77 (ctest: skipped) without node or the port, and a
# temporary directory $tmp removed on exit.
export NODE_PATH=$ROOT/.deps/node_modules
command -v node >/dev/null || { echo "skipped: no node"; exit 77; }
[ -s "$NODE_PATH/@lenml/tokenizers/dist/main.js" ] ||
  { echo "skipped: no reference in $NODE_PATH (scripts/prepare_data.sh llama3)"; exit 77; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
