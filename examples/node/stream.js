#!/usr/bin/env node
// redis-qa streaming (QA.STREAM) from Node.js (node-redis): a typing effect on a miss, an
// instant hit.
//
//     npm ci                     # in examples/node
//     node stream.js [--host HOST] [--port PORT] [--cache NAME] [--readers N] [QUESTION]
//
// Host and port default to $REDIS_HOST / $REDIS_PORT, else 127.0.0.1:6379. The server needs
// the redis-qa module loaded with `qa.backend-url` set (see the project README).
//
// QUESTION is asked twice: a miss, whose answer is printed piece by piece as the model writes
// it (read from a Redis Stream with XREAD BLOCK), then a hit, whose answer comes whole at
// once. Then N clients (default 3) ask another question at the same moment: they share one
// backend call and read the same stream, each from its start.

'use strict';

const { createClient } = require('redis');

const READERS_QUESTION = 'How do I reset my password?';

// QA.STREAM's reply (a flat array over RESP2, a map over RESP3) as an object.
function asObject(reply) {
  if (!Array.isArray(reply)) return reply instanceof Map ? Object.fromEntries(reply) : reply;
  const out = {};
  for (let i = 0; i + 1 < reply.length; i += 2) out[String(reply[i])] = String(reply[i + 1]);
  return out;
}

// Calls onPiece(piece) for each piece of the answer (once on a hit); returns how it was
// served. Throws the error QA.GET would have replied if the call failed.
async function ask(client, cache, question, onPiece) {
  const reply = asObject(await client.sendCommand(['QA.STREAM', cache, question]));
  if ('answer' in reply) {
    onPiece(reply.answer);
    return reply.served;
  }
  const key = reply.stream;
  let last = '0'; // from the start: pieces written before we came
  for (;;) {
    const got = await client.sendCommand(['XREAD', 'BLOCK', '5000', 'STREAMS', key, last]);
    for (const [, entries] of got || []) {
      for (const [id, flat] of entries) {
        last = String(id);
        const fields = asObject(flat);
        if ('error' in fields) throw new Error(fields.error);
        if ('end' in fields) return reply.served; // finish reason (and token counts)
        onPiece(fields.text);
      }
    }
  }
}

async function show(client, cache, question) {
  const start = process.hrtime.bigint();
  const ms = () => Number(process.hrtime.bigint() - start) / 1e6;
  let first = null;
  let count = 0;
  process.stdout.write('A: ');
  const served = await ask(client, cache, question, (piece) => {
    if (first === null) first = ms();
    count += 1;
    process.stdout.write(piece); // the typing effect
  });
  const total = ms();
  process.stdout.write('\n');
  console.log(
    `   (${served}: first piece after ${first.toFixed(1)} ms, ${count} piece(s), ` +
      `whole answer after ${total.toFixed(1)} ms)`,
  );
}

async function readers(url, cache, n) {
  const clients = await Promise.all(
    Array.from({ length: n }, () => createClient({ url }).connect()),
  );
  try {
    const results = await Promise.all(
      clients.map(async (c) => {
        const pieces = [];
        const served = await ask(c, cache, READERS_QUESTION, (p) => pieces.push(p));
        return [served, pieces];
      }),
    );
    const served = results.map(([s]) => s).sort();
    const same = results.every(([, p]) => JSON.stringify(p) === JSON.stringify(results[0][1]));
    console.log(`Q: ${READERS_QUESTION} (${n} clients at once)`);
    console.log(`   served: ${served.join(', ')}`);
    console.log(`   identical pieces: ${same ? 'yes' : 'no'} (${results[0][1].length} pieces)`);
    console.log(`   answer: ${results[0][1].join('')}`);
  } finally {
    await Promise.all(clients.map((c) => c.quit()));
  }
}

function parseArgs(argv) {
  const a = {
    host: process.env.REDIS_HOST || '127.0.0.1',
    port: Number(process.env.REDIS_PORT || 6379),
    cache: 'faq',
    readers: 3,
    question: 'What is retrieval-augmented generation?',
  };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    if (['--host', '--port', '--cache', '--readers'].includes(flag)) {
      const v = argv[++i];
      a[flag.slice(2)] = flag === '--port' || flag === '--readers' ? Number(v) : v;
    } else {
      a.question = flag;
    }
  }
  return a;
}

async function main() {
  const a = parseArgs(process.argv.slice(2));
  const url = `redis://${a.host}:${a.port}`;
  const client = await createClient({ url }).connect();
  try {
    console.log(`Q: ${a.question}`);
    await show(client, a.cache, a.question); // a miss: typed as it arrives
    await show(client, a.cache, a.question); // a hit: at once
    await readers(url, a.cache, a.readers);
  } finally {
    await client.quit();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
