/**
 * @slicehub/status: the Slicehub session in JupyterLab's status bar, a session panel with an
 * Extend control, a notification at each budget or end-of-session warning, and idle parking:
 * the user's activity reported, the parking warning with "Keep working", documents saved
 * before the session is parked.
 */
import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette, Notification } from '@jupyterlab/apputils';
import { ServerConnection } from '@jupyterlab/services';
import { IStatusBar } from '@jupyterlab/statusbar';

import { IWarning, warningNotice } from './model';
import { BrowserActivity, ParkingController } from './parking';
import { SlicehubStatus } from './status';
import { SlicehubPanel, SlicehubStatusItem } from './widgets';

const PLUGIN_ID = '@slicehub/status:plugin';

export const CommandIDs = {
  openPanel: 'slicehub:open-panel'
};

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description:
    "The Slicehub session's slice, time and money in the status bar, with Extend; idle " +
    "parking's warning, with Keep working, and documents saved before parking.",
  autoStart: true,
  optional: [IStatusBar, ICommandPalette],
  activate: (
    app: JupyterFrontEnd,
    statusBar: IStatusBar | null,
    palette: ICommandPalette | null
  ) => {
    const settings = ServerConnection.makeSettings();
    const status = new SlicehubStatus(settings);
    const activity = new BrowserActivity(settings);
    new ParkingController(app, status, activity, settings);
    let panel: SlicehubPanel | null = null;

    app.commands.addCommand(CommandIDs.openPanel, {
      label: 'Slicehub Session',
      caption: 'Show the Slicehub session: time and money left, and Extend',
      execute: () => {
        if (!panel || panel.isDisposed) {
          panel = new SlicehubPanel(status);
          app.shell.add(panel, 'main', { mode: 'split-right' });
          void status.refresh();
        }
        app.shell.activateById(panel.id);
      }
    });
    palette?.addItem({ command: CommandIDs.openPanel, category: 'Slicehub' });
    const open = () => void app.commands.execute(CommandIDs.openPanel);

    if (statusBar) {
      const item = new SlicehubStatusItem(status, open);
      statusBar.registerStatusItem(PLUGIN_ID, {
        item,
        align: 'left',
        rank: 100,
        isActive: () => item.visible,
        activeStateChanged: item.visibleChanged
      });
    }

    status.warned.connect((_, warnings: IWarning[]) => {
      const state = status.state;
      if (state.kind !== 'ok') {
        return;
      }
      for (const warning of warnings) {
        Notification.warning(warningNotice(warning, state.status, state.offsetMs, Date.now()), {
          autoClose: false,
          actions: [
            {
              label: 'Extend',
              caption: 'Open the Slicehub session panel to extend this session',
              displayType: 'accent',
              callback: open
            }
          ]
        });
      }
    });

    void app.restored.then(() => {
      activity.start();
      status.start();
    });
  }
};

export default plugin;
