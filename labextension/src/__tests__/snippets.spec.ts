/** Unit tests of snippets.ts: the code the catalog inserts, and names that never become code. */
import type { IDataset } from '../model';
import { datasetSnippet, modelSnippet } from '../snippets';

const SALES: IDataset = {
  name: 'sales',
  team: 'analytics',
  sensitivity: 'internal',
  environment: 'train',
  actions: ['dataset.read']
};

test('a dataset snippet reads through nbguard://', () => {
  // The snippet lists the dataset and reads a file with pandas through the guard.
  const code = datasetSnippet(SALES);
  expect(code).toContain('fsspec.filesystem("nbguard").ls("nbguard://sales", detail=False)');
  expect(code).toContain('pd.read_csv("nbguard://sales/FILE.csv")');
});

test.each([
  ['quote', 'sales")\nimport os'],
  ['newline', 'a\nb'],
  ['upper case', 'Sales'],
  ['empty', '']
])('a dataset named with a %s is refused', (_id, name) => {
  // A name the guard would never issue cannot smuggle code into a cell.
  expect(() => datasetSnippet({ ...SALES, name })).toThrow('Not a dataset name');
});

test.each([
  ['version', { name: 'fraud', version: 3 }, 'models:/fraud/3'],
  ['stage', { name: 'fraud', stage: 'Production' }, 'models:/fraud/Production'],
  ['neither', { name: 'fraud' }, 'models:/fraud/latest'],
  ['odd stage', { name: 'fraud', stage: 'x")' }, 'models:/fraud/latest']
])('a model snippet by %s', (_id, model, uri) => {
  // The model is loaded through MLflow with a models:/ URI built only from checked parts.
  expect(modelSnippet(model)).toContain(`mlflow.pyfunc.load_model("${uri}")`);
});

test('a model named with a quote is refused', () => {
  // Model names are checked like dataset names.
  expect(() => modelSnippet({ name: 'x"); import os; ("' })).toThrow('Not a model name');
});
