import type { z } from 'zod';
/** The services whose settings the README documents; a key shared by several is listed once. */
export declare const SERVICE_SCHEMAS: Record<string, z.ZodType>;
export declare function allSettings(): ({
  key: string;
  env: string;
  default: unknown;
  allowed: string;
} & {
  services: string[];
})[];
export declare function configReference(): string;
