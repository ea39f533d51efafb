#!/usr/bin/env node
// Saves a screenshot of a running mesh view (causeway ui, or the one `npm run demo`
// prints) with Debian's chromium: the README's docs/images/mesh-view.png.
// Usage: node scripts/mesh-view-screenshot.mjs URL [OUT.png]
import puppeteer from 'puppeteer-core';

const [url, out = 'docs/images/mesh-view.png'] = process.argv.slice(2);
if (!url) {
  process.stderr.write('usage: node scripts/mesh-view-screenshot.mjs URL [OUT.png]\n');
  process.exit(2);
}
const browser = await puppeteer.launch({ executablePath: '/usr/bin/chromium', headless: true, args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking'] });
try {
  const page = await browser.newPage();
  await page.setViewport({ width: 1280, height: 900 });
  await page.goto(url, { waitUntil: 'domcontentloaded', timeout: 60_000 });
  // Drawn once the first view arrived over /api/events.
  await page.waitForFunction("document.querySelectorAll('#links tr[data-link]').length > 0", { timeout: 60_000 });
  await new Promise((r) => setTimeout(r, 1500));
  await page.screenshot({ path: out, fullPage: true });
  process.stdout.write(`${out}\n`);
} finally {
  await browser.close();
}
