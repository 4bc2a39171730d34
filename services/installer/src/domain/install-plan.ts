import type { ReleaseImage } from '@aico-update/shared';

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
}

export type InstallStep =
  | { kind: 'load-image'; service: string; image: ReleaseImage }
  | { kind: 'check-healthy'; service: string; container: string }
  | { kind: 'swap'; service: string; container: string; imageId: string }
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
 * Services whose image changes get: load (all first), a health check of what runs now, then per
 * service swap → health gate, and commits only once every service passed (a later failure can still
 * roll back the earlier ones). Services already on the target image are left alone.
 */
export function planInstall(
  images: readonly ReleaseImage[],
  running: readonly RunningService[],
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
  return [
    ...todo.map(({ image }): InstallStep => ({ kind: 'load-image', service: image.service, image })),
    ...todo.map(
      ({ current }): InstallStep => ({
        kind: 'check-healthy',
        service: current.service,
        container: current.container,
      }),
    ),
    ...todo.flatMap(({ image, current }): InstallStep[] => [
      { kind: 'swap', service: current.service, container: current.container, imageId: image.image_id },
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
