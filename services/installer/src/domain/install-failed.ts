import { AppError } from '@aico-update/shared';

/** The install failed and was rolled back (or nothing was changed): not retried automatically. */
export class InstallFailed extends AppError {
  readonly rolledBack: boolean;

  constructor(code: string, message: string, rolledBack: boolean, options?: ErrorOptions) {
    super(code, message, options);
    this.rolledBack = rolledBack;
  }
}
