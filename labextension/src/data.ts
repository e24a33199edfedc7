/**
 * The panel's data: one poll of the server extension's routes, kept as a
 * snapshot that the views render. Each route may fail on its own (the guard
 * down is a 503 for all of them; the models route may not exist at all).
 */
import type {
  IDataset,
  IElevationRequest,
  IErrorBody,
  IGrant,
  IMe,
  IModel,
  INewRequest
} from './model';

/** How the data reaches the server: `requestAPI`, or a stand-in in unit tests. */
export type Fetcher = <T>(endPoint: string, init?: RequestInit) => Promise<T>;

export type Section = 'context' | 'grants' | 'requests' | 'catalog';

export interface ISnapshot {
  me: IMe | null;
  /** All my grants, ended ones included (`grants?active=0`). */
  grants: IGrant[];
  requests: IElevationRequest[];
  datasets: IDataset[];
  /** null when the server has no models route. */
  models: IModel[] | null;
  /** Why a section could not be loaded, by section. */
  errors: Partial<Record<Section, IErrorBody>>;
  /** Whether the server extension answers at all (false: no nbguard routes here). */
  active: boolean;
  /** When this snapshot was taken (ms since the epoch); 0 before the first poll. */
  fetched: number;
}

export const EMPTY: ISnapshot = {
  me: null,
  grants: [],
  requests: [],
  datasets: [],
  models: null,
  errors: {},
  active: true,
  fetched: 0
};

/** The error body a failed call carries, or one for an unexpected failure. */
export function bodyOf(reason: unknown): IErrorBody {
  const error = (reason as { error?: IErrorBody } | null)?.error;
  if (error && typeof error.message === 'string') {
    return error;
  }
  const message = reason instanceof Error ? reason.message : String(reason);
  return { status: 0, code: 'network', message: message || 'The server could not be reached.' };
}

export class GuardData {
  private listeners = new Set<(snapshot: ISnapshot) => void>();
  private current: ISnapshot = EMPTY;
  private pending: Promise<ISnapshot> | null = null;
  /** False once the server said it has no models route: not asked again (no 404 per poll). */
  private hasModels = true;

  constructor(private readonly fetch: Fetcher) {}

  get snapshot(): ISnapshot {
    return this.current;
  }

  /** Call `listener` with every new snapshot; returns a function that stops it. */
  subscribe(listener: (snapshot: ISnapshot) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Poll every route once (concurrent calls share one poll). */
  refresh(): Promise<ISnapshot> {
    if (!this.pending) {
      this.pending = this.poll().finally(() => {
        this.pending = null;
      });
    }
    return this.pending;
  }

  /** Ask for an elevation; the new request, or the server's refusal as a thrown error. */
  async ask(body: INewRequest): Promise<IElevationRequest> {
    const created = await this.fetch<IElevationRequest>('requests', {
      method: 'POST',
      body: JSON.stringify(body)
    });
    await this.refresh();
    return created;
  }

  private async poll(): Promise<ISnapshot> {
    const [me, grants, requests, catalog, models] = await Promise.allSettled([
      this.fetch<IMe>('context'),
      this.fetch<{ grants: IGrant[] }>('grants?active=0'),
      this.fetch<{ requests: IElevationRequest[] }>('requests'),
      this.fetch<{ datasets: IDataset[] }>('catalog'),
      this.hasModels
        ? this.fetch<{ models: IModel[] }>('models')
        : Promise.reject({ error: { status: 404, code: 'not_found', message: '' } })
    ]);
    if (models.status === 'rejected' && bodyOf(models.reason).status === 404) {
      this.hasModels = false;
    }
    const errors: ISnapshot['errors'] = {};
    const keep = <T, L extends T | null>(
      section: Section,
      result: PromiseSettledResult<T>,
      last: L
    ): T | L => {
      if (result.status === 'fulfilled') {
        return result.value;
      }
      errors[section] = bodyOf(result.reason);
      return last;
    };
    const previous = this.current;
    const next: ISnapshot = {
      me: keep('context', me, previous.me),
      grants: keep('grants', grants, { grants: previous.grants }).grants,
      requests: keep('requests', requests, { requests: previous.requests }).requests,
      datasets: keep('catalog', catalog, { datasets: previous.datasets }).datasets,
      models:
        models.status === 'fulfilled' && Array.isArray(models.value.models)
          ? models.value.models
          : null,
      errors,
      // Every nbguard route missing: the extension is idle in this server.
      active: !(errors.context?.status === 404 && errors.catalog?.status === 404),
      fetched: Date.now()
    };
    this.current = next;
    for (const listener of this.listeners) {
      listener(next);
    }
    return next;
  }
}
