/**
 * nbguard's JupyterLab extension: the side panel, the status-bar item, the
 * notifications about grants and denied cells, and the catalog's code snippets.
 * It talks only to the server extension's routes (`nbguard/api/...`).
 */
import { ILayoutRestorer, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette, Notification } from '@jupyterlab/apputils';
import { INotebookTracker, NotebookActions, NotebookPanel } from '@jupyterlab/notebook';
import type { KernelMessage } from '@jupyterlab/services';
import { IStatusBar } from '@jupyterlab/statusbar';
import { LabIcon } from '@jupyterlab/ui-components';

import { requestAPI } from './api';
import { GuardData } from './data';
import { safeLink } from './model';
import { NBGuardPanel } from './panel';
import { datasetSnippet, modelSnippet } from './snippets';
import { RecordingStatus } from './status';
import { cellDenial, GrantWatcher } from './watch';

/** How often the panel asks the server for fresh data. */
const POLL_MS = 15_000;

const SHIELD =
  '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24"><path class="jp-icon3" fill="#616161" d="M12 2 4 5v6c0 5 3.4 9.7 8 11 4.6-1.3 8-6 8-11V5l-8-3zm-1 14-4-4 1.4-1.4L11 13.2l4.6-4.6L17 10l-6 6z"/></svg>';

export const shieldIcon = new LabIcon({ name: 'nbguard:shield', svgstr: SHIELD });

const CommandIDs = {
  open: 'nbguard:open-panel',
  refresh: 'nbguard:refresh'
} as const;

/** Put `code` in the current notebook's active cell if it is an empty code cell, else below it. */
function insertCode(app: JupyterFrontEnd, tracker: INotebookTracker | null, code: string): void {
  const panel = tracker?.currentWidget;
  if (!panel) {
    Notification.warning('Open a notebook first: the code goes into its active cell.', {
      autoClose: 5000
    });
    return;
  }
  const notebook = panel.content;
  let cell = notebook.activeCell;
  if (!cell || cell.model.type !== 'code' || cell.model.sharedModel.getSource().trim()) {
    NotebookActions.insertBelow(notebook);
    if (notebook.activeCell?.model.type !== 'code') {
      NotebookActions.changeCellType(notebook, 'code');
    }
    cell = notebook.activeCell;
  }
  if (!cell) {
    return;
  }
  cell.model.sharedModel.setSource(code);
  app.shell.activateById(panel.id);
  notebook.mode = 'edit';
}

/** Open `url` in a new tab, without giving that tab a handle on the lab. */
function openUrl(url: string): void {
  const safe = safeLink(url);
  if (safe) {
    window.open(safe, '_blank', 'noopener,noreferrer');
  }
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'nbguard:plugin',
  description: 'nbguard: security context, grants, elevation requests and the governed catalog',
  autoStart: true,
  optional: [ILayoutRestorer, INotebookTracker, IStatusBar, ICommandPalette],
  activate: (
    app: JupyterFrontEnd,
    restorer: ILayoutRestorer | null,
    tracker: INotebookTracker | null,
    statusBar: IStatusBar | null,
    palette: ICommandPalette | null
  ) => {
    const data = new GuardData((endPoint, init) => requestAPI(endPoint, init));
    const panel = new NBGuardPanel({
      data,
      openUrl,
      insertDataset: dataset => insertCode(app, tracker, datasetSnippet(dataset)),
      insertModel: model => insertCode(app, tracker, modelSnippet(model)),
      askFor: (action, resource) => {
        app.shell.activateById(panel.id);
        panel.form.prefill(action, resource);
      }
    });
    panel.title.icon = shieldIcon;
    app.shell.add(panel, 'right', { rank: 600 });
    restorer?.add(panel, 'nbguard-panel');

    app.commands.addCommand(CommandIDs.open, {
      label: 'Show nbguard panel',
      caption: 'Session context, grants, requests and catalog',
      execute: () => app.shell.activateById(panel.id)
    });
    app.commands.addCommand(CommandIDs.refresh, {
      label: 'Refresh nbguard information',
      execute: () => data.refresh()
    });
    palette?.addItem({ command: CommandIDs.open, category: 'nbguard' });
    palette?.addItem({ command: CommandIDs.refresh, category: 'nbguard' });

    if (statusBar) {
      const status = new RecordingStatus(() => app.shell.activateById(panel.id));
      statusBar.registerStatusItem('nbguard:recording', {
        item: status,
        align: 'left',
        rank: 0
      });
      data.subscribe(snapshot => status.render(snapshot));
      status.render(data.snapshot);
    }

    // Grants: notify what changed since the last poll, and expiries between polls.
    const watcher = new GrantWatcher();
    const notify = (now: number): void => {
      for (const notice of watcher.update(data.snapshot.grants, now)) {
        const show = {
          granted: Notification.success,
          expiring: Notification.warning,
          expired: Notification.info,
          revoked: Notification.error
        }[notice.kind];
        show(notice.message, { autoClose: notice.kind === 'granted' ? 8000 : false });
      }
    };
    data.subscribe(snapshot => {
      if (!snapshot.errors.grants) {
        notify(Date.now());
      }
    });
    window.setInterval(() => {
      const now = Date.now();
      panel.tick(now);
      if (data.snapshot.fetched) {
        notify(now);
      }
    }, 1000);
    const poll = (): void => {
      if (document.visibilityState !== 'hidden') {
        void data.refresh();
      }
    };
    window.setInterval(poll, POLL_MS);
    document.addEventListener('visibilitychange', poll);
    void data.refresh();

    // Denied cells: the kernel hooks raise GuardPermissionError; say so beside the lab.
    if (tracker) {
      const seen = new Set<string>();
      const watch = (notebook: NotebookPanel): void => {
        notebook.sessionContext.iopubMessage.connect((_, message: KernelMessage.IMessage) => {
          const denial = cellDenial(message);
          const parent = (message.parent_header as { msg_id?: string }).msg_id ?? '';
          if (!denial || seen.has(parent)) {
            return;
          }
          seen.add(parent);
          const stepUp = data.snapshot.me?.step_up_url;
          const actions: Notification.IAction[] = [
            {
              label: 'Ask for access',
              caption: 'Open the nbguard panel to ask for an elevation',
              callback: () => app.shell.activateById(panel.id)
            }
          ];
          if (denial.wantsStepUp && stepUp) {
            // The guard's own step-up page from the context route, never a link from
            // the kernel's text (a notebook can print anything).
            actions.push({
              label: 'Step up',
              caption: 'Confirm it is you with a fresh second factor',
              callback: () => openUrl(stepUp)
            });
          }
          Notification.error(denial.summary, { autoClose: false, actions });
          void data.refresh();
        });
      };
      tracker.forEach(watch);
      tracker.widgetAdded.connect((_, notebook) => watch(notebook));
    }
  }
};

export default plugin;
