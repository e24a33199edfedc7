/**
 * The elevation request form: a role, or an action on a resource, for some
 * minutes, with a reason. It is checked here first (every mistake next to its
 * field), then by the server; the server's refusal is shown with what would
 * allow it, and a step-up button when a fresh second factor would.
 */
import { bodyOf } from './data';
import { h } from './dom';
import {
  checkRequestForm,
  FormErrors,
  IElevationRequest,
  INewRequest,
  IRequestForm,
  stepUpTarget
} from './model';
import { refusalView } from './views';

const FIELDS: (keyof IRequestForm)[] = ['role', 'action', 'resource', 'minutes', 'reason'];
const ACTIONS = ['dataset.read', 'dataset.write', 'dataset.export'];

export interface IFormOptions {
  /** Send the request; resolves with the new request or rejects with the server's error. */
  submit(body: INewRequest): Promise<IElevationRequest>;
  /** Open a URL (the hub's step-up page) in a new tab. */
  openUrl(url: string): void;
}

export class RequestForm {
  readonly node: HTMLFormElement;
  private readonly inputs: Record<keyof IRequestForm, HTMLInputElement | HTMLTextAreaElement>;
  private readonly kindRole: HTMLInputElement;
  private readonly kindGrant: HTMLInputElement;
  private readonly outcome: HTMLElement;
  private readonly button: HTMLButtonElement;

  constructor(private readonly options: IFormOptions) {
    const field = (
      name: keyof IRequestForm,
      label: string,
      control: HTMLInputElement | HTMLTextAreaElement
    ): HTMLElement => {
      control.id = `jp-nbguard-form-${name}`;
      control.name = name;
      control.setAttribute('aria-describedby', `jp-nbguard-form-${name}-error`);
      return h(
        'div',
        { class: `jp-nbguard-field jp-nbguard-field-${name}` },
        h('label', { for: control.id }, label),
        control,
        h('p', {
          id: `jp-nbguard-form-${name}-error`,
          class: 'jp-nbguard-field-error',
          'aria-live': 'polite'
        })
      );
    };
    this.kindRole = h('input', {
      type: 'radio',
      name: 'kind',
      value: 'role',
      id: 'jp-nbguard-kind-role'
    });
    this.kindGrant = h('input', {
      type: 'radio',
      name: 'kind',
      value: 'grant',
      id: 'jp-nbguard-kind-grant',
      checked: true
    });
    this.inputs = {
      kind: this.kindGrant,
      role: h('input', { type: 'text', class: 'jp-mod-styled', placeholder: 'ml-engineer' }),
      action: h('input', {
        type: 'text',
        class: 'jp-mod-styled',
        list: 'jp-nbguard-actions',
        value: 'dataset.read'
      }),
      resource: h('input', { type: 'text', class: 'jp-mod-styled', placeholder: 'dataset:sales' }),
      minutes: h('input', { type: 'number', class: 'jp-mod-styled', min: 1, step: 1, value: 60 }),
      reason: h('textarea', { class: 'jp-mod-styled', rows: 3 })
    };
    this.outcome = h('div', { class: 'jp-nbguard-outcome', 'aria-live': 'polite' });
    this.button = h(
      'button',
      { type: 'submit', class: 'jp-mod-styled jp-mod-accept jp-nbguard-button' },
      'Ask for access'
    );
    this.node = h(
      'form',
      { class: 'jp-nbguard-form', 'aria-label': 'Ask for access', novalidate: true },
      h(
        'fieldset',
        { class: 'jp-nbguard-kind' },
        h('legend', {}, 'Ask for'),
        h('label', { for: this.kindGrant.id }, this.kindGrant, ' an action on a resource'),
        h('label', { for: this.kindRole.id }, this.kindRole, ' a role')
      ),
      field('role', 'Role', this.inputs.role),
      field('action', 'Action', this.inputs.action),
      h('datalist', { id: 'jp-nbguard-actions' }, ...ACTIONS.map(a => h('option', { value: a }))),
      field('resource', 'Resource', this.inputs.resource),
      field('minutes', 'For how many minutes', this.inputs.minutes),
      field('reason', 'Reason (approvers read it)', this.inputs.reason),
      this.button,
      this.outcome
    );
    for (const radio of [this.kindRole, this.kindGrant]) {
      radio.addEventListener('change', () => this.showKind());
    }
    this.node.addEventListener('submit', event => {
      event.preventDefault();
      void this.send();
    });
    this.showKind();
  }

  /** Prefill the form to ask for `action` on `resource`, and put the focus on the reason. */
  prefill(action: string, resource: string): void {
    this.kindGrant.checked = true;
    this.showKind();
    this.inputs.action.value = action;
    this.inputs.resource.value = resource;
    this.inputs.reason.focus();
  }

  /** What the form holds now. */
  values(): IRequestForm {
    return {
      kind: this.kindRole.checked ? 'role' : 'grant',
      role: this.inputs.role.value,
      action: this.inputs.action.value,
      resource: this.inputs.resource.value,
      minutes: this.inputs.minutes.value,
      reason: this.inputs.reason.value
    };
  }

  /** Check, then send; show the errors or the outcome. */
  async send(): Promise<void> {
    const checked = checkRequestForm(this.values());
    this.showErrors(checked.errors ?? {});
    this.outcome.replaceChildren();
    if (!checked.body) {
      return;
    }
    this.button.disabled = true;
    try {
      const created = await this.options.submit(checked.body);
      this.inputs.reason.value = '';
      this.outcome.replaceChildren(
        h(
          'p',
          { class: 'jp-nbguard-success', role: 'status' },
          `Request ${created.id} sent: ${created.status}, waiting for ${created.required_approvals} approval(s).`
        )
      );
    } catch (reason) {
      const error = bodyOf(reason);
      this.outcome.replaceChildren(refusalView(error, stepUpTarget(error), this.options.openUrl));
    } finally {
      this.button.disabled = false;
    }
  }

  private showKind(): void {
    const role = this.kindRole.checked;
    const toggle = (name: keyof IRequestForm, shown: boolean): void => {
      const wrapper = this.inputs[name].parentElement;
      if (wrapper) {
        wrapper.hidden = !shown;
      }
    };
    toggle('role', role);
    toggle('action', !role);
    toggle('resource', !role);
  }

  private showErrors(errors: FormErrors): void {
    let first: HTMLElement | null = null;
    for (const name of FIELDS) {
      const control = this.inputs[name];
      const message = errors[name] ?? '';
      const note = this.node.querySelector(`#jp-nbguard-form-${name}-error`);
      if (note) {
        note.textContent = message;
      }
      if (message) {
        control.setAttribute('aria-invalid', 'true');
        first = first ?? control;
      } else {
        control.removeAttribute('aria-invalid');
      }
    }
    first?.focus();
  }
}
