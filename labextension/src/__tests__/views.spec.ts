/**
 * Unit tests of the DOM views and the request form (jsdom): what the panel
 * shows for a snapshot, that other people's text stays text, the form's
 * errors and labels, and a refusal with its step-up button.
 */
import { EMPTY, GuardData, ISnapshot } from '../data';
import { RequestForm } from '../form';
import type { IElevationRequest, IMe } from '../model';
import { catalogView, contextView, grantsView, recordingState, requestsView } from '../views';

const NOW = Date.now();
const ME: IMe = {
  user: 'alice',
  roles: ['data-scientist'],
  environment: 'train',
  mfa_method: 'totp',
  mfa_age_seconds: 90,
  network_zone: 'office',
  device_trusted: true,
  risk: 'low'
};

function snapshot(fields: Partial<ISnapshot>): ISnapshot {
  return { ...EMPTY, fetched: NOW, ...fields };
}

function request(fields: Partial<IElevationRequest>): IElevationRequest {
  return {
    id: 'req-1',
    requester: 'alice',
    kind: 'grant',
    action: 'dataset.read',
    target: 'dataset:customers',
    duration_seconds: 600,
    status: 'pending',
    required_approvals: 1,
    approvals: [],
    created: new Date(NOW).toISOString(),
    ...fields
  };
}

test('the context lists who I am and how I signed in', () => {
  // Every fact of the guard's "me" is shown, labelled.
  const node = contextView(snapshot({ me: ME }));
  const field = (name: string) => node.querySelector(`[data-field="${name}"]`)?.textContent;
  expect(field('user')).toBe('alice');
  expect(field('roles')).toBe('data-scientist');
  expect(field('mfa')).toBe('totp, 1 min 30 s ago');
  expect(field('device')).toBe('trusted');
  expect(field('zone')).toBe('office');
  expect(node.getAttribute('aria-labelledby')).toBe('jp-nbguard-context-title');
});

test('an unreachable guard is said plainly', () => {
  // A 503 from the server extension shows as an alert, not as an empty panel.
  const node = contextView(
    snapshot({ errors: { context: { status: 503, code: 'guard_unavailable', message: 'down' } } })
  );
  expect(node.querySelector('[role="alert"]')?.textContent).toContain('cannot be reached');
});

test('active grants have a countdown; ended ones are not listed', () => {
  // Only grants in force are shown, each with a <time> the panel counts down.
  const grants = [
    {
      id: 'g1',
      user: 'alice',
      role: 'ml-engineer',
      starts: new Date(NOW - 1000).toISOString(),
      expires: new Date(NOW + 125_000).toISOString()
    },
    {
      id: 'g2',
      user: 'alice',
      role: 'old',
      starts: new Date(NOW - 9000).toISOString(),
      expires: new Date(NOW - 1000).toISOString()
    }
  ];
  const node = grantsView(snapshot({ grants }), NOW);
  expect(node.querySelectorAll('li')).toHaveLength(1);
  expect(node.querySelector('time')?.textContent).toBe('2 min 05 s');
  expect(node.querySelector('time')?.getAttribute('datetime')).toBe(grants[0]?.expires);
});

test('a denied request shows the approver and the reason, as text', () => {
  // Another person's comment cannot inject markup into the panel.
  const denied = request({
    status: 'denied',
    approvals: [{ approver: 'bob', verdict: 'deny', comment: '<img src=x onerror=alert(1)>' }]
  });
  const node = requestsView(snapshot({ requests: [denied, request({ id: 'req-2' })] }));
  const items = [...node.querySelectorAll('li')].map(li => li.dataset.request);
  expect(items).toEqual(['req-2', 'req-1']);
  const reason = node.querySelector('.jp-nbguard-reason');
  expect(reason?.textContent).toBe('Denied by bob: <img src=x onerror=alert(1)>');
  expect(node.querySelector('img')).toBeNull();
});

test('the catalog offers code for readable datasets and a request for the others', () => {
  // A button per dataset, labelled for screen readers, doing the right thing.
  const seen: string[] = [];
  const node = catalogView(
    snapshot({
      datasets: [
        {
          name: 'sales',
          team: 'a',
          sensitivity: 'internal',
          environment: 'train',
          actions: ['dataset.read']
        },
        {
          name: 'customers',
          team: 'a',
          sensitivity: 'confidential',
          environment: 'train',
          actions: []
        }
      ],
      models: null
    }),
    {
      insertDataset: d => seen.push(`insert ${d.name}`),
      insertModel: m => seen.push(`model ${m.name}`),
      askFor: (action, resource) => seen.push(`ask ${action} ${resource}`)
    }
  );
  for (const button of node.querySelectorAll('button')) {
    expect(button.getAttribute('aria-label')).toBeTruthy();
    button.click();
  }
  expect(seen).toEqual(['insert sales', 'ask dataset.read dataset:customers']);
  expect(node.textContent).not.toContain('Models');
});

test('models appear when the server lists them', () => {
  // A models route that answers adds a Models list.
  const node = catalogView(snapshot({ models: [{ name: 'fraud', stage: 'Production' }] }), {
    insertDataset: () => undefined,
    insertModel: () => undefined,
    askFor: () => undefined
  });
  expect(node.querySelector('[data-model="fraud"]')).not.toBeNull();
});

