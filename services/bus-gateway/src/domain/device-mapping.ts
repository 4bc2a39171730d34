import { ComponentType, create, type MessageShape, UpdateCheckResponseSchema } from '@aico-update/aico-bus';
import type { DeviceAnswer } from '@aico-update/shared';
import { updateInfoOf, versionInfo } from './mapping.ts';

/* A frontend device's answer on AICO's bus (see "Frontends on other devices" in the README). */

/** Where a device fetches packages and the TUF metadata that proves them (the control API's base). */
export const PACKAGES_PATH = '/api/v1/packages';

/**
 * A device's answer as AICO's UpdateCheckResponse: an update (its package on the home server, named in
 * the attributes `package_target`, `package_url`, `package_sha256` and `metadata_url`: a TUF mirror),
 * an update through the app store (`delivery=store`), or none (`waits_for_backend` says for what).
 */
export function deviceAnswerToBus(answer: DeviceAnswer): {
  response: MessageShape<typeof UpdateCheckResponseSchema>;
  attributes: Record<string, string>;
} {
  const release = answer.release;
  const offered = (answer.answer === 'update' || answer.answer === 'store') && release ? release : undefined;
  const attributes: Record<string, string> = { device_answer: answer.answer };
  if (answer.answer === 'update' && answer.package) {
    const pkg = answer.package;
    const slash = pkg.target.lastIndexOf('/') + 1;
    Object.assign(attributes, {
      package_target: pkg.target,
      package_url: `${PACKAGES_PATH}/targets/${pkg.target.slice(0, slash)}${pkg.sha256}.${pkg.target.slice(slash)}`,
      package_sha256: pkg.sha256,
      metadata_url: `${PACKAGES_PATH}/metadata/`,
    });
  }
  if (answer.answer === 'store') attributes.delivery = 'store';
  if (answer.answer === 'waits_for_backend' && answer.needs_backend)
    attributes.waits_for_backend = answer.needs_backend;
  return {
    response: create(UpdateCheckResponseSchema, {
      updateAvailable: Boolean(offered),
      latestVersion: versionInfo(offered ?? { version: answer.installed }),
      ...(offered
        ? {
            updateInfo: updateInfoOf(offered, answer.installed, {
              componentType: ComponentType.COMPONENT_FRONTEND,
              componentId: `frontend-${answer.platform}`,
              sizeBytes: answer.package?.length ?? 0,
            }),
          }
        : {}),
      forceUpdate: offered?.critical ?? false,
      updateMessage: answer.reason,
    }),
    attributes,
  };
}
