import { openRedis } from './src/platform/redis/client.js';
import { startRedisCluster } from './test/redis-cluster.js';
const cluster = await startRedisCluster({ masters: 3, replicasPerMaster: 1 });
const t0 = Date.now();
try {
  const redis = await openRedis({ url: cluster.url, keyPrefix: 'x:', log: { warn: (o: unknown, m: string) => console.log('WARN', m), info() {} } });
  const master = await cluster.masterOf('x:{sale1}:q');
  let killedAt = 0;
  for (let i = 0; i < 120; i++) {
    if (i === 10) { cluster.kill(master); killedAt = Date.now(); console.log('killed', master.port); }
    const s = Date.now();
    try { await redis.client.incr('{sale1}:q'); console.log(i, Date.now() - t0, 'ok', Date.now() - s, 'ms'); }
    catch (e) { console.log(i, Date.now() - t0, 'ERR', Date.now() - s, 'ms', (e as Error).name, (e as Error).message.slice(0, 100)); }
    await new Promise((r) => setTimeout(r, 100));
  }
  console.log('closing');
  await redis.close();
  console.log('closed');
} finally { await cluster.stop(); }
