// Drives Satchel's page in headless Chromium (run by crates/satchel/tests/web.rs, which starts the
// server, makes the users and bundles, and checks the downloaded archive afterwards).
//
// Environment: PW_MODULES (node_modules holding playwright-core), BASE (http://127.0.0.1:PORT),
// LOGIN, PASSWORD, BUNDLES (comma-separated "name version" the page must list), OUT (artifacts
// directory: screenshots, the downloaded takeout), PROFILE (a fresh user-data dir).
// Prints one JSON line: {"download": path, "export": path, "checks": [...]}; exits non-zero on any failure.
import { createRequire } from 'node:module';
import path from 'node:path';

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set`);
  return v;
};
const require = createRequire(path.join(env('PW_MODULES'), 'noop.js'));
const { chromium } = require('playwright-core');

const base = env('BASE');
const out = env('OUT');
const checks = [];
const check = (cond, what) => {
  if (!cond) throw new Error(`check failed: ${what}`);
  checks.push(what);
};

const context = await chromium.launchPersistentContext(env('PROFILE'), {
  executablePath: '/usr/bin/chromium',
  headless: true,
  acceptDownloads: true,
  viewport: { width: 1280, height: 900 },
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--no-first-run'],
});
const problems = [];
try {
  const page = context.pages()[0] || (await context.newPage());
  page.setDefaultTimeout(30000);
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    // The wrong password's 401 and the short passphrase's 400 are logged by Chromium as failed
    // resource loads: expected.
    if (m.type() === 'error' && !/status of (401|400)/.test(m.text())) problems.push(`console: ${m.text()}`);
  });

  const r = await page.goto(base + '/');
  check(r.status() === 200, 'GET / answers 200');
  check(/default-src 'self'/.test(r.headers()['content-security-policy'] || ''), 'the page has its CSP');
  await page.getByRole('heading', { name: 'Log in' }).waitFor();

  // A wrong password: a clear message, and the login form stays.
  await page.getByLabel('Login').fill(env('LOGIN'));
  await page.getByLabel('Password', { exact: true }).fill('not-the-password');
  await page.getByRole('button', { name: 'Log in' }).click();
  const alert = page.locator('#login-error');
  await alert.waitFor({ state: 'visible' });
  check(/Wrong login or password/.test(await alert.textContent()), 'a wrong password shows a message');
  check(await page.locator('#login-view').isVisible(), 'the login form stays after a wrong password');
  await page.screenshot({ path: path.join(out, 'wrong-password.png'), fullPage: true });

  // Log in with the keyboard only: type, Tab to the password, Enter.
  await page.getByLabel('Login').focus();
  await page.keyboard.press('Control+A');
  await page.keyboard.type(env('LOGIN'));
  await page.keyboard.press('Tab');
  check(await page.evaluate(() => document.activeElement.id === 'password'), 'Tab goes from login to password');
  await page.keyboard.press('Control+A');
  await page.keyboard.type(env('PASSWORD'));
  await page.keyboard.press('Enter');
  await page.locator('#app-view').waitFor({ state: 'visible' });
  check(!(await page.locator('#login-view').isVisible()), 'the login form is gone once logged in');

  // The bundles are listed, with their names and versions.
  const bundles = page.locator('#bundles > li');
  for (const b of env('BUNDLES').split(',')) {
    await bundles.filter({ hasText: b }).first().waitFor();
  }
  check(true, 'the bundles are listed');
  await page.locator('#images > li').first().waitFor();
  check(await page.getByRole('button', { name: /^Export bundle / }).count() >= 1, 'bundles have Export buttons');

  // A takeout (zip): watch it reach 100 %, download it, delete it.
  await page.getByLabel('zip').check();
  // A too-short passphrase is refused with the server's message, then a good one is taken.
  await page.getByLabel('Passphrase for secrets (optional)').fill('short');
  await page.evaluate(() => document.getElementById('passphrase').removeAttribute('minlength'));
  await page.getByRole('button', { name: 'Start takeout' }).click();
  await page.locator('#takeout-error', { hasText: '8 to 1024' }).waitFor();
  await page.getByLabel('Passphrase for secrets (optional)').fill('a page passphrase 123');
  await page.getByRole('button', { name: 'Start takeout' }).click();
  const takeout = page.locator('#takeouts > li').first();
  await takeout.locator('.name').filter({ hasText: /^Takeout \d+ \(zip\)$/ }).waitFor();
  await takeout.locator('.pct', { hasText: '100 %' }).waitFor({ timeout: 60000 });
  check(await takeout.locator('progress').evaluate((p) => p.value) === 100, 'the progress bar reaches 100');
  const name = await takeout.locator('.name').textContent();
  await page.screenshot({ path: path.join(out, 'logged-in.png'), fullPage: true });

  const [download] = await Promise.all([
    page.waitForEvent('download'),
    page.getByRole('button', { name: `Download ${name}` }).click(),
  ]);
  check(download.url().includes('downloadId='), 'the download is a plain link with a one-time id');
  check(download.suggestedFilename().endsWith('.zip'), `the file is a .zip (${download.suggestedFilename()})`);
  const file = path.join(out, 'takeout.zip');
  await download.saveAs(file);
  check((await download.failure()) === null, 'the download completed');

  // The id was spent: the same link now refuses (410), without any credentials.
  const again = await context.request.get(download.url(), { failOnStatusCode: false });
  check(again.status() === 410, `the one-time id works once (then ${again.status()})`);

  await page.getByRole('button', { name: `Delete ${name}` }).click();
  await page.locator('#status', { hasText: `${name} was deleted.` }).waitFor();
  check(await page.locator('#takeouts > li', { hasText: name }).count() === 0, 'the deleted takeout is gone from the list');

  // A bundle export from its Export button: it appears under Exports, completes, downloads.
  await page.getByRole('button', { name: 'Export bundle alpha 1.0' }).click();
  const exp = page.locator('#exports > li', { hasText: 'alpha 1.0' }).first();
  await exp.locator('.pct', { hasText: '100 %' }).waitFor({ timeout: 60000 });
  const expName = await exp.locator('.name').textContent();
  const [expDownload] = await Promise.all([
    page.waitForEvent('download'),
    page.getByRole('button', { name: `Download ${expName}` }).click(),
  ]);
  check(expDownload.suggestedFilename().endsWith('.tar.gz'), `the export is a .tar.gz (${expDownload.suggestedFilename()})`);
  const exportFile = path.join(out, 'export.tar.gz');
  await expDownload.saveAs(exportFile);

  // Visible focus: a focused button has an outline.
  await page.getByRole('button', { name: 'Start takeout' }).focus();
  await page.keyboard.press('Shift+Tab');
  await page.keyboard.press('Tab');
  const outline = await page.evaluate(() => getComputedStyle(document.activeElement).outlineStyle);
  check(outline !== 'none', `the focused control shows a focus ring (${outline})`);

  // Phone width: nothing wider than the screen.
  await page.setViewportSize({ width: 375, height: 812 });
  const width = await page.evaluate(() => document.documentElement.scrollWidth);
  check(width <= 375, `no horizontal scrolling at 375 px (content is ${width} px)`);
  await page.screenshot({ path: path.join(out, 'phone-375.png'), fullPage: true });

  check(problems.length === 0, `no script errors or CSP violations (${problems.join('; ')})`);
  console.log(JSON.stringify({ download: file, export: exportFile, checks }));
} finally {
  await context.close();
}
