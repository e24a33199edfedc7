/**
 * The code the catalog inserts into a notebook cell. Names come from the
 * guard's catalog but are still checked here, so a strange name can never
 * turn into code (they are also written as JSON string literals, which Python
 * reads the same way).
 */
import type { IDataset, IModel } from './model';

/** The guard's dataset names (`^[a-z0-9][a-z0-9_-]{0,62}$`). */
const DATASET_NAME = /^[a-z0-9][a-z0-9_-]{0,62}$/;
/** MLflow registered model names we are willing to write into code. */
const MODEL_NAME = /^[A-Za-z0-9][A-Za-z0-9 _.-]{0,127}$/;

/** Python code that lists a dataset's files and reads one with pandas through `nbguard://`. */
export function datasetSnippet(dataset: IDataset): string {
  if (!DATASET_NAME.test(dataset.name)) {
    throw new Error(`Not a dataset name: ${JSON.stringify(dataset.name)}`);
  }
  const root = JSON.stringify(`nbguard://${dataset.name}`);
  const example = JSON.stringify(`nbguard://${dataset.name}/FILE.csv`);
  return [
    `# ${dataset.name} (${dataset.sensitivity}) through nbguard: every read is decided and recorded.`,
    'import fsspec',
    'import pandas as pd',
    '',
    `print(fsspec.filesystem("nbguard").ls(${root}, detail=False))`,
    `df = pd.read_csv(${example})  # FILE: one of the files listed above`,
    'df.head()'
  ].join('\n');
}

/** Python code that loads a registered model through MLflow (the guard fronts its registry). */
export function modelSnippet(model: IModel): string {
  if (!MODEL_NAME.test(model.name)) {
    throw new Error(`Not a model name: ${JSON.stringify(model.name)}`);
  }
  const version = model.version !== undefined ? String(model.version) : '';
  const stage = model.stage ?? '';
  const which = /^\d+$/.test(version) ? version : /^[A-Za-z]+$/.test(stage) ? stage : 'latest';
  const uri = JSON.stringify(`models:/${model.name}/${which}`);
  return [
    `# Model ${model.name} through nbguard's gateway to MLflow: loading it is decided and recorded.`,
    'import mlflow',
    '',
    `model = mlflow.pyfunc.load_model(${uri})`
  ].join('\n');
}
