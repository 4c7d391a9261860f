// Drive the Airflow 3 UI in Debian's headless Chromium (playwright-core, no browser download).
//
//   node tests/ui/airflow_ui.mjs '<json>'
//   json: {base, user, password, dagId, runId, taskId, labels: ["dev001/s1", ...], screenshot}
//
// Logs in through the simple auth manager's form, opens the DAG, finds the run in
// its Runs tab, opens the mapped task's list of mapped instances and waits until
// every expected map-index label is shown; saves a screenshot. Prints one JSON
// line ({ok, steps, labelsFound, missing, url, screenshot}) and exits 0 only if
// every label was found. Waits are for elements, never fixed sleeps.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

const cfg = JSON.parse(process.argv[2]);
const timeout = cfg.timeoutMs ?? 30000;
const steps = [];
const step = (name) => { steps.push({ name, t: Date.now() }); };
const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'chromium-profile-'));
const result = { ok: false, steps, labelsFound: [], missing: [...cfg.labels], url: null, screenshot: cfg.screenshot };

const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: cfg.executablePath ?? '/usr/bin/chromium',
  headless: true,
  // PLATFORM-NOTES: the flags Debian's chromium needs here (--headless is added by playwright).
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
         '--disable-component-update', '--disable-sync'],
  viewport: { width: 1440, height: 1000 },
});
const page = context.pages()[0] ?? await context.newPage();
page.setDefaultTimeout(timeout);
try {
  // 1. Log in (simple auth manager form), landing back on the UI.
  await page.goto(`${cfg.base}/`);
  await page.getByLabel('Username').fill(cfg.user);
  await page.getByLabel('Password').fill(cfg.password);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.waitForURL((url) => !url.pathname.startsWith('/auth/'));
  step('logged in');

  // 2. The DAG's page, then its Runs tab: the run must be listed and successful.
  await page.goto(`${cfg.base}/dags/${encodeURIComponent(cfg.dagId)}`);
  await page.getByRole('heading', { name: cfg.dagId }).first().waitFor();
  step('dag page');
  await page.goto(`${cfg.base}/dags/${encodeURIComponent(cfg.dagId)}/runs`);
  const runLink = page.getByRole('link', { name: cfg.runId, exact: true }).first();
  await runLink.waitFor();
  step('run listed');
  await runLink.click();
  await page.waitForURL((url) => url.pathname.includes(`/runs/${encodeURIComponent(cfg.runId)}`) || url.pathname.includes(`/runs/${cfg.runId}`));
  await page.getByText(/success/i).first().waitFor();
  step('run page');

  // 3. The mapped task's instances: every device/sensor label shown.
  await page.goto(`${cfg.base}/dags/${encodeURIComponent(cfg.dagId)}/runs/${encodeURIComponent(cfg.runId)}/tasks/${encodeURIComponent(cfg.taskId)}/mapped`);
  for (const label of cfg.labels) {
    try {
      await page.getByText(label, { exact: true }).first().waitFor();
      result.labelsFound.push(label);
    } catch (err) {
      // keep looking for the others so the report names every missing label
    }
  }
  result.missing = cfg.labels.filter((l) => !result.labelsFound.includes(l));
  step('mapped instances');
  result.ok = result.missing.length === 0;
} catch (err) {
  result.error = String(err && err.message || err).split('\n').slice(0, 6).join('\n');
} finally {
  result.url = page.url();
  fs.mkdirSync(path.dirname(cfg.screenshot), { recursive: true });
  await page.screenshot({ path: cfg.screenshot, fullPage: true }).catch(() => {});
  await context.close();
  fs.rmSync(userDataDir, { recursive: true, force: true });
}
console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : 1);
