import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ExecutionContext } from 'ava';
import puppeteer, { type Browser, type Page } from 'puppeteer-core';

/** Debian's chromium (scripts/ensure-system-packages.mjs test installs it). */
export const CHROMIUM = '/usr/bin/chromium';
/** Where screenshots go (gitignored); the test prints each path. */
export const ARTIFACTS = fileURLToPath(new URL('../../test-artifacts/ui/', import.meta.url));

/** A headless chromium for this test, closed with it. */
export async function openBrowser(t: ExecutionContext): Promise<Browser> {
  const browser = await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-dev-shm-usage'],
    protocolTimeout: 120_000,
  });
  t.teardown(() => browser.close());
  return browser;
}

/** Saves a screenshot of the whole page under test-artifacts/ui/ and logs its path. */
export async function screenshot(t: ExecutionContext, page: Page, name: string): Promise<string> {
  mkdirSync(ARTIFACTS, { recursive: true });
  const path = join(ARTIFACTS, `${name}.png`);
  await page.screenshot({ path: path as `${string}.png`, fullPage: true });
  t.log(`screenshot: ${path}`);
  return path;
}
