/**
 * Unit tests of model.ts: durations, grant activity, the request form's
 * checks (the same rules the server extension applies) and the step-up link.
 */
import {
  checkRequestForm,
  denialLines,
  describeApprovals,
  describeMfa,
  formatDuration,
  IElevationRequest,
  IErrorBody,
  IGrant,
  IRequestForm,
  isActive,
  safeLink,
  secondsLeft,
  stepUpTarget
} from '../model';

const NOW = Date.parse('2026-01-01T12:00:00Z');

function grant(fields: Partial<IGrant> = {}): IGrant {
  return {
    id: 'g-1',
    user: 'alice',
    action: 'dataset.read',
    target: 'dataset:sales',
    starts: '2026-01-01T11:00:00Z',
    expires: '2026-01-01T12:10:00Z',
    ...fields
  };
}

describe('formatDuration', () => {
  test.each([
    ['zero', 0, '0 s'],
    ['seconds', 42, '42 s'],
    ['minutes', 249, '4 min 09 s'],
    ['hours', 7500, '2 h 05 min'],
    ['days', 90000, '1 d 1 h'],
    ['negative is zero', -5, '0 s']
  ])('%s', (_id, seconds, words) => {
    // A duration reads as a person would say it.
    expect(formatDuration(seconds)).toBe(words);
  });
});

describe('grants', () => {
  test.each([
    ['in force', grant(), true],
    ['expired', grant({ expires: '2026-01-01T11:59:59Z' }), false],
    ['revoked', grant({ revoked: '2026-01-01T11:30:00Z' }), false],
    ['not yet started', grant({ starts: '2026-01-01T12:01:00Z' }), false],
    ['expiry unreadable', grant({ expires: 'soon' }), false]
  ])('%s', (_id, value, active) => {
    // A grant is active only while started, not expired and not revoked.
    expect(isActive(value, NOW)).toBe(active);
  });

  test('seconds left round up and stop at zero', () => {
    // The countdown never shows a negative time and never a grant at 0 while still in force.
    expect(secondsLeft('2026-01-01T12:00:00.200Z', NOW)).toBe(1);
    expect(secondsLeft('2026-01-01T11:00:00Z', NOW)).toBe(0);
  });
});

describe('describe', () => {
  test('MFA method and age', () => {
    // The MFA line names the method and how long ago it was given.
    const me = { mfa_method: 'totp', mfa_age_seconds: 125 };
    expect(describeMfa(me as never)).toBe('totp, 2 min 05 s ago');
    expect(describeMfa({ mfa_method: 'none' } as never)).toBe('none');
  });

  test('approvals name the approvers', () => {
    // A pending request says how many approvals it has of how many, and whose.
    const request = {
      required_approvals: 2,
      approvals: [{ approver: 'bob', verdict: 'approve' }]
    } as IElevationRequest;
    expect(describeApprovals(request)).toBe('1 of 2 approvals (bob)');
  });
});

const FORM: IRequestForm = {
  kind: 'grant',
  role: '',
  action: 'dataset.read',
  resource: 'dataset:sales',
  minutes: '30',
  reason: 'quarterly churn analysis'
};

describe('checkRequestForm', () => {
  test('a good grant request becomes the server body', () => {
    // Minutes become duration_seconds; only the fields of the kind asked for are sent.
    expect(checkRequestForm(FORM)).toEqual({
      body: {
        action: 'dataset.read',
        resource: 'dataset:sales',
        duration_seconds: 1800,
        reason: 'quarterly churn analysis'
      }
    });
  });

  test('a role request sends only the role', () => {
    // A role request never carries an action or a resource (the server refuses both).
    const checked = checkRequestForm({ ...FORM, kind: 'role', role: 'ml-engineer' });
    expect(checked.body).toEqual({
      role: 'ml-engineer',
      duration_seconds: 1800,
      reason: 'quarterly churn analysis'
    });
  });

  test.each([
    ['no role', { kind: 'role' as const, role: '' }, 'role'],
    ['bad role', { kind: 'role' as const, role: 'Admin!' }, 'role'],
    ['no action', { action: '' }, 'action'],
    ['no resource', { resource: ' ' }, 'resource'],
    ['resource without type', { resource: 'sales' }, 'resource'],
    ['zero minutes', { minutes: '0' }, 'minutes'],
    ['fractional minutes', { minutes: '1.5' }, 'minutes'],
    ['not a number', { minutes: 'ten' }, 'minutes'],
    ['too long', { minutes: '20000' }, 'minutes'],
    ['blank reason', { reason: '   ' }, 'reason'],
    ['reason over 2000', { reason: 'x'.repeat(2001) }, 'reason']
  ])('%s', (_id, change, field) => {
    // Each mistake is reported next to its own field and nothing is sent.
    const checked = checkRequestForm({ ...FORM, ...change });
    expect(checked.body).toBeUndefined();
    expect(Object.keys(checked.errors ?? {})).toEqual([field]);
  });
});

function denial(fields: Partial<IErrorBody> = {}): IErrorBody {
  return {
    status: 403,
    code: 'access_denied',
    message: 'Denied: user:alice elevation.request role:admin.',
    decision: {
      allowed: false,
      correlation_id: 'c-1',
      remedies: [
        {
          requirements: [{ kind: 'fresh_mfa', value: 300 }],
          message: 'a second factor within the last 5 min (step up)'
        }
      ]
    },
    step_up_url: '/hub/nbguard/mfa/step-up',
    ...fields
  };
}

describe('step-up', () => {
  test.each([
    ['fresh MFA remedy', denial(), '/hub/nbguard/mfa/step-up'],
    [
      'full URL',
      denial({ step_up_url: 'https://hub.example/hub/nbguard/mfa/step-up' }),
      'https://hub.example/hub/nbguard/mfa/step-up'
    ],
    ['no MFA remedy', denial({ decision: { allowed: false, remedies: [] } }), null],
    ['no URL', denial({ step_up_url: undefined }), null],
    ['javascript URL', denial({ step_up_url: 'javascript:alert(1)' }), null],
    ['protocol-relative', denial({ step_up_url: '//evil.example/step-up' }), null],
    ['backslash trick', denial({ step_up_url: '/\\evil.example' }), null],
    ['no error', null, null]
  ])('%s', (_id, error, target) => {
    // The step-up button appears only for a fresh-MFA remedy, and only with a safe link.
    expect(stepUpTarget(error)).toBe(target);
  });

  test('data URLs are not links', () => {
    // Only http(s) and same-origin paths are ever opened.
    expect(safeLink('data:text/html,<script>alert(1)</script>')).toBeNull();
  });

  test('denial lines carry the remedies and the correlation id', () => {
    // The refusal says what would allow it and the id to quote to an admin.
    expect(denialLines(denial())).toEqual([
      'Denied: user:alice elevation.request role:admin.',
      'Would be allowed with a second factor within the last 5 min (step up).',
      'Decision c-1 (quote it to your hub admin).'
    ]);
  });
});
