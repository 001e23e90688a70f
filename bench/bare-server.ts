/**
 * The reference for cached sale reads: a minimal Fastify server, in its own process, whose one
 * route answers GET /v1/sales/:id with the very bytes (body, ETag, Cache-Control, content
 * type) the API answered. No auth, no hooks, no cache lookup, no logger: what the read costs
 * on the same framework when everything Floodgate adds is taken away.
 *
 * Forked by bench/surge.ts; it sends { port, body, etag, cacheControl } and gets 'ready' back.
 */
import Fastify from 'fastify';

interface Setup {
  port: number;
  body: string;
  etag: string;
  cacheControl: string;
}

process.once('message', async (setup: Setup) => {
  const app = Fastify({ logger: false });
  app.get('/v1/sales/:id', (_request, reply) => {
    reply.header('etag', setup.etag).header('cache-control', setup.cacheControl).type('application/json; charset=utf-8').send(setup.body);
  });
  await app.listen({ host: '127.0.0.1', port: setup.port });
  process.send?.('ready');
});
process.on('disconnect', () => process.exit(0));
