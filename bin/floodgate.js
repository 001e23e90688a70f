#!/usr/bin/env node
// Runs the TypeScript CLI through tsx, so `npx floodgate ...` works without a build step.
// The shebang stays plain (`env -S`, which would pass it a flag, is not in every system's env), so
// a server started through it runs without SERVER_NODE_FLAGS (src/platform/node-flags.ts)
// unless NODE_OPTIONS carries them; the project's own launchers pass them to node.
import { register } from 'tsx/esm/api';

register();
await import('../src/cli/main.ts');
