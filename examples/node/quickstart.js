#!/usr/bin/env node
// redis-qa from Node.js (node-redis): ask the same question twice through QA.GET and time
// both calls.
//
//     npm ci                     # in examples/node
//     node quickstart.js [--host HOST] [--port PORT] [--cache NAME] [QUESTION]
//
// Host and port default to $REDIS_HOST / $REDIS_PORT, else 127.0.0.1:6379. The server needs
// the redis-qa module loaded with `qa.backend-url` set (see the project README; the bundled
// demo backend works: `target/release/examples/demo_backend 127.0.0.1:8089 2000`).
//
// The first call is a cache miss (Redis asks the LLM backend and stores the answer), the
// second a hit served from Redis. If Redis cannot be reached, `ask` falls back to calling
// the LLM directly, so the application keeps working without the cache. Errors that Redis
// itself replies (ErrorReply, e.g. "ERR question is empty") are thrown: Redis is up, so
// falling back would hide the problem.

'use strict';

const { createClient, ErrorReply } = require('redis');

function callLlmDirectly(question) {
  // STUB: replace with your real LLM call (OpenAI SDK, fetch, ...). It only runs when Redis
  // is unreachable, so the cache is an optimisation, not a dependency.
  return `(stub answer, LLM called directly) ${question}`;
}

// Returns [answer, path]: path is "redis", or "direct" when Redis was unreachable.
async function ask(client, cache, question) {
  if (client === null) {
    return [callLlmDirectly(question), 'direct'];
  }
  try {
    // Modules' commands go through sendCommand; the reply is the answer, a string.
    return [await client.sendCommand(['QA.GET', cache, question]), 'redis'];
  } catch (e) {
    if (e instanceof ErrorReply) throw e;
    console.log(`  redis unreachable (${e.message}); calling the LLM directly`);
    return [callLlmDirectly(question), 'direct'];
  }
}

// [hits, misses] from INFO qa (server-wide), or null if they cannot be read.
async function qaCounters(client) {
  try {
    const info = await client.info('qa');
    const field = (name) => Number(info.match(new RegExp(`^qa_${name}:(\\d+)`, 'm'))[1]);
    return [field('hits'), field('misses')];
  } catch {
    return null;
  }
}

function parseArgs(argv) {
  const args = {
    host: process.env.REDIS_HOST || '127.0.0.1',
    port: Number(process.env.REDIS_PORT || 6379),
    cache: 'faq',
    question: 'What is our refund policy?',
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--host') args.host = argv[++i];
    else if (a === '--port') args.port = Number(argv[++i]);
    else if (a === '--cache') args.cache = argv[++i];
    else args.question = a;
  }
  return args;
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  // One client is one connection: commands sent while a miss waits for the LLM queue behind
  // it. For concurrent asks, use several clients (or createClientPool).
  const client = createClient({
    socket: {
      host: args.host,
      port: args.port,
      connectTimeout: 2000,
      // No socket timeout: a miss waits for the LLM (up to the module's qa.timeout-ms).
      // Fail fast instead of reconnecting forever, so an unreachable Redis falls back at once.
      reconnectStrategy: false,
    },
  });
  client.on('error', () => {}); // failures surface as rejected commands instead
  let conn = client;
  try {
    await client.connect();
  } catch (e) {
    console.log(`  redis unreachable (${e.message}); calling the LLM directly`);
    conn = null;
  }

  console.log(`redis ${args.host}:${args.port}, cache '${args.cache}'`);
  console.log(`Q: ${args.question}`);
  try {
    for (const attempt of ['first', 'second']) {
      const before = conn && (await qaCounters(conn));
      const start = performance.now();
      const [answer, path] = await ask(conn, args.cache, args.question);
      const ms = performance.now() - start;
      const after = path === 'redis' ? await qaCounters(conn) : null;
      let how = 'redis';
      if (path === 'direct') how = 'direct LLM call (no cache)';
      else if (before && after && after[0] > before[0]) how = 'redis, cache hit';
      else if (before && after && after[1] > before[1]) how = 'redis, cache miss (LLM called)';
      console.log(`${attempt} ask: ${ms.toFixed(1).padStart(8)} ms  via ${how}`);
      console.log(`  A: ${answer}`);
    }
  } finally {
    if (conn) await conn.close();
  }
}

main().catch((e) => {
  console.error(`error: ${e.message}`);
  process.exit(1);
});
