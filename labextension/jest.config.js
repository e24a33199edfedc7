/**
 * jest runs the TypeScript unit tests (src/__tests__) with ts-jest in jsdom.
 * They cover the modules that do not import JupyterLab (model, views, watchers);
 * the whole extension is tested in a real browser by tests/labextension.
 */
module.exports = {
  testEnvironment: 'jsdom',
  rootDir: 'src',
  testRegex: '/__tests__/.*\\.spec\\.ts$',
  transform: {
    '^.+\\.ts$': ['ts-jest', { tsconfig: '<rootDir>/../tsconfig.test.json' }]
  }
};
