/**
 * What the panel shows, computed from the guard's answers: types of those
 * answers, durations, grant countdowns and the checks of the request form.
 *
 * Nothing here touches the DOM or JupyterLab, so jest tests it directly.
 * Every decision shown here was made by the guard service; the panel only
 * reports it (the browser is in the user zone and is never trusted).
 */

/** The guard's `api/v1/me`: who I am and the context my requests are decided in. */
export interface IMe {
  user: string;
  roles: string[];
  session_id?: string;
  server?: string | null;
  profile?: string | null;
  environment: string;
  mfa_method: string;
  mfa_age_seconds?: number | null;
  network_zone: string;
  device_trusted: boolean;
  risk: string;
  elevated_roles?: string[];
  grants?: { action: string; resource: string }[];
  locked?: boolean;
  step_up_url?: string;
}

/** One catalog dataset, with the actions the guard says I may take now. */
export interface IDataset {
  name: string;
  description?: string;
  team: string;
  owner?: string;
  sensitivity: string;
  environment: string;
  actions: string[];
}

/** One registered model, when the server lists models (`nbguard/api/models`). */
export interface IModel {
  name: string;
  description?: string;
  sensitivity?: string;
  stage?: string;
  version?: string | number;
  actions?: string[];
}

export interface IApproval {
  approver: string;
  verdict: 'approve' | 'deny';
  comment?: string;
  time?: string;
}

/** An elevation request, as the guard lists it. */
export interface IElevationRequest {
  id: string;
  requester: string;
  kind: 'role' | 'grant';
  role?: string;
  action?: string;
  target?: string;
  duration_seconds: number;
  reason?: string;
  status: 'pending' | 'approved' | 'denied' | 'cancelled' | 'expired';
  created?: string;
  decided?: string | null;
  expires?: string;
  required_approvals: number;
  approvals: IApproval[];
  grant_id?: string | null;
  break_glass?: boolean;
}

/** A grant: a role, or one action on one target, from `starts` until `expires`. */
export interface IGrant {
  id: string;
  request_id?: string;
  user: string;
  role?: string;
  action?: string;
  target?: string;
  starts: string;
  expires: string;
  break_glass?: boolean;
  revoked?: string | null;
  revoked_by?: string | null;
  revoke_reason?: string | null;
}

export interface IRequirement {
  kind: string;
  value: string | number;
}

export interface IRemedy {
  requirements: IRequirement[];
  message: string;
}

export interface IDecision {
  allowed: boolean;
  action?: string;
  resource?: string;
  policy_ids?: string[];
  correlation_id?: string;
  remedies?: IRemedy[];
  message?: string;
}

/** The `error` member of every error body of the guard and the server extension. */
export interface IErrorBody {
  status: number;
  code: string;
  message: string;
  decision?: IDecision;
  step_up_url?: string;
}

/** Seconds as a person reads them: `2 h 05 min`, `4 min 09 s`, `12 s`. */
export function formatDuration(seconds: number): string {
  const total = Math.max(0, Math.floor(seconds));
  const days = Math.floor(total / 86400);
  const hours = Math.floor((total % 86400) / 3600);
  const minutes = Math.floor((total % 3600) / 60);
  const secs = total % 60;
  const two = (n: number): string => String(n).padStart(2, '0');
  if (days > 0) {
    return `${days} d ${hours} h`;
  }
  if (hours > 0) {
    return `${hours} h ${two(minutes)} min`;
  }
  if (minutes > 0) {
    return `${minutes} min ${two(secs)} s`;
  }
  return `${secs} s`;
}

/** Milliseconds since the epoch of an RFC 3339 time; NaN when it is not one. */
export function timeOf(value: string | null | undefined): number {
  if (!value) {
    return NaN;
  }
  return Date.parse(value);
}

/** Whole seconds left until `expires` at `now` (ms); 0 once past, or when unknown. */
export function secondsLeft(expires: string, now: number): number {
  const end = timeOf(expires);
  if (Number.isNaN(end)) {
    return 0;
  }
  return Math.max(0, Math.ceil((end - now) / 1000));
}

/** Whether a grant is in force at `now`: started, not expired, not revoked. */
export function isActive(grant: IGrant, now: number): boolean {
  if (grant.revoked) {
    return false;
  }
  const starts = timeOf(grant.starts);
  const expires = timeOf(grant.expires);
  return !Number.isNaN(expires) && (Number.isNaN(starts) || starts <= now) && now < expires;
}

/** What a grant or a request gives, in words: `role ml-engineer`, `dataset.read on dataset:sales`. */
export function describeAccess(item: { role?: string; action?: string; target?: string }): string {
  if (item.role) {
    return `role ${item.role}`;
  }
  return `${item.action ?? '?'} on ${item.target ?? '?'}`;
}

/** The MFA line of the context: `totp, 4 min 09 s ago`, or `none`. */
export function describeMfa(me: IMe): string {
  const age = me.mfa_age_seconds;
  if (!me.mfa_method || me.mfa_method === 'none') {
    return 'none';
  }
  if (age === null || age === undefined) {
    return me.mfa_method;
  }
  return `${me.mfa_method}, ${formatDuration(age)} ago`;
}

/** The approvals of a request in words: `1 of 2 approvals (bob)`. */
export function describeApprovals(request: IElevationRequest): string {
  const approvers = request.approvals.filter(a => a.verdict === 'approve').map(a => a.approver);
  const count = `${approvers.length} of ${request.required_approvals} approval${
    request.required_approvals === 1 ? '' : 's'
  }`;
  return approvers.length ? `${count} (${approvers.join(', ')})` : count;
}

