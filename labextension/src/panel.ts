/**
 * The side panel: the session's context, active grants with a live countdown,
 * my requests and their approvals, the request form and the catalog.
 *
 * Sections are rendered again only when their data changed, so a poll never
 * takes the focus from a button or the form; the countdowns are updated in
 * place every second.
 */
import { Widget } from '@lumino/widgets';

import type { GuardData, ISnapshot } from './data';
import { h } from './dom';
import { RequestForm } from './form';
import { formatDuration, secondsLeft } from './model';
import {
  catalogView,
  contextView,
  grantsView,
  ICatalogActions,
  requestsView,
  section
} from './views';

export interface IPanelOptions extends ICatalogActions {
  data: GuardData;
  openUrl(url: string): void;
}

type Key = 'context' | 'grants' | 'requests' | 'catalog';

export class NBGuardPanel extends Widget {
  readonly form: RequestForm;
  private readonly slots: Record<Key, HTMLElement>;
  private readonly rendered: Partial<Record<Key, string>> = {};
  private readonly banner: HTMLElement;
  private snapshot: ISnapshot;

  constructor(private readonly options: IPanelOptions) {
    super();
    this.id = 'jp-nbguard-panel';
    this.addClass('jp-nbguard-panel');
    this.title.caption = 'nbguard: access and session';
    this.node.setAttribute('role', 'region');
    this.node.setAttribute('aria-label', 'nbguard');
    this.snapshot = options.data.snapshot;
    this.form = new RequestForm({
      submit: body => options.data.ask(body),
      openUrl: options.openUrl
    });
    const refresh = h(
      'button',
      {
        type: 'button',
        class: 'jp-mod-styled jp-nbguard-button jp-nbguard-refresh',
        'aria-label': 'Refresh nbguard information',
        onclick: () => void options.data.refresh()
      },
      'Refresh'
    );
    this.banner = h('div', { class: 'jp-nbguard-banner' });
    this.slots = {
      context: h('div'),
      grants: h('div'),
      requests: h('div'),
      catalog: h('div')
    };
    this.node.append(
      h('header', { class: 'jp-nbguard-header' }, h('h2', {}, 'nbguard'), refresh),
      this.banner,
      this.slots.context,
      this.slots.grants,
      this.slots.requests,
      section('ask', 'Ask for access', this.form.node),
      this.slots.catalog
    );
    options.data.subscribe(snapshot => this.render(snapshot));
    this.render(this.snapshot);
  }

  /** Render the sections whose data changed. */
  render(snapshot: ISnapshot): void {
    this.snapshot = snapshot;
    const now = Date.now();
    this.banner.replaceChildren(
      snapshot.active
        ? ''
        : h(
            'p',
            { class: 'jp-nbguard-error', role: 'alert' },
            'nbguard is not active in this server: nothing here is governed or recorded.'
          )
    );
    const parts: Record<Key, [unknown, () => HTMLElement]> = {
      context: [[snapshot.me, snapshot.errors.context], () => contextView(snapshot)],
      grants: [[snapshot.grants, snapshot.errors.grants], () => grantsView(snapshot, Date.now())],
      requests: [[snapshot.requests, snapshot.errors.requests], () => requestsView(snapshot)],
      catalog: [
        [snapshot.datasets, snapshot.models, snapshot.errors.catalog],
        () => catalogView(snapshot, this.options)
      ]
    };
    for (const key of Object.keys(parts) as Key[]) {
      const [data, render] = parts[key];
      // The MFA age grows every poll; only its minute changes the view.
      const sig = JSON.stringify(data, (k, v) =>
        k === 'mfa_age_seconds' && typeof v === 'number' ? Math.floor(v / 60) : v
      );
      if (this.rendered[key] !== sig) {
        this.rendered[key] = sig;
        this.slots[key].replaceChildren(render());
      }
    }
    this.tick(now);
  }

  /** Count down every grant's time left; a grant that ended leaves the list. */
  tick(now: number = Date.now()): void {
    let ended = false;
    for (const node of this.node.querySelectorAll<HTMLElement>('[data-expires]')) {
      const left = secondsLeft(node.dataset.expires ?? '', now);
      node.textContent = formatDuration(left);
      ended = ended || left === 0;
    }
    if (ended) {
      this.rendered.grants = undefined;
      this.slots.grants.replaceChildren(grantsView(this.snapshot, now));
    }
  }
}
