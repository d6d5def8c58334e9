#!/usr/bin/env bash
# tessera's chat templates (data/chat.h: `build/tokenize --format sft --chat-template NAME`) against
# Hugging Face's apply_chat_template in the JavaScript port of its tokenizers
# (chat_template_reference.js), id for id, each conversation on its own: chatml (generic ChatML on
# Qwen3's tokenizer), qwen3 and llama3 (the chat_template of each one's tokenizer_config.json), and
# mistral and llama2 (Mixtral Instruct's and Llama 2 chat's templates, on Mistral 7B's SentencePiece
# tokenizer: the text after each of their <s> and </s> gets a "▁" of its own), on
# conversations of every shape the templates treat apart: a system message first, several turns,
# Qwen3's reasoning in the last assistant message and in an earlier one, two assistant messages in a
# row, a tool's response after the last query, white space at the ends of contents (Llama 3 trims),
# accents, CJK, emoji and a decomposed accent (Qwen3's NFC composes it), an empty reply, a
# conversation ending with the user's message, and a prompt / response example. Also the text of
# each template's generation prompt (Qwen3's with thinking off). The port's Jinja cannot parse
# Qwen3's template: Python's Jinja2 renders it, set up as transformers' apply_chat_template sets it
# up, and the port encodes the text (where both parse a template, their texts must agree). Llama 3's
# template here writes the assistant's header even unasked; it is compared with that header under
# {% if add_generation_prompt %}, as tessera writes it (the script says so).
#   tests/scripts/chat_template_reference.sh BUILD_DIR
# A template whose tokenizer files are missing is skipped (scripts/prepare_data.sh llama3, qwen3,
# mistral; TESSERA_LLAMA3_DIR, TESSERA_QWEN3_DIR and TESSERA_MISTRAL_DIR point elsewhere), and qwen3 without python3's jinja2;
# exits 77 (ctest: skipped) without node, the reference, or any template that ran.
set -euo pipefail
B=$(cd "$1" && pwd)
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
LLAMA3=${TESSERA_LLAMA3_DIR:-$ROOT/data/tokenizers/llama3}
QWEN3=${TESSERA_QWEN3_DIR:-$ROOT/data/tokenizers/qwen3}
MISTRAL=${TESSERA_MISTRAL_DIR:-$ROOT/data/tokenizers/mistral}
declare -A DIRS=([chatml]=$QWEN3 [qwen3]=$QWEN3 [llama3]=$LLAMA3 [llama2]=$MISTRAL [mistral]=$MISTRAL)
# prepare_data.sh's target
declare -A FETCH=([chatml]=qwen3 [qwen3]=qwen3 [llama3]=llama3 [llama2]=mistral [mistral]=mistral)
source "$ROOT/tests/scripts/reference_setup.sh"  # NODE_PATH, $tmp; exits 77 without node

# One conversation a line (data/sft.h's forms), the same for every template. In order: one turn; a
# system message; two turns; reasoning in the last reply (Qwen3 writes its block); reasoning in an
# earlier reply (Qwen3 drops it); two replies after the last user message, the first with reasoning
# (Qwen3 keeps its block) and then without (Qwen3 writes none in the first, an empty one in the
# last); a tool's response as the last user message (Qwen3's last query is the one before it);
# contents with white space at their ends, replies with line breaks first (Qwen3 strips them from
# its last reply, Llama 3 trims every content); e-acute, i-diaeresis, Japanese, grinning face,
# thumbs up + skin tone, e + combining acute, e-grave, em dash, Tokyo, party popper; an empty
# reply; no reply; a prompt / response example (the user's prompt, the assistant's response).
# Contents spell no marker: tessera writes a content as text, where the reference would make the
# marker's token (chat_template_reference.js compares a conversation whose contents spell one by
# its text).
cat >"$tmp/chats.jsonl" <<'EOF'
{"messages": [{"role": "user", "content": "What is 2 + 2?"}, {"role": "assistant", "content": "4."}]}
{"messages": [{"role": "system", "content": "You are a terse assistant."}, {"role": "user", "content": "Name a prime."}, {"role": "assistant", "content": "7"}]}
{"messages": [{"role": "user", "content": "Hello!"}, {"role": "assistant", "content": "Hi. What can I do for you?"}, {"role": "user", "content": "Tell me a joke."}, {"role": "assistant", "content": "Why did the chicken cross the road? To get to the other side."}]}
{"messages": [{"role": "user", "content": "Greet me."}, {"role": "assistant", "content": "<think>\nI should greet.\n</think>\n\nHello!"}]}
{"messages": [{"role": "user", "content": "Greet me."}, {"role": "assistant", "content": "<think>\nI should greet.\n</think>\n\nHello!"}, {"role": "user", "content": "Again, please."}, {"role": "assistant", "content": "Hello again!"}]}
{"messages": [{"role": "user", "content": "Greet me twice."}, {"role": "assistant", "content": "<think>\nI should greet.\n</think>\n\nHello!"}, {"role": "assistant", "content": "Hello again!"}]}
{"messages": [{"role": "system", "content": "Count."}, {"role": "user", "content": "Go."}, {"role": "assistant", "content": "One."}, {"role": "assistant", "content": "Two."}]}
{"messages": [{"role": "user", "content": "What is 6 times 7?"}, {"role": "assistant", "content": "<think>\nI should ask the calculator.\n</think>\n\nLet me compute that."}, {"role": "user", "content": "<tool_response>42</tool_response>"}, {"role": "assistant", "content": "<think>\nThe tool says 42.\n</think>\n\n6 times 7 is 42."}]}
{"messages": [{"role": "system", "content": "  Be brief.  \n"}, {"role": "user", "content": "\n\tHello there \u3000\n\n"}, {"role": "assistant", "content": "\nHi!  \n"}, {"role": "user", "content": "  And now? "}, {"role": "assistant", "content": "\n\nStill here.\t\n"}]}
{"messages": [{"role": "user", "content": "Caf\u00e9, na\u00efve, \u65e5\u672c\u8a9e, \ud83d\ude00\ud83d\udc4d\ud83c\udffd, cafe\u0301?"}, {"role": "assistant", "content": "Tr\u00e8s bien \u2014 \u6771\u4eac \ud83c\udf89 cafe\u0301."}]}
{"messages": [{"role": "user", "content": "Say nothing."}, {"role": "assistant", "content": ""}]}
{"messages": [{"role": "system", "content": "You answer in French."}, {"role": "user", "content": "How are you?"}]}
{"prompt": "Translate 'cat' into French.", "response": "chat"}
EOF

