// The token ids of a shard (src/data/shard.h) for the reference scripts: 256 int32 of header
// (magic, version, count), then the tokens, uint16 or uint32 by the magic.
//   const {readShard} = require('./shard.js');  readShard('out/train_000.bin')  // [ids]
const fs = require('fs');

function readShard(path) {
  const shard = fs.readFileSync(path);
  const magic = shard.readInt32LE(0), count = shard.readInt32LE(8);
  const wide = magic === 20240801;
  const ids = [];
  for (let i = 0; i < count; ++i)
    ids.push(wide ? shard.readUInt32LE(1024 + 4 * i) : shard.readUInt16LE(1024 + 2 * i));
  return ids;
}

module.exports = {readShard};
