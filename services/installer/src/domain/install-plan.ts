import type { ReleaseImage } from '@aico-update/shared';
import type { SwapStrategy } from './ports.ts';

/*
 * The installer's plan, balena-supervisor style: a pure function from (what runs, what the release
 * wants) to a typed list of steps; an executor table keyed by step kind runs them. Order is the safety
 * argument: every image is loaded and its id verified before any container is stopped.
 */

export interface RunningService {
  service: string;
  container: string;
  /** Image id the container runs now. */
  imageId: string;
  /** Publishes a fixed host port (start-first would collide on it). */
  fixedHostPort: boolean;
}

export interface PlanOptions {
  /** Strategy asked for per service; stop-first where nothing is said. */
  strategy?: Readonly<Record<string, SwapStrategy>>;
  /** Services with data to back up, and whether hooks are declared (a backup step is planned if either). */
  backupServices?: readonly string[];
  backupHooks?: boolean;
  /** Only stage: load and verify the images (nothing stops); the swap waits for a restart. */
  stageOnly?: boolean;
}

/** Steps about the whole install rather than one service carry this in `service`. */
export const ALL_SERVICES = '*';

export type InstallStep =
  | { kind: 'check-disk'; service: typeof ALL_SERVICES; bytes: number }
  | { kind: 'load-image'; service: string; image: ReleaseImage }
  | { kind: 'check-healthy'; service: string; container: string }
  | { kind: 'backup'; service: typeof ALL_SERVICES; services: string[] }
  | { kind: 'prepare'; service: typeof ALL_SERVICES; services: string[] }
  | {
      kind: 'swap';
      service: string;
      container: string;
      /** The image the container runs before the swap (what a rollback returns to). */
      fromImageId: string;
      imageId: string;
      strategy: SwapStrategy;
      /** Why the strategy differs from the one configured. */
      note?: string;
    }
  | { kind: 'restore-data'; service: string; container: string; backupId: string }
  | { kind: 'restore-hooks'; service: typeof ALL_SERVICES; backupId: string }
  | { kind: 'health-gate'; service: string; container: string }
  | { kind: 'commit'; service: string; container: string };

export type StepKind = InstallStep['kind'];

/** Where the old container waits during a swap and its soak: derived, so recovery finds it from the journal. */
export function previousName(container: string): string {
  return `${container}-aico-previous`;
}

export class PlanError extends Error {
  override name = 'PlanError';
}

/**
 * Services whose image changes get: a disk check, a health check of what runs now, load (all before
 * anything stops), the prepare signal, the data backup, then per service swap → health gate, and
 * commits only once every service passed (a later failure can still roll back the earlier ones).
 * Services already on the target image are left alone.
 */
export function planInstall(
  images: readonly ReleaseImage[],
  running: readonly RunningService[],
  options: PlanOptions = {},
): InstallStep[] {
  const changes = images.map((image) => {
    const current = running.find((r) => r.service === image.service);
    if (!current) {
      throw new PlanError(
        `the release has an image for service "${image.service}", but no container is declared for it (installer.services)`,
      );
    }
    return { image, current };
  });
  const todo = changes.filter(({ image, current }) => image.image_id !== current.imageId);
  if (todo.length === 0) return [];
  const services = todo.map(({ current }) => current.service);
  // The archive `docker load` reads is written next to the blobs: it needs their size again.
  const archiveBytes = todo.reduce(
    (sum, { image }) => sum + image.config.length + image.layers.reduce((n, l) => n + l.length, 0),
    0,
  );
  const staging: InstallStep[] = [
    { kind: 'check-disk', service: ALL_SERVICES, bytes: archiveBytes },
    ...todo.map(
      ({ current }): InstallStep => ({
        kind: 'check-healthy',
        service: current.service,
        container: current.container,
      }),
    ),
    ...todo.map(({ image }): InstallStep => ({ kind: 'load-image', service: image.service, image })),
  ];
  if (options.stageOnly) return staging;
  const backedUp = services.filter((s) => options.backupServices?.includes(s));
  // The backup comes after the prepare signal: what a component writes while it delays the update is in it.
  return [
    ...staging,
    { kind: 'prepare', service: ALL_SERVICES, services },
    ...(backedUp.length > 0 || options.backupHooks
      ? [{ kind: 'backup', service: ALL_SERVICES, services: backedUp } as const]
      : []),
    ...todo.flatMap(({ image, current }): InstallStep[] => [
      {
        kind: 'swap',
        service: current.service,
        container: current.container,
        fromImageId: current.imageId,
        imageId: image.image_id,
        ...swapStrategy(current, options.strategy?.[current.service]),
      },
      { kind: 'health-gate', service: current.service, container: current.container },
    ]),
    ...todo.map(
      ({ current }): InstallStep => ({
        kind: 'commit',
        service: current.service,
        container: current.container,
      }),
    ),
  ];
}

function swapStrategy(
  current: RunningService,
  asked: SwapStrategy | undefined,
): { strategy: SwapStrategy; note?: string } {
  if (asked !== 'start-first') return { strategy: 'stop-first' };
  if (current.fixedHostPort) {
    return {
      strategy: 'stop-first',
      note: `start-first asked, but ${current.container} publishes a fixed host port that two containers cannot share`,
    };
  }
  return { strategy: 'start-first' };
}

export interface PreviousService {
  service: string;
  container: string;
  /** The image the service ran before the install being undone. */
  imageId: string;
}

/**
 * An operator's rollback of the last install: each service swapped back to the image it ran before
 * (still on the host: images are never deleted by the installer), health-gated, then committed. With
 * a backup, each service's data is restored while it is stopped (so that swap is stop-first), and the
 * hooks' restores run once the services are back.
 */
export function planRollback(
  previous: readonly PreviousService[],
  running: readonly RunningService[],
  options: { strategy?: Readonly<Record<string, SwapStrategy>>; backupId?: string | undefined } = {},
): InstallStep[] {
  const todo = previous.flatMap((p) => {
    const current = running.find((r) => r.service === p.service);
    if (!current) throw new PlanError(`no container runs service "${p.service}" (${p.container})`);
    return current.imageId === p.imageId && !options.backupId ? [] : [{ previous: p, current }];
  });
  if (todo.length === 0) return [];
  const { backupId } = options;
  return [
    ...todo.flatMap(({ previous, current }): InstallStep[] => [
      ...(backupId
        ? [
            {
              kind: 'restore-data',
              service: current.service,
              container: current.container,
              backupId,
            } as const,
          ]
        : []),
      {
        kind: 'swap',
        service: current.service,
        container: current.container,
        fromImageId: current.imageId,
        imageId: previous.imageId,
        ...(backupId
          ? { strategy: 'stop-first' as const }
          : swapStrategy(current, options.strategy?.[current.service])),
      },
      { kind: 'health-gate', service: current.service, container: current.container },
    ]),
    ...(backupId ? [{ kind: 'restore-hooks', service: ALL_SERVICES, backupId } as const] : []),
    ...todo.map(
      ({ current }): InstallStep => ({
        kind: 'commit',
        service: current.service,
        container: current.container,
      }),
    ),
  ];
}
