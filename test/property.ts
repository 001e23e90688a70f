/**
 * Settings for the fast-check properties, from the environment, so a failure can be replayed and
 * a run made longer without editing a test:
 *
 *   FC_RUNS=500 npm test -- src/payments/properties     more runs than the file's default
 *   FC_SEED=1234567 npm test -- src/sales/holds         replay the runs of a failed seed
 *
 * The seed is chosen here (or taken from FC_SEED) rather than by fast-check, and printed with the
 * command that replays it whenever a property fails.
 */
import fc from 'fast-check';

function integerFromEnv(name: string, value: string | undefined): number | undefined {
  if (value === undefined || value === '') return undefined;
  const parsed = Number(value);
  if (!Number.isSafeInteger(parsed)) throw new Error(`${name} must be an integer, got ${JSON.stringify(value)}`);
  return parsed;
}

export interface PropertySettings {
  numRuns: number;
  seed: number;
}

export function propertySettings(defaultRuns: number, env: NodeJS.ProcessEnv = process.env): PropertySettings {
  const numRuns = integerFromEnv('FC_RUNS', env.FC_RUNS) ?? defaultRuns;
  if (numRuns < 1) throw new Error(`FC_RUNS must be at least 1, got ${numRuns}`);
  // fast-check takes a 32-bit seed.
  const seed = integerFromEnv('FC_SEED', env.FC_SEED) ?? (Math.random() * 2 ** 31) | 0;
  return { numRuns, seed };
}

/** fc.assert with the settings above; on failure prints the seed and how to replay it. */
export async function assertProperty<Ts extends [unknown, ...unknown[]]>(
  name: string,
  property: fc.IAsyncPropertyWithHooks<Ts>,
  defaultRuns: number,
): Promise<void> {
  const settings = propertySettings(defaultRuns);
  try {
    await fc.assert(property, { ...settings, includeErrorInReport: true });
  } catch (error) {
    console.error(`# property "${name}" failed: replay with FC_SEED=${settings.seed} FC_RUNS=${settings.numRuns}`);
    throw error;
  }
}
