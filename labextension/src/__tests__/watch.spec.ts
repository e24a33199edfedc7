/**
 * Unit tests of watch.ts: which grant changes become notifications, and
 * which kernel messages are denials of a governed access.
 */
import type { IGrant } from '../model';
import { cellDenial, GrantWatcher, warningLead } from '../watch';

const T0 = Date.parse('2026-01-01T12:00:00Z');
const at = (seconds: number): string => new Date(T0 + seconds * 1000).toISOString();

function grant(id: string, starts: number, expires: number, extra: Partial<IGrant> = {}): IGrant {
  return {
    id,
    user: 'alice',
    role: 'ml-engineer',
    starts: at(starts),
    expires: at(expires),
    ...extra
  };
}

describe('GrantWatcher', () => {
  test('grants held at the first poll are not announced as new', () => {
    // Opening the lab does not notify about grants the user already had.
    const watcher = new GrantWatcher();
    expect(watcher.update([grant('g', -60, 3600)], T0)).toEqual([]);
  });

  test('a new grant, its warning, its expiry: each once', () => {
    // Approval, "about to expire" and "expired" each notify exactly once, in that order.
    const watcher = new GrantWatcher();
    watcher.update([], T0);
    const g = grant('g', 0, 400);
    expect(watcher.update([g], T0 + 1000).map(n => n.kind)).toEqual(['granted']);
    expect(watcher.update([g], T0 + 2000)).toEqual([]);
    const warned = watcher.update([g], T0 + 301_000);
    expect(warned.map(n => n.kind)).toEqual(['expiring']);
    expect(warned[0]?.message).toContain('expires in 1 min 39 s');
    expect(watcher.update([g], T0 + 302_000)).toEqual([]);
    expect(watcher.update([g], T0 + 400_000).map(n => n.kind)).toEqual(['expired']);
    expect(watcher.update([g], T0 + 401_000)).toEqual([]);
  });

  test('a revocation names who revoked and why', () => {
    // A revoked grant is told apart from an expired one, with the revoker and reason.
    const watcher = new GrantWatcher();
    const g = grant('g', -60, 3600);
    watcher.update([g], T0);
    const revoked = { ...g, revoked: at(10), revoked_by: 'carol', revoke_reason: 'incident' };
    const notices = watcher.update([revoked], T0 + 10_000);
    expect(notices.map(n => [n.kind, n.message])).toEqual([
      ['revoked', 'Your grant for role ml-engineer was revoked by carol: incident.']
    ]);
  });

  test('a grant that vanishes before its end counts as revoked', () => {
    // The server no longer listing an unexpired grant is not silently ignored.
    const watcher = new GrantWatcher();
    watcher.update([grant('g', -60, 3600)], T0);
    expect(watcher.update([], T0 + 1000).map(n => n.kind)).toEqual(['revoked']);
  });

  test.each([
    ['one minute', 60, 15],
    ['two hours', 7200, 300],
    ['tiny', 8, 5]
  ])('warning lead for %s', (_id, total, lead) => {
    // Short grants warn at a quarter of their length, long ones five minutes before.
    expect(warningLead(total)).toBe(lead);
  });
});

describe('cellDenial', () => {
  const message = (ename: string, evalue: unknown, type = 'error') => ({
    header: { msg_type: type },
    content: { ename, evalue, traceback: [] }
  });

  test('a GuardPermissionError is a denial, summarised by its first line', () => {
    // The notification carries what was denied, and whether a step-up would help.
    const denial = cellDenial(
      message(
        'GuardPermissionError',
        'nbguard denied reading nbguard://customers/a.csv.\nDenied: ...\nConfirm it is you with a fresh second factor at /hub/x, then run the cell again.'
      )
    );
    expect(denial?.summary).toBe('nbguard denied reading nbguard://customers/a.csv.');
    expect(denial?.wantsStepUp).toBe(true);
  });

  test.each([
    ['another error', message('PermissionError', 'nope')],
    ['a stream', message('GuardPermissionError', 'x', 'stream')],
    ['no text', message('GuardPermissionError', 42)]
  ])('%s is not a denial', (_id, msg) => {
    // Only the kernel hooks' GuardPermissionError errors count.
    expect(cellDenial(msg)).toBeNull();
  });
});
