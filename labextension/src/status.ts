/**
 * The status-bar item: says that this session is recorded (or that nbguard
 * is not active, or cannot reach the guard). Clicking it opens the panel.
 */
import { Widget } from '@lumino/widgets';

import type { ISnapshot } from './data';
import { h } from './dom';

/** The item's words and tone for a snapshot. */
export function recordingState(snapshot: ISnapshot): {
  text: string;
  title: string;
  tone: 'ok' | 'warn' | 'off';
} {
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

export class RecordingStatus extends Widget {
  private readonly label: HTMLElement;

  constructor(onOpen: () => void) {
    super({
      node: h('button', {
        type: 'button',
        class: 'jp-nbguard-status-item',
        onclick: () => onOpen()
      })
    });
    this.id = 'jp-nbguard-status';
    this.label = h('span', {});
    this.node.append(h('span', { class: 'jp-nbguard-dot', 'aria-hidden': 'true' }), this.label);
  }

  render(snapshot: ISnapshot): void {
    const state = recordingState(snapshot);
    this.label.textContent = state.text;
    this.node.title = state.title;
    this.node.setAttribute('aria-label', `${state.title} Open the nbguard panel.`);
    this.node.dataset.tone = state.tone;
  }
}
