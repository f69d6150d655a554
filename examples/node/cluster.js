#!/usr/bin/env node
// redis-qa on Redis Cluster from Node.js (node-redis's cluster client): QA.GET routed by the
// cache name.
//
//     npm ci                     # in examples/node
//     node cluster.js [--host HOST] [--port PORT] [--cache NAME]... [QUESTION]
//
// HOST:PORT is any node of the cluster (default $REDIS_HOST / $REDIS_PORT, else
// 127.0.0.1:7000); every node needs the module loaded with `qa.backend-url` set. Caches
// default to faq, support and billing.
//
// The cache name is QA.GET's key, and a cache's entries (`qa:{<cache>}:...`) hash to the
// cache name's slot, so the whole cache lives on one node. A cluster client cannot know the
// key of a command it has no definition for: pass it as sendCommand's first argument
// (`firstKey`), and the client sends QA.GET straight to the node owning that slot. Pass
// `isReadonly` false: a miss writes the answer, so it must go to the primary.

'use strict';

const { createCluster } = require('redis');

async function qaGet(cluster, cache, question) {
  return cluster.sendCommand(cache, false, ['QA.GET', cache, question]);
}

// [hits, misses] from INFO qa of one node.
async function qaCounters(client) {
  const info = await client.info('qa');
  const field = (name) => Number(info.match(new RegExp(`^qa_${name}:(\\d+)`, 'm'))[1]);
  return [field('hits'), field('misses')];
}

function parseArgs(argv) {
  const args = {
    host: process.env.REDIS_HOST || '127.0.0.1',
    port: Number(process.env.REDIS_PORT || 7000),
    caches: [],
    question: 'What is our refund policy?',
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--host') args.host = argv[++i];
    else if (a === '--port') args.port = Number(argv[++i]);
    else if (a === '--cache') args.caches.push(argv[++i]);
    else args.question = a;
  }
  if (args.caches.length === 0) args.caches = ['faq', 'support', 'billing'];
  return args;
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  // One node is enough: the client discovers the others (CLUSTER SLOTS).
  const cluster = createCluster({
    rootNodes: [{ socket: { host: args.host, port: args.port, connectTimeout: 2000 } }],
  });
  cluster.on('error', (e) => console.error(`cluster error: ${e.message}`));
  await cluster.connect();
  try {
    console.log(`Q: ${args.question}`);
    for (const cache of args.caches) {
      // Only to show where the cache lives: its slot and the primary that owns it.
      const slot = await cluster.sendCommand(cache, true, ['CLUSTER', 'KEYSLOT', cache]);
      const owner = cluster.slots[slot].master;
      const node = await cluster.nodeClient(owner);
      console.log(`cache '${cache}': slot ${slot} on ${owner.host}:${owner.port}`);
      for (const attempt of ['first', 'second']) {
        const before = await qaCounters(node);
        const start = performance.now();
        const answer = await qaGet(cluster, cache, args.question);
        const ms = performance.now() - start;
        const after = await qaCounters(node);
        let how = 'not counted on the owner';
        if (after[0] > before[0]) how = 'cache hit';
        else if (after[1] > before[1]) how = 'cache miss (LLM called)';
        console.log(`  ${attempt} ask: ${ms.toFixed(1).padStart(8)} ms  ${how}`);
        console.log(`    A: ${answer}`);
      }
    }
  } finally {
    await cluster.close();
  }
}

main().catch((e) => {
  console.error(`error: ${e.message}`);
  process.exit(1);
});
