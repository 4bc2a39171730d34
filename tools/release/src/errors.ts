import { AppError } from '@aico-update/shared';

/** A refusal of aico-release: its code and a message that names the value and what is allowed. */
export class ReleaseToolError extends AppError {}
