import {
  ComponentType,
  create,
  type DescMessage,
  DownloadProgressSchema,
  DownloadStatus,
  DownloadUpdateRequestSchema,
  type Envelope,
  InstallStatus,
  InstallUpdateRequestSchema,
  InstallUpdateResponseSchema,
  type MessageShape,
  RollbackRequestSchema,
  RollbackResponseSchema,
  UpdateCheckRequestSchema,
  UpdateCheckResponseSchema,
  UpdateSettingsSchema,
  UpdateStateSyncSchema,
} from '@aico-update/aico-bus';
import {
  AppError,
  type CheckResponse,
  type CommandReply,
  ExtraTopics,
  type NatsConnection,
  type SettingsReply,
  sendCommand,
  Topics,
} from '@aico-update/shared';
import type { DeviceRegistry } from '../devices.ts';
import { deviceAnswerToBus } from '../domain/device-mapping.ts';
import { checkResponseToBus, componentOf, parseUpdateId } from '../domain/mapping.ts';
import { settingsFromBus, settingsToBus } from '../domain/settings-mapping.ts';

/*
 * What each request topic of AICO's bus does: the AICO message it carries, the internal command it
 * becomes, and the answer. The service that owns a command decides (the installer what may be installed
 * and the settings, the downloader what is downloaded); the gateway only translates. Where AICO's
 * message has no field for something, an envelope attribute carries it (the README's bus table):
 * `forced` on a check, `scheduled_for` and `action` (cancel, plan, skip, unskip) on an install request,
 * `fields` on UpdateSettings.
 */

export interface RequestContext {
  envelope: Envelope;
  correlationId: string;
}

/** An answer, with attributes for what AICO's message has no field for (e.g. the dry run's plan). */
export interface Answer<Res extends DescMessage = DescMessage> {
  response: MessageShape<Res>;
  attributes?: Record<string, string>;
  /** The request was refused: the code and the reason go into the answer's attributes. */
  refused?: { code: string; message: string };
}

export interface Route<Req extends DescMessage = DescMessage, Res extends DescMessage = DescMessage> {
  request: Req;
  response: Res;
  /** Where the answer goes when the request names no `reply_to`. */
  responseTopic: string;
  handle(payload: MessageShape<Req>, context: RequestContext): Promise<Answer<Res>>;
  /** The response message saying a request failed (the reason also goes into its attributes). */
  failure(message: string): MessageShape<Res>;
}

const route = <Req extends DescMessage, Res extends DescMessage>(r: Route<Req, Res>): Route =>
  r as unknown as Route;

export interface RouteDeps {
  nc: NatsConnection;
  commandTimeoutMs: number;
  /** The frontend devices heard on the bus, and the transport they come over. */
  devices: DeviceRegistry;
  via: 'zeromq' | 'nats';
  /** The settings in force, for answers when the installer cannot be asked. */
  settings: () => MessageShape<typeof UpdateSettingsSchema>;
  stateSync: (component: string) => Promise<MessageShape<typeof UpdateStateSyncSchema>>;
}

const sourceOf = (envelope: Envelope) => envelope.source.slice(0, 200);

