/**
 * Debian's Chromium driven by playwright-core for the hosted page's browser tests: headless,
 * no sandbox (tests run as root), background networking, component updates and sync off, so
 * the browser itself makes no request to anywhere. playwright-core never downloads a browser;
 * each launch gets a fresh temporary --user-data-dir of its own.
 *
 * Without Chromium the tests are skipped with a message, except under CI=true, where a missing
 * browser is a failure (.ci/run installs it).
 */
import { existsSync } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import { after } from 'node:test';
import { type Browser, type BrowserContext, chromium, type Page } from 'playwright-core';

export const CHROMIUM_PATH = process.env.FLOODGATE_CHROMIUM_PATH || '/usr/bin/chromium';
const CHROMIUM_ARGS = ['--no-sandbox', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'];

/** For node:test's skip option: false when Chromium is there; under CI=true its absence throws. */
export function chromiumSkip(): string | false {
  if (existsSync(CHROMIUM_PATH)) return false;
  const message = `Chromium not found at ${CHROMIUM_PATH} (apt-get install chromium)`;
  if (process.env.CI === 'true') throw new Error(`${message}: CI must run the browser tests`);
  console.log(`# skipped: ${message}`);
  return `skipped: ${message}`;
}

export const ARTIFACTS_DIR = path.resolve(import.meta.dirname, '..', '..', 'test-artifacts', 'hosted');

export const VIEWPORTS = {
  phone: { viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true },
  desktop: { viewport: { width: 1280, height: 800 } },
} as const;

export async function launchBrowser(): Promise<Browser> {
  const browser = await chromium.launch({ executablePath: CHROMIUM_PATH, headless: true, args: CHROMIUM_ARGS });
  after(() => browser.close());
  await mkdir(ARTIFACTS_DIR, { recursive: true });
  return browser;
}

export interface WatchedPage {
  page: Page;
  context: BrowserContext;
  /** Every URL the page requested. */
  requests: string[];
  /** Console errors, CSP violations among them. */
  errors: string[];
}

export async function openPage(browser: Browser, viewport: keyof typeof VIEWPORTS = 'desktop'): Promise<WatchedPage> {
  const context = await browser.newContext({ ...VIEWPORTS[viewport] });
  context.setDefaultTimeout(10_000);
  const page = await context.newPage();
  const watched: WatchedPage = { page, context, requests: [], errors: [] };
  page.on('request', (request) => watched.requests.push(request.url()));
  page.on('console', (message) => {
    if (message.type() === 'error') watched.errors.push(message.text());
  });
  page.on('pageerror', (error) => watched.errors.push(String(error)));
  return watched;
}

export async function screenshot(page: Page, name: string): Promise<void> {
  await page.screenshot({ path: path.join(ARTIFACTS_DIR, `${name}.png`), fullPage: true });
}

let axeSource: string | undefined;

/** Runs axe-core in the page; returns the serious and critical violations. */
export async function seriousViolations(page: Page): Promise<{ id: string; impact: string; help: string; nodes: number }[]> {
  axeSource ??= await readFile(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');
  // Evaluated over the DevTools protocol, which the page's CSP does not govern (a script tag would be refused).
  await page.evaluate(axeSource);
  const results = await page.evaluate(`(async () => {
    const found = await axe.run(document, { resultTypes: ['violations'] });
    return found.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.length }));
  })()`);
  return (results as { id: string; impact: string; help: string; nodes: number }[]).filter(
    (violation) => violation.impact === 'serious' || violation.impact === 'critical',
  );
}
