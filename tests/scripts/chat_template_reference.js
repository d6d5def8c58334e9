// node chat_template_reference.js NAME TOKENIZER_DIR CONVERSATIONS SHARD: renders each conversation
// of CONVERSATIONS (JSON Lines in data/sft.h's forms) in the chat template NAME (chatml, qwen3,
// llama3, llama2 or mistral) with Hugging Face's apply_chat_template in the JavaScript port of its tokenizers (npm
// @lenml/tokenizers, found through NODE_PATH) over TOKENIZER_DIR's tokenizer.json and
// tokenizer_config.json, without a generation prompt, and compares the ids with SHARD, the one train
// shard `build/tokenize --format sft --chat-template NAME --val-fraction 0` wrote from CONVERSATIONS
// (tessera's), conversation by conversation: the shard's loss mask marks where each starts. Then
// checks the text of NAME's generation prompt after a user's "Hi". Prints a line for each check;
// exits 0 when every one agrees, 1 when one does not (the conversation, the reference's text of it,
// and the first differing token with its neighbourhood, as ids and as text), 77 when nothing here
// renders the template.
const fs = require('fs');
const {execFileSync} = require('child_process');
const {TokenizerLoader} = require('@lenml/tokenizers');
const {readShard} = require('./shard.js');

const [name, dir, chatsPath, shardPath] = process.argv.slice(2);
const config = JSON.parse(fs.readFileSync(dir + '/tokenizer_config.json', 'utf8'));
const tok = TokenizerLoader.fromPreTrained({
  tokenizerJSON: JSON.parse(fs.readFileSync(dir + '/tokenizer.json', 'utf8')),
  tokenizerConfig: config,
});

// The templates: generic ChatML (as Hugging Face's chat-template documentation gives it, on Qwen3's
// tokenizer), Qwen3's and Llama 3's own chat_template, and on Mistral 7B's tokenizer the
// chat_template of mistralai/Mixtral-8x7B-Instruct-v0.1's tokenizer_config.json (Mistral 7B
// Instruct v0.2's is the same) and of meta-llama/Llama-2-7b-chat-hf's (whose SentencePiece
// vocabulary is laid out as Mistral's: Llama 2's own tokenizer.json is not at hand).
const CHATML = String.raw`{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}`;
const MISTRAL = String.raw`{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}`;
const LLAMA2 = String.raw`{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\n' + system_message + '\n<</SYS>>\n\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}`;
let template = {chatml: CHATML, mistral: MISTRAL, llama2: LLAMA2}[name] ?? config.chat_template;
if (typeof template !== 'string') {
  console.log(`${name}: skipped: ${dir}/tokenizer_config.json has no chat_template`);
  process.exit(77);
}
// Llama 3's tokenizer_config.json here ends its template with the assistant's header outside any
// {% if add_generation_prompt %}: it writes that header after every conversation, asked or not.
// tessera writes it only as the generation prompt, as Meta's Llama 3 Instruct template does with
// the header under that condition; the conversations are compared with the template so amended.
// (Its Jinja strings hold the line breaks themselves, not Jinja's \n.)
const HEADER = "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}";
if (name === 'llama3' && template.endsWith(HEADER) && !template.includes('add_generation_prompt')) {
  template = template.slice(0, -HEADER.length) + `{% if add_generation_prompt %}${HEADER}{% endif %}`;
  console.log(`${name}: the template writes the assistant's header whatever ` +
              `add_generation_prompt says; compared with it under {% if add_generation_prompt %}`);
}

// What each template's generation prompt after a user's "Hi" reads (data/chat.h; Qwen3's with
// thinking off, its enable_thinking=False), and the options that ask for it.
const GENERATION = {
  chatml: [{}, '<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n'],
  qwen3: [
    {enable_thinking: false},
    '<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n',
  ],
  llama3: [
    {},
    '<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>' +
        '<|start_header_id|>assistant<|end_header_id|>\n\n',
  ],
  llama2: [{}, '<s>[INST] Hi [/INST]'],
  mistral: [{}, '<s>[INST] Hi [/INST]'],
}[name];