# Llama 2's and Mistral's templates take user and assistant messages alternating from a user's
# (Llama 2 a system message first): one turn; two turns; contents with white space at their ends
# (Llama 2 strips them, Mistral does not); the accents and emoji above (characters outside the
# vocabulary fall back to bytes); an empty reply; a reply of spaces around words; no reply; a
# prompt / response example. llama2's file adds a system message before one turn, before a user's
# message alone, and one with white space at its ends.
cat >"$tmp/alternating.jsonl" <<'EOF'
{"messages": [{"role": "user", "content": "What is 2 + 2?"}, {"role": "assistant", "content": "4."}]}
{"messages": [{"role": "user", "content": "Hello!"}, {"role": "assistant", "content": "Hi. What can I do for you?"}, {"role": "user", "content": "Tell me a joke."}, {"role": "assistant", "content": "Why did the chicken cross the road? To get to the other side."}]}
{"messages": [{"role": "user", "content": "\n\tHello there \u3000\n\n"}, {"role": "assistant", "content": "\nHi!  \n"}, {"role": "user", "content": "  And now? "}, {"role": "assistant", "content": "\n\nStill here.\t\n"}]}
{"messages": [{"role": "user", "content": "Caf\u00e9, na\u00efve, \u65e5\u672c\u8a9e, \ud83d\ude00\ud83d\udc4d\ud83c\udffd, cafe\u0301?"}, {"role": "assistant", "content": "Tr\u00e8s bien \u2014 \u6771\u4eac \ud83c\udf89 cafe\u0301."}]}
{"messages": [{"role": "user", "content": "Say nothing."}, {"role": "assistant", "content": ""}]}
{"messages": [{"role": "user", "content": "Who are you?"}, {"role": "assistant", "content": "   I am an assistant   "}]}
{"messages": [{"role": "user", "content": "How are you?"}]}
{"prompt": "Translate 'cat' into French.", "response": "chat"}
EOF
{
  cat <<'EOF'
{"messages": [{"role": "system", "content": "You are a terse assistant."}, {"role": "user", "content": "Name a prime."}, {"role": "assistant", "content": "7"}]}
{"messages": [{"role": "system", "content": "You answer in French."}, {"role": "user", "content": "How are you?"}]}
{"messages": [{"role": "system", "content": "  Be brief.  \n"}, {"role": "user", "content": "Hello "}, {"role": "assistant", "content": "Hi."}]}
EOF
  cat "$tmp/alternating.jsonl"
} >"$tmp/llama2.jsonl"
declare -A CHATS=([chatml]=chats [qwen3]=chats [llama3]=chats [llama2]=llama2 [mistral]=alternating)

rc=0 ran=0
for name in chatml qwen3 llama3 llama2 mistral; do
  chats="$tmp/${CHATS[$name]}.jsonl"
  dir=${DIRS[$name]}
  tokenizer_here "$name" "$dir" "${FETCH[$name]}" || continue
  "$B/tokenize" --format sft --chat-template "$name" --tokenizer hf --tokenizer-dir "$dir" \
    --input "$chats" --output "$tmp/$name" --val-fraction 0 >/dev/null
  status=0
  node "$ROOT/tests/scripts/chat_template_reference.js" "$name" "$dir" "$chats" \
    "$tmp/$name/train_000.bin" || status=$?
  case $status in
    0) ran=$((ran + 1)) ;;
    77) ;;  # the template could not be rendered here (the script says why)
    *) ran=$((ran + 1)) rc=1 ;;
  esac
done
[ "$ran" -gt 0 ] || exit 77
exit $rc
