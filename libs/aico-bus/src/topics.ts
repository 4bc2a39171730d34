/*
 * Topic spellings on AICO's bus. The seed writes dots (`update.check.request`), AICO's later docs write
 * slashes (`update/check/request`) and its code convention appends a version (`update/check/request/v1`).
 * The gateway accepts all three on input and publishes in one configured style.
 */

export const TOPIC_STYLES = ['dots', 'slashes', 'slashes_v1'] as const;
export type TopicStyle = (typeof TOPIC_STYLES)[number];

/** The canonical (dotted, unversioned) form of any accepted spelling; undefined when it is not one. */
export function canonicalTopic(raw: string): string | undefined {
  let topic = raw.trim();
  if (topic.includes('/')) {
    topic = topic.replace(/\/v\d+$/, '').replaceAll('/', '.');
  }
  return /^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$/.test(topic) ? topic : undefined;
}

export function spellTopic(canonical: string, style: TopicStyle): string {
  if (style === 'dots') return canonical;
  const slashed = canonical.replaceAll('.', '/');
  return style === 'slashes_v1' ? `${slashed}/v1` : slashed;
}

/**
 * AICO's NATS subject for a topic: slashes become dots, with `aico.<tenant>.` in front when a tenant is
 * configured (single-tenant installs use `default`).
 */
export function natsSubject(canonical: string, tenant: string | undefined): string {
  return tenant ? `aico.${tenant}.${canonical}` : canonical;
}

/** The topic of an AICO NATS subject, or undefined when the subject is not under the tenant's prefix. */
export function topicOfSubject(subject: string, tenant: string | undefined): string | undefined {
  if (!tenant) return canonicalTopic(subject);
  const prefix = `aico.${tenant}.`;
  return subject.startsWith(prefix) ? canonicalTopic(subject.slice(prefix.length)) : undefined;
}
