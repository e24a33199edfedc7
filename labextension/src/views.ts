/**
 * The panel's sections as DOM, rendered from a snapshot. Every section is a
 * labelled region with a heading; lists are lists; every button says what it
 * does to a screen reader. Colours come from JupyterLab's theme variables
 * (style/base.css), so light and dark themes both work.
 */
import type { ISnapshot } from './data';
import { h } from './dom';
import {
  denialLines,
  denialReason,
  describeAccess,
  describeApprovals,
  describeMfa,
  formatDuration,
  IDataset,
  IElevationRequest,
  IErrorBody,
  IGrant,
  IModel,
  isActive,
  newestFirst,
  secondsLeft
} from './model';

/** What the catalog's buttons do. */
export interface ICatalogActions {
  insertDataset(dataset: IDataset): void;
  insertModel(model: IModel): void;
  /** Fill the request form to ask for `action` on `resource`. */
  askFor(action: string, resource: string): void;
}

/** A titled region of the panel. */
export function section(id: string, title: string, ...body: (Node | null)[]): HTMLElement {
  const headingId = `jp-nbguard-${id}-title`;
  return h(
    'section',
    { class: `jp-nbguard-section jp-nbguard-${id}`, 'aria-labelledby': headingId },
    h('h3', { id: headingId, class: 'jp-nbguard-heading' }, title),
    ...body
  );
}

/** An error of a section, said plainly (an alert, so screen readers announce it). */
export function errorNote(error: IErrorBody | undefined): HTMLElement | null {
  if (!error) {
    return null;
  }
  const words =
    error.code === 'guard_unavailable'
      ? `The guard service cannot be reached, so nothing governed is allowed now. ${error.message}`
      : error.message;
  return h('p', { class: 'jp-nbguard-error', role: 'alert' }, words);
}

/** Who I am and the context the guard decides my requests in. */
export function contextView(snapshot: ISnapshot): HTMLElement {
  const me = snapshot.me;
  if (!me) {
    return section(
      'context',
      'This session',
      errorNote(snapshot.errors.context) ?? h('p', { class: 'jp-nbguard-muted' }, 'Loading…')
    );
  }
  const elevated = me.elevated_roles ?? [];
  const row = (label: string, value: string, key: string): HTMLElement[] => [
    h('dt', {}, label),
    h('dd', { 'data-field': key }, value)
  ];
  return section(
    'context',
    'This session',
    me.locked
      ? h(
          'p',
          { class: 'jp-nbguard-error', role: 'alert' },
          'Your access is locked by an administrator: nothing governed is allowed.'
        )
      : null,
    errorNote(snapshot.errors.context),
    h(
      'dl',
      { class: 'jp-nbguard-facts' },
      ...row('User', me.user, 'user'),
      ...row('Roles', me.roles.length ? me.roles.join(', ') : 'none', 'roles'),
      ...(elevated.length ? row('Elevated', elevated.join(', '), 'elevated') : []),
      ...row('Second factor', describeMfa(me), 'mfa'),
      ...row('Device', me.device_trusted ? 'trusted' : 'not trusted', 'device'),
      ...row('Network zone', me.network_zone, 'zone'),
      ...row('Environment', me.environment, 'environment'),
      ...row('Risk', me.risk, 'risk')
    )
  );
}

/** A `<time>` that the panel's clock keeps counting down. */
export function countdown(expires: string, now: number): HTMLElement {
  const left = secondsLeft(expires, now);
  return h(
    'time',
    { class: 'jp-nbguard-countdown', datetime: expires, 'data-expires': expires },
    formatDuration(left)
  );
}

/** My grants in force now, each with the time it has left. */
export function grantsView(snapshot: ISnapshot, now: number): HTMLElement {
  const active = snapshot.grants
    .filter(g => isActive(g, now))
    .sort((a, b) => secondsLeft(a.expires, now) - secondsLeft(b.expires, now));
  const item = (grant: IGrant): HTMLElement =>
    h(
      'li',
      { class: 'jp-nbguard-grant', 'data-grant': grant.id },
      h('span', { class: 'jp-nbguard-what' }, describeAccess(grant)),
      grant.break_glass ? h('span', { class: 'jp-nbguard-badge' }, 'break-glass') : null,
      h('span', { class: 'jp-nbguard-left' }, ' · ', countdown(grant.expires, now), ' left')
    );
  return section(
    'grants',
    'Active grants',
    errorNote(snapshot.errors.grants),
    active.length
      ? h('ul', { class: 'jp-nbguard-list' }, ...active.map(item))
      : h('p', { class: 'jp-nbguard-muted' }, 'No active grants.')
  );
}

/** My requests: pending ones first, then the ten most recent others. */
export function requestsView(snapshot: ISnapshot): HTMLElement {
  const sorted = newestFirst(snapshot.requests, r => r.created);
  const pending = sorted.filter(r => r.status === 'pending');
  const decided = sorted.filter(r => r.status !== 'pending').slice(0, 10);
  const item = (request: IElevationRequest): HTMLElement => {
    const reason = request.status === 'denied' ? denialReason(request) : '';
    return h(
      'li',
      { class: `jp-nbguard-request jp-nbguard-${request.status}`, 'data-request': request.id },
      h('span', { class: 'jp-nbguard-what' }, describeAccess(request)),
      h('span', { class: 'jp-nbguard-status' }, request.status),
      h(
        'div',
        { class: 'jp-nbguard-detail' },
        `${formatDuration(request.duration_seconds)} · ${describeApprovals(request)}`
      ),
      reason ? h('div', { class: 'jp-nbguard-reason' }, `Denied by ${reason}`) : null
    );
  };
  return section(
    'requests',
    'My requests',
    errorNote(snapshot.errors.requests),
    pending.length || decided.length
      ? h('ul', { class: 'jp-nbguard-list' }, ...pending.map(item), ...decided.map(item))
      : h('p', { class: 'jp-nbguard-muted' }, 'No requests yet.')
  );
}

