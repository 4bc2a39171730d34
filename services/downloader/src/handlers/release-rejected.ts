import { AppError } from '@aico-update/shared';

/** Fails the job for good (BullMQ does not retry it): the release itself is the problem. */
export class ReleaseRejected extends AppError {}
