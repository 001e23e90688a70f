/** The dashboard's browser tests: Chromium as every browser test runs it (test/browser.ts). */
import type { Browser, Page } from 'playwright-core';
import { artifactsDir, chromiumSkip, launchChromium, screenshotInto } from '../browser.js';

export { chromiumSkip };
export const ARTIFACTS_DIR = artifactsDir('dashboard');

export function launchBrowser(): Promise<Browser> {
  return launchChromium();
}

export function screenshot(page: Page, name: string): Promise<string> {
  return screenshotInto(ARTIFACTS_DIR, page, name);
}