/** Why a denied request was denied: the denying approver's comment. */
export function denialReason(request: IElevationRequest): string {
  const denial = request.approvals.find(a => a.verdict === 'deny');
  if (!denial) {
    return '';
  }
  return denial.comment ? `${denial.approver}: ${denial.comment}` : denial.approver;
}

/** Most-recent-first order by an RFC 3339 field. */
export function newestFirst<T>(items: T[], field: (item: T) => string | undefined): T[] {
  return [...items].sort((a, b) => {
    const ta = timeOf(field(a));
    const tb = timeOf(field(b));
    return (Number.isNaN(tb) ? 0 : tb) - (Number.isNaN(ta) ? 0 : ta);
  });
}

/** What the request form holds, as typed. */
export interface IRequestForm {
  kind: 'role' | 'grant';
  role: string;
  action: string;
  resource: string;
  /** Minutes, as typed. */
  minutes: string;
  reason: string;
}

/** The body `POST nbguard/api/requests` takes. */
export interface INewRequest {
  role?: string;
  action?: string;
  resource?: string;
  duration_seconds: number;
  reason: string;
}

/** Longest reason the guard accepts. */
export const MAX_REASON = 2000;
/** Longest duration the form offers (the guard's rules may allow less). */
export const MAX_MINUTES = 7 * 24 * 60;

/** `type:name`, as the guard names resources (`dataset:sales`, `model:fraud`). */
const RESOURCE = /^[A-Za-z][A-Za-z]*:[a-z0-9][a-z0-9_./-]{0,127}$/;
const NAME = /^[a-z0-9][a-z0-9_.-]{0,62}$/;
const ACTION = /^[a-z]+\.[a-z_]+$/;

export type FormErrors = Partial<Record<keyof IRequestForm, string>>;

/**
 * Check the form as the server extension will, so a person sees every mistake
 * at once and next to its field. The server checks again; its 400 is shown too.
 */
export function checkRequestForm(
  form: IRequestForm
): { body: INewRequest; errors?: undefined } | { body?: undefined; errors: FormErrors } {
  const errors: FormErrors = {};
  const body: Partial<INewRequest> = {};
  if (form.kind === 'role') {
    const role = form.role.trim();
    if (!role) {
      errors.role = 'Choose the role you need.';
    } else if (!NAME.test(role)) {
      errors.role = 'A role name is lower-case letters, digits, "-" or "_".';
    } else {
      body.role = role;
    }
  } else {
    const action = form.action.trim();
    const resource = form.resource.trim();
    if (!ACTION.test(action)) {
      errors.action = 'Choose an action, such as dataset.read.';
    } else {
      body.action = action;
    }
    if (!resource) {
      errors.resource = 'Name the resource, such as dataset:sales.';
    } else if (!RESOURCE.test(resource)) {
      errors.resource = 'A resource is written type:name, such as dataset:sales.';
    } else {
      body.resource = resource;
    }
  }
  const minutesText = form.minutes.trim();
  const minutes = Number(minutesText);
  if (!/^\d+$/.test(minutesText) || minutes < 1) {
    errors.minutes = 'The duration is a whole number of minutes, at least 1.';
  } else if (minutes > MAX_MINUTES) {
    errors.minutes = `At most ${MAX_MINUTES} minutes (7 days).`;
  } else {
    body.duration_seconds = minutes * 60;
  }
  const reason = form.reason.trim();
  if (!reason) {
    errors.reason = 'Say why you need it: approvers decide on the reason.';
  } else if (form.reason.length > MAX_REASON) {
    errors.reason = `At most ${MAX_REASON} characters (now ${form.reason.length}).`;
  } else {
    body.reason = form.reason;
  }
  if (Object.keys(errors).length) {
    return { errors };
  }
  return { body: body as INewRequest };
}

/**
 * The step-up page to offer for a denial, or null: only when one of the
 * denial's remedies asks for a fresh second factor, and only an http(s) URL or
 * an absolute path (never `javascript:` or a protocol-relative `//host`).
 */
export function stepUpTarget(error: IErrorBody | undefined | null): string | null {
  if (!error) {
    return null;
  }
  const remedies = error.decision?.remedies ?? [];
  const wantsMfa = remedies.some(r => r.requirements.some(q => q.kind === 'fresh_mfa'));
  const url = error.step_up_url;
  if (!wantsMfa || typeof url !== 'string') {
    return null;
  }
  return safeLink(url);
}

/** `url` if it is an http(s) URL or an absolute path on this origin; otherwise null. */
export function safeLink(url: string): string | null {
  if (/^\/(?![/\\])/.test(url)) {
    return url;
  }
  try {
    const parsed = new URL(url);
    return parsed.protocol === 'https:' || parsed.protocol === 'http:' ? parsed.href : null;
  } catch {
    return null;
  }
}

/** The words of a denial: the message, and each way it would be allowed. */
export function denialLines(error: IErrorBody): string[] {
  const lines = [error.message];
  for (const remedy of error.decision?.remedies ?? []) {
    if (remedy.message) {
      lines.push(`Would be allowed with ${remedy.message}.`);
    }
  }
  if (error.decision?.correlation_id) {
    lines.push(`Decision ${error.decision.correlation_id} (quote it to your hub admin).`);
  }
  return lines;
}
