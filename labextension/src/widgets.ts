/**
 * The two views of the Slicehub status: the status-bar item (a keyboard-operable button) and
 * the session panel in the main area (spend, holds, the project's balance, and Extend).
 * Plain DOM on Lumino widgets: the views are small, and every text comes from model.ts.
 */
import { Message } from '@lumino/messaging';
import { ISignal, Signal } from '@lumino/signaling';
import { Widget } from '@lumino/widgets';

import {
  describeDuration,
  describePolicy,
  EXTEND_CHOICES,
  formatClockTime,
  formatCountdown,
  formatMoney,
  IMoneySplit,
  itemView,
  secondsLeft,
  State
} from './model';
import { SlicehubStatus } from './status';

/** Build an element: `h('td', { class: 'x' }, 'text', child)`. */
function h(
  tag: string,
  attrs: Record<string, string> = {},
  ...children: (Node | string)[]
): HTMLElement {
  const node = document.createElement(tag);
  Object.entries(attrs).forEach(([key, value]) => node.setAttribute(key, value));
  node.append(...children);
  return node;
}

// ---------------------------------------------------------------------------------------------

/** The status-bar item: slice, countdown and money left; Enter, Space or a click opens the panel. */
export class SlicehubStatusItem extends Widget {
  constructor(
    private readonly _status: SlicehubStatus,
    private readonly _open: () => void
  ) {
    super();
    this.addClass('jp-slicehub-StatusItem');
    this.node.setAttribute('role', 'button');
    this.node.tabIndex = 0;
    this._status.changed.connect(this._render, this);
    this._status.ticked.connect(this._render, this);
    this._render();
  }

  /** Whether the status bar shows the item (hidden with no session and no slice). */
  get visible(): boolean {
    return this._visible;
  }

  get visibleChanged(): ISignal<this, void> {
    return this._visibleChanged;
  }

  handleEvent(event: Event): void {
    if (event.type === 'click') {
      this._open();
    } else if (event.type === 'keydown') {
      const key = (event as KeyboardEvent).key;
      if (key === 'Enter' || key === ' ') {
        event.preventDefault();
        this._open();
      }
    }
  }

  protected onAfterAttach(msg: Message): void {
    super.onAfterAttach(msg);
    this.node.addEventListener('click', this);
    this.node.addEventListener('keydown', this);
  }

  protected onBeforeDetach(msg: Message): void {
    this.node.removeEventListener('click', this);
    this.node.removeEventListener('keydown', this);
    super.onBeforeDetach(msg);
  }

  private _render(): void {
    const view = itemView(this._status.state, Date.now());
    if (this.node.textContent !== view.text) {
      this.node.textContent = view.text;
    }
    this.node.setAttribute('aria-label', view.label);
    this.node.title = view.label;
    this.node.dataset.tone = view.tone;
    if (view.visible !== this._visible) {
      this._visible = view.visible;
      this._visibleChanged.emit();
    }
  }

  private _visible = false;
  private _visibleChanged = new Signal<this, void>(this);
}

// ---------------------------------------------------------------------------------------------

let panelCount = 0;

/** The session panel: what is spent, held and left, and the Extend control. */
export class SlicehubPanel extends Widget {
  constructor(private readonly _status: SlicehubStatus) {
    super();
    const n = ++panelCount;
    this.id = 'slicehub-session-panel';
    this.addClass('jp-slicehub-Panel');
    this.title.label = 'Slicehub';
    this.title.caption = 'Slicehub session: time, money and Extend';
    this.title.closable = true;
    this.node.tabIndex = -1;
    this.node.setAttribute('role', 'region');
    this.node.setAttribute('aria-label', 'Slicehub session');

    const selectId = `jp-slicehub-extend-minutes-${n}`;
    this._select = h('select', { id: selectId, class: 'jp-mod-styled' }) as HTMLSelectElement;
    EXTEND_CHOICES.forEach(choice =>
      this._select.append(h('option', { value: String(choice.minutes) }, choice.label))
    );
    this._select.value = '60';
    this._button = h(
      'button',
      { type: 'submit', class: 'jp-mod-styled jp-mod-accept' },
      'Extend'
    ) as HTMLButtonElement;
    this._done = h('p', { role: 'status', class: 'jp-slicehub-done' });
    this._refused = h('p', { role: 'alert', class: 'jp-slicehub-refused' });
    this._fieldset = h(
      'fieldset',
      {},
      h('legend', {}, 'Extend this session'),
      h('label', { for: selectId }, 'Extend by'),
      ' ',
      this._select,
      ' ',
      this._button
    ) as HTMLFieldSetElement;
    this._form = h('form', { class: 'jp-slicehub-extend' }, this._fieldset) as HTMLFormElement;
    this._form.addEventListener('submit', event => {
      event.preventDefault();
      void this._extend();
    });
    this._info = h('div', { class: 'jp-slicehub-info' });
    this.node.append(
      h('h2', {}, 'Slicehub session'),
      this._info,
      this._form,
      this._done,
      this._refused
    );

    this._status.changed.connect(this._render, this);
    this._status.ticked.connect(this._tick, this);
    this._render();
  }