export function busRoutes(deps: RouteDeps): Record<string, Route> {
  const command = <T>(topic: Parameters<typeof sendCommand>[1], body: unknown) =>
    sendCommand<T>(deps.nc, topic, body, deps.commandTimeoutMs);
  const installAnswer = (reply: CommandReply, attributes: Record<string, string> = {}): Answer => ({
    response: create(InstallUpdateResponseSchema, {
      success: reply.accepted,
      message: reply.message,
      status: reply.accepted ? InstallStatus.INSTALL_PENDING : InstallStatus.INSTALL_FAILED,
    }),
    attributes: { ...attributes, ...(reply.scheduled_for ? { scheduled_for: reply.scheduled_for } : {}) },
    ...(reply.accepted ? {} : { refused: { code: reply.code ?? 'REFUSED', message: reply.message } }),
  });
  const installFailure = (message: string) =>
    create(InstallUpdateResponseSchema, { success: false, status: InstallStatus.INSTALL_FAILED, message });

  return {
    [Topics.checkRequest]: route({
      request: UpdateCheckRequestSchema,
      response: UpdateCheckResponseSchema,
      responseTopic: Topics.checkResponse,
      handle: async (request, { envelope, correlationId }) => {
        // A frontend that names itself is a device: registered, and answered for its platform and version.
        const device =
          request.componentType === ComponentType.COMPONENT_FRONTEND && request.deviceId
            ? await registered(deps, {
                id: request.deviceId,
                platform: request.systemInfo.platform ?? request.systemInfo.os,
                version: request.currentVersion?.version ?? '',
              })
            : undefined;
        const response = await command<CheckResponse>(Topics.checkRequest, {
          request_id: `bus:${correlationId}`,
          forced: envelope.attributes.forced === 'true',
          source: sourceOf(envelope),
          ...(device
            ? { device: { id: device.id, platform: device.platform, version: device.version } }
            : {}),
        });
        if (device && response.device_answer) return deviceAnswerToBus(response.device_answer);
        return { response: checkResponseToBus(response, componentOf(request.componentType)) };
      },
      failure: (message) =>
        create(UpdateCheckResponseSchema, { updateAvailable: false, updateMessage: message }),
    }),
    [ExtraTopics.downloadRequest]: route({
      request: DownloadUpdateRequestSchema,
      response: DownloadProgressSchema,
      responseTopic: 'update.download.response',
      handle: async (request, { envelope, correlationId }) => {
        const target = request.updateId ? parseUpdateId(request.updateId) : undefined;
        if (request.updateId && !target) {
          throw new AppError(
            'BAD_REQUEST',
            `update_id "${request.updateId.slice(0, 100)}" is not <component>-<version>`,
          );
        }
        const reply = await command<CommandReply>(ExtraTopics.downloadRequest, {
          request_id: correlationId.slice(0, 200),
          component: target?.component ?? 'backend',
          ...(target ? { version: target.version } : {}),
          source: sourceOf(envelope),
        });
        return {
          response: create(DownloadProgressSchema, {
            updateId: request.updateId,
            status: reply.accepted ? DownloadStatus.DOWNLOAD_PENDING : DownloadStatus.DOWNLOAD_FAILED,
            message: reply.message,
          }),
          ...(reply.accepted ? {} : { refused: { code: reply.code ?? 'REFUSED', message: reply.message } }),
        };
      },
      failure: (message) =>
        create(DownloadProgressSchema, { status: DownloadStatus.DOWNLOAD_FAILED, message }),
    }),
    [Topics.installRequest]: route({
      request: InstallUpdateRequestSchema,
      response: InstallUpdateResponseSchema,
      responseTopic: 'update.install.response',
      handle: async (request, { envelope, correlationId }) => {
        const target = request.updateId ? parseUpdateId(request.updateId) : undefined;
        if (request.updateId && !target) {
          throw new AppError(
            'BAD_REQUEST',
            `update_id "${request.updateId.slice(0, 100)}" is not one the update system announced (<component>-<version>, e.g. backend-1.2.0)`,
          );
        }
        const release = {
          request_id: correlationId.slice(0, 200),
          component: target?.component ?? 'backend',
          ...(target ? { version: target.version } : {}),
          source: sourceOf(envelope),
        };
        const action = envelope.attributes.action ?? 'install';
        switch (action) {
          case 'cancel':
            return installAnswer(await command<CommandReply>(ExtraTopics.installCancel, release));
          case 'skip':
          case 'unskip':
            if (!target) throw new AppError('BAD_REQUEST', `action ${action} needs an update_id`);
            return installAnswer(
              await command<CommandReply>(ExtraTopics.releaseSkip, { ...release, skip: action === 'skip' }),
            );
          case 'resume':
            return installAnswer(await command<CommandReply>(ExtraTopics.installResume, release));
          case 'plan': {
            const reply = await command<CommandReply & { plan?: unknown }>(ExtraTopics.installPlan, {
              ...release,
              ...(envelope.attributes.scheduled_for ? { at: envelope.attributes.scheduled_for } : {}),
            });
            return installAnswer(reply, reply.plan ? { plan: JSON.stringify(reply.plan) } : {});
          }
          case 'install':
            // Only what the installer verified can be installed: it checks the release is downloaded and signed.
            return installAnswer(
              await command<CommandReply>(Topics.installRequest, {
                ...release,
                auto_restart: request.autoRestart,
                ...(envelope.attributes.scheduled_for ? { at: envelope.attributes.scheduled_for } : {}),
              }),
            );
          default:
            throw new AppError(
              'BAD_REQUEST',
              `action "${action.slice(0, 50)}" is not one of install, cancel, plan, skip, unskip, resume`,
            );
        }
      },
      failure: installFailure,
    }),
    [ExtraTopics.rollbackRequest]: route({
      request: RollbackRequestSchema,
      response: RollbackResponseSchema,
      responseTopic: 'update.rollback.response',
      handle: async (request, { envelope, correlationId }) => {
        const component = /^(backend|frontend|updater)-/.exec(request.backupId)?.[1] ?? 'backend';
        const reply = await command<CommandReply>(ExtraTopics.rollbackRequest, {
          request_id: correlationId.slice(0, 200),
          component,
          ...(request.backupId ? { backup_id: request.backupId.slice(0, 200) } : {}),
          ...(envelope.attributes.keep_data === 'true' ? { keep_data: true } : {}),
          source: sourceOf(envelope),
        });
        return {
          response: create(RollbackResponseSchema, { success: reply.accepted, message: reply.message }),
          ...(reply.accepted ? {} : { refused: { code: reply.code ?? 'REFUSED', message: reply.message } }),
        };
      },
      failure: (message) => create(RollbackResponseSchema, { success: false, message }),
    }),
    [ExtraTopics.settings]: route({
      request: UpdateSettingsSchema,
      response: UpdateSettingsSchema,
      responseTopic: 'update.settings.response',
      // The installer keeps the settings: it validates a change, stores it and tells every service.
      handle: async (request, { envelope, correlationId }) => {
        const asked = settingsFromBus(request, envelope.attributes.fields);
        if ('unknownFields' in asked) {
          throw new AppError(
            'BAD_REQUEST',
            `attributes.fields names ${asked.unknownFields.join(', ')}, which UpdateSettings has not`,
          );
        }
        const reply = await command<SettingsReply>(ExtraTopics.settings, {
          request_id: correlationId.slice(0, 200),
          ...('change' in asked ? { set: asked.change } : {}),
          source: sourceOf(envelope),
        });
        return {
          response: settingsToBus(reply.settings.effective),
          attributes: { settings_revision: String(reply.settings.revision) },
          ...(reply.accepted ? {} : { refused: { code: reply.code ?? 'REFUSED', message: reply.message } }),
        };
      },
      failure: () => deps.settings(),
    }),
    [ExtraTopics.stateSync]: route({
      request: UpdateStateSyncSchema,
      response: UpdateStateSyncSchema,
      responseTopic: 'update.state.sync.response',
      handle: async (request) => {
        if (request.componentType === ComponentType.COMPONENT_FRONTEND && request.deviceId) {
          await registered(deps, {
            id: request.deviceId,
            platform: request.currentVersion?.attributes.platform,
            version: request.currentVersion?.version ?? '',
          });
        }
        return { response: await deps.stateSync(componentOf(request.componentType)) };
      },
      failure: () => create(UpdateStateSyncSchema),
    }),
  };
}

/** Records a device, or refuses the request naming what is wrong (nothing is stored then). */
async function registered(
  deps: RouteDeps,
  report: { id: string; platform: string | undefined; version: string },
) {
  const seen = await deps.devices.seen(report, deps.via);
  if (!seen.ok) throw new AppError(seen.code, seen.message);
  return seen.device;
}
