/**
 * The errors a sender can cause, each with a stable code and the status it answers.
 * Match on `code`, never on the message.
 */
export const ERRORS = {
  WH_ERR_UNAUTHENTICATED: { status: 401, message: 'Authentication failed' },
  WH_ERR_BAD_JSON: { status: 400, message: 'The body is not valid JSON' },
  WH_ERR_BAD_PAYLOAD: { status: 400, message: 'The payload is missing fields or has fields of the wrong type' },
  WH_ERR_BODY_TOO_LARGE: { status: 413, message: 'The body is larger than the limit' },
  WH_ERR_UNSUPPORTED_MEDIA_TYPE: { status: 415, message: 'The content type must be application/json' },
  WH_ERR_UNKNOWN_SOURCE: { status: 404, message: 'No active source with this id for this vendor' },
  WH_ERR_URL_REFUSED: { status: 422, message: 'The file URL is refused by the download policy' },
  WH_ERR_SOURCE_UNAVAILABLE: { status: 503, message: "This source's credentials cannot be read right now; retry later" },
  WH_ERR_UNAVAILABLE: { status: 503, message: 'The delivery could not be stored in time; retry later' },
} as const;

export type ErrorCode = keyof typeof ERRORS;

export class WebhookError extends Error {
  readonly statusCode: number;

  constructor(
    readonly code: ErrorCode,
    /** Safe to show the sender: never a secret, a body or a patient field. */
    readonly detail?: string,
    options?: { cause?: unknown },
  ) {
    super(detail ?? ERRORS[code].message, options);
    this.name = 'WebhookError';
    this.statusCode = ERRORS[code].status;
  }
}

/** Seconds a sender should wait after a 503 before retrying. */
export const RETRY_AFTER_SECONDS = 5;

/** The errors a consumer of the internal API can meet (src/api/), in the webhooks' shape. */
export const API_ERRORS = {
  API_ERR_UNAUTHENTICATED: { status: 401, message: 'A valid bearer token of an active consumer is required' },
  API_ERR_BAD_REQUEST: { status: 400, message: 'The request is malformed' },
  API_ERR_NOT_FOUND: { status: 404, message: 'Not found' },
  API_ERR_CURSOR_EXPIRED: {
    status: 410,
    message: 'The change feed was purged past this cursor (RETENTION_DAYS): read the rows again from the tables, then follow the feed from GET /v1/changes/head',
  },
  API_ERR_UNAVAILABLE: { status: 503, message: 'The database cannot be reached right now; retry later' },
} as const;

export type ApiErrorCode = keyof typeof API_ERRORS;

export class ApiError extends Error {
  readonly statusCode: number;
  constructor(
    readonly code: ApiErrorCode,
    detail?: string,
  ) {
    super(detail ?? API_ERRORS[code].message);
    this.name = 'ApiError';
    this.statusCode = API_ERRORS[code].status;
  }
}
