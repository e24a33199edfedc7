/**
 * What deserves a notification: grants that were approved, are about to
 * expire, expired or were revoked (found by comparing successive polls of the
 * grants route), and cells whose governed access the guard denied (found in
 * the kernel's iopub `error` messages).
 */
import { describeAccess, formatDuration, IGrant, isActive, secondsLeft, timeOf } from './model';

export type GrantNoticeKind = 'granted' | 'expiring' | 'expired' | 'revoked';

export interface IGrantNotice {
  kind: GrantNoticeKind;
  grant: IGrant;
  message: string;
}

/** Seconds before the end at which a grant of `total` seconds is "about to expire". */
export function warningLead(total: number, most = 300): number {
  return Math.max(5, Math.min(most, Math.floor(total / 4)));
}

/**
 * Remembers the active grants it last saw and reports what changed.
 *
 * `update` is called with every poll of `grants?active=0` (all my grants,
 * ended ones included, so a revocation can be told from an expiry) and on each
 * clock tick with the same list, so an expiry is reported on time between polls.
 */
export class GrantWatcher {
  private active = new Map<string, IGrant>();
  private warned = new Set<string>();
  private started = false;

  constructor(private readonly warnAtMost = 300) {}

  update(grants: IGrant[], now: number): IGrantNotice[] {
    const notices: IGrantNotice[] = [];
    const byId = new Map(grants.map(g => [g.id, g]));
    for (const [id, before] of this.active) {
      const current = byId.get(id);
      if (current && isActive(current, now)) {
        continue;
      }
      this.active.delete(id);
      this.warned.delete(id);
      if (current?.revoked || (!current && timeOf(before.expires) > now)) {
        const grant = current ?? before;
        const by = grant.revoked_by ? ` by ${grant.revoked_by}` : '';
        const why = grant.revoke_reason ? `: ${grant.revoke_reason}` : '';
        notices.push({
          kind: 'revoked',
          grant,
          message: `Your grant for ${describeAccess(grant)} was revoked${by}${why}.`
        });
      } else {
        notices.push({
          kind: 'expired',
          grant: current ?? before,
          message: `Your grant for ${describeAccess(before)} has expired.`
        });
      }
    }
    for (const grant of grants) {
      if (!isActive(grant, now)) {
        continue;
      }
      if (!this.active.has(grant.id) && this.started) {
        notices.push({
          kind: 'granted',
          grant,
          message: `Granted: ${describeAccess(grant)} for ${formatDuration(
            secondsLeft(grant.expires, now)
          )}.`
        });
      }
      this.active.set(grant.id, grant);
      const total = (timeOf(grant.expires) - timeOf(grant.starts)) / 1000;
      const left = secondsLeft(grant.expires, now);
      if (!this.warned.has(grant.id) && left <= warningLead(total, this.warnAtMost)) {
        this.warned.add(grant.id);
        notices.push({
          kind: 'expiring',
          grant,
          message: `Your grant for ${describeAccess(grant)} expires in ${formatDuration(left)}.`
        });
      }
    }
    this.started = true;
    return notices;
  }
}

/** The exception the kernel hooks raise for a refused governed access. */
export const DENIAL_ENAME = 'GuardPermissionError';

export interface ICellDenial {
  /** The first line of the error: what was refused. */
  summary: string;
  /** The whole message, as the kernel showed it. */
  text: string;
  /** Whether the message says a fresh second factor would help. */
  wantsStepUp: boolean;
}

interface IIopubLike {
  header: { msg_type: string };
  content: unknown;
}

/**
 * The denial an iopub message reports, or null. The text comes from the
 * kernel, which the user controls: it is shown as text only, and links in it
 * are never followed (the step-up page offered is the guard's own, from the
 * context route).
 */
export function cellDenial(message: IIopubLike): ICellDenial | null {
  if (message.header.msg_type !== 'error') {
    return null;
  }
  const content = message.content as { ename?: unknown; evalue?: unknown };
  if (content.ename !== DENIAL_ENAME || typeof content.evalue !== 'string') {
    return null;
  }
  const text = content.evalue.slice(0, 4000);
  const summary = (text.split('\n', 1)[0] ?? '').trim() || 'nbguard denied an access.';
  return { summary, text, wantsStepUp: /second factor/i.test(text) };
}