/** The datasets (and models) I may see, with what I may do and a button to use each. */
export function catalogView(snapshot: ISnapshot, actions: ICatalogActions): HTMLElement {
  const dataset = (d: IDataset): HTMLElement => {
    const canRead = d.actions.includes('dataset.read');
    return h(
      'li',
      { class: 'jp-nbguard-dataset', 'data-dataset': d.name },
      h('span', { class: 'jp-nbguard-what' }, d.name),
      h(
        'span',
        { class: `jp-nbguard-badge jp-nbguard-sensitivity-${d.sensitivity}` },
        d.sensitivity
      ),
      d.description ? h('div', { class: 'jp-nbguard-detail' }, d.description) : null,
      h(
        'div',
        { class: 'jp-nbguard-detail' },
        `${d.environment} · ${d.team} · ${d.actions.length ? d.actions.join(', ') : 'no actions now'}`
      ),
      canRead
        ? h(
            'button',
            {
              type: 'button',
              class: 'jp-mod-styled jp-mod-accept jp-nbguard-button',
              'aria-label': `Insert code that reads ${d.name} into the notebook`,
              onclick: () => actions.insertDataset(d)
            },
            'Insert code'
          )
        : h(
            'button',
            {
              type: 'button',
              class: 'jp-mod-styled jp-nbguard-button',
              'aria-label': `Ask for read access to ${d.name}`,
              onclick: () => actions.askFor('dataset.read', `dataset:${d.name}`)
            },
            'Ask to read'
          )
    );
  };
  const model = (m: IModel): HTMLElement =>
    h(
      'li',
      { class: 'jp-nbguard-model', 'data-model': m.name },
      h('span', { class: 'jp-nbguard-what' }, m.name),
      m.sensitivity
        ? h(
            'span',
            { class: `jp-nbguard-badge jp-nbguard-sensitivity-${m.sensitivity}` },
            m.sensitivity
          )
        : null,
      m.description ? h('div', { class: 'jp-nbguard-detail' }, m.description) : null,
      m.actions ? h('div', { class: 'jp-nbguard-detail' }, m.actions.join(', ')) : null,
      h(
        'button',
        {
          type: 'button',
          class: 'jp-mod-styled jp-nbguard-button',
          'aria-label': `Insert code that loads model ${m.name} into the notebook`,
          onclick: () => actions.insertModel(m)
        },
        'Insert code'
      )
    );
  const models = snapshot.models;
  return section(
    'catalog',
    'Catalog',
    errorNote(snapshot.errors.catalog),
    h('h4', { class: 'jp-nbguard-subheading' }, 'Datasets'),
    snapshot.datasets.length
      ? h('ul', { class: 'jp-nbguard-list' }, ...snapshot.datasets.map(dataset))
      : h('p', { class: 'jp-nbguard-muted' }, 'No datasets visible to you.'),
    models === null ? null : h('h4', { class: 'jp-nbguard-subheading' }, 'Models'),
    models === null
      ? null
      : models.length
        ? h('ul', { class: 'jp-nbguard-list' }, ...models.map(model))
        : h('p', { class: 'jp-nbguard-muted' }, 'No models visible to you.')
  );
}

/** A refusal of the server, with each way it would be allowed, as an alert. */
export function refusalView(
  error: IErrorBody,
  stepUp: string | null,
  openUrl: (url: string) => void
): HTMLElement {
  return h(
    'div',
    { class: 'jp-nbguard-error', role: 'alert' },
    ...denialLines(error).map(line => h('p', {}, line)),
    stepUp
      ? h(
          'button',
          {
            type: 'button',
            class: 'jp-mod-styled jp-mod-warn jp-nbguard-button jp-nbguard-stepup',
            'aria-label':
              'Confirm it is you with a fresh second factor (opens the hub in a new tab)',
            onclick: () => openUrl(stepUp)
          },
          'Step up (fresh second factor)'
        )
      : null
  );
}

/** The item's words and tone for a snapshot. */
export function recordingState(snapshot: ISnapshot): {
  text: string;
  title: string;
  tone: 'ok' | 'warn' | 'off';
} {
  if (!snapshot.fetched) {
    return { text: 'nbguard', title: 'nbguard: checking this session…', tone: 'off' };
  }
  if (!snapshot.active) {
    return {
      text: 'nbguard: not active',
      title: 'nbguard is not active in this server: nothing is governed or recorded.',
      tone: 'off'
    };
  }
  if (snapshot.errors.context?.code === 'guard_unavailable') {
    return {
      text: 'Recorded · guard unreachable',
      title:
        'The guard service cannot be reached: governed access is refused, and cell records wait in a local spool until it answers.',
      tone: 'warn'
    };
  }
  return {
    text: 'Recorded',
    title:
      'This session is recorded by nbguard: every cell you run and every governed access is kept in a tamper-evident ledger that reviewers can replay.',
    tone: 'ok'
  };
}
