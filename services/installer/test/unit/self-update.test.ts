import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ReleaseManifest } from '@aico-update/shared';
import { makeTempDir, strictFake } from '@aico-update/shared/testing';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import type { ContainerRuntime, ContainerState } from '../../src/domain/ports.ts';
import type { InstallDeps } from '../../src/handlers/install-release.ts';
import { updaterServices } from '../../src/handlers/self-update.ts';
import { SelfUpdateWatch } from '../../src/handlers/self-update-watch.ts';
import type { OwnDeployment } from '../../src/self-update/deployment.ts';
import { IntentStore, type SelfUpdateIntent, selfUpdateIntentSchema } from '../../src/self-update/intent.ts';

const logger = pino({ level: 'silent' });
const id = (c: string) => `sha256:${c.repeat(64)}`;

const manifest = (services: string[]): ReleaseManifest =>
  ({
    schema: 1,
    component: 'updater',
    version: '1.1.0',
    images: services.map((service) => ({
      service,
      image_id: id('b'),
      repo_tags: [],
      config: { digest: id('b'), length: 1, target: 't' },
      layers: [],
    })),
  }) as unknown as ReleaseManifest;

/** Only what updaterServices may use; anything else throws. */
function depsWith(containers: Record<string, string>, calls: string[]): InstallDeps {
  const deployment: Partial<OwnDeployment> = {
    containers: async () => {
      calls.push('containers');
      return containers;
    },
  };
  const runtime: Partial<ContainerRuntime> = {
    container: async (name): Promise<ContainerState | undefined> =>
      Object.values(containers).includes(name)
        ? {
            id: name,
            name,
            imageId: id('a'),
            running: true,
            restarting: false,
            health: 'healthy',
            restartCount: 0,
            fixedHostPort: false,
          }
        : undefined,
  };
  return strictFake('deps', {
    deployment: strictFake('deployment', deployment),
    runtime: strictFake('runtime', runtime),
  }) as unknown as InstallDeps;
}

const deployed = {
  checker: 'aico-checker-1',
  downloader: 'aico-downloader-1',
  'bus-gateway': 'aico-bus-gateway-1',
  installer: 'aico-installer-1',
};

describe('updaterServices', () => {
  it('refuses an updater release with an image for any other service before it looks at a container', async () => {
    const calls: string[] = [];
    await expect(
      updaterServices(depsWith(deployed, calls), manifest(['checker', 'redis'])),
    ).rejects.toMatchObject({
      code: 'SERVICE_NOT_MANAGED',
      message: expect.stringMatching(/images for redis.*Nothing was loaded or changed/),
    });
    expect(calls).toEqual([]);
  });

  it('lists the services in swap order, the installer last, whatever order the manifest has', async () => {
    const running = await updaterServices(
      depsWith(deployed, []),
      manifest(['installer', 'checker', 'bus-gateway']),
    );
    expect(running.map((r) => [r.service, r.container])).toEqual([
      ['checker', 'aico-checker-1'],
      ['bus-gateway', 'aico-bus-gateway-1'],
      ['installer', 'aico-installer-1'],
    ]);
  });

  it('refuses a release for a service whose container is not there', async () => {
    const { downloader: _gone, ...rest } = deployed;
    await expect(updaterServices(depsWith(rest, []), manifest(['downloader']))).rejects.toMatchObject({
      code: 'SERVICE_NOT_FOUND',
    });
  });
});

describe('the self-update intent', () => {
  it('names only the update system’s services: an intent for another container is not one', () => {
    const parsed = selfUpdateIntentSchema.safeParse({
      v: 1,
      id: 'updater-1.1.0-1',
      services: [
        { service: 'redis', container: 'aico-redis-1', old_image_id: id('a'), new_image_id: id('b') },
      ],
    });
    expect(parsed.success).toBe(false);
  });

  it('a damaged intent file reads as none: a helper given it does nothing', async () => {
    const dir = await makeTempDir('intent');
    await writeFile(join(dir, 'self-update.json'), '{"v":1,"services":"everything"}');
    expect(await new IntentStore(dir, logger).read()).toBeUndefined();
  });
});

describe('the self-update watch', () => {
  it('leaves the helper alone while this installer is starting it, then watches it', async () => {
    const dir = await makeTempDir('intent');
    const intents = new IntentStore(dir, logger);
    // Only what the watch reads of an intent without steps or outcome.
    const intent = { v: 1, helper: 'aico-installer-1-self-update', steps: [] } as unknown as SelfUpdateIntent;
    const looked: string[] = [];
    const deployment: Partial<OwnDeployment> = {
      helperState: async (name) => {
        looked.push(name);
        return 'running';
      },
    };
    const fakeIntents = strictFake('intents', {
      read: async () => intent,
      get startingHelper() {
        return intents.startingHelper;
      },
    });
    const watch = new SelfUpdateWatch(
      strictFake('deps', {
        intents: fakeIntents,
        deployment: strictFake('deployment', deployment),
        logger,
      }) as unknown as InstallDeps,
    );
    await intents.whileStartingHelper(async () => {
      await watch.tick();
      expect(looked).toEqual([]);
    });
    await watch.tick();
    expect(looked).toEqual(['aico-installer-1-self-update']);
  });
});
