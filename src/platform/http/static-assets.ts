/**
 * Static files served under content-hashed names with a year's cache lifetime: a changed file
 * gets a new name, so a browser never needs to ask again for the one it has. Files are read
 * and compressed once at start (they are small: a page's script and style sheet), and served
 * gzip- or brotli-encoded when the browser accepts it.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { brotliCompressSync, constants, gzipSync } from 'node:zlib';
import type { FastifyInstance } from 'fastify';
import { sha256 } from '../crypto/sha256.js';

export interface StaticAsset {
  /** The file's name as given, e.g. `hosted.js`. */
  name: string;
  /** Where pages link it: `<prefix>/<stem>.<hash>.<ext>`. */
  url: string;
  /** For a Subresource Integrity attribute and a CSP hash, `sha256-...`. */
  integrity: string;
  type: string;
  body: Buffer;
  gzip: Buffer;
  brotli: Buffer;
}

const TYPES: Record<string, string> = {
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
};
// Long enough that a browser never asks again: the name changes when the content does.
const IMMUTABLE = 'public, max-age=31536000, immutable';
const HASH_LENGTH = 12;

/** Reads and fingerprints `files` (names inside `dir`), to be served under `prefix`. */
export async function loadStaticAssets(dir: string, files: string[], prefix: string): Promise<Map<string, StaticAsset>> {
  const assets = new Map<string, StaticAsset>();
  for (const name of files) {
    const body = await readFile(path.join(dir, name));
    const ext = path.extname(name);
    const type = TYPES[ext];
    if (!type) throw new Error(`no content type for static file ${name}`);
    const hash = sha256(body);
    const stem = name.slice(0, -ext.length);
    assets.set(name, {
      name,
      url: `${prefix}/${stem}.${hash.toString('hex').slice(0, HASH_LENGTH)}${ext}`,
      integrity: `sha256-${hash.toString('base64')}`,
      type,
      body,
      gzip: gzipSync(body, { level: 9 }),
      brotli: brotliCompressSync(body, { params: { [constants.BROTLI_PARAM_QUALITY]: 11 } }),
    });
  }
  return assets;
}

/** Serves each asset at its hashed URL; any other name under the prefix is a 404. */
export function serveStaticAssets(app: FastifyInstance, assets: Map<string, StaticAsset>): void {
  for (const asset of assets.values()) {
    app.get(asset.url, { schema: { hide: true } }, async (request, reply) => {
      const accepts = String(request.headers['accept-encoding'] ?? '');
      reply.header('content-type', asset.type).header('cache-control', IMMUTABLE).header('vary', 'accept-encoding');
      reply.header('x-content-type-options', 'nosniff');
      if (/\bbr\b/.test(accepts)) return reply.header('content-encoding', 'br').send(asset.brotli);
      if (/\bgzip\b/.test(accepts)) return reply.header('content-encoding', 'gzip').send(asset.gzip);
      return reply.send(asset.body);
    });
  }
}