  protected onActivateRequest(msg: Message): void {
    super.onActivateRequest(msg);
    (this._fieldset.disabled ? this.node : this._select).focus();
  }

  private async _extend(): Promise<void> {
    const minutes = Number(this._select.value);
    const choice = EXTEND_CHOICES.find(c => c.minutes === minutes);
    this._done.textContent = '';
    this._refused.textContent = '';
    this._button.disabled = true;
    this._button.textContent = 'Extending…';
    try {
      const result = await this._status.extend(minutes);
      if (result.ok) {
        const end = formatClockTime(result.session.end_at, Date.now());
        this._done.textContent = `Extended by ${choice?.label ?? `${minutes} min`}: the session now ends at ${end}.`;
      } else {
        this._refused.textContent = `Not extended: ${result.message}`;
      }
    } finally {
      this._button.disabled = false;
      this._button.textContent = 'Extend';
    }
  }

  /** Rebuild the facts; the form keeps its focus and selection. */
  private _render(): void {
    const state = this._status.state;
    const now = Date.now();
    this._countdown = null;
    this._info.replaceChildren(...this._facts(state, now));
    this._fieldset.disabled = !(state.kind === 'ok' && state.status.session);
    this._tick();
  }

  private _tick(): void {
    const state = this._status.state;
    if (this._countdown && state.kind === 'ok' && state.status.session) {
      const left = secondsLeft(state.status.session.end_at, state.offsetMs, Date.now());
      this._countdown.textContent = `${formatCountdown(left)} left`;
      this._countdown.setAttribute('aria-label', `${describeDuration(left)} left`);
    }
  }

  private _facts(state: State, now: number): HTMLElement[] {
    if (state.kind === 'loading') {
      return [h('p', {}, 'Reading the session status…')];
    }
    if (state.kind === 'offline') {
      return [
        h(
          'p',
          {},
          'Slicehub is offline: this server cannot read the session status. ' +
            'The session itself is not affected; this panel retries every 10 seconds.'
        )
      ];
    }
    const { slice, session, project, quota } = state.status;
    const facts: HTMLElement[] = [];
    const rows: [string, Node | string][] = [
      ['GPU slice', slice ? `${slice.type} (${slice.description})` : 'none']
    ];
    if (session) {
      this._countdown = h('span', { class: 'jp-slicehub-countdown' });
      rows.push(
        ['Session', `#${session.id} for project ${session.project}, ${session.status}`],
        ['Started', formatClockTime(session.started_at, now)],
        ['Ends', h('span', {}, `${formatClockTime(session.end_at, now)}, `, this._countdown)]
      );
    }
    facts.push(
      h('dl', {}, ...rows.flatMap(([term, value]) => [h('dt', {}, term), h('dd', {}, value)]))
    );
    if (session) {
      const row = (name: string, split: Partial<IMoneySplit>) =>
        h(
          'tr',
          {},
          h('th', { scope: 'row' }, name),
          ...(['list', 'subsidy', 'copay'] as const).map(key =>
            h('td', {}, split[key] === undefined ? '—' : formatMoney(split[key]))
          )
        );
      facts.push(
        h(
          'table',
          { class: 'jp-slicehub-money' },
          h('caption', {}, 'This session'),
          h(
            'thead',
            {},
            h(
              'tr',
              {},
              h('td', {}),
              h('th', { scope: 'col' }, 'List price'),
              h('th', { scope: 'col' }, 'Subsidy'),
              h('th', { scope: 'col' }, 'Co-pay')
            )
          ),
          h(
            'tbody',
            {},
            row('Spent so far', session.spent),
            row('Held', session.held),
            row('Left', session.left)
          )
        )
      );
    } else {
      facts.push(h('p', {}, 'No Slicehub session is metering this server.'));
    }
    if (project) {
      facts.push(
        h(
          'dl',
          { class: 'jp-slicehub-project' },
          h('dt', {}, 'Project'),
          h('dd', {}, project.slug),
          h('dt', {}, 'Subsidy left'),
          h('dd', {}, formatMoney(project.subsidy_left)),
          h('dt', {}, 'Credit left'),
          h('dd', {}, formatMoney(project.credit_left)),
          h('dt', {}, 'Policy'),
          h('dd', {}, describePolicy(project.policy))
        )
      );
    }
    if (quota === 'unreachable') {
      facts.push(
        h(
          'p',
          { class: 'jp-slicehub-note' },
          'The quota service is unreachable: the amounts are the last ones known.'
        )
      );
    }
    return facts;
  }

  private _countdown: HTMLElement | null = null;
  private readonly _info: HTMLElement;
  private readonly _form: HTMLFormElement;
  private readonly _fieldset: HTMLFieldSetElement;
  private readonly _select: HTMLSelectElement;
  private readonly _button: HTMLButtonElement;
  private readonly _done: HTMLElement;
  private readonly _refused: HTMLElement;
}
