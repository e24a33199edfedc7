/**
 * Builds the prebuilt extension into nbguard/ with JupyterLab's builder,
 * against the JupyterLab installed in the active Python environment (its
 * staging package.json names the exact core versions to share), then stamps
 * the sources' digest (see stamp.js). Run by `npm run build`; needs the venv's
 * `python` and `jupyter-builder` on PATH.
 */
const { spawnSync } = require('child_process');
const path = require('path');

const ROOT = path.resolve(__dirname, '..');

function run(command, args) {
  const done = spawnSync(command, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
  if (done.error || done.status !== 0) {
    console.error(`${command} ${args.join(' ')} failed: ${done.error ?? `exit ${done.status}`}`);
    process.exit(1);
  }
  return done.stdout.toString();
}

const core = run('python', [
  '-c',
  'import jupyterlab, os; print(os.path.join(os.path.dirname(jupyterlab.__file__), "staging", "package.json"))'
]).trim();
// Options before the path: the builder reads everything after the path as arguments.
run('jupyter-builder', ['build', `--core-package-file=${core}`, '.']);
require('./stamp.js');
