import { enqueueInstall, type InstallJob } from '@aico-update/shared';
import { isActive, type SelfUpdateIntent } from '../self-update/intent.ts';
import { removePrevious } from '../self-update/swap.ts';
import { decide, record, recordRefusal, type StepTiming } from './history.ts';
import { countAutomaticFailure, publishInstallerStatus, quarantine } from './holds.ts';
import type { InstallDeps } from './install-release.ts';
import { publishProgress } from './self-update.ts';

/*
 * Every installer watches the self-update intent: the one that started the helper, the new one the
 * helper started, the old one a rollback put back. Whichever runs when the helper writes the outcome
 * reports it (history, events, metrics, the installed version), removes the helper and the old
 * containers, and queues the install that waited for the new updater.
 */

/** A helper that keeps dying is replaced this many times, then one from the running installer's image rolls back. */
const HELPER_STARTS_FROM_NEW_IMAGE = 2;
const MAX_HELPER_STARTS = 4;

/**
 * Watches the self-update intent in every installer: publishes the helper's steps as they happen,
 * starts a helper again when one died without an outcome, and reports the outcome once there is one.
 */
export class SelfUpdateWatch {
  readonly #deps: InstallDeps;
  #published = 0;
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<void> | undefined;

  constructor(deps: InstallDeps) {
    this.#deps = deps;
  }

  /** True while a self-update is under way: no other install or rollback may run. */
  async active(): Promise<boolean> {
    return isActive(await this.#deps.intents.read());
  }

  start(intervalMs = 1000): void {
    this.#timer = setInterval(() => void this.tick(), intervalMs);
    void this.tick();
  }

  async stop(): Promise<void> {
    clearInterval(this.#timer);
    await this.#running;
  }

  /** One look at the intent (never two at once; never throws). */
  tick(): Promise<void> {
    this.#running ??= this.#look()
      .catch((error: Error) => this.#deps.logger.error({ err: error }, 'self-update watch failed'))
      .finally(() => {
        this.#running = undefined;
      });
    return this.#running;
  }

  async #look(): Promise<void> {
    const deps = this.#deps;
    const intent = await deps.intents.read();
    if (!isActive(intent)) return;
    for (const step of intent.steps.slice(this.#published)) {
      await publishProgress(
        deps,
        intent,
        step.step,
        step.service,
        step.status === 'started' ? 'started' : 'done',
      );
      if (step.ms !== undefined && step.status === 'done') {
        deps.metrics.phaseDuration.observe({ phase: `self-update-${step.step}` }, step.ms / 1000);
      }
    }
    if (intent.steps.length !== this.#published) await publishInstallerStatus(deps);
    this.#published = intent.steps.length;
    if (intent.outcome) return this.#report(intent);
    if (deps.intents.startingHelper) return;
    const helper = await deps.deployment.helperState(intent.helper);
    if (helper === 'running' || helper === 'restarting') return;
    // The helper is gone and said nothing: start one again (it puts back whatever had begun).
    const log = await deps.deployment.helperLog(intent.helper);
    if (intent.helper_starts >= MAX_HELPER_STARTS) {
      intent.outcome = {
        result: 'failed',
        reason: `the self-update helper exited ${intent.helper_starts} times without finishing (last log: ${log.slice(-500) || 'none'}); the update system may run mixed versions: docker compose up -d restores the tagged ones`,
        at: new Date().toISOString(),
      };
      await deps.intents.write(intent);
      return this.#report(intent);
    }
    const fromNew = intent.helper_starts < HELPER_STARTS_FROM_NEW_IMAGE;
    const newInstaller = intent.services.find((s) => s.service === 'installer')?.new_image_id;
    const image = fromNew && newInstaller ? newInstaller : await deps.deployment.ownImageId();
    // Not from the start again: a helper that died puts back what it began (or finds nothing begun).
    if (intent.phase === 'started' && !fromNew) intent.phase = 'rolling_back';
    intent.helper_starts += 1;
    await deps.intents.write(intent);
    deps.logger.error(
      { helper: intent.helper, starts: intent.helper_starts, log: log.slice(-500) },
      'the self-update helper exited without an outcome; starting it again to finish or put everything back',
    );
    await deps.deployment.startHelper(intent, image);
  }

  async #report(intent: SelfUpdateIntent): Promise<void> {
    const deps = this.#deps;
    const outcome = intent.outcome as NonNullable<SelfUpdateIntent['outcome']>;
    const { release } = intent;
    const order = { v: 1 as const, release, reason: intent.reason };
    const duration = Date.now() - Date.parse(intent.started_at);
    const timings: StepTiming[] = intent.steps
      .filter((s) => s.ms !== undefined && s.status !== 'started')
      .map((s) => ({ step: `self-update-${s.step}`, service: s.service, ms: s.ms as number }));
    // The helper's last words matter only when it could not put everything back.
    const helperLog = outcome.result === 'failed' ? await deps.deployment.helperLog(intent.helper) : '';
    await deps.deployment.removeHelper(intent.helper);
    if (outcome.result === 'committed') {
      await removePrevious(deps.runtime, intent);
      const images = { ...(await deps.state.installed('updater'))?.images };
      for (const service of intent.services) images[service.service] = service.new_image_id;
      // No operator's rollback of the update system through itself: last_install is not kept for it.
      await deps.state.recordInstalled(
        'updater',
        { version: release.version, images, installed_at: outcome.at },
        null,
      );
      await record(deps, order, 'installed', duration, outcome.reason, undefined, timings);
      await deps.holds.installed(release);
    } else {
      deps.metrics.rollbacks.inc({ component: 'updater', reason: 'SELF_UPDATE_FAILED' });
      const said = `${outcome.reason}${helperLog ? ` (helper log: ${helperLog.slice(-300)})` : ''}`;
      await record(deps, order, outcome.result, duration, said, undefined, timings);
      if (intent.swapped.length > 0) await quarantine(deps, release, 'SELF_UPDATE_FAILED', outcome.reason);
      if (intent.reason !== 'request') await countAutomaticFailure(deps, release, outcome.reason);
    }
    deps.logger[outcome.result === 'committed' ? 'info' : 'error'](
      { version: release.version, result: outcome.result },
      `self-update to ${release.version}: ${outcome.result}: ${outcome.reason}`,
    );
    intent.reported_at = new Date().toISOString();
    await deps.intents.archive(intent);
    this.#published = 0;
    await publishInstallerStatus(deps);
    if (intent.next_install) {
      await this.#continueWith(intent, intent.next_install, outcome.result === 'committed');
    }
  }

  /** The backend install that waited for this self-update: queued now, or refused with the reason. */
  async #continueWith(intent: SelfUpdateIntent, job: InstallJob, committed: boolean): Promise<void> {
    const deps = this.#deps;
    if (!committed) {
      await recordRefusal(
        deps,
        job.release,
        'NEEDS_UPDATER',
        `${job.release.component} ${job.release.version} needs a newer update system, and updater ${intent.release.version} did not install (${intent.outcome?.reason}); nothing of ${job.release.component} was changed`,
      );
      return;
    }
    // An operator's job was sealed by this installer (the key is on its volume): sealed again, fresh.
    const { mac: _mac, issued_at: _issued, ...unsealed } = job;
    const next = deps.seal.verify(job) ? deps.seal.seal(unsealed) : unsealed;
    await enqueueInstall(deps.queue, next, { retry: true, replace: true });
    await decide(deps, 'scheduled', job.release, {
      reason: `updater ${intent.release.version} is installed; ${job.release.component} ${job.release.version} installs now`,
    });
  }
}
