/**
 * Writes nbguard/sources.sha256: a digest of the sources the prebuilt
 * extension was built from. The prebuilt output is committed (so installing
 * the wheel needs no Node.js); tests/labextension/test_prebuilt.py recomputes
 * the digest and fails when a source changed without a rebuild.
 *
 * Digest: SHA-256 over one line per file, sorted by path:
 * `<posix path>\0<sha256 hex of the bytes>\n`.
 */
const crypto = require('crypto');
const fs = require('fs');
const path = require('path');

const ROOT = path.resolve(__dirname, '..');
const INPUTS = ['package.json', 'tsconfig.json', 'src', 'style'];

function files(relative) {
  const full = path.join(ROOT, relative);
  if (fs.statSync(full).isFile()) {
    return [relative];
  }
  return fs
    .readdirSync(full)
    .filter(name => name !== '__tests__')
    .flatMap(name => files(path.posix.join(relative, name)));
}

const sha = data => crypto.createHash('sha256').update(data).digest('hex');
const lines = INPUTS.flatMap(files)
  .sort()
  .map(file => `${file}\0${sha(fs.readFileSync(path.join(ROOT, file)))}\n`);
fs.writeFileSync(path.join(ROOT, 'nbguard', 'sources.sha256'), sha(lines.join('')) + '\n');
