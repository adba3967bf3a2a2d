import type { LoggerOptions } from 'pino';

/**
 * Every header or field that can carry a secret, a signature or patient data.
 * Bodies are never logged at all; these paths catch anything that slips into a log object.
 */
export const REDACT_PATHS = [
  'req.headers.authorization',
  'req.headers["x-patiro-hmacsha256"]',
  'req.headers.cookie',
  'req.query.token',
  'headers.authorization',
  'headers["x-patiro-hmacsha256"]',
  '*.api_key',
  '*.token',
  '*.file_url',
  '*.fileUrl',
  '*.patient_id',
  '*.patientId',
  '*.password',
  '*.secret',
  'databaseUrl',
];

export function loggerOptions(level: string, isTty = Boolean(process.stdout.isTTY)): LoggerOptions {
  return {
    level,
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    // The query string may hold Patiro's ?token=, so a request is logged by its path only.
    serializers: {
      req: (req: { method: string; url: string; id: string; ip?: string }) => ({
        method: req.method,
        path: req.url.split('?')[0],
        id: req.id,
        remoteAddress: req.ip,
      }),
    },
    ...(isTty ? { transport: { target: 'pino-pretty', options: { translateTime: 'SYS:HH:MM:ss.l' } } } : {}),
  };
}
