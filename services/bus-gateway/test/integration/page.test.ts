import { mkdir } from 'node:fs/promises';
import { resolve } from 'node:path';
import { StateKeys } from '@aico-update/shared';
import { launchChromium, waitUntil } from '@aico-update/shared/testing';
import { Redis } from 'ioredis';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type BusStack, CONTROL_TOKEN, startBusStack } from '../support/stack.ts';

/*
 * The operator's page in a real headless Chromium (Debian's), against the whole system (support/stack.ts):
 * login with the token, installed and available versions, a click that installs with every step shown
 * live, a broken release's rollback and quarantine, a scheduled install cancelled; no request leaves the
 * machine. Screenshots of the main views at desktop and phone widths go to test/screenshots/.
 */

let stack: BusStack;
let redis: Redis;
let browser: Browser;
let page: Page;
let base: string;
const requests: string[] = [];
const shots = resolve(import.meta.dirname, '../../../../test/screenshots');

beforeAll(async () => {
  stack = await startBusStack({ installerEnv: { AICO_INSTALLER_BACKUP_PATHS: 'backend=/data' } });
  redis = new Redis(stack.redis.url, { maxRetriesPerRequest: null });
  base = stack.api.replace('/api/v1', '');
  await stack.publishBackend('1.1.0', { notes: 'Remembers more of what you said' });
  await mkdir(shots, { recursive: true });
  browser = await launchChromium();
  page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.on('request', (request) => void requests.push(request.url()));
}, 180_000);

afterAll(async () => {
  await browser?.close();
  redis?.disconnect();
  await stack?.stop();
});

