/**
 * The hosted page's browser tests: Chromium as every browser test runs it (test/browser.ts),
 * pages watched for their requests and console errors, and axe-core for accessibility.
 */
import { mkdir, readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { after } from 'node:test';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { artifactsDir, CHROMIUM_PATH, chromiumSkip, launchChromium, screenshotInto } from '../browser.js';

export { CHROMIUM_PATH, chromiumSkip };
export const ARTIFACTS_DIR = artifactsDir('hosted');

export const VIEWPORTS = {
  phone: { viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true },
  desktop: { viewport: { width: 1280, height: 800 } },
} as const;

export async function launchBrowser(): Promise<Browser> {
  const browser = await launchChromium();
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
  await screenshotInto(ARTIFACTS_DIR, page, name);
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
