// node hf_tokenizer_reference.js TOKENIZER_DIR TEXT SHARD: encodes TEXT with the JavaScript port of
// Hugging Face's tokenizers (npm @lenml/tokenizers, found through NODE_PATH) from TOKENIZER_DIR's
// tokenizer.json and tokenizer_config.json, without special tokens, and compares the ids with
// SHARD, the one train shard `build/tokenize --val-fraction 0` wrote from TEXT (tessera's). Prints
// the count and exits 0 when every id agrees; else prints the first difference with its
// neighbourhood and exits 1.
const fs = require('fs');
const {TokenizerLoader} = require('@lenml/tokenizers');
const {readShard} = require('./shard.js');

const [dir, textPath, shardPath] = process.argv.slice(2);
const tok = TokenizerLoader.fromPreTrained({
  tokenizerJSON: JSON.parse(fs.readFileSync(dir + '/tokenizer.json', 'utf8')),
  tokenizerConfig: JSON.parse(fs.readFileSync(dir + '/tokenizer_config.json', 'utf8')),
});
const want = tok.encode(fs.readFileSync(textPath, 'utf8'), {add_special_tokens: false});

const got = readShard(shardPath);

let first = -1;
for (let i = 0; i < Math.max(got.length, want.length); ++i)
  if (got[i] !== want[i]) {
    first = i;
    break;
  }
if (first < 0) {
  console.log(`${textPath}: ${got.length} tokens, every id the reference's`);
  process.exit(0);
}
const around = (a) => JSON.stringify(a.slice(Math.max(0, first - 3), first + 5));
console.log(
    `${textPath}: ${got.length} tokens against the reference's ${want.length}; first ` +
    `difference at token ${first}: tessera ${around(got)}, reference ${around(want)}`);
process.exit(1);
