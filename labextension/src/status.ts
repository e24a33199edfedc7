/**
 * The status-bar item: says that this session is recorded (or that nbguard
 * is not active, or cannot reach the guard). Clicking it opens the panel.
 */
import { Widget } from '@lumino/widgets';

import type { ISnapshot } from './data';
import { h } from './dom';
import { recordingState } from './views';

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