// The conversations as tessera reads them (data/sft.h): a prompt / response example is the user's
// prompt and the assistant's response, each where it is not empty.
const chats = fs.readFileSync(chatsPath, 'utf8').split('\n').filter((l) => l.trim()).map((l) => {
  const e = JSON.parse(l);
  if (e.messages) return e.messages;
  const m = [];
  if (e.prompt) m.push({role: 'user', content: e.prompt});
  if (e.response) m.push({role: 'assistant', content: e.response});
  return m;
});

// Two engines render: the port's Jinja (apply_chat_template's own), where it parses the template,
// and Python's Jinja2 set up as Hugging Face's transformers sets it up for apply_chat_template (a
// sandbox that trims blocks, with loop controls, tojson and raise_exception, the tokenizer's
// special tokens as variables), where python3 has jinja2. Where both render, their texts must
// agree; where only Jinja2 does, the reference's ids are its text encoded without special tokens,
// as apply_chat_template encodes what it renders.
let portError = null;
try {
  tok.apply_chat_template([{role: 'user', content: 'Hi'}], {chat_template: template, tokenize: false});
} catch (e) {
  portError = e.message.split('\n')[0];
}
const port = (messages, options) =>
  tok.apply_chat_template(messages, {chat_template: template, ...options});

const JINJA2 = `
import json, sys
import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)

def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)

request = json.load(sys.stdin)
env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                    extensions=["jinja2.ext.loopcontrols"])
env.filters["tojson"] = tojson
env.globals["raise_exception"] = raise_exception
template = env.from_string(request["template"])
json.dump([template.render(messages=c["messages"], tools=None, documents=None,
                           **request["tokens"], **c["options"]) for c in request["calls"]],
          sys.stdout)
`;
// The tokenizer's special tokens, the variables apply_chat_template gives a template (bos_token...).
const tokens = {};
for (const k of ['bos_token', 'eos_token', 'unk_token', 'sep_token', 'pad_token', 'cls_token',
                 'mask_token']) {
  const t = tok.getToken(k);
  if (t) tokens[k] = t;
}
// Each call's text by Jinja2 ({messages, options}), or null (jinja2Error says why). Debian's
// python3 (python3-jinja2, scripts/setup.sh tests) where there is one, else the first on PATH.
let jinja2Error = null;
const PYTHON = fs.existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';
function jinja2(calls) {
  try {
    const out = execFileSync(PYTHON, ['-c', JINJA2], {
      input: JSON.stringify({template, tokens, calls}),
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    return JSON.parse(out.toString('utf8'));
  } catch (e) {
    const said = (e.stderr ? e.stderr.toString('utf8').trim().split('\n').pop() : '') || e.message;
    jinja2Error = said.split('\n')[0];
    return null;
  }
}

const gen = [{role: 'user', content: 'Hi'}];
const noPrompt = {add_generation_prompt: false};
const genOptions = {add_generation_prompt: true, ...GENERATION[0]};
const rendered = jinja2([...chats.map((messages) => ({messages, options: noPrompt})),
                         {messages: gen, options: genOptions}]);
if (portError && !rendered) {
  console.log(`${name}: skipped: the reference's Jinja cannot parse the template (${portError}) ` +
              `and python3's jinja2 cannot render it (${jinja2Error}; Debian's python3-jinja2)`);
  process.exit(77);
}
console.log(`${name}: rendered by ` +
            (portError ? `Python's Jinja2 (the reference's Jinja cannot parse the template: ` +
                             `${portError})` :
             rendered  ? `the reference's Jinja and, alike, Python's Jinja2` :
                         `the reference's Jinja (no Python Jinja2 here: ${jinja2Error})`));

let failed = false;
function fail(line) {
  console.log(line);
  failed = true;
}
// The template's text for a call (i: its index in rendered), both engines agreeing.
function render(i, messages, options, what) {
  const mine = portError ? null : port(messages, {...options, tokenize: false});
  const theirs = rendered ? rendered[i] : null;
  if (mine !== null && theirs !== null && mine !== theirs)
    fail(`${name}: ${what}: the reference's Jinja renders ${JSON.stringify(mine)}, Python's ` +
         `Jinja2 ${JSON.stringify(theirs)}`);
  return mine ?? theirs;
}
const decode = (ids) =>
  tok.decode(ids, {skip_special_tokens: false, clean_up_tokenization_spaces: false});

// Added tokens that a conversation's contents spell. tessera encodes a content as text, where the
// reference's encoding of the rendered text makes each the added token: such a conversation is
// compared by the text its ids spell. Qwen3's template takes <think> and </think> out of an
// assistant's content and writes its own, so those do not count there.
function spelled(messages) {
  const found = new Set();
  for (const {role, content} of messages) {
    const c = name === 'qwen3' && role === 'assistant' ? content.replace(/<\/?think>/g, '') : content;
    for (const t of tok.added_tokens)
      if (c.includes(t.content)) found.add(t.content);
  }
  return [...found];
}

// The shard's ids; its loss mask beside it (src/data/shard.h): the same header, then a byte a
// token whose bit 1 marks the first token of an example.
const got = readShard(shardPath), count = got.length;
const mask = fs.readFileSync(shardPath.replace(/\.bin$/, '.mask'));
const starts = [];
for (let i = 0; i < count; ++i)
  if (mask[1024 + i] & 2) starts.push(i);
if (starts.length !== chats.length) {
  console.log(`${name}: the shard holds ${starts.length} examples, ${chatsPath} ${chats.length}`);
  process.exit(1);
}
starts.push(count);

const byText = [];
for (let c = 0; c < chats.length; ++c) {
  const what = `conversation ${c + 1}`;
  const text = render(c, chats[c], noPrompt, what);
  const want = portError ? tok.encode(text, {add_special_tokens: false}) :
                           port(chats[c], {...noPrompt, tokenize: true});
  const mine = got.slice(starts[c], starts[c + 1]);
  const markers = spelled(chats[c]);
  if (markers.length) {
    // The text the ids spell (the reference's decoding of each side's ids: normalised alike).
    const a = decode(mine), b = decode(want);
    if (a === b) {
      byText.push(`${c + 1} (${markers.join(' ')})`);
      continue;
    }
    let first = 0;
    while (a[first] === b[first]) ++first;
    fail(`${name}: ${what}: tessera's ids spell ${JSON.stringify(a)}, the reference's ` +
         `${JSON.stringify(b)}; first difference at character ${first}`);
    continue;
  }
  let first = -1;
  for (let i = 0; i < Math.max(mine.length, want.length); ++i)
    if (mine[i] !== want[i]) {
      first = i;
      break;
    }
  if (first < 0) continue;
  const around = (ids) => {
    const part = ids.slice(Math.max(0, first - 3), first + 5);
    return `${JSON.stringify(part)} ${JSON.stringify(part.map((id) => decode([id])))}`;
  };
  fail(`${name}: ${what}: ${mine.length} tokens against the reference's ${want.length}; first ` +
       `difference at token ${first}: tessera ${around(mine)}, reference ${around(want)}; the ` +
       `reference renders ${JSON.stringify(text)}`);
}
if (!failed)
  console.log(`${name}: ${chats.length} conversations (${count} tokens), every id the ` +
              `reference's` +
              (byText.length ? `, but ${byText.length > 1 ? 'conversations' : 'conversation'} ` +
                               `${byText.join(', ')} by the text the ids spell (the contents ` +
                               `spell those added tokens)` : ''));

const text = render(chats.length, gen, genOptions, 'generation prompt');
if (text === GENERATION[1])
  console.log(`${name}: generation prompt ok: ${JSON.stringify(text)}`);
else
  fail(`${name}: generation prompt: the reference renders ${JSON.stringify(text)}, tessera ` +
       `writes ${JSON.stringify(GENERATION[1])}`);
process.exit(failed ? 1 : 0);
