/**
 * Debian's Chromium driven by playwright-core, for every browser test (the hosted sale page,
 * the operator dashboard): headless, no sandbox (tests run as root), background networking,
 * component updates and sync off, so the browser itself makes no request to anywhere.
 * playwright-core never downloads a browser; each launch gets a fresh temporary profile.
 *
 * Without Chromium the tests are skipped with a message, except under CI=true, where a missing
 * browser is a failure (.ci/run installs it).
 */
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { type Browser, chromium, type Page } from 'playwright-core';
import { binarySkip } from './engines.js';

export const CHROMIUM_PATH = process.env.FLOODGATE_CHROMIUM_PATH || '/usr/bin/chromium';

const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-default-apps',
  '--disable-extensions',
  '--disable-sync',
  '--disable-dev-shm-usage',
  '--disable-gpu',
  '--no-first-run',
  '--metrics-recording-only',
];

/** For node:test's skip option: false when Chromium is there; under CI=true its absence throws. */
export const chromiumSkip = (): string | false => binarySkip(CHROMIUM_PATH);

export function launchChromium(): Promise<Browser> {
  return chromium.launch({ executablePath: CHROMIUM_PATH, headless: true, args: CHROMIUM_ARGS, timeout: 60_000 });
}

/** Where a suite keeps its screenshots (gitignored), for a person to look at after the run. */
export function artifactsDir(suite: string): string {
  return path.resolve(import.meta.dirname, '..', 'test-artifacts', suite);
}

export async function screenshotInto(dir: string, page: Page, name: string): Promise<string> {
  await mkdir(dir, { recursive: true });
  const file = path.join(dir, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  return file;
}