/** A datetime-local input's value for a time (the browser's local time, as the page reads it). */
function localValue(date: Date): string {
  const pad = (n: number) => String(n).padStart(2, '0');
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T${pad(date.getHours())}:${pad(date.getMinutes())}`;
}

const shot = (name: string) => page.screenshot({ path: `${shots}/${name}.png`, fullPage: true });
const downloaded = (version: string) =>
  waitUntil(
    () => redis.hget(StateKeys.downloaded, `backend@${version}`),
    `backend ${version} downloaded`,
    60_000,
  );

async function checkNow(version: string) {
  await page.getByRole('button', { name: 'Check now' }).click();
  await page.getByTestId('available-backend').filter({ hasText: version }).waitFor({ timeout: 30_000 });
}

/** Preview (the dry run in the dialog), then confirm the install that stops the backend. */
async function installFromPage(version: string) {
  await page.getByRole('button', { name: `Preview and install ${version}` }).click({ timeout: 30_000 });
  const dialog = page.getByRole('dialog');
  await dialog.getByTestId('plan').waitFor({ timeout: 30_000 });
  return dialog;
}

describe('the operator’s page', () => {
  it('refuses a wrong token; with the right one shows the installed and the available version', async () => {
    await page.goto(`${base}/`);
    await page.getByLabel('Control token').fill('not-the-token-0000000000');
    await page.getByRole('button', { name: 'Log in' }).click();
    await expect.poll(() => page.getByTestId('login-error').textContent()).toMatch(/That token was refused/);
    expect(await page.evaluate(() => sessionStorage.getItem('aico-update-token'))).toBeNull();

    await page.getByLabel('Control token').fill(CONTROL_TOKEN);
    await page.getByRole('button', { name: 'Log in' }).click();
    await page.getByTestId('installed-backend').waitFor();
    expect(await page.getByTestId('installed-backend').textContent()).toBe('1.0.0');
    // The token stays in the tab's session, never in the address.
    expect(page.url()).toBe(`${base}/`);
    expect(await page.evaluate(() => sessionStorage.getItem('aico-update-token'))).toBe(CONTROL_TOKEN);

    await checkNow('1.1.0');
    expect(await page.getByText('Remembers more of what you said').count()).toBe(1);
    await downloaded('1.1.0');
    await page.getByRole('button', { name: 'Preview and install 1.1.0' }).waitFor({ timeout: 30_000 });
    await shot('now-desktop');
  });

  it('a click installs the release, showing its plan first, then each step live and the outcome', async () => {
    const dialog = await installFromPage('1.1.0');
    expect(await dialog.textContent()).toMatch(/1\.0\.0 → 1\.1\.0/);
    expect(await dialog.textContent()).toMatch(/Backs up \/data/);
    await shot('install-preview-desktop');
    await dialog.getByRole('button', { name: 'Install now (stops backend)' }).click();
    await page.getByTestId('live-steps').getByText('health-gate backend').waitFor({ timeout: 60_000 });
    await expect
      .poll(() => page.getByTestId('live-outcome').textContent(), { timeout: 90_000 })
      .toMatch(/backend 1\.1\.0: installed/);
    const steps = await page.getByTestId('live-steps').locator('li').allTextContents();
    expect(steps.map((s) => s.split(' — ')[0])).toEqual([
      'check-disk',
      'check-healthy backend',
      'load-image backend',
      'prepare',
      'backup',
      'swap backend',
      'health-gate backend',
      'commit backend',
    ]);
    await expect
      .poll(() => page.getByTestId('installed-backend').textContent(), { timeout: 20_000 })
      .toBe('1.1.0');
    expect(await stack.deployment.version()).toBe('1.1.0');
  });

  it('a broken release is rolled back: the page shows why, and the release as quarantined', async () => {
    await stack.publishBackend('1.2.0', { behaviour: 'unhealthy' });
    await waitUntil(
      async () => {
        await page.getByRole('button', { name: 'Check now' }).click();
        return (
          (await page.getByTestId('available-backend').textContent({ timeout: 5000 })) === '1.2.0' ||
          undefined
        );
      },
      'the page to show 1.2.0',
      60_000,
      2000,
    );
    await downloaded('1.2.0');
    const dialog = await installFromPage('1.2.0');
    await dialog.getByRole('button', { name: 'Install now (stops backend)' }).click();
    await expect
      .poll(() => page.getByTestId('live-outcome').textContent(), { timeout: 90_000 })
      .toMatch(/backend 1\.2\.0: rolled back — .*unhealthy.*quarantined/);
    await page.getByTestId('hold-backend-1.2.0').waitFor({ timeout: 20_000 });
    expect(await page.getByTestId('hold-backend-1.2.0').textContent()).toMatch(/1\.2\.0 quarantined/);
    expect(await page.getByTestId('installed-backend').textContent()).toBe('1.1.0');
    await shot('rolled-back-desktop');
  });

  it('a scheduled install appears in the schedule and can be cancelled', async () => {
    await stack.publishBackend('1.3.0');
    await waitUntil(
      async () => {
        await page.getByRole('button', { name: 'Check now' }).click();
        return (
          (await page.getByTestId('available-backend').textContent({ timeout: 5000 })) === '1.3.0' ||
          undefined
        );
      },
      'the page to show 1.3.0',
      60_000,
      2000,
    );
    await downloaded('1.3.0');
    await page.getByRole('button', { name: 'Preview and install 1.3.0' }).waitFor({ timeout: 30_000 });
    await page.getByLabel('Install at').fill('2099-01-01T02:30');
    // Further than 30 days ahead: refused, with the reason shown.
    await page.getByRole('button', { name: 'Schedule' }).click();
    await expect.poll(() => page.getByTestId('message').textContent()).toMatch(/more than 30 days ahead/);
    const local = localValue(new Date(Date.now() + 3600_000));
    await page.getByLabel('Install at').fill(local);
    await page.getByRole('button', { name: 'Schedule' }).click();
    await page.getByTestId('scheduled-backend-1.3.0').waitFor({ timeout: 20_000 });
    // Moved to another time: the schedule says so.
    await page.getByLabel('Move to').fill(localValue(new Date(Date.now() + 2 * 3600_000)));
    await page.getByRole('button', { name: 'Move', exact: true }).click();
    await expect
      .poll(() => page.getByTestId('message').textContent())
      .toMatch(/moved the install of backend 1\.3\.0/);
    await shot('scheduled-desktop');
    await page.getByRole('button', { name: 'Cancel the install of 1.3.0' }).click();
    await page.getByTestId('scheduled-backend-1.3.0').waitFor({ state: 'detached', timeout: 20_000 });
    expect(await page.getByTestId('message').textContent()).toMatch(/cancelled backend 1\.3\.0/);
    expect(await stack.deployment.version()).toBe('1.1.0');
  });

  it('shows the history with its picture and the devices, at desktop and phone widths; no request left the machine', async () => {
    await page.getByRole('button', { name: 'History' }).click();
    await page.getByRole('img', { name: /1 installed, 1 rolled back/ }).waitFor({ timeout: 20_000 });
    await page.getByLabel('Kind').selectOption('rolled_back');
    await expect.poll(() => page.locator('tbody tr').count()).toBe(1);
    expect(await page.locator('tbody tr').first().textContent()).toMatch(/rolled back.*1\.2\.0.*unhealthy/);
    await page.getByLabel('Kind').selectOption('');
    await shot('history-desktop');
    await page.getByRole('button', { name: 'Devices' }).click();
    await shot('devices-desktop');
    await page.setViewportSize({ width: 390, height: 844 });
    for (const view of ['Now', 'History', 'Settings']) {
      await page.getByRole('button', { name: view, exact: true }).click();
      await shot(`${view.toLowerCase()}-phone`);
    }
    expect(requests.length).toBeGreaterThan(10);
    expect(requests.filter((url) => !url.startsWith(`${base}/`))).toEqual([]);
  });
});
