/**
 * The Node.js flags Floodgate's long-running processes (`start`, `api`, `worker`) run with.
 * Node takes them on its command line only, so every launcher of the project's passes them:
 * `npm start`, the Kubernetes manifests, the local cluster's daemons, the drill's own
 * deployment and the bench (node-flags.test.ts checks the files that cannot import this list).
 * `bin/floodgate.js` (`npx floodgate`) keeps a plain shebang; a launcher of an operator's own,
 * or that one, sets them in NODE_OPTIONS.
 *
 * `--max-semi-space-size=64`: a request allocates a few short-lived objects per step (its
 * parsed body, its context, its statement's values), and V8 collects the young generation each
 * time its semi-space fills, by default at 16 MB. With 64 MB it collects less often: the
 * garbage collector's share of the API's CPU in the bench's hold crowd phase fell from 7.0%
 * to 3.5%, and the API's peak memory rose from 266 to 361 MB (bench/README.md, the fourteenth
 * session; the Kubernetes manifests limit the API to 512 Mi).
 */
export const SERVER_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=64'];