describe('RequestForm', () => {
  function form(submit = jest.fn()): { form: RequestForm; submit: jest.Mock } {
    const made = new RequestForm({ submit, openUrl: jest.fn() });
    document.body.replaceChildren(made.node);
    return { form: made, submit };
  }

  test('every control has a label', () => {
    // Screen readers announce each field by its label.
    const { form: made } = form();
    for (const control of made.node.querySelectorAll('input:not([type=radio]), textarea')) {
      expect(made.node.querySelector(`label[for="${control.id}"]`)).not.toBeNull();
    }
  });

  test('mistakes show next to their fields and nothing is sent', async () => {
    // A blank reason and a bad resource are marked invalid, announced, and focused.
    const { form: made, submit } = form();
    (made.node.querySelector('#jp-nbguard-form-resource') as HTMLInputElement).value = 'sales';
    await made.send();
    expect(submit).not.toHaveBeenCalled();
    const resource = made.node.querySelector('#jp-nbguard-form-resource');
    expect(resource?.getAttribute('aria-invalid')).toBe('true');
    expect(made.node.querySelector('#jp-nbguard-form-resource-error')?.textContent).toContain(
      'type:name'
    );
    expect(made.node.querySelector('#jp-nbguard-form-reason-error')?.textContent).toContain(
      'Say why'
    );
    expect(document.activeElement).toBe(resource);
  });

  test('a refusal shows its reason and a step-up button that opens the hub page', async () => {
    // The server's 403 with a fresh-MFA remedy offers the step-up page.
    const openUrl = jest.fn();
    const error = {
      status: 403,
      code: 'access_denied',
      message: 'Denied: needs fresh MFA.',
      decision: {
        allowed: false,
        remedies: [{ requirements: [{ kind: 'fresh_mfa', value: 60 }], message: 'm' }]
      },
      step_up_url: '/hub/nbguard/mfa/step-up'
    };
    const made = new RequestForm({ submit: () => Promise.reject({ error }), openUrl });
    document.body.replaceChildren(made.node);
    made.prefill('dataset.read', 'dataset:customers');
    (made.node.querySelector('#jp-nbguard-form-reason') as HTMLTextAreaElement).value = 'audit';
    await made.send();
    const alert = made.node.querySelector('[role="alert"]');
    expect(alert?.textContent).toContain('Denied: needs fresh MFA.');
    (made.node.querySelector('.jp-nbguard-stepup') as HTMLButtonElement).click();
    expect(openUrl).toHaveBeenCalledWith('/hub/nbguard/mfa/step-up');
  });
});

describe('GuardData', () => {
  test('each route fails alone; a missing models route hides models', async () => {
    // A 503 on grants keeps the rest of the panel, and a 404 on models is not an error.
    const answers: Record<string, unknown> = {
      context: ME,
      requests: { requests: [] },
      catalog: { datasets: [] }
    };
    const data = new GuardData(<T>(endPoint: string): Promise<T> => {
      if (endPoint in answers) {
        return Promise.resolve(answers[endPoint] as T);
      }
      const status = endPoint === 'models' ? 404 : 503;
      return Promise.reject({ error: { status, code: 'x', message: `no ${endPoint}` } });
    });
    const seen: ISnapshot[] = [];
    data.subscribe(s => seen.push(s));
    const snap = await data.refresh();
    expect(snap.me?.user).toBe('alice');
    expect(snap.errors.grants?.message).toBe('no grants?active=0');
    expect(snap.models).toBeNull();
    expect(snap.active).toBe(true);
    expect(seen).toHaveLength(1);
  });

  test('a missing models route is asked once, not on every poll', async () => {
    // The server's log does not fill with a 404 per poll when it has no models route.
    const asked: string[] = [];
    const data = new GuardData(<T>(endPoint: string): Promise<T> => {
      asked.push(endPoint);
      return Promise.reject({ error: { status: 404, code: 'not_found', message: 'Not Found' } });
    });
    await data.refresh();
    await data.refresh();
    expect(asked.filter(e => e === 'models')).toHaveLength(1);
  });

  test('no nbguard routes at all means the extension is idle here', async () => {
    // A server without the active server extension is reported as not governed.
    const data = new GuardData(() =>
      Promise.reject({ error: { status: 404, code: 'not_found', message: 'Not Found' } })
    );
    expect((await data.refresh()).active).toBe(false);
  });
});

describe('recordingState', () => {
  test.each([
    ['before the first poll', { fetched: 0 }, 'nbguard', 'off'],
    ['active', {}, 'Recorded', 'ok'],
    [
      'guard unreachable',
      { errors: { context: { status: 503, code: 'guard_unavailable', message: 'x' } } },
      'Recorded · guard unreachable',
      'warn'
    ],
    ['extension idle', { active: false }, 'nbguard: not active', 'off']
  ])('%s', (_id, fields, text, tone) => {
    // The status bar claims recording only once the server extension has answered.
    const state = recordingState(snapshot(fields as Partial<ISnapshot>));
    expect([state.text, state.tone]).toEqual([text, tone]);
  });
});
