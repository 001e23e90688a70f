/**
 * The Node.js flags Floodgate's long-running processes (`start`, `api`, `worker`) run with.
 * Node takes them on its command line only, so every launcher of the project's passes them:
 * `npm start`, the Kubernetes manifests, the local cluster's daemons, the drill's own
 * deployment and the bench (node-flags.test.ts checks the files that cannot import this list).
 * `bin/floodgate.js` (`npx floodgate`) keeps a plain shebang; a launcher of an operator's own,
 * or that one, passes them on Node's command line (NODE_OPTIONS takes the first, not the second).
 *
 * `--max-semi-space-size=64`: a request allocates a few short-lived objects per step (its
 * parsed body, its context, its statement's values), and V8 collects the young generation each
 * time its semi-space fills, by default at 16 MB. With 64 MB it collects less often: the
 * garbage collector's share of the API's CPU in the bench's hold crowd phase fell from 7.0%
 * to 3.5%, and the API's peak memory rose from 266 to 361 MB (bench/README.md, the fourteenth
 * session; the Kubernetes manifests limit the API to 512 Mi).
 *
 * `--no-allocation-site-pretenuring`: V8 watches how many objects of each allocation site
 * survive a young collection and, past a threshold, allocates that site's objects straight in
 * the old generation. Such objects die in the old generation, where only a full collection
 * frees them, and until then they keep the young objects they point to alive through every
 * young collection, which copies and then promotes those too. In the bench's hold phases each
 * young collection promoted 1.45 MB and paused the API for a median of 9 ms; without
 * pretenuring, 0.10 MB and 5 ms (bench/README.md, the twenty-sixth session; the hold p99's own
 * gain was within the machine's swings in two pairs of full runs). Node refuses this flag in
 * NODE_OPTIONS: it goes on the command line only.
 *
 * `--min-semi-space-size=64` and `--no-memory-reducer`: the young generation stays at its full
 * size, and the heap is not shrunk when the process goes quiet. A sale opens after a lull, and by
 * default V8 gives back what the process grew to during the lull (the memory reducer, about 8 to
 * 50 s after allocation slows; the first young collection after a lull shrinks the young
 * generation too), so the surge's first seconds map the same memory again: one page fault per
 * 4 KB, about 11 µs each on the VMs of the twenty-eighth session's runs (1.4-1.6 µs on the
 * twenty-ninth's). A worker draining a backlog after a lull
 * took 2.4 faults per delivery (median of five rounds) and 1.26 with these flags, and its CPU per
 * delivery fell to match (bench/README.md, the twenty-eighth session). The price is memory the
 * process keeps through a lull: the young generation's 128 MB once touched, and the old
 * generation at its last peak (320-350 MB a process in the bench; the Kubernetes manifests
 * request 384 Mi). Node refuses both in NODE_OPTIONS.
 */
export const SERVER_NODE_FLAGS: readonly string[] = [
  '--max-semi-space-size=64',
  '--min-semi-space-size=64',
  '--no-memory-reducer',
  '--no-allocation-site-pretenuring',
];
